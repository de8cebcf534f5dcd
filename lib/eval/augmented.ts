// augmented.ts: linear evaluation as the BYOL authors run it (BYOL.md "Evaluation"): the
// encoder frozen (BatchNorm in eval mode) and a linear classifier trained by SGD (Nesterov
// 0.9, cosine LR, no weight decay) on the features of freshly augmented training images,
// random resized crop + horizontal flip, drawn anew every epoch; scored on the test split's
// deterministic features (the whole image at the training size, as embedDataset computes).
// Contract: the augmentation parameters come from Philox keyed by (seed, epoch, sample, view 0)
// and the minibatch order from permutation(seed, epoch), so a seed gives the same result on
// every run; with the augmentation turned off (cropScale [1, 1], flipP 0) the result equals
// evaluateLinear on embedDataset's features to the bit; standardization uses the mean and
// std of the deterministic training features.
import { type AugmentConfig, type AugmentConfigOptions, type AugmentedBatch, augmentBatch, augmentConfig } from '../augment';
import { type DatasetLike, readSamples, validateDataset } from '../data';
import { permutation } from '../data/random';
import { resolveDevice } from '../device';
import { asTrainableModel } from '../train/model';
import {
  ByolOptionError, integer, invalid, isPlainObject, knownKeys, number, numberRange, withDefault,
} from '../validate';
import { type FeatureEncoder, defaultView, deterministicView, embedFeatures } from './embed';
import {
  type LinearProbeOptions, type LinearProbeResult, SgdLinearHead, accuracy, featureStats, probeLearningRate,
  resolveLinearOptions, standardized,
} from './linear';

export interface AugmentedLinearOptions extends Omit<LinearProbeOptions, 'worker' | 'epochs'> {
  epochs?: number; // default 80 (the reference's ImageNet linear evaluation)
  // Random resized crop of the training views: area fraction and aspect ratio ranges.
  cropScale?: [number, number]; // default [0.08, 1]
  cropRatio?: [number, number]; // default [3/4, 4/3]
  flipP?: number; // horizontal flip probability, default 0.5
  // The deterministic preprocessing (test features, and the training views before the crop
  // and flip): default as embedDataset's; for a run, evalView(config, dataset).
  view?: AugmentConfig | AugmentConfigOptions;
  // Deterministic features of both splits when already computed (e.g. cached), else embedded.
  features?: { train: Float32Array; test: Float32Array };
  signal?: AbortSignal;
  onEpoch?: (epoch: number, epochs: number, trainLoss: number) => void;
}

export interface AugmentedLinearResult extends LinearProbeResult {
  augment: { cropScale: [number, number]; cropRatio: [number, number]; flipP: number };
}

const OPTION_KEYS = ['epochs', 'batchSize', 'lr', 'momentum', 'nesterov', 'weightDecay', 'seed', 'standardize',
  'cropScale', 'cropRatio', 'flipP', 'view', 'features', 'signal', 'onEpoch'];

function labelsOf(dataset: DatasetLike, name: string): Int32Array {
  if (!dataset.labels) throw new ByolOptionError(`Linear evaluation needs labels, but ${name} (${dataset.name}) has none`);
  return dataset.labels;
}

// The probe on augmented views with the encoder of a Byol model (or a trainer's model);
// rejects (never throws) on bad input, naming the field.
export async function evaluateLinearAugmented(model: unknown, data: { train: DatasetLike; test: DatasetLike },
  options: AugmentedLinearOptions = {}): Promise<AugmentedLinearResult> {
  return trainAugmentedProbe(asTrainableModel(model), data, options);
}

export async function trainAugmentedProbe(encoder: FeatureEncoder, data: { train: DatasetLike; test: DatasetLike },
  options: AugmentedLinearOptions = {}): Promise<AugmentedLinearResult> {
  const started = Date.now();
  if (!isPlainObject(options as unknown)) throw invalid('options', 'object', options);
  knownKeys('options', options as unknown as Record<string, unknown>, OPTION_KEYS);
  if (!isPlainObject(data as unknown)) throw invalid('data', 'object { train: Dataset, test: Dataset }', data);
  knownKeys('data', data as unknown as Record<string, unknown>, ['train', 'test']);
  const { train, test } = data;
  validateDataset(train, 'data.train', true);
  validateDataset(test, 'data.test', true);
  if (train.height !== test.height || train.width !== test.width || train.channels !== test.channels) {
    throw new ByolOptionError(`Expected data.test to have data.train's image shape ${train.height}x${train.width}x` +
      `${train.channels} but it is ${test.height}x${test.width}x${test.channels}`);
  }
  if (train.n === 0) throw new ByolOptionError('Expected data.train to hold at least one sample but it is empty');
  const trainY = labelsOf(train, 'data.train');
  const testY = labelsOf(test, 'data.test');
  const resolved = resolveLinearOptions({
    batchSize: options.batchSize, lr: options.lr, momentum: options.momentum, nesterov: options.nesterov,
    weightDecay: options.weightDecay, seed: options.seed, standardize: options.standardize,
  });
  const epochs = withDefault(options.epochs, 80, (v) => integer('options.epochs', v, 1, 100000));
  const cropScale = withDefault<[number, number]>(options.cropScale, [0.08, 1],
    (v) => numberRange('options.cropScale', v, 0, 1, true));
  const cropRatio = withDefault<[number, number]>(options.cropRatio, [3 / 4, 4 / 3],
    (v) => numberRange('options.cropRatio', v, 0, 100, true));
  const flipP = withDefault(options.flipP, 0.5, (v) => number('options.flipP', v, 0, 1));
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw invalid('options.signal', 'AbortSignal', options.signal);
  }
  if (options.onEpoch !== undefined && typeof options.onEpoch !== 'function') {
    throw invalid('options.onEpoch', 'function', options.onEpoch);
  }
  const { height, width, channels } = train;
  const baseView = options.view === undefined
    ? defaultView(train)
    : deterministicView(augmentConfig(options.view as AugmentConfigOptions, 'options.view'), height, width);
  const trainView = augmentConfig({ ...baseView, cropScale, cropRatio, flipP });
  const device = resolveDevice(encoder.device, 'model.device');
  const dim = encoder.featureDim;
  let classes = train.classes ?? 0;
  for (const set of [trainY, testY]) for (const label of set) classes = Math.max(classes, label + 1);

  // Deterministic features: the standardization statistics and the test score.
  let clean = options.features;
  if (clean !== undefined) {
    if (!isPlainObject(clean) || !(clean.train instanceof Float32Array) || !(clean.test instanceof Float32Array)) {
      throw invalid('options.features', '{ train: Float32Array, test: Float32Array }', clean);
    }
    if (clean.train.length !== train.n * dim || clean.test.length !== test.n * dim) {
      throw new ByolOptionError(`Expected options.features to hold ${train.n} x ${dim} (train) and ${test.n} x ${dim} ` +
        `(test) floats but received ${clean.train.length} and ${clean.test.length}`);
    }
  } else {
    const embed = (dataset: DatasetLike) => embedFeatures(encoder, dataset, { view: baseView, batchSize: resolved.batchSize,
      signal: options.signal });
    clean = { train: (await embed(train)).features, test: (await embed(test)).features };
  }
  let trainX = clean.train;
  let testX = clean.test;
  let stats: { mean: Float64Array; invStd: Float64Array } | null = null;
  if (resolved.standardize) {
    stats = featureStats(trainX, dim);
    trainX = standardized(trainX, dim, stats.mean, stats.invStd);
    testX = standardized(testX, dim, stats.mean, stats.invStd);
  }

  const n = train.n;
  const size = height * width * channels;
  const batch = Math.min(resolved.batchSize, n);
  const totalSteps = Math.ceil(n / batch) * epochs;
  const head = new SgdLinearHead(dim, classes, resolved);
  // Two gather buffers: the next batch is gathered and augmented while this one is embedded.
  const buffers = [new Uint8Array(batch * size), new Uint8Array(batch * size)];
  const identity = Int32Array.from({ length: batch }, (_, i) => i);
  const batchLabels = new Int32Array(batch);
  let step = 0;
  let lastEpochLoss = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    const order = permutation(n, resolved.seed, epoch);
    const augmentAt = async (start: number, buffer: Uint8Array) => {
      const count = Math.min(batch, n - start);
      const images = await readSamples(train, order.subarray(start, start + count), buffer);
      return augmentBatch(images, null, {
        config: trainView, seed: resolved.seed, epoch, indices: order.subarray(start, start + count), view: 0, device,
        shape: [count, height, width, channels],
      });
    };
    let lossSum = 0;
    let pending: Promise<AugmentedBatch> | null = augmentAt(0, buffers[0]);
    try {
      for (let start = 0, k = 0; start < n; start += batch, k++) {
        const count = Math.min(batch, n - start);
        const views: AugmentedBatch = await pending!;
        pending = null;
        let rows: Float32Array;
        try {
          if (options.signal?.aborted) throw options.signal.reason ?? new Error('linear evaluation aborted');
          if (start + batch < n) pending = augmentAt(start + batch, buffers[(k + 1) % 2]);
          rows = await encoder.embed(views.images);
        } finally {
          views.images.dispose();
        }
        if (rows.length !== count * dim) {
          throw new Error(`model.embed returned ${rows.length} values for ${count} images of ${dim} features`);
        }
        if (stats) standardized(rows, dim, stats.mean, stats.invStd, rows);
        for (let i = 0; i < count; i++) batchLabels[i] = trainY[order[start + i]];
        lossSum += head.step(rows, identity, 0, count, batchLabels, probeLearningRate(resolved.lr, step, totalSteps));
        step++;
      }
    } finally {
      // A failed step leaves the next batch's views in flight: free them when they arrive.
      pending?.then((views) => views.images.dispose(), () => undefined);
    }
    lastEpochLoss = lossSum / n;
    options.onEpoch?.(epoch + 1, epochs, lastEpochLoss);
  }
  const scored = accuracy(testX, testY, head.weights, head.bias, dim, classes);
  const trained = accuracy(trainX, trainY, head.weights, head.bias, dim, classes);
  return {
    top1: scored.top1, top5: scored.top5, trainTop1: trained.top1, trainLoss: lastEpochLoss, epochs,
    n: { train: n, test: test.n }, dim, classes, seconds: (Date.now() - started) / 1000,
    augment: { cropScale, cropRatio, flipP },
  };
}
