// train.test.mjs: lib/train: option validation messages, presets, schedules, and tiny real runs
// (ResNet-18 cifar stem at width 0.125, 8x8 synthetic images, batch 8) checking log.jsonl,
// checkpoints, exact resume (6 straight steps vs 3 + resume 3: identical losses), abort via
// AbortSignal, NaN stop keeping the last good checkpoint, refusal of corrupted checkpoints,
// the metrics iterator, the HTML report, the cudaGraphs option (logged; changeable on resume),
// the online classifier, the kNN monitor, a streamed image folder (data.stream) computing
// exactly what the same folder in memory does, and STL-10 pretraining on its unlabeled images.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rejectsMessage as rejects, stlImages, throwsMessage, tinyRunOptions } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Trainer, NonFiniteLossError } = require('../dist/train/trainer.js');
const { resolveTrainConfig } = require('../dist/train/options.js');
const { presetOptions } = require('../dist/train/presets.js');
const { learningRate, emaTau } = require('../dist/train/model.js');
const { CheckpointError, readRunState, sha256File } = require('../dist/train/checkpoint.js');
const { readLog } = require('../dist/train/log.js');
const { Progress, formatDuration } = require('../dist/train/progress.js');
const { renderReport, niceTicks } = require('../dist/train/report.js');
const { ByolOptionError } = require('../dist/validate.js');

const scratch = mkdtempSync(join(tmpdir(), 'byol-train-'));
let runCounter = 0;
const newRunDir = () => join(scratch, `run${++runCounter}`);

// The tiny configuration of every run here (helpers.mjs), quiet, with a longer warmup.
function tiny(extra = {}) {
  return tinyRunOptions(newRunDir(), {
    steps: 6, optimizer: { name: 'lars', lr: 0.5, warmupSteps: 2 }, seed: 11, progress: 'none', ...extra,
  });
}

const syntheticDatasetFor = () => require('../dist/data/index.js').syntheticDataset(
  { n: 32, height: 8, width: 8, channels: 3, classes: 4, seed: 1 });
const stepLosses = async (dir) => (await readLog(join(dir, 'log.jsonl'))).filter((r) => !('event' in r)).map((r) => r.loss);

test('options: sharp-style messages naming the option, before any work', () => {
  throwsMessage(() => new Trainer(tiny({ batchSize: 0 })), ByolOptionError,
    /^Expected integer between 2 and 65536 for batchSize but received 0 of type number$/);
  throwsMessage(() => new Trainer(tiny({ lerningRate: 1 })), ByolOptionError, /^Unknown option lerningRate; expected one of preset, data/);
  throwsMessage(() => new Trainer(tiny({ optimizer: { name: 'lars', lr: -1 } })), ByolOptionError,
    /for optimizer\.lr but received -1/);
  throwsMessage(() => new Trainer(tiny({ optimizer: { name: 'adam' } })), ByolOptionError,
    /^Expected one of 'lars', 'sgd', 'adamw' for optimizer\.name but received "adam" of type string$/);
  throwsMessage(() => new Trainer(tiny({ encoder: { width: 0.3 } })), ByolOptionError, /for encoder\.width/);
  throwsMessage(() => new Trainer(tiny({ encoder: { depth: 18 } })), ByolOptionError, /^Unknown option encoder\.depth/);
  throwsMessage(() => new Trainer(tiny({ epochs: 2 })), ByolOptionError, /Options epochs and steps both set/);
  throwsMessage(() => new Trainer(tiny({ data: { kind: 'cifar10' } })), ByolOptionError, /Missing option data\.path/);
  throwsMessage(() => new Trainer(tiny({ data: { kind: 'imagenet' } })), ByolOptionError, /for data\.kind/);
  throwsMessage(() => new Trainer(tiny({ augment: { preset: 'cifar', cropScael: [0.2, 1] } })), ByolOptionError,
    /Unknown option augment\.cropScael/);
  throwsMessage(() => new Trainer(tiny({ device: 'gpu' })), ByolOptionError, /for device but received "gpu"/);
  throwsMessage(() => new Trainer(tiny({ convPrecision: 'fp16' })), ByolOptionError,
    /^Expected one of 'fp32', 'bf16', 'auto' for convPrecision but received "fp16" of type string$/);
  throwsMessage(() => new Trainer(tiny({ cudaGraphs: 'yes' })), ByolOptionError,
    /^Expected boolean for cudaGraphs but received "yes" of type string$/);
  throwsMessage(() => new Trainer(tiny({ preset: 'imagenet' })), ByolOptionError,
    /'fashion-mnist', 'fashion-mnist-quick' for preset/);
  throwsMessage(() => new Trainer({ steps: 3 }), ByolOptionError, /Missing option data/);
  throwsMessage(() => new Trainer({ resume: join(scratch, 'nothing-here') }), CheckpointError,
    /state\.json: not found: .* holds no resumable run/);
});

test('options: defaults from BYOL.md, presets, explicit options beat the preset', () => {
  const c = resolveTrainConfig({ data: { kind: 'synthetic' } });
  assert.equal(c.optimizer, { name: 'lars', lr: 0.2, weightDecay: 1.5e-6, momentum: 0.9, trustCoefficient: 1e-3,
    variant: 'reference', warmupEpochs: null, warmupSteps: null });
  assert.is(c.tauBase, 0.996);
  assert.is(c.batchSize, 256);
  assert.is(c.epochs, 100);
  assert.equal(c.projector, { hidden: 4096, out: 256 });
  assert.equal(c.predictor, { hidden: 4096 });
  const p = resolveTrainConfig({ preset: 'fashion-mnist', steps: 10, optimizer: { lr: 2 } });
  assert.equal(p.data, { kind: 'fashion-mnist', path: '/usr/share/datasets/fashion-mnist' });
  assert.is(p.epochs, null); // explicit steps replace the preset's epochs
  assert.is(p.steps, 10);
  assert.is(p.optimizer.lr, 2);
  assert.is(p.optimizer.name, 'lars'); // the rest of the preset's optimizer stays
  assert.is(p.augment.preset, 'grayscale');
  const q = resolveTrainConfig({ preset: 'fashion-mnist-quick' });
  assert.ok(q.steps > 0 && q.data.limit > 0);
  assert.equal(presetOptions('fashion-mnist').encoder, { arch: 'resnet18', stem: 'cifar', width: 0.25 });
  assert.is(resolveTrainConfig({ preset: 'fashion-mnist' }).convPrecision, 'auto');
  assert.is(q.convPrecision, 'fp32'); // the recipe its documented numbers were measured with
  assert.equal(q.augment.cropScale, [0.2, 1]);
  assert.is(c.convPrecision, 'fp32');
  assert.is(c.cudaGraphs, true);
  assert.is(resolveTrainConfig({ data: { kind: 'synthetic' }, cudaGraphs: false }).cudaGraphs, false);
});

test('schedules: warmup, cosine decay and tau as BYOL.md writes them', () => {
  assert.is(learningRate(0, 0.2, 512, 10, 100), 0);
  assert.ok(Math.abs(learningRate(5, 0.2, 512, 10, 100) - 0.2) < 1e-12); // half of 0.4
  assert.ok(Math.abs(learningRate(10, 0.2, 512, 10, 100) - 0.4) < 1e-12);
  assert.ok(Math.abs(learningRate(55, 0.2, 512, 10, 100) - 0.2) < 1e-12);
  assert.is(learningRate(100, 0.2, 512, 10, 100), 0);
  assert.ok(Math.abs(emaTau(0, 0.99, 100) - 0.99) < 1e-15);
  assert.ok(Math.abs(emaTau(50, 0.99, 100) - 0.995) < 1e-12);
  assert.is(emaTau(100, 0.99, 100), 1);
});

test('progress: lines mode prints every N steps; durations', () => {
  let text = '';
  const progress = new Progress('auto', { write: (s) => { text += s; }, isTTY: false }, 2);
  for (let step = 1; step <= 5; step++) {
    progress.update({ step, totalSteps: 5, epoch: 0, epochs: 1, loss: 3.5, lr: 0.1, imagesPerSec: 100, eta: 5 - step });
  }
  const lines = text.trim().split('\n');
  assert.equal(lines.map((l) => /step (\d+)\//.exec(l)[1]), ['2', '4', '5']);
  assert.match(lines[0], /^epoch 1\/1 {2}step 2\/5 {2}loss 3\.5000 {2}lr 0\.100 {2}100 img\/s {2}ETA 0:03$/);
  let bar = '';
  const tty = new Progress('auto', { write: (s) => { bar += s; }, isTTY: true, columns: 120 });
  tty.update({ step: 1, totalSteps: 4, epoch: 0, epochs: 1, loss: 1, lr: 0.1, imagesPerSec: 10, eta: null });
  assert.match(bar, /^\r\x1b\[2Kepoch 1\/1 \[#+-+\] step 1\/4/);
  assert.is(formatDuration(3725), '1:02:05');
  assert.is(formatDuration(65), '1:05');
  assert.equal(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
});

test('run: log.jsonl of every step, checkpoint + state.json, events and encoder file', async () => {
  const options = tiny({ checkpointEvery: 4 });
  const trainer = new Trainer(options);
  const seen = [];
  const checkpoints = [];
  trainer.on('step', (m) => seen.push(m.step));
  trainer.on('checkpoint', (c) => checkpoints.push(c.step));
  const result = await trainer.run();
  assert.is(result.status, 'completed');
  assert.is(result.step, 6);
  assert.equal(seen, [1, 2, 3, 4, 5, 6]);
  assert.equal(checkpoints, [4, 6]);
  const records = await readLog(join(options.out, 'log.jsonl'));
  const steps = records.filter((r) => !('event' in r));
  assert.is(steps.length, 6);
  for (const r of steps) {
    // The synthetic data has labels: the online classifier is on by default.
    assert.equal(Object.keys(r).sort(), ['classifierLoss', 'elapsed', 'epoch', 'imagesPerSec', 'loss', 'lr', 'step', 'tau', 'top1']);
    assert.ok(Number.isFinite(r.loss) && r.loss >= 0 && r.loss <= 8, `loss ${r.loss}`);
    assert.ok(r.classifierLoss > 0 && Number.isFinite(r.classifierLoss) && r.top1 >= 0 && r.top1 <= 1 &&
      Number.isInteger(r.top1 * 8), `classifier ${r.classifierLoss} ${r.top1}`);
  }
  assert.equal(steps.map((r) => r.epoch), [0, 0, 0, 0, 1, 1]); // 32 images / batch 8 = 4 steps per epoch
  assert.is(steps[0].lr, 0); // warmup starts at 0
  assert.ok(Math.abs(steps[1].lr - learningRate(1, 0.5, 8, 2, 6)) < 1e-15);
  assert.equal(records.filter((r) => 'event' in r).map((r) => r.event), ['start', 'checkpoint', 'checkpoint', 'end']);
  const state = await readRunState(options.out);
  assert.is(state.status, 'completed');
  assert.is(state.step, 6);
  assert.is(state.epoch, 1);
  assert.is(state.stepInEpoch, 2);
  assert.is(state.seed, 11);
  assert.is(state.plan.stepsPerEpoch, 4);
  assert.is(state.plan.inChannels, 3);
  assert.is(state.plan.featureDim, 64);
  assert.is(state.plan.classifierClasses, 4);
  assert.is(state.weights.sha256, await sha256File(join(options.out, 'checkpoint.safetensors')));
  assert.is(state.weights.bytes, statSync(join(options.out, 'checkpoint.safetensors')).size);
  assert.ok(existsSync(join(options.out, 'encoder.safetensors')));
  assert.ok(!readFileSync(join(options.out, 'state.json'), 'utf8').includes('.tmp'));
});

test('resume: 3 steps + resume 3 steps gives exactly the losses of 6 straight steps', async () => {
  const straight = tiny({ checkpointEvery: 0 });
  await new Trainer(straight).run();
  const expected = await stepLosses(straight.out);
  assert.is(expected.length, 6);

  // Interrupted after step 3 (mid-epoch: position 3 of 4), by AbortSignal as SIGINT does.
  const controller = new AbortController();
  const split = tiny({ checkpointEvery: 0, out: newRunDir(), signal: controller.signal });
  const first = new Trainer(split);
  first.on('step', (m) => { if (m.step === 3) controller.abort(); });
  const stopped = await first.run();
  assert.is(stopped.status, 'interrupted');
  assert.is(stopped.step, 3);
  const state = await readRunState(split.out);
  assert.is(state.status, 'interrupted');
  assert.equal([state.step, state.epoch, state.stepInEpoch], [3, 0, 3]);

  const resumed = await new Trainer({ resume: split.out, progress: 'none' }).run();
  assert.is(resumed.status, 'completed');
  assert.is(resumed.step, 6);
  const losses = await stepLosses(split.out);
  assert.equal(losses, expected); // exact, not approximate
  const events = (await readLog(join(split.out, 'log.jsonl'))).filter((r) => 'event' in r).map((r) => r.event);
  assert.equal(events, ['start', 'checkpoint', 'interrupted', 'resume', 'checkpoint', 'end']);
  throwsMessage(() => new Trainer({ resume: split.out, batchSize: 16 }), ByolOptionError,
    /configuration in its state\.json; remove batchSize/);
});

test('onlineClassifier: off by option, required labels, runs from before it resume without it', async () => {
  const { syntheticDataset } = require('../dist/data/index.js');
  const { readSafetensorsF32 } = require('../dist/eval/embed.js');
  const off = tiny({ onlineClassifier: false, steps: 3 });
  await new Trainer(off).run();
  const steps = (await readLog(join(off.out, 'log.jsonl'))).filter((r) => !('event' in r));
  assert.ok(steps.every((r) => !('top1' in r) && !('classifierLoss' in r)), 'no classifier fields');
  assert.is((await readRunState(off.out)).plan.classifierClasses, 0);
  await rejects(readSafetensorsF32(join(off.out, 'checkpoint.safetensors'), ['classifier.weight']),
    Error, /checkpoint\.safetensors: has no tensor classifier\.weight/);

  // Explicitly on, with data that has no labels: refused before any step, naming the option.
  const unlabeled = syntheticDataset({ n: 32, height: 8, width: 8, channels: 3, classes: 4, seed: 1 });
  delete unlabeled.labels;
  const noLabels = tiny({ data: unlabeled, onlineClassifier: true });
  await rejects(new Trainer(noLabels).run(), ByolOptionError, /onlineClassifier needs a dataset with labels/);
  // By default such data simply trains without one.
  const quiet = tiny({ data: unlabeled, steps: 2 });
  await new Trainer(quiet).run();
  assert.is((await readRunState(quiet.out)).plan.classifierClasses, 0);
  // An in-memory dataset with labels but no class count: the largest label + 1.
  const uncounted = syntheticDataset({ n: 32, height: 8, width: 8, channels: 3, classes: 4, seed: 1 });
  delete uncounted.classes;
  const counted = tiny({ data: uncounted, steps: 2 });
  await new Trainer(counted).run();
  assert.is((await readRunState(counted.out)).plan.classifierClasses, Math.max(...uncounted.labels) + 1);
  // A label outside [0, classes) is named before any step.
  const broken = syntheticDataset({ n: 32, height: 8, width: 8, channels: 3, classes: 4, seed: 1 });
  broken.labels[5] = 4;
  await rejects(new Trainer(tiny({ data: broken })).run(), ByolOptionError,
    /labels in \[0, 4\) but .* has label 4 at sample 5 \(classes 4\); fix the labels or set onlineClassifier: false/);
  throwsMessage(() => new Trainer(tiny({ onlineClassifier: 'yes' })), ByolOptionError,
    /^Expected boolean for onlineClassifier but received "yes"/);

  // A run made before the classifier existed (state.json without the option or plan entry)
  // resumes as it was: without one, although its data has labels.
  const old = tiny({ onlineClassifier: false, steps: 4, checkpointEvery: 2, out: newRunDir() });
  const controller = new AbortController();
  const first = new Trainer({ ...old, signal: controller.signal });
  first.on('step', (m) => { if (m.step === 2) controller.abort(); });
  await first.run();
  const stateFile = join(old.out, 'state.json');
  const state = JSON.parse(readFileSync(stateFile, 'utf8'));
  delete state.config.onlineClassifier;
  delete state.plan.classifierClasses;
  writeFileSync(stateFile, JSON.stringify(state));
  const resumed = await new Trainer({ resume: old.out, progress: 'none' }).run();
  assert.is(resumed.status, 'completed');
  assert.is(resumed.step, 4);
  const after = (await readLog(join(old.out, 'log.jsonl'))).filter((r) => !('event' in r));
  assert.ok(after.every((r) => !('top1' in r)), 'resumed without the classifier');
});

test('knnMonitor: kNN checks every N steps and after the last, logged; the steps compute the same', async () => {
  const data = { kind: 'synthetic', limit: 32, size: 8, channels: 3, classes: 4, testLimit: 24 };
  const plain = tiny({ data, steps: 7 });
  await new Trainer(plain).run();
  const watched = tiny({ data, steps: 7, knnMonitor: { every: 3, bankSize: 16 } });
  const trainer = new Trainer(watched);
  const seen = [];
  trainer.on('monitor', (r) => seen.push(r));
  await trainer.run();
  assert.equal(await stepLosses(watched.out), await stepLosses(plain.out)); // exact: checks change nothing
  const events = (await readLog(join(watched.out, 'log.jsonl'))).filter((r) => r.event === 'knn-monitor');
  assert.equal(events.map((e) => e.step), [3, 6, 7]);
  for (const e of events) {
    assert.equal([e.k, e.bank, e.test], [16, 16, 24]); // k capped at the bank
    assert.ok(e.top1 >= 0 && e.top1 <= e.top5 && e.top5 <= 1, JSON.stringify(e));
  }
  assert.equal(seen.map((r) => r.top1), events.map((e) => e.top1));
  assert.match(await renderReport(watched.out), /<svg [^>]*aria-label="kNN monitor top-1 \(%\)"/);
  assert.equal(resolveTrainConfig({ data, knnMonitor: { every: 5 } }).knnMonitor,
    { every: 5, k: 200, temperature: 0.1, bankSize: 10000, testSize: 10000 });
  throwsMessage(() => new Trainer(tiny({ knnMonitor: {} })), ByolOptionError,
    /^Expected integer between 1 and \d+ for knnMonitor\.every but received undefined/);
  throwsMessage(() => new Trainer(tiny({ knnMonitor: { every: 2, kk: 3 } })), ByolOptionError, /Unknown option knnMonitor\.kk/);
  const memory = syntheticDatasetFor();
  await rejects(new Trainer(tiny({ data: memory, knnMonitor: { every: 2 } })).run(), ByolOptionError,
    /knnMonitor needs a test split, but the run trains on an in-memory dataset/);
  // It may be added when resuming (it changes nothing computed).
  const resumed = await new Trainer({ resume: plain.out, knnMonitor: { every: 100 }, progress: 'none' }).run();
  assert.is(resumed.status, 'completed');
});

test('data.stream: a streamed image folder trains and evaluates exactly as the same folder in memory', async () => {
  const sharp = require('sharp');
  const { syntheticDataset } = require('../dist/data/index.js');
  const { evaluateRun } = require('../dist/eval/run.js');
  const root = join(scratch, 'pngs');
  for (const [split, seed] of [['train', 1], ['test', 2]]) {
    const ds = syntheticDataset({ n: 32, height: 8, width: 8, channels: 3, classes: 4, seed });
    for (let i = 0; i < ds.n; i++) {
      const dir = join(root, split, `class${ds.labels[i]}`);
      mkdirSync(dir, { recursive: true });
      await sharp(Buffer.from(ds.images.subarray(i * 192, (i + 1) * 192)), { raw: { width: 8, height: 8, channels: 3 } })
        .png().toFile(join(dir, `${String(i).padStart(3, '0')}.png`));
    }
  }
  const folder = { kind: 'folder', path: root };
  const monitor = { every: 3, bankSize: 16 };
  const memory = tiny({ data: folder, knnMonitor: monitor });
  const streamed = tiny({ data: { ...folder, stream: true }, knnMonitor: monitor });
  for (const options of [memory, streamed]) assert.is((await new Trainer(options).run()).status, 'completed');
  assert.equal(await stepLosses(streamed.out), await stepLosses(memory.out)); // exact
  const knn = async (dir) => (await readLog(join(dir, 'log.jsonl'))).filter((r) => r.event === 'knn-monitor').map((r) => r.top1);
  assert.equal(await knn(streamed.out), await knn(memory.out));
  assert.is((await readRunState(streamed.out)).config.data.stream, true);
  // A StreamingDataset object as option data: the same run again.
  const { openImageFolder } = require('../dist/data/index.js');
  const object = tiny({ data: await openImageFolder(join(root, 'train')) });
  await new Trainer(object).run();
  assert.equal(await stepLosses(object.out), await stepLosses(memory.out));
  const probes = async (dir) => (await evaluateRun(dir, { linear: { epochs: 5 } })).results.byol;
  const [fromStream, fromMemory] = [await probes(streamed.out), await probes(memory.out)];
  assert.ok(typeof fromStream.linear.top1 === 'number' && typeof fromStream.knn.top1 === 'number', JSON.stringify(fromStream));
  assert.equal([fromStream.linear.top1, fromStream.knn.top1], [fromMemory.linear.top1, fromMemory.knn.top1]);
  throwsMessage(() => resolveTrainConfig({ data: { kind: 'cifar10', path: root, stream: true } }), ByolOptionError,
    /Option data\.stream applies to data\.kind 'folder', not 'cifar10'/);
  throwsMessage(() => resolveTrainConfig({ data: { ...folder, stream: 1 } }), ByolOptionError, /data\.stream/);
});

test('data.unlabeled: STL-10 pretrains on train + unlabeled; the kNN monitor and the probes use the labeled images', async () => {
  const { evaluateRun } = require('../dist/eval/run.js');
  const dir = join(scratch, 'stl', 'stl10_binary');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'train_X.bin'), stlImages(8));
  writeFileSync(join(dir, 'train_y.bin'), Uint8Array.from({ length: 8 }, (_, i) => 1 + (i % 2)));
  writeFileSync(join(dir, 'unlabeled_X.bin'), stlImages(8, 8));
  writeFileSync(join(dir, 'test_X.bin'), stlImages(4, 16));
  writeFileSync(join(dir, 'test_y.bin'), Uint8Array.from([1, 2, 1, 2]));
  const data = { kind: 'stl10', path: join(scratch, 'stl'), unlabeled: true };
  const options = tiny({ data, steps: 2, knnMonitor: { every: 2, bankSize: 8 } });
  await new Trainer(options).run();
  const state = await readRunState(options.out);
  assert.equal([state.plan.datasetName, state.plan.datasetSize, state.plan.classifierClasses],
    ['stl10/train+unlabeled', 16, 0]); // no labels on the unlabeled images: no online classifier
  const [check] = (await readLog(join(options.out, 'log.jsonl'))).filter((r) => r.event === 'knn-monitor');
  assert.equal([check.bank, check.test], [8, 4]);
  const report = await evaluateRun(options.out, { linear: { epochs: 2 }, knn: { k: 3 } });
  assert.equal(report.dataset, { train: 'stl10/train', test: 'stl10/test' });
  assert.ok(typeof report.results.byol.linear.top1 === 'number', JSON.stringify(report.results));
  throwsMessage(() => resolveTrainConfig({ data: { kind: 'cifar10', path: dir, unlabeled: true } }), ByolOptionError,
    /Option data\.unlabeled applies to data\.kind 'stl10', not 'cifar10'/);
});

test('convPrecision bf16: a CPU run in bf16 convolutions, logged, the setting restored after', async () => {
  const { getCpuConvPrecision } = require('../dist/device.js');
  assert.is(getCpuConvPrecision(), 'fp32');
  const fp32 = tiny();
  const bf16 = tiny({ convPrecision: 'bf16' });
  if (!require('../dist/native.js').native.cpuInfo().onednn.bf16Supported) {
    // No bf16 convolutions below AVX-512: the run is refused with the reason, fp32 stays.
    let message = '';
    try { await new Trainer(bf16).run(); } catch (e) { message = e.message; }
    assert.match(message, /bf16 convolutions need a CPU with AVX-512/);
    assert.is(getCpuConvPrecision(), 'fp32');
    return;
  }
  await new Trainer(fp32).run();
  const trainer = new Trainer(bf16);
  let during = null;
  trainer.on('step', () => { during ??= getCpuConvPrecision(); });
  await trainer.run();
  assert.is(during, 'bf16');
  assert.is(getCpuConvPrecision(), 'fp32');
  const start = (await readLog(join(bf16.out, 'log.jsonl'))).find((r) => r.event === 'start');
  assert.is(start.convPrecision, 'bf16');
  assert.is(start.config.convPrecision, 'bf16');
  // Same run otherwise. Step 1's loss comes from the same weights and views, so it differs by
  // the rounding only (0.5% on this 8x8 toy); later steps drift apart as any two precisions do.
  const a = await stepLosses(fp32.out), b = await stepLosses(bf16.out);
  assert.is(b.length, a.length);
  assert.ok(b.every(Number.isFinite), `bf16 losses ${b}`);
  assert.ok(Math.abs(a[0] - b[0]) < 0.02 * a[0] && a[0] !== b[0], `step 1: fp32 ${a[0]}, bf16 ${b[0]}`);
});

test('cudaGraphs: logged at start (default true), no graphs field at the end on the CPU; may change on resume', async () => {
  const on = tiny({ steps: 3 });
  const off = tiny({ steps: 3, cudaGraphs: false });
  await new Trainer(on).run();
  await new Trainer(off).run();
  const events = async (dir) => (await readLog(join(dir, 'log.jsonl'))).filter((r) => 'event' in r);
  const [startOn, startOff] = [(await events(on.out))[0], (await events(off.out))[0]];
  assert.is(startOn.cudaGraphs, true);
  assert.is(startOn.config.cudaGraphs, true);
  assert.is(startOff.cudaGraphs, false);
  assert.is(startOff.config.cudaGraphs, false);
  const end = (await events(on.out)).find((r) => r.event === 'end');
  assert.ok(end && !('graphs' in end), `end record ${JSON.stringify(end)}`);
  // Graph replay does not change what is computed: the same losses either way.
  assert.equal(await stepLosses(off.out), await stepLosses(on.out));

  // A state.json from before the option existed resumes with the default; the option itself
  // may change on resume.
  const controller = new AbortController();
  const old = tiny({ steps: 4, checkpointEvery: 0, signal: controller.signal });
  const first = new Trainer(old);
  first.on('step', (m) => { if (m.step === 2) controller.abort(); });
  assert.is((await first.run()).status, 'interrupted');
  const stateFile = join(old.out, 'state.json');
  const state = JSON.parse(readFileSync(stateFile, 'utf8'));
  delete state.config.cudaGraphs;
  writeFileSync(stateFile, JSON.stringify(state));
  assert.is(new Trainer({ resume: old.out, progress: 'none' }).config.cudaGraphs, true);
  const resumed = new Trainer({ resume: old.out, progress: 'none', cudaGraphs: false });
  assert.is(resumed.config.cudaGraphs, false);
  assert.is((await resumed.run()).status, 'completed');
  const resumeRecord = (await events(old.out)).find((r) => r.event === 'resume');
  assert.is(resumeRecord.cudaGraphs, false);
});

test('run directory holding a run is not overwritten', async () => {
  const options = tiny({ steps: 2 });
  await new Trainer(options).run();
  await rejects(new Trainer({ ...options }).run(), ByolOptionError, /already holds a run \(state\.json\); resume it/);
});

test('NaN loss: stops with a clear message and keeps the last good checkpoint', async () => {
  const options = tiny({ checkpointEvery: 2, faultInjection: { nanAtStep: 5 } });
  const error = await rejects(new Trainer(options).run(), NonFiniteLossError,
    /^Training diverged: the loss is NaN at step 5\. The last good checkpoint \(step 4\) is kept in .*checkpoint\.safetensors/);
  assert.is(error.step, 5);
  const state = await readRunState(options.out);
  assert.is(state.step, 4);
  assert.is(state.weights.sha256, await sha256File(join(options.out, 'checkpoint.safetensors')));
  const records = await readLog(join(options.out, 'log.jsonl'));
  assert.equal(records[records.length - 1], { event: 'diverged', step: 5, loss: 'NaN', checkpointStep: 4 });
});

test('corrupted checkpoints are refused with an error naming the file', async () => {
  const options = tiny({ checkpointEvery: 2 });
  const controller = new AbortController();
  const trainer = new Trainer({ ...options, signal: controller.signal });
  trainer.on('step', (m) => { if (m.step === 2) controller.abort(); });
  await trainer.run();
  const weights = join(options.out, 'checkpoint.safetensors');
  const stateFile = join(options.out, 'state.json');
  const original = readFileSync(weights);
  const originalState = readFileSync(stateFile, 'utf8');

  // Same size, one byte flipped: the checksum catches it.
  const flipped = Buffer.from(original);
  flipped[flipped.length - 3] ^= 0x40;
  writeFileSync(weights, flipped);
  let error = await rejects(new Trainer({ resume: options.out, progress: 'none' }).run(), CheckpointError,
    /checkpoint\.safetensors: SHA-256 [0-9a-f]{64} does not match [0-9a-f]{64} recorded in state\.json/);
  assert.is(error.file, weights);

  writeFileSync(weights, original);
  truncateSync(weights, original.length - 100);
  await rejects(new Trainer({ resume: options.out, progress: 'none' }).run(), CheckpointError,
    /checkpoint\.safetensors: is \d+ bytes but state\.json recorded \d+: the file is truncated/);

  writeFileSync(weights, original);
  const state = JSON.parse(originalState);
  state.weights.sha256 = state.weights.sha256.replace(/^./, (c) => (c === '0' ? '1' : '0'));
  writeFileSync(stateFile, JSON.stringify(state));
  await rejects(new Trainer({ resume: options.out, progress: 'none' }).run(), CheckpointError, /does not match/);

  writeFileSync(stateFile, originalState.slice(0, 40));
  throwsMessage(() => new Trainer({ resume: options.out }), CheckpointError, /state\.json: is not valid JSON/);

  writeFileSync(stateFile, originalState);
  const ok = await new Trainer({ resume: options.out, progress: 'none' }).run();
  assert.is(ok.status, 'completed');
});

test('metrics(): async iterator over steps; batch larger than the data is an option error', async () => {
  const trainer = new Trainer(tiny({ steps: 3 }));
  const steps = [];
  for await (const m of trainer) steps.push(m.step);
  assert.equal(steps, [1, 2, 3]);
  await rejects(new Trainer(tiny({ batchSize: 64 })).run(), ByolOptionError, /batchSize at most the dataset size 32/);
});

test('report: self-contained HTML with SVG charts of loss, lr, tau and the online classifier', async () => {
  const options = tiny();
  await new Trainer(options).run();
  writeFileSync(join(options.out, 'eval.json'), JSON.stringify({ step: 6, sha256: 'x', dataset: { train: 'a', test: 'b' },
    results: { byol: { linear: { top1: 0.5, top5: 0.9 }, knn: { top1: 0.25, top5: 0.75 } } } }));
  const html = await renderReport(options.out);
  assert.match(html, /^<!DOCTYPE html>/);
  // Loss, lr, tau, throughput, and the online classifier's top-1 (the synthetic data has labels).
  assert.is((html.match(/<svg /g) ?? []).length, 5);
  for (const title of ['BYOL loss', 'learning rate', 'EMA tau', 'online classifier top-1 (%)']) assert.ok(html.includes(title), title);
  assert.ok(html.includes('50.00%') && html.includes('25.00%'), 'eval results table');
  assert.not.ok(html.includes('augmented linear'), 'no augmented column without its results');
  writeFileSync(join(options.out, 'eval.json'), JSON.stringify({ step: 6, sha256: 'x', dataset: { train: 'a', test: 'b' },
    results: { byol: { linear: { top1: 0.5, top5: 0.9 }, linearAugmented: { top1: 0.625, top5: 0.95 } },
      pixels: { linear: { top1: 0.4, top5: 0.8 } } } }));
  const withAugmented = await renderReport(options.out);
  assert.match(withAugmented, /<th>augmented linear top-1<\/th><th>augmented linear top-5<\/th><\/tr><tr><th>BYOL encoder<\/th><td>50\.00%<\/td><td>90\.00%<\/td><td>—<\/td><td>—<\/td><td>62\.50%<\/td><td>95\.00%<\/td><\/tr><tr><th>raw pixels<\/th>(<td>[^<]*<\/td>){4}<td>—<\/td><td>—<\/td><\/tr>/);
  assert.not.match(html, /<script|<link|src=|url\(|@import/);
  assert.not.match(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, ''), /https?:/);
});

test.after(() => rmSync(scratch, { recursive: true, force: true }));

test.run();
