// byol.test.mjs: the Byol model through the public TypeScript API: the native step against
// the PyTorch reference (tools/ref_byol.py fixtures: loss and every tensor after each step,
// read back through saveWeights; the online classifier's too), weights files, option and
// argument validation (messages name the option), schedules, call ordering, dispose, the free
// event loop, and the CUDA graph switch and status (on the CPU: eager, with the reason).
// Run with the suite (`npm test`) or alone: `npx uvu test byol.test.mjs`.
// Tolerances and their measurement: native/tests/test_step.cc (same metric, same bounds).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const require = createRequire(import.meta.url);
const { Byol, learningRate, emaTau } = require('../dist/byol.js');
const { Tensor, ByolOptionError, DisposedError } = require('../dist/index.js');

// Awaits a call expected to reject; `expected` is a RegExp for the message, an error class,
// or a predicate. (uvu/assert has no rejects.)
async function rejects(call, expected, what = String(expected)) {
  let error;
  try {
    await call();
  } catch (e) {
    error = e;
  }
  assert.ok(error, `rejected: ${what}`);
  if (expected instanceof RegExp) assert.match(error.message, expected);
  else if (expected.prototype instanceof Error || expected === Error) assert.instance(error, expected);
  else assert.ok(expected(error), `${what}: ${error}`);
  return error;
}

const fixtures = new URL('./fixtures/', import.meta.url);
const scratch = mkdtempSync(join(tmpdir(), 'byol-test-'));
process.on('exit', () => rmSync(scratch, { recursive: true, force: true }));

// ---- a minimal safetensors reader / writer (F32, I64, I32), independent of the native one ----
function readSafetensors(path) {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const base = 8 + headerLength;
  const tensors = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    const raw = bytes.subarray(base + begin, base + end);
    const copy = new Uint8Array(raw); // aligned copy
    const data = info.dtype === 'F32' ? new Float32Array(copy.buffer) : info.dtype === 'I64' ? new BigInt64Array(copy.buffer)
      : info.dtype === 'I32' ? new Int32Array(copy.buffer) : null;
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  return { tensors, metadata: header.__metadata__ ?? {} };
}

function writeSafetensors(path, entries) {
  const header = {};
  let offset = 0;
  const parts = [];
  for (const [name, t] of entries) {
    const buf = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + buf.length] };
    offset += buf.length;
    parts.push(buf);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([length, Buffer.from(json), ...parts]));
}

function loadFixture(name) {
  const ref = readSafetensors(new URL(`step_${name}_ref.safetensors`, fixtures));
  const meta = JSON.parse(ref.metadata['byol.step_fixture']);
  const view = (key) => {
    const t = ref.tensors.get(key);
    return Tensor.from(t.data, t.shape);
  };
  return { ref, meta, initPath: new URL(`step_${name}_init.safetensors`, fixtures).pathname, view1: view('view1'), view2: view('view2') };
}

function modelOptions(meta) {
  const c = meta.config;
  return {
    encoder: c.encoder, projector: c.projector, predictor: c.predictor, optimizer: c.optimizer, device: 'cpu',
    ...(c.classifier ? { classifier: c.classifier } : {}),
  };
}

// Max |got - want| / scale, where scale = max|want| (or the floor given).
function normalizedError(got, want, floor = 0) {
  let diff = 0;
  let scale = floor;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
    if (!Number.isFinite(got[i])) diff = Infinity;
  }
  return diff / (scale > 0 ? scale : 1);
}

// Compares a saved weights file (with optimizer state) with the fixture's "step<k>/" state.
// Returns the worst normalized error per kind; fails on any tensor over its tolerance.
function compareState(saved, ref, step, offsets, tol) {
  const worst = {};
  const note = (kind, e) => { worst[kind] = Math.max(worst[kind] ?? 0, e); };
  const prefix = `step${step}/`;
  let count = 0;
  for (const [name, t] of saved.tensors) {
    const want = ref.tensors.get(prefix + name);
    assert.ok(want, `the reference has ${prefix + name}`);
    assert.equal(t.shape, want.shape, `${name} shape`);
    count++;
    if (t.dtype === 'I64') {
      assert.is(t.data[0], want.data[0], `${name} (num_batches_tracked)`);
      continue;
    }
    if (name === 'optimizer.momentum') {
      // Per parameter; a slice whose exact value is ~0 (bias before BatchNorm) is measured
      // against 1e-3 of the whole buffer's scale (see test_step.cc).
      const flatScale = want.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      for (const [param, offset, size] of offsets) {
        const e = normalizedError(t.data.subarray(offset, offset + size), want.data.subarray(offset, offset + size),
          1e-3 * flatScale);
        note('momentum', e);
        assert.ok(e <= tol.momentum, `momentum of ${param}: normalized error ${e.toExponential(2)} > ${tol.momentum}`);
      }
      continue;
    }
    const kind = name.includes('.running_') ? 'running' : name.split('.')[0];
    const e = normalizedError(t.data, want.data);
    note(kind, e);
    const bound = kind === 'running' ? tol.running : tol.params;
    assert.ok(e <= bound, `${prefix}${name}: normalized error ${e.toExponential(2)} > ${bound}`);
  }
  return { worst, count };
}

// Same bounds as native/tests/test_step.cc (measured errors and reasons there).
const R18_CHAIN = { loss: 2e-5, params: 1e-4, momentum: 1e-3, running: 1e-5 };
const R18_FORCED = { loss: 1e-5, params: 5e-5, momentum: 5e-4, running: 1e-5 };
const R50_FORCED = { loss: 1e-4, params: 5e-3, momentum: 5e-3, running: 2e-4 };

function checkLoss(loss, ref, step, rtol) {
  const want = ref.tensors.get(`step${step}/loss`).data[0];
  assert.ok(Math.abs(loss - want) <= rtol * Math.abs(want), `step ${step} loss ${loss} vs ${want}`);
}

async function savedState(model, file) {
  await model.saveWeights(file, { optimizer: true });
  const saved = readSafetensors(file);
  const offsets = JSON.parse(saved.metadata['byol.param_offsets']);
  return { saved, offsets };
}

test('step matches PyTorch: ResNet-18 cifar stem, 3 free LARS steps, every tensor', async () => {
  const f = loadFixture('r18_cifar');
  const model = await Byol.create(modelOptions(f.meta));
  assert.equal(await model.loadWeights(f.initPath), { optimizer: false });
  const file = join(scratch, 'r18.safetensors');
  for (let k = 1; k <= f.meta.lr.length; k++) {
    const { loss } = await model.step(f.view1, f.view2, { lr: f.meta.lr[k - 1], tau: f.meta.tau[k - 1] });
    checkLoss(loss, f.ref, k, R18_CHAIN.loss);
    const { saved, offsets } = await savedState(model, file);
    const { count } = compareState(saved, f.ref, k, offsets, R18_CHAIN);
    assert.is(count, saved.tensors.size);
    assert.ok(count > 100, 'every tensor of the model was compared');
  }
  model.dispose();
});

test('step matches PyTorch: ResNet-18, each step from the exact previous state', async () => {
  const f = loadFixture('r18_cifar');
  const model = await Byol.create(modelOptions(f.meta));
  const file = join(scratch, 'r18_forced.safetensors');
  const start = join(scratch, 'r18_start.safetensors');
  for (let k = 1; k <= f.meta.lr.length; k++) {
    if (k === 1) {
      await model.loadWeights(f.initPath);
    } else {
      // The fixture's "step<k-1>/" tensors form a complete weights file with optimizer state.
      const prefix = `step${k - 1}/`;
      const entries = [...f.ref.tensors].filter(([n]) => n.startsWith(prefix) && n !== `${prefix}loss`)
        .map(([n, t]) => [n.slice(prefix.length), t]);
      writeSafetensors(start, entries);
      assert.equal(await model.loadWeights(start), { optimizer: true });
    }
    const { loss } = await model.step(f.view1, f.view2, { lr: f.meta.lr[k - 1], tau: f.meta.tau[k - 1] });
    checkLoss(loss, f.ref, k, R18_FORCED.loss);
    const { saved, offsets } = await savedState(model, file);
    compareState(saved, f.ref, k, offsets, R18_FORCED);
  }
  // embed (eval-mode BatchNorm, running statistics) from the exact final state.
  const last = `step${f.meta.lr.length}/`;
  writeSafetensors(start, [...f.ref.tensors].filter(([n]) => n.startsWith(last) && n !== `${last}loss`)
    .map(([n, t]) => [n.slice(last.length), t]));
  await model.loadWeights(start);
  const y = await model.embed(f.view1);
  const want = f.ref.tensors.get('eval/y');
  assert.equal(y.shape, want.shape);
  const e = normalizedError(await y.toArray(), want.data);
  assert.ok(e <= R18_FORCED.params, `embed: normalized error ${e.toExponential(2)}`);
  model.dispose();
});

test('step matches PyTorch: ResNet-50 imagenet stem, one channel, every tensor', async () => {
  const f = loadFixture('r50_imagenet');
  const model = await Byol.create(modelOptions(f.meta));
  assert.is(model.featureDim, 64);
  await model.loadWeights(f.initPath);
  const { loss } = await model.step(f.view1, f.view2, { lr: f.meta.lr[0], tau: f.meta.tau[0] });
  checkLoss(loss, f.ref, 1, R50_FORCED.loss);
  const { saved, offsets } = await savedState(model, join(scratch, 'r50.safetensors'));
  compareState(saved, f.ref, 1, offsets, R50_FORCED);
  model.dispose();
});

test('online classifier matches PyTorch: 3 free steps with labels, its loss and hits, classify()', async () => {
  const f = loadFixture('r18_cifar_classifier');
  const model = await Byol.create(modelOptions(f.meta));
  assert.is(model.classifierClasses, 10);
  await model.loadWeights(f.initPath);
  const labels = f.ref.tensors.get('labels');
  assert.is(labels.dtype, 'I32');
  const labelArray = Array.from(labels.data);
  const file = join(scratch, 'r18_classifier.safetensors');
  for (let k = 1; k <= f.meta.lr.length; k++) {
    // A plain array of labels is accepted as well as an Int32Array.
    const given = k === 2 ? labelArray : Int32Array.from(labelArray);
    const r = await model.step(f.view1, f.view2, { lr: f.meta.lr[k - 1], tau: f.meta.tau[k - 1], labels: given });
    checkLoss(r.loss, f.ref, k, R18_CHAIN.loss);
    const ce = f.ref.tensors.get(`step${k}/classifier_loss`).data[0];
    assert.ok(Math.abs(r.classifier.loss - ce) <= R18_CHAIN.loss * ce, `step ${k} classifier loss ${r.classifier.loss} vs ${ce}`);
    assert.equal({ correct: r.classifier.correct, count: r.classifier.count },
      { correct: f.meta.classifier_correct[k - 1], count: 8 });
    const { saved, offsets } = await savedState(model, file);
    assert.ok(saved.tensors.has('classifier.weight') && saved.tensors.has('classifier.bias'), 'classifier.* saved');
    const { worst } = compareState(saved, f.ref, k, offsets, R18_CHAIN);
    assert.ok('classifier' in worst, 'the classifier tensors were compared');
  }
  const logits = await model.classify(f.view1);
  assert.equal(logits.shape, [8, 10]);
  model.dispose();

  // A model without the classifier cannot load this file (its names are named), and takes no labels.
  const plain = await Byol.create({ ...modelOptions(f.meta), classifier: false });
  await rejects(() => plain.loadWeights(file), /classifier\.weight/);
  await rejects(() => plain.step(f.view1, f.view2, { lr: 0.1, tau: 0.9, labels: labelArray }), /no online classifier/);
  await rejects(() => plain.classify(f.view1), /classify\(\) needs the online classifier/);
  plain.dispose();
  const withIt = await Byol.create(modelOptions(f.meta));
  await rejects(() => withIt.step(f.view1, f.view2, { lr: 0.1, tau: 0.9 }), /options\.labels/);
  await rejects(() => withIt.step(f.view1, f.view2, { lr: 0.1, tau: 0.9, labels: [1, 2] }), /8 entries/);
  await rejects(() => withIt.step(f.view1, f.view2, { lr: 0.1, tau: 0.9, labels: [0, 0, 0, 0, 0, 0, 0, 10] }),
    /options\.labels\[7\] is 10/);
  await rejects(() => withIt.step(f.view1, f.view2, { lr: 0.1, tau: 0.9, labels: new Float32Array(8) }), /Int32Array/);
  await rejects(() => Byol.create({ classifier: { classes: 1 } }), /classifier\.classes but received 1/);
  await rejects(() => Byol.create({ classifier: 10 }), /object \{ classes \} or false for classifier/);
  withIt.dispose();
});

test('weights files: PyTorch names, exact resume, encoder with torchvision names', async () => {
  const f = loadFixture('r18_cifar');
  const a = await Byol.create(modelOptions(f.meta));
  await a.loadWeights(f.initPath);
  await a.step(f.view1, f.view2, { lr: 0.1, tau: 0.9 });
  const file = join(scratch, 'resume.safetensors');
  await a.saveWeights(file, { optimizer: true });
  const b = await Byol.create(modelOptions(f.meta));
  assert.equal(await b.loadWeights(file), { optimizer: true });
  const la = (await a.step(f.view1, f.view2, { lr: 0.2, tau: 0.5 })).loss;
  const lb = (await b.step(f.view1, f.view2, { lr: 0.2, tau: 0.5 })).loss;
  assert.is(la, lb, 'a resumed model continues bit for bit');
  const fa = join(scratch, 'a.safetensors');
  const fb = join(scratch, 'b.safetensors');
  await a.saveWeights(fa, { optimizer: true });
  await b.saveWeights(fb, { optimizer: true });
  assert.ok(readFileSync(fa).equals(readFileSync(fb)), 'identical files after one more step');

  const init = readSafetensors(f.initPath);
  const plain = join(scratch, 'plain.safetensors');
  await a.saveWeights(plain);
  const names = [...readSafetensors(plain).tensors.keys()].sort();
  assert.equal(names, [...init.tensors.keys()].sort(), 'the names of the PyTorch state_dict, no optimizer');
  const enc = join(scratch, 'encoder.safetensors');
  await a.saveEncoder(enc);
  const encNames = [...readSafetensors(enc).tensors.keys()].sort();
  const want = [...init.tensors.keys()].filter((n) => n.startsWith('online.encoder.')).map((n) => n.slice(15)).sort();
  assert.equal(encNames, want);
  assert.ok(encNames.includes('conv1.weight') && encNames.includes('layer4.1.bn2.num_batches_tracked'));

  const other = await Byol.create({ ...modelOptions(f.meta), encoder: { ...f.meta.config.encoder, width: 0.0625 } });
  await rejects(() => other.loadWeights(f.initPath), /online\.encoder\.conv1\.weight.*shape \[4, 3, 3, 3\].*\[2, 3, 3, 3\]/);
  await rejects(() => a.loadWeights(join(scratch, 'missing.safetensors')), /missing\.safetensors/);
  for (const m of [a, b, other]) m.dispose();
});

test('loadEncoder: an encoder file (saveEncoder\'s, or PyTorch\'s torchvision names) into the online and target encoders', async () => {
  const tiny = (seed) => Byol.create({
    encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 3, width: 0.0625 }, projector: { hidden: 16, out: 8 },
    predictor: { hidden: 16 }, device: 'cpu', seed,
  });
  const images = Tensor.from(Float32Array.from({ length: 2 * 3 * 8 * 8 }, (_, i) => Math.sin(i)), [2, 3, 8, 8]);
  const embed = async (m) => Array.from(await (await m.embed(images)).toArray());
  const tensorsOf = async (m, prefix) => {
    const file = join(scratch, `state-${Math.random()}.safetensors`);
    await m.saveWeights(file, { optimizer: true });
    return new Map([...readSafetensors(file).tensors].filter(([n]) => n.startsWith(prefix))
      .map(([n, t]) => [n.slice(prefix.length), Array.from(t.data, Number)]));
  };
  const a = await tiny(1);
  const b = await tiny(2);
  const enc = join(scratch, 'tiny-encoder.safetensors');
  await a.saveEncoder(enc);
  assert.not.equal(await embed(b), await embed(a));
  const projectorBefore = await tensorsOf(b, 'online.projector.');
  const optimizerBefore = await tensorsOf(b, 'optimizer.');
  assert.equal(await b.loadEncoder(enc), { ignored: [] });
  assert.equal(await embed(b), await embed(a), 'the same encoder output, bit for bit');
  assert.equal(await tensorsOf(b, 'target.encoder.'), await tensorsOf(a, 'online.encoder.'), 'target encoder copied');
  assert.equal(await tensorsOf(b, 'online.projector.'), projectorBefore, 'heads kept');
  assert.equal(await tensorsOf(b, 'optimizer.'), optimizerBefore, 'optimizer state kept');
  // target: false leaves the target encoder alone.
  const c = await tiny(3);
  const targetBefore = await tensorsOf(c, 'target.encoder.');
  await c.loadEncoder(enc, { target: false });
  assert.equal(await embed(c), await embed(a));
  assert.equal(await tensorsOf(c, 'target.encoder.'), targetBefore);

  // A file PyTorch wrote: the reference's encoder under torchvision names, plus torchvision's
  // classifier head (skipped) and without num_batches_tracked (optional).
  const f = loadFixture('r18_cifar');
  const init = readSafetensors(f.initPath);
  const torchvision = [...init.tensors].filter(([n]) => n.startsWith('online.encoder.') && !n.endsWith('num_batches_tracked'))
    .map(([n, t]) => [n.slice('online.encoder.'.length), t]);
  const fc = { dtype: 'F32', shape: [10, 32], data: new Float32Array(320) };
  const fromTorch = join(scratch, 'torchvision.safetensors');
  writeSafetensors(fromTorch, [...torchvision, ['fc.weight', fc], ['fc.bias', { dtype: 'F32', shape: [10], data: new Float32Array(10) }]]);
  const r = await Byol.create(modelOptions(f.meta));
  assert.equal(await r.loadEncoder(fromTorch), { ignored: ['fc.bias', 'fc.weight'] });
  const loaded = await tensorsOf(r, 'online.encoder.');
  for (const [name, t] of torchvision) assert.equal(loaded.get(name), Array.from(t.data), name);

  // Errors name the tensor or the file, and leave the model as it was.
  const before = await embed(b);
  const bad = join(scratch, 'bad-encoder.safetensors');
  const entries = [...readSafetensors(enc).tensors];
  writeSafetensors(bad, [...entries, ['layer9.0.conv1.weight', fc]]);
  await rejects(() => b.loadEncoder(bad), /has 1 tensors this model does not: layer9\.0\.conv1\.weight/);
  writeSafetensors(bad, entries.filter(([n]) => n !== 'layer2.1.bn1.weight'));
  await rejects(() => b.loadEncoder(bad), /lacks 1 tensors this model needs: layer2\.1\.bn1\.weight/);
  writeSafetensors(bad, entries.map(([n, t]) => [n, n === 'conv1.weight' ? { ...t, shape: [t.shape[0] / 2, 6, 3, 3] } : t]));
  await rejects(() => b.loadEncoder(bad), /conv1\.weight of shape \[4, 3, 3, 3\] but it has shape \[2, 6, 3, 3\]/);
  await rejects(() => b.loadEncoder(f.initPath), /holds a whole BYOL model \(online\.encoder\.\*\): load it with loadWeights\(\)/);
  await rejects(() => b.loadEncoder(join(scratch, 'nowhere.safetensors')), /nowhere\.safetensors/);
  await rejects(() => b.loadEncoder(enc, { target: 1 }), /options\.target/);
  await rejects(() => b.loadEncoder(enc, { tagret: true }), /Unknown option options\.tagret|tagret/);
  assert.equal(await embed(b), before, 'failed loads changed nothing');

  // Byol.fromEncoder: the architecture from the file's byol.config, the encoder from its tensors.
  const served = await Byol.fromEncoder(enc);
  assert.is(served.featureDim, a.featureDim);
  assert.equal(served.options.encoder, a.options.encoder);
  assert.is(served.options.bnEps, a.options.bnEps);
  assert.is(served.device, 'cpu');
  assert.equal(await embed(served), await embed(a), 'fromEncoder embeds as the model that wrote the file');
  served.dispose();
  await rejects(() => Byol.fromEncoder(fromTorch), /has no byol\.config metadata \(it was not written by saveEncoder\)/);
  await rejects(() => Byol.fromEncoder(enc, { device: 'tpu' }), /tpu/);
  await rejects(() => Byol.fromEncoder(enc, { devcie: 'cpu' }), /devcie/);
  await rejects(() => Byol.fromEncoder(join(scratch, 'nowhere.safetensors')), /nowhere\.safetensors/);
  for (const m of [a, b, c, r]) m.dispose();
  images.dispose();
});

test('options are validated with messages that name them', async () => {
  const cases = [
    [{ encoder: { arch: 'resnet101' } }, /Expected one of 'resnet18', 'resnet34', 'resnet50' for encoder\.arch but received "resnet101"/],
    [{ encoder: { stem: 'tiny' } }, /for encoder\.stem/],
    [{ encoder: { inChannels: 2 } }, /Expected 1 or 3 for encoder\.inChannels but received 2 of type number/],
    [{ encoder: { width: 0.3 } }, /64 \* width is an integer .* for encoder\.width but received 0\.3/],
    [{ encoder: { widht: 1 } }, /Unknown option encoder\.widht; expected one of arch, stem, inChannels, width/],
    [{ projector: { hidden: 0 } }, /Expected integer between 1 and 65536 for projector\.hidden but received 0/],
    [{ projector: { out: 2.5 } }, /for projector\.out but received 2\.5/],
    [{ predictor: true }, /Expected object or false for predictor but received true/],
    [{ predictor: { hidden: -1 } }, /for predictor\.hidden/],
    [{ optimizer: { name: 'adam' } }, /Expected one of 'lars', 'sgd', 'adamw' for optimizer\.name/],
    [{ optimizer: { momentum: 2 } }, /for optimizer\.momentum but received 2/],
    [{ optimizer: { variant: 'x' } }, /for optimizer\.variant/],
    [{ seed: -1 }, /for seed but received -1/],
    [{ initTarget: 'zeros' }, /Expected one of 'copy', 'random' for initTarget/],
    [{ device: 'tpu' }, /tpu/],
    [{ lr: 0.1 }, /Unknown option lr/],
    ['resnet18', /Expected object for options but received "resnet18"/],
  ];
  for (const [options, pattern] of cases) {
    let error;
    try {
      await Byol.create(options);
    } catch (e) {
      error = e;
    }
    assert.ok(error, `rejected ${JSON.stringify(options)}`);
    assert.match(error.message, pattern);
  }
  let error;
  try {
    await Byol.create({ encoder: { arch: 'resnet1' } });
  } catch (e) {
    error = e;
  }
  assert.instance(error, ByolOptionError);
});

test('step and embed check their arguments, naming view1 / view2 / images', async () => {
  const model = await Byol.create({ encoder: { arch: 'resnet18', stem: 'cifar', width: 0.0625 }, projector: { hidden: 32, out: 16 }, predictor: { hidden: 32 } });
  const ok = Tensor.zeros([4, 3, 8, 8]);
  const cases = [
    [() => model.step('x', ok, { lr: 0.1, tau: 0.9 }), /Expected Tensor for view1 but received "x"/],
    [() => model.step(ok, Tensor.zeros([4, 3, 8, 8], { dtype: 'int32' }), { lr: 0.1, tau: 0.9 }), /for view2\.dtype but received "int32"/],
    [() => model.step(Tensor.zeros([4, 1, 8, 8]), ok, { lr: 0.1, tau: 0.9 }), /view1 with 3 channels \(encoder\.inChannels\).*\[4, 1, 8, 8\]/],
    [() => model.step(Tensor.zeros([1, 3, 8, 8]), Tensor.zeros([1, 3, 8, 8]), { lr: 0.1, tau: 0.9 }), /view1 with at least 2 images/],
    [() => model.step(ok, Tensor.zeros([4, 3, 9, 8]), { lr: 0.1, tau: 0.9 }), /view2 to have the shape of view1 \[4, 3, 8, 8\] but received \[4, 3, 9, 8\]/],
    [() => model.step(ok, ok, { lr: 0.1 }), /for options\.tau but received undefined/],
    [() => model.step(ok, ok, { lr: -1, tau: 0.5 }), /for options\.lr but received -1/],
    [() => model.step(ok, ok, { lr: 0.1, tau: 0.5, t: 1 }), /Unknown option options\.t/],
    [() => model.embed(Tensor.zeros([4, 3, 8])), /Expected images of shape \[N, 3, H, W\] but received \[4, 3, 8\]/],
    [() => model.saveWeights(''), /for path/],
  ];
  for (const [call, pattern] of cases) await rejects(call, pattern);
  const disposedTensor = Tensor.zeros([2, 3, 8, 8]);
  disposedTensor.dispose();
  await rejects(() => model.embed(disposedTensor), (e) => e instanceof DisposedError && /images/.test(e.message));
  // Valid calls still work after rejected ones (the queue is not poisoned).
  const y = await model.embed(Tensor.zeros([1, 3, 8, 8]));
  assert.equal(y.shape, [1, model.featureDim]);
  assert.is(y.dtype, 'float32');
  const z = await model.project(Tensor.zeros([3, 3, 8, 8]), { target: true });
  assert.equal(z.shape, [3, 16]);
  model.dispose();
  await rejects(() => model.step(ok, ok, { lr: 0.1, tau: 0.9 }), (e) => e instanceof DisposedError && /step\(\)/.test(e.message));
  model.dispose(); // idempotent
});

test('CUDA graphs: setCudaGraphs checks on; graphStatus on the CPU turns off after the warm-up steps', async () => {
  const options = { encoder: { arch: 'resnet18', stem: 'cifar', width: 0.0625 }, projector: { hidden: 32, out: 16 }, predictor: { hidden: 32 } };
  const model = await Byol.create(options);
  const views = Tensor.zeros([4, 3, 8, 8]);
  await rejects(() => model.setCudaGraphs('yes'),
    (e) => e instanceof ByolOptionError && /^Expected boolean for on but received "yes" of type string$/.test(e.message));
  await rejects(() => model.setCudaGraphs(), (e) => e instanceof ByolOptionError && /for on but received undefined/.test(e.message));
  assert.equal(model.graphStatus(), { enabled: true, launches: 0, error: null });
  // Two eager warm-up steps, then the third would be recorded: the CPU backend cannot.
  for (let i = 0; i < 3; i++) await model.step(views, views, { lr: 0.1, tau: 0.99 });
  assert.equal(model.graphStatus(), { enabled: false, launches: 0, error: 'cpu: graph capture not supported' });
  model.dispose();

  const eager = await Byol.create(options);
  await eager.setCudaGraphs(false);
  assert.equal(eager.graphStatus(), { enabled: false, launches: 0, error: null });
  for (let i = 0; i < 3; i++) await eager.step(views, views, { lr: 0.1, tau: 0.99 });
  assert.equal(eager.graphStatus(), { enabled: false, launches: 0, error: null }, 'off: no capture is tried');
  eager.dispose();
  assert.throws(() => eager.graphStatus(), (e) => e instanceof DisposedError && /graphStatus\(\) after dispose/.test(e.message));
  await rejects(() => eager.setCudaGraphs(true), (e) => e instanceof DisposedError && /setCudaGraphs\(\)/.test(e.message));
  views.dispose();
});

test('calls run in order off the main thread; dispose during a step is safe', async () => {
  const model = await Byol.create({ encoder: { arch: 'resnet18', stem: 'cifar', width: 0.25 }, projector: { hidden: 64, out: 32 }, predictor: { hidden: 64 }, seed: 1 });
  const n = 32 * 3 * 32 * 32;
  const v1 = Tensor.from(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37)), [32, 3, 32, 32]);
  const v2 = Tensor.from(Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11)), [32, 3, 32, 32]);
  await model.step(v1, v2, { lr: 0.1, tau: 0.99 }); // warm-up: plans and oneDNN primitives
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 1);
  const order = [];
  const started = Date.now();
  const pending = [
    model.step(v1, v2, { lr: 0.1, tau: 0.99 }).then(() => order.push('step1')),
    model.embed(v1).then((y) => { order.push('embed'); y.dispose(); }),
    model.step(v1, v2, { lr: 0.1, tau: 0.99 }).then(() => order.push('step2')),
  ];
  await Promise.all(pending);
  const elapsed = Date.now() - started;
  clearInterval(timer);
  assert.equal(order, ['step1', 'embed', 'step2']);
  // The timer keeps firing while native work runs (a blocked loop would fire it about once).
  assert.ok(ticks >= Math.min(5, elapsed / 10), `event loop ticked ${ticks} times in ${elapsed} ms`);
  const running = model.step(v1, v2, { lr: 0.1, tau: 0.99 });
  model.dispose();
  const result = await running.then((r) => r, (e) => e);
  assert.ok(result instanceof DisposedError || typeof result.loss === 'number', 'a step queued before dispose settles cleanly');
  await rejects(() => model.embed(v1), DisposedError);
});

test('schedules: warmup + cosine learning rate, cosine EMA tau', () => {
  const lr = (k) => learningRate(k, { baseLr: 0.2, batchSize: 512, warmupSteps: 10, totalSteps: 110 });
  assert.is(lr(0), 0);
  assert.ok(Math.abs(lr(5) - 0.2) < 1e-12);
  assert.ok(Math.abs(lr(10) - 0.4) < 1e-12, 'peak = base * batch / 256');
  assert.ok(Math.abs(lr(60) - 0.2) < 1e-12, 'cosine midpoint');
  assert.ok(Math.abs(lr(110)) < 1e-12);
  assert.is(lr(1000), 0);
  const tau = (k) => emaTau(k, { tauBase: 0.996, totalSteps: 100 });
  assert.ok(Math.abs(tau(0) - 0.996) < 1e-12);
  assert.ok(Math.abs(tau(50) - 0.998) < 1e-12);
  assert.is(tau(100), 1);
  assert.is(tau(200), 1);
  assert.throws(() => learningRate(-1, { baseLr: 0.2, batchSize: 1, warmupSteps: 0, totalSteps: 1 }), /for step but received -1/);
  assert.throws(() => learningRate(0, { baseLr: 0.2, batchSize: 1, warmupSteps: 5, totalSteps: 2 }), /for warmupSteps but received 5/);
  assert.throws(() => learningRate(0, { baseLr: 0.2, batchSize: 1, warmupSteps: 0 }), /for totalSteps but received undefined/);
  assert.throws(() => emaTau(0, { tauBase: 1.5, totalSteps: 10 }), /for tauBase but received 1\.5/);
  assert.throws(() => emaTau(0, { tauBase: 0.99, totalSteps: 10, k: 1 }), /Unknown option options\.k/);
});

test.run();
