// eval.test.mjs: lib/eval: the linear probe (separable data reaches high accuracy, shuffled
// labels stay near chance, determinism, worker = inline, option messages), the weighted kNN
// against a brute-force reference, the .npy / .safetensors writers read back byte by byte,
// and embedDataset + the feature cache with a real (tiny) model, and the test-time center crop.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rejectsMessage as rejects, tinyRunOptions } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { SgdLinearHead, evaluateLinear, featureStats } = require('../dist/eval/linear.js');
const { evaluateLinearAugmented, trainAugmentedProbe } = require('../dist/eval/augmented.js');
const { evaluateKnn, normalizeRows } = require('../dist/eval/knn.js');
const { native } = require('../dist/native.js');
const {
  writeNpy, writeSafetensors, readSafetensorsF32, embedDataset, cachedFeatures, featureCacheFile, pixelFeatures,
  deterministicView, embedFeatures,
} = require('../dist/eval/embed.js');
const { Byol } = require('../dist/byol.js');
const { syntheticDataset } = require('../dist/data/index.js');
const { permutation } = require('../dist/data/random.js');
const { augmentConfig } = require('../dist/augment.js');
const { ByolOptionError } = require('../dist/validate.js');

// Deterministic normal draws (xorshift + Box-Muller), so data is the same on every run.
function rng(seed) {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  return { u, normal: () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) };
}

// Gaussian blobs: class c centered at a random point at distance `spread` scale.
function blobs({ n, dim, classes, spread, seed, centersSeed = 99 }) {
  const rc = rng(centersSeed);
  const centers = Array.from({ length: classes }, () => Array.from({ length: dim }, () => spread * rc.normal()));
  const r = rng(seed);
  const features = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    labels[i] = c;
    for (let d = 0; d < dim; d++) features[i * dim + d] = centers[c][d] + r.normal() + 3; // offset: standardization matters
  }
  return { features, labels };
}


const dim = 24;
const train = blobs({ n: 2000, dim, classes: 10, spread: 1.2, seed: 1 });
const testSet = blobs({ n: 500, dim, classes: 10, spread: 1.2, seed: 2 });

test('linear probe: separable blobs reach high accuracy', async () => {
  const result = await evaluateLinear({ train, test: testSet, dim }, { epochs: 20 });
  assert.ok(result.top1 > 0.95, `top-1 ${result.top1}`);
  assert.ok(result.top5 >= result.top1);
  assert.is(result.classes, 10);
  assert.equal(result.n, { train: 2000, test: 500 });
  assert.ok(result.trainLoss < 0.3, `train loss ${result.trainLoss}`);
});

test('linear probe: shuffled training labels stay near chance on the test split', async () => {
  const r = rng(5);
  const labels = Int32Array.from(train.labels);
  for (let i = labels.length - 1; i > 0; i--) {
    const j = Math.floor(r.u() * (i + 1));
    [labels[i], labels[j]] = [labels[j], labels[i]];
  }
  const result = await evaluateLinear({ train: { features: train.features, labels }, test: testSet, dim }, { epochs: 10 });
  assert.ok(result.top1 < 0.25, `top-1 ${result.top1} should be near 0.1`);
});

test('linear probe: deterministic for a seed; worker and inline agree; seeds differ', async () => {
  const data = { train, test: testSet, dim };
  const a = await evaluateLinear(data, { epochs: 3, seed: 7 });
  const b = await evaluateLinear(data, { epochs: 3, seed: 7, worker: false });
  assert.is(a.top1, b.top1);
  assert.is(a.trainLoss, b.trainLoss);
  const c = await evaluateLinear(data, { epochs: 3, seed: 8, worker: false });
  assert.is.not(a.trainLoss, c.trainLoss);
});

test('linear probe: option and data validation name the field', async () => {
  const data = { train, test: testSet, dim };
  await rejects(evaluateLinear(data, { epochs: 0 }), ByolOptionError,
    /^Expected integer between 1 and 100000 for options\.epochs but received 0 of type number$/);
  await rejects(evaluateLinear(data, { lerningRate: 1 }), ByolOptionError, /Unknown option options\.lerningRate/);
  await rejects(evaluateLinear({ train: { features: train.features, labels: train.labels.subarray(1) }, test: testSet, dim }),
    ByolOptionError, /data\.train\.features to hold labels\.length \* dim = 1999 \* 24/);
  await rejects(evaluateLinear({ train: { features: Array.from(train.features), labels: train.labels }, test: testSet, dim }),
    ByolOptionError, /Expected Float32Array for data\.train\.features/);
  await rejects(evaluateLinear({ ...data, classes: 5 }), ByolOptionError, /labels below data\.classes = 5 but found label 9/);
});

test('featureStats: mean and inverse std per dimension', () => {
  const f = new Float32Array([1, 10, 3, 10, 5, 10]);
  const { mean, invStd } = featureStats(f, 2);
  assert.equal(Array.from(mean), [3, 10]);
  assert.ok(Math.abs(invStd[0] - 1 / Math.sqrt(8 / 3)) < 1e-12);
  assert.is(invStd[1], 1e6); // constant dimension: floor, not a division by zero
});

// Brute force: all similarities, sort, top-k, weighted vote.
function knnReference(trainSet, testSet, dim, k, temperature, classes) {
  const a = normalizeRows(trainSet.features, dim);
  const b = normalizeRows(testSet.features, dim);
  let top1 = 0;
  for (let i = 0; i < testSet.labels.length; i++) {
    const sims = [];
    for (let j = 0; j < trainSet.labels.length; j++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += Math.fround(b[i * dim + d]) * a[j * dim + d];
      sims.push([Math.fround(s), j]);
    }
    sims.sort((x, y) => y[0] - x[0]);
    const scores = new Float64Array(classes);
    for (const [s, j] of sims.slice(0, k)) scores[trainSet.labels[j]] += Math.exp(s / temperature);
    let best = 0;
    for (let c = 1; c < classes; c++) if (scores[c] > scores[best]) best = c;
    if (best === testSet.labels[i]) top1++;
  }
  return top1 / testSet.labels.length;
}

test('kNN: matches a brute-force reference, with and without workers', async () => {
  const small = blobs({ n: 301, dim: 7, classes: 5, spread: 0.5, seed: 3 });
  const query = blobs({ n: 57, dim: 7, classes: 5, spread: 0.5, seed: 4 });
  const data = { train: small, test: query, dim: 7 };
  const expected = knnReference(small, query, 7, 20, 0.1, 5);
  const inline = await evaluateKnn(data, { k: 20, implementation: 'js', threads: 0 });
  const workers = await evaluateKnn(data, { k: 20, implementation: 'js', threads: 3 });
  const nativeResult = await evaluateKnn(data, { k: 20 });
  assert.is(inline.top1, expected);
  assert.is(workers.top1, expected);
  assert.is(nativeResult.top1, expected);
  assert.is(workers.top5, inline.top5);
  assert.is(nativeResult.top5, inline.top5);
  assert.ok(expected > 0.3 && expected < 1, `reference accuracy ${expected} should be informative`);
});

// The native kNN (oneDNN GEMM blocks, native/cpu/knn.cc) against the JavaScript reference on
// overlapping classes, where many test rows sit near a decision boundary: the same counts for
// several k, temperatures and class counts, including a training set too large for one block
// of similarities (64 MiB / (4 bytes x 70000) = 239 rows of a 300-row test set).
test('kNN: the native implementation gives the JavaScript reference counts', async () => {
  const cases = [
    { n: 3000, m: 700, dim: 33, classes: 7, spread: 0.3, k: 50, temperature: 0.1 },
    { n: 997, m: 301, dim: 5, classes: 3, spread: 0.8, k: 1, temperature: 0.5 },
    { n: 400, m: 200, dim: 64, classes: 12, spread: 0.3, k: 400, temperature: 0.07 },
    { n: 70000, m: 300, dim: 8, classes: 10, spread: 0.8, k: 200, temperature: 0.1 },
  ];
  for (const [i, c] of cases.entries()) {
    const data = { train: blobs({ n: c.n, dim: c.dim, classes: c.classes, spread: c.spread, seed: 10 + i }),
      test: blobs({ n: c.m, dim: c.dim, classes: c.classes, spread: c.spread, seed: 20 + i }), dim: c.dim };
    const options = { k: c.k, temperature: c.temperature };
    const reference = await evaluateKnn(data, { ...options, implementation: 'js', threads: 2 });
    const result = await evaluateKnn(data, options);
    const label = `case ${i} (${JSON.stringify(c)}): native ${result.top1}/${result.top5}, js ${reference.top1}/${reference.top5}`;
    assert.is(result.top1, reference.top1, label);
    assert.is(result.top5, reference.top5, label);
    assert.ok(reference.top1 > 1 / c.classes && reference.top1 < 0.99, `${label}: informative`);
    assert.is(result.k, Math.min(c.k, c.n));
  }
});

// The native minibatch step (native/cpu/linear_probe.cc) against the JavaScript reference: the
// same sums in the same order, so weights agree to rounding of exp/log (checked to 1e-12) and
// the accuracies are equal; with an odd batch (rows left over after the fours) and weight decay.
test('linear probe: the native step gives the JavaScript reference results', async () => {
  const data = { train: blobs({ n: 1203, dim: 19, classes: 6, spread: 0.4, seed: 5 }),
    test: blobs({ n: 301, dim: 19, classes: 6, spread: 0.4, seed: 6 }), dim: 19 };
  for (const options of [{ epochs: 7, batchSize: 61 }, { epochs: 3, batchSize: 256, weightDecay: 1e-3, nesterov: false }]) {
    const reference = await evaluateLinear(data, { ...options, implementation: 'js', worker: false });
    const inWorker = await evaluateLinear(data, options);
    const onThisThread = await evaluateLinear(data, { ...options, worker: false });
    for (const result of [inWorker, onThisThread]) {
      const label = `${JSON.stringify(options)}: native ${JSON.stringify(result)}, js ${JSON.stringify(reference)}`;
      assert.is(result.top1, reference.top1, label);
      assert.is(result.top5, reference.top5, label);
      assert.is(result.trainTop1, reference.trainTop1, label);
      assert.ok(Math.abs(result.trainLoss - reference.trainLoss) <= 1e-12 * reference.trainLoss, label);
    }
    assert.ok(reference.top1 > 0.3 && reference.top1 < 0.99, `informative: ${reference.top1}`);
  }
  // One step, state compared value by value.
  const heads = ['js', 'native'].map((implementation) => new SgdLinearHead(19, 6,
    { momentum: 0.9, nesterov: true, weightDecay: 1e-4, implementation }));
  const rows = permutation(1203, 1, 0);
  const losses = heads.map((head) => [0, 1, 2].map((k) => head.step(data.train.features, rows, 37 * k, 37, data.train.labels, 0.1)));
  for (let k = 0; k < 3; k++) assert.ok(Math.abs(losses[0][k] - losses[1][k]) <= 1e-12 * losses[0][k], `loss ${k}`);
  for (let i = 0; i < heads[0].weights.length; i++) {
    assert.ok(Math.abs(heads[0].weights[i] - heads[1].weights[i]) <= 1e-12, `weights[${i}]: ${heads[0].weights[i]} vs ${heads[1].weights[i]}`);
  }
  const x = new Float32Array(12);
  const w = new Float64Array(6);
  const b = new Float64Array(2);
  assert.throws(() => native.sgdLinearStep(w, b, w, b, x, new Int32Array([0, 4]), 0, 2, new Int32Array(4), 3, 2, 0.1, 0.9, true, 0),
    (e) => e instanceof RangeError && /rows in \[0, 4\) \(rows of x with a label\) but found 4 at index 1/.test(e.message));
  assert.throws(() => native.sgdLinearStep(w, b, w, b, x, new Int32Array([0, 1]), 0, 2, new Int32Array([0, 2, 0, 0]), 3, 2, 0.1, 0.9, true, 0),
    (e) => e instanceof RangeError && /labels in \[0, 2\) but found 2 at index 1/.test(e.message));
  assert.throws(() => native.sgdLinearStep(new Float64Array(5), b, w, b, x, new Int32Array(2), 0, 2, new Int32Array(4), 3, 2, 0.1, 0.9, true, 0),
    (e) => /Float64Array of 6 values for weights/.test(e.message));
});

test('kNN: the native binding checks its arguments', async () => {
  const f = new Float32Array(12);
  const labels = new Int32Array([0, 1, 2, 0]);
  assert.throws(() => native.knnClassify(new Float64Array(12), labels, f, labels, 3, 3, 2, 0.1),
    (e) => /Expected Float32Array for train/.test(e.message));
  assert.throws(() => native.knnClassify(f, labels, f.subarray(0, 11), labels, 3, 3, 2, 0.1),
    (e) => /Expected 12 values \(testLabels x dim\) for test/.test(e.message));
  assert.throws(() => native.knnClassify(f, new Int32Array([0, 1, 3, 0]), f, labels, 3, 3, 2, 0.1),
    (e) => e instanceof RangeError && /trainLabels in \[0, 3\) but found 3 at index 2/.test(e.message));
  assert.throws(() => native.knnClassify(f, labels, f, labels, 3, 3, 0, 0.1), (e) => /for k/.test(e.message));
  await rejects(evaluateKnn({ train, test: testSet, dim }, { implementation: 'gpu' }), ByolOptionError,
    /options\.implementation/);
});

test('kNN: separable blobs near perfect; k capped at the training size; validation', async () => {
  const result = await evaluateKnn({ train, test: testSet, dim });
  assert.ok(result.top1 > 0.95, `top-1 ${result.top1}`);
  assert.is(result.k, 200);
  const tiny = { train: blobs({ n: 30, dim: 4, classes: 3, spread: 3, seed: 1 }), test: blobs({ n: 9, dim: 4, classes: 3, spread: 3, seed: 2 }), dim: 4 };
  assert.is((await evaluateKnn(tiny, { threads: 0 })).k, 30);
  await rejects(evaluateKnn(tiny, { temperature: 0 }), ByolOptionError, /options\.temperature/);
  await rejects(evaluateKnn(tiny, { neighbours: 3 }), ByolOptionError, /Unknown option options\.neighbours/);
});

function parseNpy(buf) {
  assert.is(buf.toString('latin1', 0, 6), '\x93NUMPY');
  assert.is(buf[6], 1);
  const headerLength = buf.readUInt16LE(8);
  assert.is((10 + headerLength) % 64, 0, 'data must start 64-byte aligned');
  const header = buf.toString('latin1', 10, 10 + headerLength);
  return { header, data: buf.subarray(10 + headerLength) };
}

test('writeNpy: NPY 1.0 header and little-endian data', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-npy-'));
  try {
    const values = new Float32Array([1.5, -2, 3.25, 4, 5, 6]);
    await writeNpy(join(dir, 'a.npy'), values, [2, 3]);
    const { header, data } = parseNpy(readFileSync(join(dir, 'a.npy')));
    assert.match(header, /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(2, 3\), \} *\n$/);
    assert.equal(Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length))), Array.from(values));
    await writeNpy(join(dir, 'b.npy'), new Int32Array([7, 8, 9]), [3]);
    assert.match(parseNpy(readFileSync(join(dir, 'b.npy'))).header, /'descr': '<i4'.*'shape': \(3,\)/);
    await rejects(writeNpy(join(dir, 'c.npy'), values, [4, 2]), Error, /shape \[4, 2\] holds 8 values, array 6/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writeSafetensors: header, offsets and data', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-st-'));
  try {
    const file = join(dir, 'f.safetensors');
    await writeSafetensors(file, { features: { data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] },
      labels: { data: new Int32Array([5, 6]), shape: [2] } }, { dataset: 'x' });
    const buf = readFileSync(file);
    const length = Number(buf.readBigUInt64LE(0));
    assert.is((8 + length) % 8, 0);
    const header = JSON.parse(buf.toString('utf8', 8, 8 + length));
    assert.equal(header.features, { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] });
    assert.equal(header.labels, { dtype: 'I32', shape: [2], data_offsets: [16, 24] });
    assert.equal(header.__metadata__, { dataset: 'x' });
    const body = buf.subarray(8 + length);
    assert.is(body.length, 24);
    assert.is(body.readFloatLE(12), 4);
    assert.is(body.readInt32LE(20), 6);
    // readSafetensorsF32 (how eval reads the online classifier) round-trips it and names the
    // file and the tensor in every refusal.
    const back = await readSafetensorsF32(file, ['features']);
    assert.equal(back.features.shape, [2, 2]);
    assert.equal(Array.from(back.features.data), [1, 2, 3, 4]);
    await rejects(readSafetensorsF32(file, ['labels']), Error, /f\.safetensors: tensor labels is I32, expected F32/);
    await rejects(readSafetensorsF32(file, ['weights']), Error, /f\.safetensors: has no tensor weights/);
    const cut = join(dir, 'cut.safetensors');
    writeFileSync(cut, buf.subarray(0, buf.length - 16)); // a truncated copy: 8 of features' 16 bytes
    await rejects(readSafetensorsF32(cut, ['features']), Error, /cut\.safetensors: tensor features of shape \[2, 2\] has a bad data range/);
    const garbage = join(dir, 'garbage.safetensors');
    writeFileSync(garbage, Buffer.concat([buf.subarray(0, 8), Buffer.from('{not json'.padEnd(Number(length), ' ')), body]));
    await rejects(readSafetensorsF32(garbage, ['features']), Error, /garbage\.safetensors: header is not JSON/);
    writeFileSync(garbage, Buffer.from([1, 2, 3]));
    await rejects(readSafetensorsF32(garbage, ['features']), Error, /garbage\.safetensors: not a safetensors file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pixelFeatures: pixels / 255 in dataset order', () => {
  const d = syntheticDataset({ n: 3, height: 2, width: 2, channels: 1 });
  const p = pixelFeatures(d);
  assert.is(p.dim, 4);
  assert.is(p.features[5], Math.fround(d.images[5] / 255));
  assert.is(p.labels, d.labels);
});

test('embedDataset: batch-size independent, deterministic; the cache keys by weights and data', async () => {
  const dataset = syntheticDataset({ n: 13, height: 8, width: 8, channels: 3, seed: 1 });
  const model = await Byol.create({
    encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 3, width: 0.125 }, projector: { hidden: 16, out: 8 },
    predictor: { hidden: 16 }, device: 'cpu', seed: 3,
  });
  const dir = mkdtempSync(join(tmpdir(), 'byol-emb-'));
  try {
    const view = deterministicView(augmentConfig({ preset: 'cifar', outputSize: 8 }), 8, 8);
    const a = await embedDataset(model, dataset, { batchSize: 5, view });
    const b = await embedDataset(model, dataset, { batchSize: 13, view });
    assert.is(a.dim, 64);
    assert.is(a.features.length, 13 * 64);
    // Eval-mode BatchNorm: a sample's features do not depend on its batch.
    let maxDiff = 0;
    for (let i = 0; i < a.features.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.features[i] - b.features[i]));
    assert.ok(maxDiff < 1e-4, `max difference ${maxDiff}`);
    assert.ok(a.features.some((v) => v !== 0));
    let computed = 0;
    const compute = async () => { computed++; return a; };
    const first = await cachedFeatures(dir, 'f'.repeat(64), 'train', dataset, view, 64, compute);
    const second = await cachedFeatures(dir, 'f'.repeat(64), 'train', dataset, view, 64, compute);
    assert.is(first.cached, false);
    assert.is(second.cached, true);
    assert.is(computed, 1);
    assert.equal(Array.from(second.features), Array.from(a.features));
    assert.ok(statSync(featureCacheFile(dir, 'f'.repeat(64), 'train')).size > 13 * 64 * 4);
    await cachedFeatures(dir, 'e'.repeat(64), 'train', dataset, view, 64, compute); // other weights
    const otherView = deterministicView(augmentConfig({ preset: 'cifar', outputSize: 8, mean: [0, 0, 0] }), 8, 8);
    await cachedFeatures(dir, 'f'.repeat(64), 'train', dataset, otherView, 64, compute); // other preprocessing
    assert.is(computed, 3);
    await rejects(embedDataset({ embed() {} }, dataset), TypeError, /Expected a Byol model/);
    // The caller's model stays usable: embedDataset does not dispose it.
    assert.is(model.disposed, false);
  } finally {
    model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('center crop: the central pixels as samples are read; evaluateRun embeds them at the training size', async () => {
  const { centerCrop, readSamples } = require('../dist/data/index.js');
  const ds = syntheticDataset({ n: 3, height: 10, width: 9, channels: 3, seed: 4 });
  const crop = centerCrop(ds, 0.5); // 5 x round(4.5) = 5, offsets floor(5/2) = 2 and floor(4/2) = 2
  assert.equal([crop.n, crop.height, crop.width, crop.name], [3, 5, 5, `${ds.name}[center 0.5]`]);
  const expected = [];
  for (const i of [2, 0]) {
    for (let y = 0; y < 5; y++) for (let x = 0; x < 5; x++) for (let c = 0; c < 3; c++) expected.push(ds.images[((i * 10 + 2 + y) * 9 + 2 + x) * 3 + c]);
  }
  assert.equal(Array.from(await readSamples(crop, [2, 0])), expected);
  const stream = { ...ds, images: undefined, read: async (indices) => readSamples(ds, indices) };
  assert.equal(await readSamples(centerCrop(stream, 0.5), [2, 0]), await readSamples(crop, [2, 0]));
  assert.is(centerCrop(ds, 1), ds);
  for (const bad of [0, 1.5, NaN]) assert.throws(() => centerCrop(ds, bad), /Expected centerCrop in \(0, 1\]/);

  const { Trainer } = require('../dist/train/trainer.js');
  const { evaluateRun } = require('../dist/eval/run.js');
  const { loadDatasetSpec } = require('../dist/train/data.js');
  const { loadRunModel, evalView } = require('../dist/eval/embed.js');
  const dir = mkdtempSync(join(tmpdir(), 'byol-crop-'));
  try {
    const run = join(dir, 'run');
    await new Trainer(tinyRunOptions(run, { progress: 'none', steps: 2 })).run();
    const whole = await evaluateRun(run, { linear: { epochs: 2 }, knn: false });
    assert.is(whole.centerCrop, 1);
    const cropped = await evaluateRun(run, { linear: false, knn: true, centerCrop: 0.75 });
    assert.is(cropped.centerCrop, 0.75);
    assert.is(cropped.results.byol.linear, undefined, 'results of another crop are not merged');
    // The same kNN from features embedded by hand: central 6x6 of the 8x8 images, resized to 8x8.
    const { model, state } = await loadRunModel(run);
    try {
      const view = deterministicView(evalView(state.config, await loadDatasetSpec(state.config.data, 'train')), 6, 6);
      assert.equal(view.outputSize, [8, 8]);
      const features = async (split) => {
        const data = centerCrop(await loadDatasetSpec(state.config.data, split), 0.75);
        return { features: (await embedDataset(model, data, { view })).features, labels: data.labels };
      };
      const knn = await evaluateKnn({ train: await features('train'), test: await features('test'), dim: 64 }, {});
      assert.is(cropped.results.byol.knn.top1, knn.top1);
    } finally {
      model.dispose();
    }
    await rejects(evaluateRun(run, { knn: true, centerCrop: 0 }), ByolOptionError, /options\.centerCrop/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// A stand-in encoder for the augmented probe: per-channel mean and standard deviation of each
// view (a function of the pixels it is given and of nothing else, on any CPU), recording the
// views it saw.
function statsEncoder() {
  const seen = [];
  return {
    featureDim: 6, device: 'cpu', seen,
    async embed(images) {
      const [n, c, h, w] = images.shape;
      const x = await images.toArray();
      seen.push(x.slice());
      const out = new Float32Array(n * 6);
      for (let i = 0; i < n; i++) {
        for (let ch = 0; ch < c; ch++) {
          let sum = 0;
          let sq = 0;
          for (let p = 0; p < h * w; p++) {
            const v = x[(i * c + ch) * h * w + p];
            sum += v;
            sq += v * v;
          }
          const mean = sum / (h * w);
          out[i * 6 + ch] = mean;
          out[i * 6 + 3 + ch] = Math.sqrt(Math.max(0, sq / (h * w) - mean * mean));
        }
      }
      return out;
    },
  };
}

test('augmented linear probe: with the augmentation off it is the frozen-feature probe, to the bit', async () => {
  const train = syntheticDataset({ n: 70, height: 8, width: 8, channels: 3, classes: 4, seed: 1 });
  const test_ = syntheticDataset({ n: 30, height: 8, width: 8, channels: 3, classes: 4, seed: 2 });
  const encoder = statsEncoder();
  const options = { epochs: 3, batchSize: 16, seed: 5 };
  const identity = await trainAugmentedProbe(encoder, { train, test: test_ },
    { ...options, cropScale: [1, 1], cropRatio: [1, 1], flipP: 0 });
  const clean = (d) => embedFeatures(encoder, d);
  const [a, b] = [await clean(train), await clean(test_)];
  const frozen = await evaluateLinear({
    train: { features: a.features, labels: train.labels }, test: { features: b.features, labels: test_.labels }, dim: 6,
    classes: 4,
  }, { ...options, worker: false });
  for (const key of ['top1', 'top5', 'trainTop1', 'trainLoss', 'classes', 'dim']) assert.is(identity[key], frozen[key], key);
  assert.equal(identity.augment, { cropScale: [1, 1], cropRatio: [1, 1], flipP: 0 });
});

test('augmented linear probe: fresh crop + flip views every epoch, deterministic for a seed', async () => {
  const train = syntheticDataset({ n: 200, height: 12, width: 12, channels: 3, classes: 4, seed: 1 });
  const test_ = syntheticDataset({ n: 100, height: 12, width: 12, channels: 3, classes: 4, seed: 2 });
  const run = async (seed, epochs = 4) => {
    const encoder = statsEncoder();
    const epochsSeen = [];
    const result = await trainAugmentedProbe(encoder, { train, test: test_ }, {
      epochs, batchSize: 64, seed, onEpoch: (e, total, loss) => epochsSeen.push([e, total, Number.isFinite(loss)]),
    });
    return { result, encoder, epochsSeen };
  };
  const first = await run(0);
  // The clean features (4 train and 2 test batches of 64), then 4 epochs of ceil(200 / 64) = 4
  // augmented batches.
  assert.is(first.encoder.seen.length, 6 + 4 * 4);
  assert.equal(first.epochsSeen, [[1, 4, true], [2, 4, true], [3, 4, true], [4, 4, true]]);
  assert.equal(first.result.augment, { cropScale: [0.08, 1], cropRatio: [3 / 4, 4 / 3], flipP: 0.5 });
  // The class is the color: a mean-color feature survives crops and flips.
  assert.ok(first.result.top1 > 0.9, `top-1 ${first.result.top1}`);
  // Same seed: the same views and the same classifier.
  const again = await run(0);
  assert.equal(again.result.top1, first.result.top1);
  assert.is(again.result.trainLoss, first.result.trainLoss);
  assert.equal(again.encoder.seen[9], first.encoder.seen[9]);
  // The first augmented batch holds the samples of permutation(seed 0, epoch 0), each cropped
  // and flipped: (almost) no view equals its clean image.
  const size = 3 * 12 * 12;
  const cleanTrain = new Float32Array(200 * size);
  for (let k = 0; k < 4; k++) cleanTrain.set(first.encoder.seen[k], k * 64 * size);
  const order = permutation(200, 0, 0);
  const views = first.encoder.seen[6];
  let unchanged = 0;
  for (let i = 0; i < 64; i++) {
    const clean = cleanTrain.subarray(order[i] * size, (order[i] + 1) * size);
    if (views.subarray(i * size, (i + 1) * size).every((v, j) => v === clean[j])) unchanged++;
  }
  assert.ok(unchanged <= 3, `${unchanged} of 64 views equal their clean image`);
  // Views are re-drawn every epoch, and another seed draws others.
  assert.not.equal(Array.from(first.encoder.seen[6]), Array.from(first.encoder.seen[10]));
  const other = await run(1, 1);
  assert.not.equal(Array.from(other.encoder.seen[6]), Array.from(first.encoder.seen[6]));
});

test('augmented linear probe: a real encoder; validation names the field', async () => {
  const train = syntheticDataset({ n: 24, height: 8, width: 8, channels: 3, classes: 3, seed: 1 });
  const test_ = syntheticDataset({ n: 12, height: 8, width: 8, channels: 3, classes: 3, seed: 2 });
  const model = await Byol.create({
    encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 3, width: 0.125 }, projector: { hidden: 16, out: 8 },
    predictor: { hidden: 16 }, device: 'cpu', seed: 3,
  });
  try {
    const r = await evaluateLinearAugmented(model, { train, test: test_ }, { epochs: 2, batchSize: 10 });
    assert.is(r.dim, 64);
    assert.is(r.epochs, 2);
    assert.equal(r.n, { train: 24, test: 12 });
    assert.ok(r.top1 >= 0 && r.top1 <= r.top5 && r.top5 === 1 && Number.isFinite(r.trainLoss));
    const data = { train, test: test_ };
    await rejects(evaluateLinearAugmented(model, data, { cropScale: [0, 1] }), ByolOptionError, /options\.cropScale/);
    await rejects(evaluateLinearAugmented(model, data, { cropRatio: [2, 1] }), ByolOptionError, /options\.cropRatio/);
    await rejects(evaluateLinearAugmented(model, data, { flipP: 2 }), ByolOptionError, /options\.flipP/);
    await rejects(evaluateLinearAugmented(model, data, { epochs: 0 }), ByolOptionError, /options\.epochs/);
    await rejects(evaluateLinearAugmented(model, data, { batchSize: 0 }), ByolOptionError, /options\.batchSize/);
    await rejects(evaluateLinearAugmented(model, data, { crop: 1 }), ByolOptionError, /crop/);
    await rejects(evaluateLinearAugmented(model, data, { features: { train: new Float32Array(3), test: new Float32Array(3) } }),
      ByolOptionError, /options\.features to hold 24 x 64 \(train\) and 12 x 64 \(test\)/);
    const unlabeled = { ...train };
    delete unlabeled.labels;
    await rejects(evaluateLinearAugmented(model, { train: unlabeled, test: test_ }), ByolOptionError, /needs labels, but data\.train/);
    const small = syntheticDataset({ n: 4, height: 6, width: 6, channels: 3, seed: 1 });
    await rejects(evaluateLinearAugmented(model, { train, test: small }), ByolOptionError, /data\.test to have data\.train's image shape 8x8x3/);
    await rejects(evaluateLinearAugmented({ embed() {} }, data), TypeError, /Expected a Byol model/);
    // An abort stops between batches.
    const controller = new AbortController();
    controller.abort(new Error('stop here'));
    await rejects(evaluateLinearAugmented(model, data, { epochs: 1, signal: controller.signal }), Error, /stop here/);
    assert.is(model.disposed, false);
  } finally {
    model.dispose();
  }
});

test.run();
