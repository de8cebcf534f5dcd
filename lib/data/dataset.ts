// dataset.ts: the in-memory dataset every loader returns, the error for damaged files and the
// file helpers they share. Contract: images are uint8 NHWC, n * height * width * channels
// bytes; labels (when present) are n int32 in [0, classes); every problem with a file throws
// DatasetError whose message starts with the file's path and says what is wrong.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

// What every dataset says about itself; a Dataset adds its pixels, a StreamingDataset a reader.
export interface DatasetInfo {
  // What was loaded, e.g. 'fashion-mnist/train' or 'folder:/data/pets'.
  name: string;
  labels?: Int32Array;
  n: number;
  height: number;
  width: number;
  channels: number;
  classes?: number;
  classNames?: string[];
  // Image folders: the file of each image, in dataset order.
  files?: string[];
}

// A dataset held in memory.
export interface Dataset extends DatasetInfo {
  images: Uint8Array; // NHWC
}

// A dataset too large for memory: its samples are read (and decoded) per batch.
export interface StreamingDataset extends DatasetInfo {
  images?: undefined;
  // The NHWC uint8 pixels of the samples at `indices`, in that order (repeats allowed); a bad
  // file rejects with a DatasetError naming it.
  read(indices: ArrayLike<number>): Promise<Uint8Array>;
}

// What the loader, the trainer and embedding take.
export type DatasetLike = Dataset | StreamingDataset;

export function isStreaming(dataset: DatasetLike): dataset is StreamingDataset {
  return dataset.images === undefined && typeof (dataset as StreamingDataset).read === 'function';
}

// The rows at `indices` of an in-memory dataset, copied into `out` (which holds them).
function gatherRows(dataset: Dataset, indices: ArrayLike<number>, out: Uint8Array): Uint8Array {
  const size = dataset.height * dataset.width * dataset.channels;
  for (let i = 0; i < indices.length; i++) out.set(dataset.images.subarray(indices[i] * size, (indices[i] + 1) * size), i * size);
  return out;
}

// Throws RangeError for the first index that is not a sample of a dataset of n.
export function checkIndices(indices: ArrayLike<number>, n: number, name = 'indices'): void {
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i];
    if (!Number.isInteger(index) || index < 0 || index >= n) {
      throw new RangeError(`Expected ${name}[${i}] between 0 and ${n - 1} but received ${index}`);
    }
  }
}

// The pixels of the samples at `indices`, in that order: copied out of memory (into `into`
// when given, which must hold them), or read from a streaming dataset.
export async function readSamples(dataset: DatasetLike, indices: ArrayLike<number>, into?: Uint8Array): Promise<Uint8Array> {
  if (isStreaming(dataset)) {
    const pixels = await dataset.read(indices);
    const bytes = indices.length * dataset.height * dataset.width * dataset.channels;
    if (!(pixels instanceof Uint8Array) || pixels.length !== bytes) {
      throw new TypeError(`${dataset.name}: read() returned ${pixels instanceof Uint8Array ? `${pixels.length} bytes` : pixels} ` +
        `for ${indices.length} samples of ${dataset.height}x${dataset.width}x${dataset.channels} (expected a Uint8Array of ${bytes})`);
    }
    return pixels;
  }
  checkIndices(indices, dataset.n);
  const bytes = indices.length * dataset.height * dataset.width * dataset.channels;
  return gatherRows(dataset, indices, into ? into.subarray(0, bytes) : new Uint8Array(bytes));
}

// Samples start .. start + count - 1: a view of the memory (no copy), or a read.
export function readRange(dataset: DatasetLike, start: number, count: number): Promise<Uint8Array> {
  if (isStreaming(dataset)) return readSamples(dataset, Int32Array.from({ length: count }, (_, i) => start + i));
  const size = dataset.height * dataset.width * dataset.channels;
  return Promise.resolve(dataset.images.subarray(start * size, (start + count) * size));
}

// A streaming dataset read whole into memory (what needs every pixel at once: the pixel
// baseline); an in-memory one as it is.
export async function inMemory(dataset: DatasetLike): Promise<Dataset> {
  if (!isStreaming(dataset)) return dataset;
  const images = await readRange(dataset, 0, dataset.n);
  const { read: _read, images: _images, ...info } = dataset;
  return { ...info, images };
}

// The central `fraction` of every image (sides rounded, offsets floored: torchvision's
// CenterCrop), cropped as samples are read; the dataset itself when fraction is 1. The
// test-time center crop of BYOL.md's evaluation (0.875 = 224 of 256) is this followed by a
// resize to the training size.
export function centerCrop(dataset: DatasetLike, fraction: number): DatasetLike {
  if (!(typeof fraction === 'number' && fraction > 0 && fraction <= 1)) {
    throw new RangeError(`Expected centerCrop in (0, 1] but received ${fraction}`);
  }
  if (fraction === 1) return dataset;
  const { height, width, channels } = dataset;
  const h = Math.max(1, Math.round(height * fraction));
  const w = Math.max(1, Math.round(width * fraction));
  const top = Math.floor((height - h) / 2);
  const left = Math.floor((width - w) / 2);
  const { images: _images, read: _read, ...info } = dataset as StreamingDataset;
  return {
    ...info, name: `${dataset.name}[center ${fraction}]`, height: h, width: w,
    read: async (indices: ArrayLike<number>) => {
      const full = await readSamples(dataset, indices);
      const out = new Uint8Array(indices.length * h * w * channels);
      const row = w * channels;
      for (let i = 0; i < indices.length; i++) {
        for (let y = 0; y < h; y++) {
          const from = ((i * height + top + y) * width + left) * channels;
          out.set(full.subarray(from, from + row), (i * h + y) * row);
        }
      }
      return out;
    },
  };
}

export class DatasetError extends Error {
  readonly file: string;
  constructor(file: string, problem: string, options?: { cause?: unknown }) {
    super(`${file}: ${problem}`, options);
    this.name = 'DatasetError';
    this.file = file;
  }
}

export function describeErrno(error: unknown): string {
  const code = (error as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return 'file not found';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory, expected a file';
  return error instanceof Error ? error.message : String(error);
}

// The size of a file, or DatasetError (missing, not a regular file).
export async function fileSize(file: string): Promise<number> {
  let stat;
  try {
    stat = await fs.stat(file);
  } catch (error) {
    throw new DatasetError(file, describeErrno(error), { cause: error });
  }
  if (!stat.isFile()) throw new DatasetError(file, 'is not a regular file');
  return stat.size;
}

// Reads `length` bytes from `offset` (default: the whole file). Reads in chunks into one
// buffer, so files above 2 GiB (STL-10's unlabeled split) work where fs.readFile refuses.
export async function readBytes(file: string, offset = 0, length?: number): Promise<Uint8Array> {
  const size = await fileSize(file);
  const want = length ?? size - offset;
  if (offset + want > size) {
    throw new DatasetError(file, `truncated: expected at least ${offset + want} bytes but the file has ${size}`);
  }
  const out = new Uint8Array(want);
  let handle;
  try {
    handle = await fs.open(file, 'r');
    let done = 0;
    while (done < want) {
      const chunk = Math.min(want - done, 1 << 28);
      const { bytesRead } = await handle.read(out, done, chunk, offset + done);
      if (bytesRead === 0) throw new Error(`unexpected end of file after ${offset + done} bytes`);
      done += bytesRead;
    }
  } catch (error) {
    if (error instanceof DatasetError) throw error;
    throw new DatasetError(file, `read failed: ${describeErrno(error)}`, { cause: error });
  } finally {
    await handle?.close();
  }
  return out;
}

// The first of `candidates` that exists, or DatasetError naming the first and listing the rest.
export async function firstExisting(candidates: string[]): Promise<string> {
  for (const file of candidates) {
    try {
      const stat = await fs.stat(file);
      if (stat.isFile()) return file;
    } catch {
      // try the next name
    }
  }
  const others = candidates.slice(1);
  throw new DatasetError(candidates[0], `file not found${others.length ? ` (also tried ${others.join(', ')})` : ''}`);
}

// Throws DatasetError for the first label outside [0, classes).
export function checkLabels(file: string, labels: Int32Array, classes: number, offset = 0): void {
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i];
    if (label < 0 || label >= classes) {
      throw new DatasetError(file, `label ${label} of sample ${offset + i} is outside [0, ${classes})`);
    }
  }
}

// Where a dataset's files are: `dir` itself when it holds `probe`, else its conventional
// subfolder when that exists (the layout of the official archives), else `dir` (so that the
// missing-file error names the file the user most likely meant).
export async function resolveDatasetDir(dir: string, subfolder: string, probe: string): Promise<string> {
  const exists = async (p: string, directory: boolean) => {
    try {
      const stat = await fs.stat(p);
      return directory ? stat.isDirectory() : stat.isFile();
    } catch {
      return false;
    }
  };
  if (await exists(path.join(dir, probe), false)) return dir;
  if (await exists(path.join(dir, subfolder), true)) return path.join(dir, subfolder);
  return dir;
}

// Reads an optional one-name-per-line file (class names shipped with CIFAR and STL-10).
export async function readNames(file: string, expected: number): Promise<string[] | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  const names = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line.length > 0);
  if (names.length !== expected) {
    throw new DatasetError(file, `expected ${expected} class names, one per line, but found ${names.length}`);
  }
  return names;
}

// The samples at `indices` as a new dataset: pixels and labels copied for an in-memory one; for
// a streaming one, a streaming view that maps its reads through `indices`.
export function subset(dataset: Dataset, indices: ArrayLike<number>, name?: string): Dataset;
export function subset(dataset: StreamingDataset, indices: ArrayLike<number>, name?: string): StreamingDataset;
export function subset(dataset: DatasetLike, indices: ArrayLike<number>, name?: string): DatasetLike;
export function subset(dataset: DatasetLike, indices: ArrayLike<number>, name = `${dataset.name}[subset]`): DatasetLike {
  checkIndices(indices, dataset.n);
  const info: DatasetInfo = { ...dataset, name, n: indices.length };
  delete (info as Partial<Dataset>).images;
  delete (info as Partial<StreamingDataset>).read;
  if (dataset.labels) info.labels = Int32Array.from(indices, (index) => dataset.labels![index]);
  else delete info.labels;
  if (dataset.files) info.files = Array.from(indices, (index) => dataset.files![index]);
  if (isStreaming(dataset)) {
    const map = Int32Array.from(indices);
    return {
      ...info,
      read: async (rows: ArrayLike<number>) => {
        checkIndices(rows, map.length);
        return dataset.read(Int32Array.from(rows, (row) => map[row]));
      },
    };
  }
  const images = gatherRows(dataset, indices, new Uint8Array(indices.length * dataset.height * dataset.width * dataset.channels));
  return { ...info, images };
}

// Checks the invariants of a dataset built elsewhere (the loader calls this); throws a
// TypeError naming the field. A StreamingDataset passes only where `streaming` allows it.
export function validateDataset(dataset: unknown, name?: string): Dataset;
export function validateDataset(dataset: unknown, name: string, streaming: true): DatasetLike;
export function validateDataset(dataset: unknown, name = 'dataset', streaming = false): DatasetLike {
  const d = dataset as DatasetLike;
  if (typeof d !== 'object' || d === null) throw new TypeError(`Expected a Dataset for ${name} but received ${d}`);
  for (const key of ['n', 'height', 'width', 'channels'] as const) {
    if (!Number.isSafeInteger(d[key]) || d[key] < (key === 'n' ? 0 : 1)) {
      throw new TypeError(`Expected ${name}.${key} to be a ${key === 'n' ? 'non-negative' : 'positive'} integer but received ${d[key]}`);
    }
  }
  if (d.channels !== 1 && d.channels !== 3) throw new TypeError(`Expected ${name}.channels 1 or 3 but received ${d.channels}`);
  // A StreamingDataset's reads are checked as they come (readSamples).
  const stream = isStreaming(d);
  if (stream && !streaming) {
    throw new TypeError(`Expected ${name} in memory but received a StreamingDataset (${d.name}); read it whole with inMemory()`);
  }
  if (!stream && (!(d.images instanceof Uint8Array) || d.images.length !== d.n * d.height * d.width * d.channels)) {
    throw new TypeError(`Expected ${name}.images to be a Uint8Array of n*height*width*channels = ` +
      `${d.n * d.height * d.width * d.channels} bytes${streaming ? ' (or a streaming dataset with read())' : ''} ` +
      `but received ${d.images?.length ?? d.images}`);
  }
  if (d.labels !== undefined && (!(d.labels instanceof Int32Array) || d.labels.length !== d.n)) {
    throw new TypeError(`Expected ${name}.labels to be an Int32Array of ${d.n} labels`);
  }
  return d;
}
