// augment.test.mjs: lib/augment.ts: presets and option validation (messages), parameter draws
// against the Python reference (test/fixtures/augment_v1.bin, tools/ref_augment.py), and
// augmentBatch end to end: layout, identity and flip exactness, determinism, index keying,
// Tensor input, label pass-through and error rejections.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rejectsMessage, throwsMessage } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { augmentBatch, augmentConfig, augmentPair, drawAugmentParams } = require('../dist/augment.js');
const { Tensor } = require('../dist/tensor.js');
const { ByolOptionError } = require('../dist/validate.js');
const { native } = require('../dist/native.js');



function randomBytes(n, seed) {
  const out = new Uint8Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    out[i] = s >>> 24;
  }
  return out;
}

// The draw section of the fixture (format: tools/ref_augment.py).
function fixtureDraws() {
  const bytes = readFileSync(new URL('./fixtures/augment_v1.bin', import.meta.url));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 8;
  const u32 = () => { const v = view.getUint32(pos, true); pos += 4; return v; };
  const i32 = () => { const v = view.getInt32(pos, true); pos += 4; return v; };
  const u64 = () => { const v = view.getBigUint64(pos, true); pos += 8; return v; };
  const str = () => { const n = u32(); const s = bytes.subarray(pos, pos + n).toString(); pos += n; return s; };
  const f32s = (n) => { const a = []; for (let i = 0; i < n; i++, pos += 4) a.push(view.getFloat32(pos, true)); return a; };
  assert.is(bytes.subarray(0, 8).toString(), 'BYOLAUG1');
  const channels = [];
  const images = u32();
  for (let i = 0; i < images; i++) { const h = i32(), w = i32(), c = i32(); channels.push(c); pos += h * w * c; }
  const ops = u32();
  for (let i = 0; i < ops; i++) {
    str();
    const id = i32(), oh = i32(), ow = i32();
    pos += 4 + 27 * 4 + oh * ow * channels[id] * 4;  // atol, params, expected output
  }
  const draws = [];
  const n = u32();
  for (let i = 0; i < n; i++) {
    const preset = str();
    const presetView = i32(), outH = i32(), outW = i32();
    const seed = u64(), epoch = u64(), index = u64();
    const drawView = i32(), H = i32(), W = i32();
    draws.push({ preset, presetView, outH, outW, seed, epoch: Number(epoch), index: Number(index), view: drawView, H, W, expected: f32s(27) });
  }
  assert.is(pos, bytes.length);
  return draws;
}

const OPS = ['brightness', 'contrast', 'saturation', 'hue'];

test('presets resolve to complete configs', () => {
  const [t, tPrime] = augmentPair();
  assert.equal(t.outputSize, [224, 224]);
  assert.is(t.interpolation, 'bicubic');
  assert.equal(t.cropScale, [0.08, 1]);
  assert.is(t.blurP, 1);
  assert.is(tPrime.blurP, 0.1);
  assert.is(t.solarizeP, 0);
  assert.is(tPrime.solarizeP, 0.2);
  const cifar = augmentConfig({ preset: 'cifar', view: 2 });
  assert.equal(cifar.outputSize, [32, 32]);
  assert.is(cifar.blurP, 0);
  assert.is(cifar.solarizeP, 0.2);
  const gray = augmentConfig({ preset: 'grayscale', outputSize: 24 });
  assert.equal(gray.outputSize, [24, 24]);
  assert.equal(gray.mean, [0.286]);
  assert.is(gray.saturation, 0);
  assert.is(gray.grayscaleP, 0);
  // A resolved config passes through unchanged.
  assert.equal(augmentConfig(cifar), cifar);
});

test('every config option is validated with its name', () => {
  throwsMessage(() => augmentConfig({ flipP: 1.5 }), ByolOptionError,
    /^Expected number between 0 and 1 for config\.flipP but received 1\.5 of type number$/);
  throwsMessage(() => augmentConfig({ preset: 'imagenet' }), ByolOptionError,
    /Expected one of 'byol', 'cifar', 'grayscale' for config\.preset but received "imagenet"/);
  throwsMessage(() => augmentConfig({ view: 3 }), ByolOptionError, /config\.view/);
  throwsMessage(() => augmentConfig({ cropScale: [0.5, 0.2] }), ByolOptionError, /config\.cropScale/);
  throwsMessage(() => augmentConfig({ cropScale: [0, 1] }), ByolOptionError, /config\.cropScale/);
  throwsMessage(() => augmentConfig({ cropRatio: [1] }), ByolOptionError, /config\.cropRatio/);
  throwsMessage(() => augmentConfig({ hue: 0.6 }), ByolOptionError, /config\.hue/);
  throwsMessage(() => augmentConfig({ blurSigma: [2, 1] }), ByolOptionError, /config\.blurSigma/);
  throwsMessage(() => augmentConfig({ outputSize: [0, 3] }), ByolOptionError, /config\.outputSize\[0\]/);
  throwsMessage(() => augmentConfig({ interpolation: 'nearest' }), ByolOptionError, /config\.interpolation/);
  throwsMessage(() => augmentConfig({ std: [0.2, 0, 0.2] }), ByolOptionError, /config\.std\[1\]/);
  throwsMessage(() => augmentConfig({ mean: [0.5], std: [0.2, 0.2, 0.2] }), ByolOptionError, /same length/);
  throwsMessage(() => augmentConfig({ flipProbability: 0.5 }), ByolOptionError,
    /Unknown option config\.flipProbability; expected one of/);
  throwsMessage(() => augmentPair({ view: 1 }), ByolOptionError, /both views/);
});

test('draws equal the Python reference for the same presets (TS, C++ and Python agree)', () => {
  const draws = fixtureDraws();
  assert.ok(draws.length >= 30);
  for (const d of draws) {
    const config = augmentConfig({ preset: d.preset, view: d.presetView, outputSize: [d.outH, d.outW] });
    const [p] = drawAugmentParams({ config, seed: d.seed, epoch: d.epoch, indices: [d.index], view: d.view, height: d.H, width: d.W });
    const e = d.expected;
    const label = `${d.preset} seed=${d.seed} index=${d.index} view=${d.view}`;
    assert.equal(p.crop, e.slice(0, 4), label);
    assert.is(p.flip, e[4] === 1, label);
    assert.is(p.jitter, e[5] === 1, label);
    assert.is(p.brightness, e[6], label);
    assert.is(p.contrast, e[7], label);
    assert.is(p.saturation, e[8], label);
    assert.is(p.hue, e[9], label);
    assert.equal(p.jitterOrder, e.slice(10, 14).map((k) => OPS[k]), label);
    assert.is(p.grayscale, e[14] === 1, label);
    assert.is(p.blur, e[15] === 1, label);
    assert.is(p.blurSigma, e[16], label);
    assert.equal(p.blurSize, [e[17], e[18]], label);
    assert.is(p.solarize, e[19] === 1, label);
  }
});

// Identity config: the full image (scale 1, its own aspect), nothing random.
function identityConfig(h, w, channels, extra = {}) {
  return augmentConfig({
    preset: channels === 1 ? 'grayscale' : 'byol', outputSize: [h, w], cropScale: [1, 1], cropRatio: [w / h, w / h],
    flipP: 0, jitterP: 0, grayscaleP: 0, blurP: 0, solarizeP: 0, ...extra,
  });
}

test('augmentBatch: identity is exact, output is NCHW, flip mirrors', async () => {
  const [N, H, W, C] = [3, 5, 7, 3];
  const pixels = randomBytes(N * H * W * C, 7);
  const config = identityConfig(H, W, C);
  const { images } = await augmentBatch(pixels, null, { config, seed: 1, epoch: 0, indices: [0, 1, 2], view: 1, shape: [N, H, W, C] });
  assert.equal(images.shape, [N, C, H, W]);
  assert.is(images.dtype, 'float32');
  const out = await images.toArray();
  let worst = 0;
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const want = (pixels[((n * H + y) * W + x) * C + c] / 255 - config.mean[c]) / config.std[c];
    worst = Math.max(worst, Math.abs(out[((n * C + c) * H + y) * W + x] - want));
  }
  // float32 (x/255 - mean)/std vs float64: a few ulps of values below 3.
  assert.ok(worst < 2e-6, `identity max error ${worst}`);
  images.dispose();

  const flipped = await augmentBatch(pixels, null, { config: { ...config, flipP: 1 }, seed: 1, epoch: 0, indices: [0, 1, 2], view: 1, shape: [N, H, W, C] });
  const mirrored = await flipped.images.toArray();
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    assert.is(mirrored[((n * C + c) * H + y) * W + x], out[((n * C + c) * H + y) * W + (W - 1 - x)]);
  }
  flipped.images.dispose();
});

test('augmentBatch: deterministic per key, keyed by dataset index not batch position', async () => {
  const [N, H, W, C] = [4, 40, 48, 3];
  const pixels = randomBytes(N * H * W * C, 11);
  const [t] = augmentPair({ outputSize: 32 });
  const run = async (images, indices, opts = {}) => {
    const r = await augmentBatch(images, null, { config: t, seed: 5n, epoch: 2, indices, view: 1, shape: [indices.length, H, W, C], ...opts });
    const a = await r.images.toArray();
    r.images.dispose();
    return a;
  };
  const a = await run(pixels, [10, 11, 12, 13]);
  const b = await run(pixels, [10, 11, 12, 13]);
  assert.equal(a, b);
  const otherView = await run(pixels, [10, 11, 12, 13], { view: 2 });
  const otherEpoch = await run(pixels, [10, 11, 12, 13], { epoch: 3 });
  assert.not.equal(a, otherView);
  assert.not.equal(a, otherEpoch);
  // Sample 12 alone, in a batch of one, gives exactly its slice of the batch result.
  const size = 3 * 32 * 32;
  const single = await run(pixels.subarray(2 * H * W * C, 3 * H * W * C), [12]);
  assert.equal(single, a.subarray(2 * size, 3 * size));
});

test('augmentBatch: a uint8 Tensor input equals the Uint8Array input; labels pass through', async () => {
  const [N, H, W, C] = [2, 20, 24, 1];
  const pixels = randomBytes(N * H * W * C, 3);
  const config = augmentConfig({ preset: 'grayscale', outputSize: [16, 16] });
  const labels = new Int32Array([4, 9]);
  const fromArray = await augmentBatch(pixels, labels, { config, seed: 9, epoch: 1, indices: new Int32Array([5, 6]), view: 2, shape: [N, H, W, C] });
  const tensor = Tensor.from(pixels, [N, H, W, C], { layout: 'nhwc' });
  const fromTensor = await augmentBatch(tensor, null, { config, seed: 9, epoch: 1, indices: [5, 6], view: 2 });
  assert.is(fromArray.labels, labels);
  assert.is(fromTensor.labels, undefined);
  assert.equal(Array.from(fromArray.indices), [5, 6]);
  assert.equal(fromArray.images.shape, [2, 1, 16, 16]);
  assert.equal(await fromArray.images.toArray(), await fromTensor.images.toArray());
  fromArray.images.dispose();
  fromTensor.images.dispose();
  tensor.dispose();
});

test('augmentBatch rejects bad input, naming the option', async () => {
  const pixels = new Uint8Array(2 * 4 * 4 * 3);
  const base = { config: augmentConfig({ outputSize: 4 }), seed: 0, epoch: 0, indices: [0, 1], view: 1, shape: [2, 4, 4, 3] };
  await rejectsMessage(augmentBatch(pixels, null, { ...base, shape: [2, 4, 4, 2] }), ByolOptionError, /options\.shape\[3\]/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, shape: [3, 4, 4, 3] }), ByolOptionError, /N\*H\*W\*C = 144 bytes/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, indices: [0] }), ByolOptionError, /options\.indices to hold 2 entries/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, indices: [0, -1] }), ByolOptionError, /options\.indices\[1\]/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, seed: -1 }), ByolOptionError, /options\.seed/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, seed: 2n ** 64n }), ByolOptionError, /options\.seed/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, epoch: 1.5 }), ByolOptionError, /options\.epoch/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, config: { flipP: 2 } }), ByolOptionError, /options\.config\.flipP/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, config: augmentConfig({ preset: 'grayscale' }) }), ByolOptionError,
    /mean and std with 3 entries/);
  await rejectsMessage(augmentBatch(pixels, new Int32Array(3), base), ByolOptionError, /labels to hold 2 entries/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, device: 'tpu' }), ByolOptionError, /options\.device/);
  await rejectsMessage(augmentBatch(pixels, null, { ...base, colour: true }), ByolOptionError, /Unknown option options\.colour/);
  await rejectsMessage(augmentBatch([1, 2, 3], null, base), ByolOptionError, /for images/);
  const disposed = Tensor.from(pixels, [2, 4, 4, 3], { layout: 'nhwc' });
  disposed.dispose();
  const { shape, ...noShape } = base;
  void shape;
  await rejectsMessage(augmentBatch(disposed, null, noShape), Error, /disposed/);
});

test('the addon re-checks arguments when lib/ is bypassed', () => {
  const config = augmentConfig({ outputSize: 4 });
  throwsMessage(() => native.augment(new Uint8Array(10), [1, 2, 2, 3], config, 0, 0, [0], 1, 'cpu'), RangeError,
    /N\*H\*W\*C = 12 bytes/);
  throwsMessage(() => native.augment(new Uint8Array(12), [1, 2, 2, 3], { ...config, flipP: 3 }, 0, 0, [0], 1, 'cpu'), TypeError,
    /config\.flipP/);
  throwsMessage(() => native.augment(new Uint8Array(12), [1, 2, 2, 3], { ...config, cropRatio: [2, 1] }, 0, 0, [0], 1, 'cpu'),
    RangeError, /crop ratio/);
  throwsMessage(() => native.augment(new Uint8Array(12), [1, 2, 2, 3], config, 0, 2 ** 32, [0], 1, 'cpu'), TypeError, /epoch/);
  throwsMessage(() => native.augment(new Float32Array(12), [1, 2, 2, 3], config, 0, 0, [0], 1, 'cpu'), TypeError, /images/);
});

test('a large batch at 224x224 runs and is finite', async () => {
  const [N, H, W, C] = [8, 256, 256, 3];
  const pixels = randomBytes(N * H * W * C, 99);
  const [, tPrime] = augmentPair();
  const { images } = await augmentBatch(pixels, null, { config: tPrime, seed: 3, epoch: 0, indices: [...Array(N).keys()], view: 2, shape: [N, H, W, C] });
  assert.equal(images.shape, [8, 3, 224, 224]);
  const out = await images.toArray();
  images.dispose();
  let lo = Infinity, hi = -Infinity;
  for (const v of out) { if (!Number.isFinite(v)) assert.unreachable('non-finite output'); lo = Math.min(lo, v); hi = Math.max(hi, v); }
  // Normalized [0, 1] values with ImageNet statistics lie in [-2.12, 2.64].
  assert.ok(lo >= -2.1180 - 1e-4 && hi <= 2.6400 + 1e-4, `range [${lo}, ${hi}]`);
});

test.run();
