// knn.ts: the weighted k-nearest-neighbour monitor of InstDisc (Wu et al. 2018) as
// reproductions of BYOL use it (solo-learn, lightly): cosine similarity between L2-normalized
// features, the k most similar training samples vote for their class with weight exp(sim / T).
// Contract: evaluateKnn() validates its inputs and normalizes once. The native implementation
// (default) computes the similarities of blocks of test rows with oneDNN's GEMM on the addon's
// compute thread (native/cpu/knn.cc: ~64 MiB of similarities at a time). The JavaScript one
// (knnBlock, the reference the tests hold the native one to) splits the test rows over worker
// threads that share the training features (SharedArrayBuffer), each holding the similarities
// of 4 test rows at a time. Both choose neighbours with the same heap; their similarities
// differ in rounding only (float32 GEMM against double sums rounded to float32).
import { availableParallelism } from 'node:os';

import { native } from '../native';
import { integer, invalid, isPlainObject, knownKeys, number, oneOf, withDefault } from '../validate';
import { type FeatureSet, type ProbeData, checkProbeData } from './linear';
import { runInWorker } from './pool';

export interface KnnOptions {
  k?: number; // neighbours; default 200 (capped at the training set size)
  temperature?: number; // T of exp(sim / T); default 0.1
  // 'native' (default): oneDNN GEMMs on the CPU backend's threads (setNumThreads). 'js': the
  // JavaScript reference on worker threads.
  implementation?: 'native' | 'js';
  // Worker threads of the 'js' implementation; 0 computes on the calling thread. Default: the
  // number of CPUs.
  threads?: number;
}

export interface ResolvedKnnOptions {
  k: number;
  temperature: number;
}

export interface KnnResult {
  top1: number;
  top5: number;
  k: number;
  temperature: number;
  n: { train: number; test: number };
  dim: number;
  classes: number;
  seconds: number;
}

export interface KnnBlockResult {
  top1: number; // correct counts in the block
  top5: number;
  predictions: Int32Array;
}

// Copies rows into `out` scaled to unit L2 norm (a zero row stays zero).
export function normalizeRows(features: Float32Array, dim: number, out: Float32Array = new Float32Array(features.length)): Float32Array {
  for (let i = 0; i < features.length; i += dim) {
    let sq = 0;
    for (let d = 0; d < dim; d++) sq += features[i + d] * features[i + d];
    const scale = sq > 0 ? 1 / Math.sqrt(sq) : 0;
    for (let d = 0; d < dim; d++) out[i + d] = features[i + d] * scale;
  }
  return out;
}

// Min-heap of the k best (similarity, index) pairs seen so far.
class TopK {
  readonly sims: Float64Array;
  readonly indices: Int32Array;
  size = 0;
  constructor(readonly k: number) {
    this.sims = new Float64Array(k);
    this.indices = new Int32Array(k);
  }

  reset(): void {
    this.size = 0;
  }

  // The smallest kept similarity once full (anything not above it is rejected).
  get floor(): number {
    return this.size < this.k ? -Infinity : this.sims[0];
  }

  push(sim: number, index: number): void {
    const { sims, indices } = this;
    if (this.size < this.k) {
      let i = this.size++;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (sims[parent] <= sim) break;
        sims[i] = sims[parent];
        indices[i] = indices[parent];
        i = parent;
      }
      sims[i] = sim;
      indices[i] = index;
      return;
    }
    if (sim <= sims[0]) return;
    // Replace the root and sift down.
    let i = 0;
    const n = this.size;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && sims[right] < sims[left] ? right : left;
      if (sims[child] >= sim) break;
      sims[i] = sims[child];
      indices[i] = indices[child];
      i = child;
    }
    sims[i] = sim;
    indices[i] = index;
  }
}

// Test rows [start, end) against every training row; features already L2-normalized.
export function knnBlock(train: FeatureSet, test: FeatureSet, dim: number, classes: number, options: ResolvedKnnOptions,
  start: number, end: number): KnnBlockResult {
  const trainX = train.features;
  const trainY = train.labels;
  const testX = test.features;
  const n = trainY.length;
  const k = Math.min(options.k, n);
  const invT = 1 / options.temperature;
  const rowsAtOnce = 4;
  const sims = new Float32Array(rowsAtOnce * n);
  const heap = new TopK(k);
  const scores = new Float64Array(classes);
  const predictions = new Int32Array(end - start);
  let top1 = 0;
  let top5 = 0;
  for (let first = start; first < end; first += rowsAtOnce) {
    const rows = Math.min(rowsAtOnce, end - first);
    // Four test rows against two training rows per pass: 8 multiply-adds per 6 loads, the
    // register blocking that runs fastest in V8 (measured: ~1.3x over 4x1).
    const a0 = first * dim;
    const a1 = (first + Math.min(1, rows - 1)) * dim;
    const a2 = (first + Math.min(2, rows - 1)) * dim;
    const a3 = (first + Math.min(3, rows - 1)) * dim;
    let j = 0;
    for (; j + 1 < n; j += 2) {
      const b = j * dim;
      const e = b + dim;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let t0 = 0;
      let t1 = 0;
      let t2 = 0;
      let t3 = 0;
      for (let d = 0; d < dim; d++) {
        const u = trainX[b + d];
        const v = trainX[e + d];
        const x0 = testX[a0 + d];
        const x1 = testX[a1 + d];
        const x2 = testX[a2 + d];
        const x3 = testX[a3 + d];
        s0 += x0 * u;
        s1 += x1 * u;
        s2 += x2 * u;
        s3 += x3 * u;
        t0 += x0 * v;
        t1 += x1 * v;
        t2 += x2 * v;
        t3 += x3 * v;
      }
      sims[j] = s0;
      sims[n + j] = s1;
      sims[2 * n + j] = s2;
      sims[3 * n + j] = s3;
      sims[j + 1] = t0;
      sims[n + j + 1] = t1;
      sims[2 * n + j + 1] = t2;
      sims[3 * n + j + 1] = t3;
    }
    for (; j < n; j++) {
      const b = j * dim;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let d = 0; d < dim; d++) {
        const u = trainX[b + d];
        s0 += testX[a0 + d] * u;
        s1 += testX[a1 + d] * u;
        s2 += testX[a2 + d] * u;
        s3 += testX[a3 + d] * u;
      }
      sims[j] = s0;
      sims[n + j] = s1;
      sims[2 * n + j] = s2;
      sims[3 * n + j] = s3;
    }
    for (let r = 0; r < rows; r++) {
      heap.reset();
      const base = r * n;
      let floor = -Infinity;
      for (let j = 0; j < n; j++) {
        const s = sims[base + j];
        if (s > floor) {
          heap.push(s, j);
          floor = heap.floor;
        }
      }
      scores.fill(0);
      for (let i = 0; i < heap.size; i++) scores[trainY[heap.indices[i]]] += Math.exp(heap.sims[i] * invT);
      const label = test.labels[first + r];
      let best = 0;
      let rank = 0;
      for (let c = 0; c < classes; c++) {
        if (scores[c] > scores[best]) best = c;
        // Ties count against the sample, as in the linear probe.
        if (scores[c] > scores[label] || (scores[c] === scores[label] && c < label)) rank++;
      }
      predictions[first + r - start] = best;
      if (rank === 0) top1++;
      if (rank < 5) top5++;
    }
  }
  return { top1, top5, predictions };
}

export function resolveKnnOptions(options: KnnOptions = {}):
  ResolvedKnnOptions & { threads: number; implementation: 'native' | 'js' } {
  if (!isPlainObject(options)) throw invalid('options', 'object', options);
  knownKeys('options', options, ['k', 'temperature', 'implementation', 'threads']);
  return {
    k: withDefault(options.k, 200, (v) => integer('options.k', v, 1, 1 << 20)),
    temperature: withDefault(options.temperature, 0.1, (v) => number('options.temperature', v, 1e-4, 1e4)),
    implementation: withDefault(options.implementation, 'native' as const,
      (v) => oneOf('options.implementation', v, ['native', 'js'] as const)),
    threads: withDefault(options.threads, availableParallelism(), (v) => integer('options.threads', v, 0, 256)),
  };
}

function shared(array: Float32Array | Int32Array): Float32Array | Int32Array {
  const buffer = new SharedArrayBuffer(array.byteLength);
  const copy = array instanceof Float32Array ? new Float32Array(buffer) : new Int32Array(buffer);
  copy.set(array as never);
  return copy;
}

// kNN accuracy of the test split; rejects (never throws) on bad input, naming the field.
export async function evaluateKnn(data: ProbeData, options: KnnOptions = {}): Promise<KnnResult> {
  const started = Date.now();
  const { threads, implementation, ...resolved } = resolveKnnOptions(options);
  const classes = checkProbeData(data);
  const { dim } = data;
  const nTest = data.test.labels.length;
  let correct1 = 0;
  let correct5 = 0;
  if (implementation === 'native' && nTest > 0) {
    // Normalized copies: the caller's arrays are left as they are, and nothing else can write
    // to these while the native call reads them.
    const counts = await native.knnClassify(normalizeRows(data.train.features, dim), Int32Array.from(data.train.labels),
      normalizeRows(data.test.features, dim), Int32Array.from(data.test.labels), dim, classes, resolved.k,
      resolved.temperature);
    correct1 = counts.top1;
    correct5 = counts.top5;
  } else if (threads === 0 || nTest === 0) {
    const train = { features: normalizeRows(data.train.features, dim), labels: data.train.labels };
    const test = { features: normalizeRows(data.test.features, dim), labels: data.test.labels };
    const block = knnBlock(train, test, dim, classes, resolved, 0, nTest);
    correct1 = block.top1;
    correct5 = block.top5;
  } else {
    const trainFeatures = shared(data.train.features) as Float32Array;
    normalizeRows(trainFeatures, dim, trainFeatures);
    const testFeatures = shared(data.test.features) as Float32Array;
    normalizeRows(testFeatures, dim, testFeatures);
    const train = { features: trainFeatures, labels: shared(data.train.labels) as Int32Array };
    const test = { features: testFeatures, labels: shared(data.test.labels) as Int32Array };
    const workers = Math.min(threads, Math.ceil(nTest / 4));
    const per = Math.ceil(nTest / workers);
    const blocks = await Promise.all(Array.from({ length: workers }, (_, w) => runInWorker<KnnBlockResult>({
      task: 'knn', train, test, dim, classes, options: resolved, start: Math.min(nTest, w * per),
      end: Math.min(nTest, (w + 1) * per),
    })));
    for (const block of blocks) {
      correct1 += block.top1;
      correct5 += block.top5;
    }
  }
  return {
    top1: nTest ? correct1 / nTest : 0, top5: nTest ? correct5 / nTest : 0, k: Math.min(resolved.k, data.train.labels.length),
    temperature: resolved.temperature, n: { train: data.train.labels.length, test: nTest }, dim, classes,
    seconds: (Date.now() - started) / 1000,
  };
}
