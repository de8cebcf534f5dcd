// embed.ts: representations of a whole dataset (the encoder output y, BatchNorm in eval mode),
// the feature cache of a run directory, the models evaluation compares (trained, random
// init), and writers for .npy and .safetensors.
// Contract: embedDataset() preprocesses exactly as training does minus the randomness (the
// whole image resized to the training size, the same normalization), in dataset order,
// batch by batch on the model's device; cached features are keyed by the SHA-256 of the
// weights (or 'random-<seed>' / 'pixels'), the dataset and the preprocessing, and are
// recomputed when any of them differs.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { type AugmentConfig, type AugmentConfigOptions, augmentBatch, augmentConfig } from '../augment';
import { type Dataset, type DatasetLike, readRange, validateDataset } from '../data';
import { resolveDevice } from '../device';
import { type RunState, readRunState, verifyCheckpoint, writeFileAtomic } from '../train/checkpoint';
import { type Byol } from '../byol';
import { parseSafetensorsHeader } from '../safetensors';
import { defaultAugmentPreset } from '../train/data';
import { type TrainableModel, asTrainableModel, createByol } from '../train/model';
import { type TrainConfig } from '../train/options';
import { modelOptimizer, trainViews } from '../train/trainer';
import { integer, invalid, isPlainObject, knownKeys, withDefault } from '../validate';

export interface EmbedOptions {
  batchSize?: number; // default 256
  // Preprocessing: an augmentation config applied without randomness. Default: the dataset's
  // preset at its own size. For a run, evalView(config, dataset) gives the training one.
  view?: AugmentConfig | AugmentConfigOptions;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface Embeddings {
  features: Float32Array; // n x dim, row-major, dataset order
  labels?: Int32Array;
  n: number;
  dim: number;
}

// The deterministic counterpart of a training view: the whole image resized to the output
// size, same interpolation and normalization, every random op off.
export function deterministicView(view: AugmentConfig, height: number, width: number): AugmentConfig {
  const ratio = width / height;
  return augmentConfig({
    ...view, cropScale: [1, 1], cropRatio: [ratio, ratio], flipP: 0, jitterP: 0, grayscaleP: 0, blurP: 0,
    solarizeP: 0,
  });
}

// Evaluation preprocessing of a run's configuration for a dataset.
export function evalView(config: TrainConfig, dataset: DatasetLike): AugmentConfig {
  return deterministicView(trainViews(config, dataset)[0], dataset.height, dataset.width);
}

// The preprocessing embedDataset uses when given no view: the dataset's augmentation preset
// at the dataset's own size, without randomness.
export function defaultView(dataset: DatasetLike): AugmentConfig {
  const preset = defaultAugmentPreset(dataset);
  return deterministicView(augmentConfig({ preset, outputSize: [dataset.height, dataset.width] }), dataset.height,
    dataset.width);
}

// What embedding needs of a model: TrainableModel's embed, device and feature size.
export type FeatureEncoder = Pick<TrainableModel, 'featureDim' | 'device' | 'embed'>;

export async function embedDataset(model: unknown, dataset: DatasetLike, options: EmbedOptions = {}): Promise<Embeddings> {
  return embedFeatures(asTrainableModel(model), dataset, options);
}

// embedDataset for any FeatureEncoder (the trainer's model, or a test's stand-in).
export async function embedFeatures(encoder: FeatureEncoder, dataset: DatasetLike, options: EmbedOptions = {}): Promise<Embeddings> {
  validateDataset(dataset, 'dataset', true);
  checkEmbedOptions(options);
  const batchSize = withDefault(options.batchSize, 256, (v) => integer('options.batchSize', v, 1, 1 << 16));
  const view = options.view === undefined ? defaultView(dataset) : augmentConfig(options.view as AugmentConfigOptions, 'options.view');
  const device = resolveDevice(encoder.device, 'model.device');
  const { n, height, width, channels } = dataset;
  const dim = encoder.featureDim;
  const features = new Float32Array(n * dim);
  // The next chunk is read (decoded, for a streaming dataset) while this one is embedded.
  const read = (start: number) => {
    const pixels = readRange(dataset, start, Math.min(batchSize, n - start));
    pixels.catch(() => undefined); // awaited in its turn; not "unhandled" meanwhile
    return pixels;
  };
  let next = n > 0 ? read(0) : null;
  for (let start = 0; start < n; start += batchSize) {
    if (options.signal?.aborted) throw options.signal.reason ?? new Error('embedding aborted');
    const count = Math.min(batchSize, n - start);
    const indices = Int32Array.from({ length: count }, (_, i) => start + i);
    const images = await next!;
    next = start + batchSize < n ? read(start + batchSize) : null;
    const batch = await augmentBatch(images, null, {
      config: view, seed: 0, epoch: 0, indices, view: 0, device, shape: [count, height, width, channels],
    });
    try {
      const rows = await encoder.embed(batch.images);
      if (rows.length !== count * dim) {
        throw new Error(`model.embed returned ${rows.length} values for ${count} images of ${dim} features`);
      }
      features.set(rows, start * dim);
    } finally {
      batch.images.dispose();
    }
    options.onProgress?.(start + count, n);
  }
  const result: Embeddings = { features, n, dim };
  if (dataset.labels) result.labels = dataset.labels;
  return result;
}

function checkEmbedOptions(options: unknown): void {
  if (!isPlainObject(options)) throw invalid('options', 'object', options);
  knownKeys('options', options, ['batchSize', 'view', 'signal', 'onProgress']);
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw invalid('options.signal', 'AbortSignal', options.signal);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw invalid('options.onProgress', 'function', options.onProgress);
  }
}

// Raw pixels scaled to [0, 1] as features (the 'pixels' baseline; the probe standardizes).
// In memory only: a StreamingDataset goes through inMemory() first.
export function pixelFeatures(dataset: Dataset): Embeddings {
  validateDataset(dataset, 'dataset');
  const dim = dataset.height * dataset.width * dataset.channels;
  const features = new Float32Array(dataset.images.length);
  for (let i = 0; i < features.length; i++) features[i] = dataset.images[i] / 255;
  const result: Embeddings = { features, n: dataset.n, dim };
  if (dataset.labels) result.labels = dataset.labels;
  return result;
}

// ---- models of a run directory ----

export interface RunModel {
  model: Byol; // the caller disposes it
  state: RunState;
  // SHA-256 of the weights loaded, or 'random-<seed>' for a fresh initialization.
  key: string;
}

function specOf(state: RunState, device: string) {
  const c = state.config;
  return {
    encoder: { arch: c.encoder.arch, stem: state.plan.stem, inChannels: state.plan.inChannels, width: c.encoder.width },
    projector: c.projector,
    predictor: c.predictor,
    optimizer: modelOptimizer(c),
    device,
    seed: c.seed,
    classifier: state.plan.classifierClasses ? { classes: state.plan.classifierClasses } : false as const,
  };
}

// The trained model of a run (checkpoint verified against state.json), or with `random` a
// fresh model of the same architecture and seed (the random-encoder baseline).
export async function loadRunModel(runDir: string, options: { device?: string; random?: boolean } = {}): Promise<RunModel> {
  const state = await readRunState(runDir);
  const device = resolveDevice(options.device ?? state.config.device, 'device');
  const model = await createByol(specOf(state, device));
  try {
    if (options.random) return { model, state, key: `random-${state.config.seed}` };
    const file = await verifyCheckpoint(runDir, state);
    await model.loadWeights(file);
    return { model, state, key: state.weights.sha256 };
  } catch (error) {
    model.dispose();
    throw error;
  }
}

// ---- feature cache (run-dir/features-<key>-<split>.bin) ----

const CACHE_MAGIC = 'BYOLFEAT';

function cacheHeader(key: string, dataset: DatasetLike, view: AugmentConfig | null, dim: number) {
  const preprocessing = view ? createHash('sha256').update(JSON.stringify(view)).digest('hex').slice(0, 16) : 'none';
  return { key, dataset: dataset.name, n: dataset.n, dim, preprocessing, labels: Boolean(dataset.labels) };
}

export function featureCacheFile(runDir: string, key: string, split: string): string {
  const tag = /^[0-9a-f]{64}$/.test(key) ? key.slice(0, 16) : key.replace(/[^\w.-]/g, '_');
  return path.join(runDir, `features-${tag}-${split}.bin`);
}

async function readCache(file: string, expected: ReturnType<typeof cacheHeader>): Promise<Embeddings | null> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch {
    return null;
  }
  if (bytes.length < 16 || bytes.toString('latin1', 0, 8) !== CACHE_MAGIC) return null;
  const headerLength = bytes.readUInt32LE(8);
  const dataStart = 16 + headerLength;
  if (dataStart > bytes.length) return null;
  let header: unknown;
  try {
    header = JSON.parse(bytes.toString('utf8', 16, dataStart));
  } catch {
    return null;
  }
  if (JSON.stringify(header) !== JSON.stringify(expected)) return null;
  const { n, dim } = expected;
  const featureBytes = n * dim * 4;
  const labelBytes = expected.labels ? n * 4 : 0;
  if (bytes.length !== dataStart + featureBytes + labelBytes) return null;
  // Copies into aligned arrays (the Buffer's offset need not be a multiple of 4).
  const features = new Float32Array(n * dim);
  new Uint8Array(features.buffer).set(bytes.subarray(dataStart, dataStart + featureBytes));
  const result: Embeddings = { features, n, dim };
  if (expected.labels) {
    const labels = new Int32Array(n);
    new Uint8Array(labels.buffer).set(bytes.subarray(dataStart + featureBytes));
    result.labels = labels;
  }
  return result;
}

async function writeCache(file: string, header: ReturnType<typeof cacheHeader>, embeddings: Embeddings): Promise<void> {
  let json = JSON.stringify(header);
  json += ' '.repeat((4 - ((16 + Buffer.byteLength(json)) % 4)) % 4); // float data 4-byte aligned
  const head = Buffer.alloc(16);
  head.write(CACHE_MAGIC, 0, 'latin1');
  head.writeUInt32LE(Buffer.byteLength(json), 8);
  head.writeUInt32LE(1, 12); // format version
  const parts = [head, Buffer.from(json), Buffer.from(embeddings.features.buffer, embeddings.features.byteOffset,
    embeddings.features.byteLength)];
  if (embeddings.labels) {
    parts.push(Buffer.from(embeddings.labels.buffer, embeddings.labels.byteOffset, embeddings.labels.byteLength));
  }
  await writeFileAtomic(file, Buffer.concat(parts));
}

// Features of `dataset` under `key`, from the cache when it matches, else computed and cached.
export async function cachedFeatures(runDir: string, key: string, split: string, dataset: DatasetLike,
  view: AugmentConfig | null, dim: number, compute: () => Promise<Embeddings>): Promise<Embeddings & { cached: boolean }> {
  const file = featureCacheFile(runDir, key, split);
  const header = cacheHeader(key, dataset, view, dim);
  const hit = await readCache(file, header);
  if (hit) return { ...hit, labels: hit.labels ?? dataset.labels, cached: true };
  const computed = await compute();
  await writeCache(file, header, computed);
  return { ...computed, cached: false };
}

// ---- writers ----

type NpyArray = Float32Array | Int32Array;

function npyBytes(array: NpyArray, shape: number[]): Buffer {
  const descr = array instanceof Float32Array ? '<f4' : '<i4';
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64 (NPY 1.0).
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = `${header}${' '.repeat(total - 10 - header.length - 1)}\n`;
  if (header.length > 65535) throw new Error('NPY header too long');
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'),
    Buffer.from(array.buffer, array.byteOffset, array.byteLength)]);
}

// Writes one array as NumPy .npy (version 1.0, little-endian, C order).
export async function writeNpy(file: string, array: NpyArray, shape: number[]): Promise<void> {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== array.length) throw new Error(`writeNpy: shape [${shape.join(', ')}] holds ${count} values, array ${array.length}`);
  await writeFileAtomic(file, npyBytes(array, shape));
}

// Reads float32 tensors `names` of a safetensors file; errors name the file and the tensor.
export async function readSafetensorsF32(file: string, names: string[]):
  Promise<Record<string, { data: Float32Array; shape: number[] }>> {
  const bytes = await fs.readFile(file);
  const bad = (problem: string) => new Error(`${file}: ${problem}`);
  const { headerLength, tensors: header } = parseSafetensorsHeader(bytes, file);
  const out: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const name of names) {
    const entry = header[name];
    if (!entry) throw bad(`has no tensor ${name}`);
    if (entry.dtype !== 'F32') throw bad(`tensor ${name} is ${entry.dtype}, expected F32`);
    const [begin, end] = entry.data_offsets;
    const count = entry.shape.reduce((a, b) => a * b, 1);
    if (end - begin !== 4 * count || 8 + headerLength + end > bytes.length) {
      throw bad(`tensor ${name} of shape [${entry.shape.join(', ')}] has a bad data range`);
    }
    const data = new Float32Array(count);
    new Uint8Array(data.buffer).set(bytes.subarray(8 + headerLength + begin, 8 + headerLength + end));
    out[name] = { data, shape: entry.shape };
  }
  return out;
}

// Writes named arrays as safetensors (little-endian, header padded to 8 bytes).
export async function writeSafetensors(file: string, tensors: Record<string, { data: NpyArray; shape: number[] }>,
  metadata: Record<string, string> = {}): Promise<void> {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const payload: Buffer[] = [];
  let offset = 0;
  for (const [name, { data, shape }] of Object.entries(tensors)) {
    const bytes = data.byteLength;
    header[name] = { dtype: data instanceof Float32Array ? 'F32' : 'I32', shape, data_offsets: [offset, offset + bytes] };
    payload.push(Buffer.from(data.buffer, data.byteOffset, bytes));
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  await writeFileAtomic(file, Buffer.concat([length, Buffer.from(json), ...payload]));
}
