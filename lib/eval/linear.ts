// linear.ts: linear evaluation on frozen features (BYOL.md "Evaluation"): multinomial logistic
// regression on standardized features, trained with SGD + Nesterov momentum 0.9 and a cosine
// learning rate over epochs, no weight decay by default; reports top-1/top-5 on the test split.
// Contract: evaluateLinear() validates its inputs (messages name the field), runs the
// arithmetic in a worker thread (the event loop stays free) and is deterministic for a seed;
// trainLinearProbe() is the same computation, synchronous, for the worker and for tests.
import { permutation } from '../data/random';
import { native } from '../native';
import { ByolOptionError, boolean, integer, invalid, isPlainObject, knownKeys, number, oneOf, withDefault } from '../validate';
import { runInWorker } from './pool';

// Features of a labeled split: n rows of `dim` floats, row-major.
export interface FeatureSet {
  features: Float32Array;
  labels: Int32Array;
}

export interface ProbeData {
  train: FeatureSet;
  test: FeatureSet;
  dim: number;
  // Number of classes (default: 1 + the largest label seen).
  classes?: number;
}

export interface LinearProbeOptions {
  epochs?: number; // default 100
  batchSize?: number; // default 256
  // Peak learning rate of the cosine schedule (on standardized features). Default 0.1.
  lr?: number;
  momentum?: number; // default 0.9 (Nesterov)
  nesterov?: boolean; // default true
  weightDecay?: number; // default 0 (BYOL.md: no weight decay)
  seed?: number; // minibatch order; default 0
  // Subtract the train mean and divide by the train std of each dimension. Default true.
  standardize?: boolean;
  // 'native' (default): each minibatch step runs in the addon (C++, the same double-precision
  // sums in the same order, on the CPU backend's threads); 'js': the JavaScript reference.
  implementation?: 'native' | 'js';
  // false: compute on the calling thread (blocks the event loop). Default true.
  worker?: boolean;
}

export interface LinearProbeResult {
  top1: number; // fraction of test samples whose label is the highest-scoring class
  top5: number; // ... among the 5 highest (1 when there are at most 5 classes)
  trainTop1: number;
  trainLoss: number; // mean cross-entropy over the last epoch
  epochs: number;
  n: { train: number; test: number };
  dim: number;
  classes: number;
  seconds: number;
}

export type ResolvedLinearOptions = Required<Omit<LinearProbeOptions, 'worker'>>;

const OPTION_KEYS = ['epochs', 'batchSize', 'lr', 'momentum', 'nesterov', 'weightDecay', 'seed', 'standardize',
  'implementation', 'worker'];

export function resolveLinearOptions(options: LinearProbeOptions = {}): ResolvedLinearOptions & { worker: boolean } {
  if (!isPlainObject(options)) throw invalid('options', 'object', options);
  knownKeys('options', options, OPTION_KEYS);
  return {
    epochs: withDefault(options.epochs, 100, (v) => integer('options.epochs', v, 1, 100000)),
    batchSize: withDefault(options.batchSize, 256, (v) => integer('options.batchSize', v, 1, 1 << 20)),
    lr: withDefault(options.lr, 0.1, (v) => number('options.lr', v, 0, 1e4)),
    momentum: withDefault(options.momentum, 0.9, (v) => number('options.momentum', v, 0, 0.9999)),
    nesterov: withDefault(options.nesterov, true, (v) => boolean('options.nesterov', v)),
    weightDecay: withDefault(options.weightDecay, 0, (v) => number('options.weightDecay', v, 0, 10)),
    seed: withDefault(options.seed, 0, (v) => integer('options.seed', v, 0, Number.MAX_SAFE_INTEGER)),
    standardize: withDefault(options.standardize, true, (v) => boolean('options.standardize', v)),
    implementation: withDefault(options.implementation, 'native' as const,
      (v) => oneOf('options.implementation', v, ['native', 'js'] as const)),
    worker: withDefault(options.worker, true, (v) => boolean('options.worker', v)),
  };
}

function checkSet(name: string, set: unknown, dim: number): FeatureSet {
  if (!isPlainObject(set)) throw invalid(name, 'object { features: Float32Array, labels: Int32Array }', set);
  const { features, labels } = set as unknown as FeatureSet;
  if (!(features instanceof Float32Array)) throw invalid(`${name}.features`, 'Float32Array', features);
  if (!(labels instanceof Int32Array)) throw invalid(`${name}.labels`, 'Int32Array', labels);
  if (features.length !== labels.length * dim) {
    throw new ByolOptionError(`Expected ${name}.features to hold labels.length * dim = ${labels.length} * ${dim} = ` +
      `${labels.length * dim} floats but received ${features.length}`);
  }
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] < 0) throw invalid(`${name}.labels[${i}]`, 'integer >= 0', labels[i]);
  }
  return { features, labels };
}

// Validates probe data; returns the number of classes.
export function checkProbeData(data: ProbeData): number {
  if (!isPlainObject(data)) throw invalid('data', 'object { train, test, dim }', data);
  knownKeys('data', data as unknown as Record<string, unknown>, ['train', 'test', 'dim', 'classes']);
  const dim = integer('data.dim', data.dim, 1, 1 << 24);
  const train = checkSet('data.train', data.train, dim);
  const test = checkSet('data.test', data.test, dim);
  if (train.labels.length === 0) throw new ByolOptionError('Expected data.train to hold at least one sample but it is empty');
  let maxLabel = 0;
  for (const set of [train, test]) for (const label of set.labels) maxLabel = Math.max(maxLabel, label);
  if (data.classes === undefined) return maxLabel + 1;
  const classes = integer('data.classes', data.classes, 1, 1 << 20);
  if (maxLabel >= classes) {
    throw new ByolOptionError(`Expected labels below data.classes = ${classes} but found label ${maxLabel}`);
  }
  return classes;
}

// Per-dimension mean and 1/std of the training features (std floor 1e-6: constant
// dimensions become 0 instead of NaN).
export function featureStats(features: Float32Array, dim: number): { mean: Float64Array; invStd: Float64Array } {
  const n = features.length / dim;
  const mean = new Float64Array(dim);
  const sq = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    const row = i * dim;
    for (let d = 0; d < dim; d++) mean[d] += features[row + d];
  }
  for (let d = 0; d < dim; d++) mean[d] /= n;
  for (let i = 0; i < n; i++) {
    const row = i * dim;
    for (let d = 0; d < dim; d++) {
      const x = features[row + d] - mean[d];
      sq[d] += x * x;
    }
  }
  const invStd = new Float64Array(dim);
  for (let d = 0; d < dim; d++) invStd[d] = 1 / Math.max(1e-6, Math.sqrt(sq[d] / n));
  return { mean, invStd };
}

// (x - mean) * invStd per dimension, into `out` (a new array by default).
export function standardized(features: Float32Array, dim: number, mean: Float64Array, invStd: Float64Array,
  out: Float32Array = new Float32Array(features.length)): Float32Array {
  for (let i = 0; i < features.length; i += dim) {
    for (let d = 0; d < dim; d++) out[i + d] = (features[i + d] - mean[d]) * invStd[d];
  }
  return out;
}

// logits[r * classes + c] = W[c] . x[row r] + b[c] for `count` rows starting at `start`
// (of `rows` when given, else consecutive). Four rows at a time: each weight is loaded once
// per four multiply-adds, which is what bounds this loop in JavaScript.
function computeLogits(logits: Float64Array, x: Float32Array, rows: Int32Array | null, count: number, start: number,
  weights: Float64Array, bias: Float64Array, dim: number, classes: number): void {
  let r = 0;
  for (; r + 3 < count; r += 4) {
    const x0 = (rows ? rows[start + r] : start + r) * dim;
    const x1 = (rows ? rows[start + r + 1] : start + r + 1) * dim;
    const x2 = (rows ? rows[start + r + 2] : start + r + 2) * dim;
    const x3 = (rows ? rows[start + r + 3] : start + r + 3) * dim;
    for (let c = 0; c < classes; c++) {
      const w = c * dim;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let d = 0; d < dim; d++) {
        const wd = weights[w + d];
        s0 += wd * x[x0 + d];
        s1 += wd * x[x1 + d];
        s2 += wd * x[x2 + d];
        s3 += wd * x[x3 + d];
      }
      logits[r * classes + c] = s0 + bias[c];
      logits[(r + 1) * classes + c] = s1 + bias[c];
      logits[(r + 2) * classes + c] = s2 + bias[c];
      logits[(r + 3) * classes + c] = s3 + bias[c];
    }
  }
  for (; r < count; r++) {
    const x0 = (rows ? rows[start + r] : start + r) * dim;
    for (let c = 0; c < classes; c++) {
      const w = c * dim;
      let s0 = 0;
      for (let d = 0; d < dim; d++) s0 += weights[w + d] * x[x0 + d];
      logits[r * classes + c] = s0 + bias[c];
    }
  }
}

// gradW[c] += sum_r dlogits[r, c] * x[row r], four rows per pass over gradW (one load and
// store of the gradient per four multiply-adds).
function accumulateGradient(gradW: Float64Array, dlogits: Float64Array, x: Float32Array, rows: Int32Array,
  count: number, start: number, dim: number, classes: number): void {
  let r = 0;
  for (; r + 3 < count; r += 4) {
    const x0 = rows[start + r] * dim;
    const x1 = rows[start + r + 1] * dim;
    const x2 = rows[start + r + 2] * dim;
    const x3 = rows[start + r + 3] * dim;
    for (let c = 0; c < classes; c++) {
      const g0 = dlogits[r * classes + c];
      const g1 = dlogits[(r + 1) * classes + c];
      const g2 = dlogits[(r + 2) * classes + c];
      const g3 = dlogits[(r + 3) * classes + c];
      const w = c * dim;
      for (let d = 0; d < dim; d++) {
        gradW[w + d] += g0 * x[x0 + d] + g1 * x[x1 + d] + g2 * x[x2 + d] + g3 * x[x3 + d];
      }
    }
  }
  for (; r < count; r++) {
    const x0 = rows[start + r] * dim;
    for (let c = 0; c < classes; c++) {
      const g0 = dlogits[r * classes + c];
      const w = c * dim;
      for (let d = 0; d < dim; d++) gradW[w + d] += g0 * x[x0 + d];
    }
  }
}

// Rank of the true class among the logits of one row (0 = top-1).
function rankOfLabel(logits: Float64Array, offset: number, classes: number, label: number): number {
  const target = logits[offset + label];
  let rank = 0;
  for (let c = 0; c < classes; c++) {
    const v = logits[offset + c];
    // Ties count against the sample: a constant classifier must not score 100%.
    if (v > target || (v === target && c < label)) rank++;
  }
  return rank;
}

// Top-1 / top-5 of the linear classifier (weights [classes, dim] row-major, as PyTorch's
// Linear.weight) on features x [n, dim].
export function accuracy(x: Float32Array, labels: Int32Array, weights: Float64Array, bias: Float64Array, dim: number,
  classes: number): { top1: number; top5: number } {
  const n = labels.length;
  if (n === 0) return { top1: 0, top5: 0 };
  const block = 256;
  const logits = new Float64Array(block * classes);
  let top1 = 0;
  let top5 = 0;
  for (let start = 0; start < n; start += block) {
    const count = Math.min(block, n - start);
    computeLogits(logits, x, null, count, start, weights, bias, dim, classes);
    for (let r = 0; r < count; r++) {
      const rank = rankOfLabel(logits, r * classes, classes, labels[start + r]);
      if (rank === 0) top1++;
      if (rank < 5) top5++;
    }
  }
  return { top1: top1 / n, top5: top5 / n };
}

// A linear classifier [classes, dim] trained by minibatch SGD (PyTorch's, with optional
// Nesterov momentum and weight decay) on softmax cross-entropy: the state and one step of
// both probes (frozen features here, augmented views in augmented.ts).
export class SgdLinearHead {
  readonly weights: Float64Array;
  readonly bias: Float64Array;
  readonly #velocityW: Float64Array;
  readonly #velocityB: Float64Array;
  readonly #gradW: Float64Array;
  readonly #gradB: Float64Array;
  #logits: Float64Array;

  constructor(readonly dim: number, readonly classes: number,
    readonly options: Pick<ResolvedLinearOptions, 'momentum' | 'nesterov' | 'weightDecay' | 'implementation'>) {
    this.weights = new Float64Array(classes * dim);
    this.bias = new Float64Array(classes);
    this.#velocityW = new Float64Array(classes * dim);
    this.#velocityB = new Float64Array(classes);
    this.#gradW = new Float64Array(classes * dim);
    this.#gradB = new Float64Array(classes);
    this.#logits = new Float64Array(0);
  }

  // One step on rows rows[start .. start + count) of x (their labels: labels[rows[i]]) at
  // learning rate lr; returns the summed cross-entropy of those rows before the update.
  step(x: Float32Array, rows: Int32Array, start: number, count: number, labels: Int32Array, lr: number): number {
    const { dim, classes, weights, bias } = this;
    const { momentum, nesterov, weightDecay } = this.options;
    if (this.options.implementation === 'native') {
      return native.sgdLinearStep(weights, bias, this.#velocityW, this.#velocityB, x, rows, start, count, labels, dim,
        classes, lr, momentum, nesterov, weightDecay);
    }
    if (this.#logits.length < count * classes) this.#logits = new Float64Array(count * classes);
    const logits = this.#logits;
    const gradW = this.#gradW;
    const gradB = this.#gradB;
    computeLogits(logits, x, rows, count, start, weights, bias, dim, classes);
    gradW.fill(0);
    gradB.fill(0);
    let lossSum = 0;
    // Softmax cross-entropy: logits become dlogits = (softmax - onehot) / count in place.
    for (let r = 0; r < count; r++) {
      const o = r * classes;
      let max = -Infinity;
      for (let c = 0; c < classes; c++) max = Math.max(max, logits[o + c]);
      let sum = 0;
      for (let c = 0; c < classes; c++) {
        const e = Math.exp(logits[o + c] - max);
        logits[o + c] = e;
        sum += e;
      }
      const label = labels[rows[start + r]];
      lossSum += Math.log(sum) - Math.log(logits[o + label]);
      for (let c = 0; c < classes; c++) {
        const g = (logits[o + c] / sum - (c === label ? 1 : 0)) / count;
        logits[o + c] = g;
        gradB[c] += g;
      }
    }
    accumulateGradient(gradW, logits, x, rows, count, start, dim, classes);
    // PyTorch's SGD: v = mu v + g; update = g + mu v (Nesterov) or v.
    const velocityW = this.#velocityW;
    const velocityB = this.#velocityB;
    for (let i = 0; i < weights.length; i++) {
      const g = gradW[i] + weightDecay * weights[i];
      const v = momentum * velocityW[i] + g;
      velocityW[i] = v;
      weights[i] -= lr * (nesterov ? g + momentum * v : v);
    }
    for (let c = 0; c < classes; c++) {
      const g = gradB[c];
      const v = momentum * velocityB[c] + g;
      velocityB[c] = v;
      bias[c] -= lr * (nesterov ? g + momentum * v : v);
    }
    return lossSum;
  }
}

// The cosine learning rate of step k of K (no warmup), as both probes use it.
export function probeLearningRate(peak: number, step: number, totalSteps: number): number {
  return 0.5 * peak * (1 + Math.cos((Math.PI * step) / totalSteps));
}

// The probe, synchronously. `classes` as checkProbeData returns it.
export function trainLinearProbe(data: ProbeData, classes: number, options: ResolvedLinearOptions): LinearProbeResult {
  const started = Date.now();
  const { dim } = data;
  let trainX = data.train.features;
  let testX = data.test.features;
  if (options.standardize) {
    const { mean, invStd } = featureStats(trainX, dim);
    trainX = standardized(trainX, dim, mean, invStd);
    testX = standardized(testX, dim, mean, invStd);
  }
  const trainY = data.train.labels;
  const n = trainY.length;
  const head = new SgdLinearHead(dim, classes, options);
  const batch = Math.min(options.batchSize, n);
  const totalSteps = Math.ceil(n / batch) * options.epochs;
  let step = 0;
  let lastEpochLoss = 0;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    const order = permutation(n, options.seed, epoch);
    let lossSum = 0;
    for (let start = 0; start < n; start += batch) {
      const count = Math.min(batch, n - start);
      lossSum += head.step(trainX, order, start, count, trainY, probeLearningRate(options.lr, step, totalSteps));
      step++;
    }
    lastEpochLoss = lossSum / n;
  }
  const test = accuracy(testX, data.test.labels, head.weights, head.bias, dim, classes);
  const train = accuracy(trainX, trainY, head.weights, head.bias, dim, classes);
  return {
    top1: test.top1, top5: test.top5, trainTop1: train.top1, trainLoss: lastEpochLoss, epochs: options.epochs,
    n: { train: n, test: data.test.labels.length }, dim, classes, seconds: (Date.now() - started) / 1000,
  };
}

// Linear evaluation; rejects (never throws) on bad input, naming the field.
export async function evaluateLinear(data: ProbeData, options: LinearProbeOptions = {}): Promise<LinearProbeResult> {
  const { worker, ...resolved } = resolveLinearOptions(options);
  const classes = checkProbeData(data);
  if (!worker) return trainLinearProbe(data, classes, resolved);
  const plain: ProbeData = { train: data.train, test: data.test, dim: data.dim };
  return runInWorker<LinearProbeResult>({ task: 'linear', data: plain, classes, options: resolved });
}
