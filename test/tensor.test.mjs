// tensor.test.mjs: Tensor round trips (every dtype; 4-D NCHW in, NHWC in the core), input
// validation messages, dispose semantics and the off-main-thread readback.
// Run with the suite (`npm test`) or alone: `npx uvu test tensor.test.mjs`.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { ByolOptionError, DisposedError, Tensor } from '../dist/index.js';

const require = createRequire(import.meta.url);

// Children get the parent's environment minus color settings: test runners set FORCE_COLOR,
// which colors console.log output and makes Node print warnings about NO_COLOR.
function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.FORCE_COLOR;
  delete env.NO_COLOR;
  return env;
}
const { native } = require('../dist/native.js');
const { unwrapTensor, wrapNativeTensor } = require('../dist/tensor.js');

function iota(ArrayType, n, offset = 0) {
  const a = new ArrayType(n);
  for (let i = 0; i < n; i++) a[i] = i + offset;
  return a;
}

// Reference permutations written independently of the native code: index arithmetic per
// element, in the obvious nested-loop order.
function nchwToNhwc(src, [N, C, H, W]) {
  const dst = new src.constructor(src.length);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let h = 0; h < H; h++)
        for (let w = 0; w < W; w++) dst[((n * H + h) * W + w) * C + c] = src[((n * C + c) * H + h) * W + w];
  return dst;
}

async function assertThrowsMessage(fn, ErrorType, message) {
  let caught;
  try {
    await fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught, `expected an error matching ${message}`);
  assert.instance(caught, ErrorType);
  if (message instanceof RegExp) assert.match(caught.message, message);
  else assert.is(caught.message, message);
}

// ---- round trips ----

test('float32 1-D round trip is exact, including NaN, -0 and infinities', async () => {
  const data = new Float32Array([1.5, -0, NaN, Infinity, -Infinity, 3.4028234663852886e38, 1e-45, -7.25]);
  const t = Tensor.from(data, [8]);
  assert.equal(t.shape, [8]);
  assert.is(t.dtype, 'float32');
  assert.is(t.device, 'cpu');
  assert.is(t.size, 8);
  const back = await t.toArray();
  assert.instance(back, Float32Array);
  assert.is.not(back.buffer, data.buffer);
  for (let i = 0; i < data.length; i++) assert.ok(Object.is(back[i], data[i]), `element ${i}: ${back[i]} vs ${data[i]}`);
  t.dispose();
});

test('int32 2-D round trip keeps the extremes', async () => {
  const data = new Int32Array([-2147483648, 2147483647, 0, -1, 7, 123456789]);
  const t = Tensor.from(data, [2, 3]);
  assert.equal(t.shape, [2, 3]);
  assert.is(t.dtype, 'int32');
  const back = await t.toArray();
  assert.instance(back, Int32Array);
  assert.equal(Array.from(back), Array.from(data));
  t.dispose();
});

test('uint8 3-D round trip, from Uint8Array, Buffer and Uint8ClampedArray', async () => {
  const values = iota(Uint8Array, 2 * 3 * 50).map((v) => (v * 37) % 256);
  for (const data of [values, Buffer.from(values), new Uint8ClampedArray(values)]) {
    const t = Tensor.from(data, [2, 3, 50]);
    assert.is(t.dtype, 'uint8');
    const back = await t.toArray();
    assert.ok(back.constructor === Uint8Array, `got ${back.constructor.name} for ${data.constructor.name}`);
    assert.equal(Array.from(back), Array.from(values));
    t.dispose();
  }
});

test('4-D NCHW round trip with N,C,H,W = 2,3,4,5 keeps the exact element order, every dtype', async () => {
  const shape = [2, 3, 4, 5];
  for (const ArrayType of [Float32Array, Int32Array, Uint8Array]) {
    const data = iota(ArrayType, 120, 1);
    const t = Tensor.from(data, shape);
    assert.equal(t.shape, shape);
    const back = await t.toArray();
    assert.instance(back, ArrayType);
    assert.equal(Array.from(back), Array.from(data), `${ArrayType.name} round trip`);
    t.dispose();
  }
});

test('4-D tensors are NHWC in the core: native shape and nhwc readback', async () => {
  const shape = [2, 3, 4, 5];
  const data = iota(Float32Array, 120);
  const t = Tensor.from(data, shape);
  assert.equal(unwrapTensor(t, 't').shape, [2, 4, 5, 3], 'core shape is N,H,W,C');
  const nhwc = await t.toArray({ layout: 'nhwc' });
  assert.equal(Array.from(nhwc), Array.from(nchwToNhwc(data, shape)));
  // Spot check by hand: element (n=1, c=2, h=3, w=4) is the last NCHW element (119) and the
  // last NHWC element too; (n=0, c=1, h=0, w=0) = 20 sits at NHWC offset 1.
  assert.is(nhwc[119], 119);
  assert.is(nhwc[1], 20);
  t.dispose();
});

test("layout 'nhwc' input: shape is given as N,H,W,C and the tensor is NCHW", async () => {
  const nchwShape = [2, 3, 4, 5];
  const nchw = iota(Int32Array, 120, -60);
  const nhwc = nchwToNhwc(nchw, nchwShape);
  const t = Tensor.from(nhwc, [2, 4, 5, 3], { layout: 'nhwc' });
  assert.equal(t.shape, nchwShape);
  assert.equal(Array.from(await t.toArray()), Array.from(nchw));
  assert.equal(Array.from(await t.toArray({ layout: 'nhwc' })), Array.from(nhwc));
  t.dispose();
});

test('a large 4-D tensor round trips (the threaded permutation path)', async () => {
  const shape = [3, 3, 257, 129]; // odd sizes, above the threading threshold
  const data = iota(Float32Array, 3 * 3 * 257 * 129);
  const t = Tensor.from(data, shape);
  const back = await t.toArray();
  let mismatches = 0;
  for (let i = 0; i < data.length; i++) if (back[i] !== data[i]) mismatches++;
  assert.is(mismatches, 0);
  const nhwc = await t.toArray({ layout: 'nhwc' });
  const expected = nchwToNhwc(data, shape);
  for (let i = 0; i < data.length; i++) if (nhwc[i] !== expected[i]) mismatches++;
  assert.is(mismatches, 0);
  t.dispose();
});

test('data may be a view into a larger buffer (byteOffset is honoured)', async () => {
  const big = iota(Float32Array, 40);
  const view = big.subarray(7, 31);
  const t = Tensor.from(view, [2, 3, 4]);
  assert.equal(Array.from(await t.toArray()), Array.from(view));
  t.dispose();
});

test('the tensor copies its input: later writes to data do not show', async () => {
  const data = new Float32Array([1, 2, 3]);
  const t = Tensor.from(data, [3]);
  data[0] = 99;
  assert.equal(Array.from(await t.toArray()), [1, 2, 3]);
  t.dispose();
});

test('zero-size tensors are legal', async () => {
  const t = Tensor.from(new Float32Array(0), [0, 3]);
  assert.equal(t.shape, [0, 3]);
  assert.is(t.size, 0);
  assert.is((await t.toArray()).length, 0);
  t.dispose();
  const z = Tensor.zeros([2, 0, 4, 4], { dtype: 'uint8' });
  assert.is((await z.toArray()).length, 0);
  z.dispose();
});

test('Tensor.zeros for every dtype, 4-D in NCHW', async () => {
  for (const [dtype, ArrayType] of [['float32', Float32Array], ['int32', Int32Array], ['uint8', Uint8Array]]) {
    const t = Tensor.zeros([2, 3, 4, 5], { dtype });
    assert.is(t.dtype, dtype);
    assert.equal(t.shape, [2, 3, 4, 5]);
    assert.equal(unwrapTensor(t, 't').shape, [2, 4, 5, 3]);
    const back = await t.toArray();
    assert.instance(back, ArrayType);
    assert.is(back.length, 120);
    assert.ok(back.every((v) => v === 0));
    t.dispose();
  }
  const f = Tensor.zeros([4]);
  assert.is(f.dtype, 'float32');
  f.dispose();
});

test('shape is a frozen copy of the argument', () => {
  const shape = [2, 2];
  const t = Tensor.from(new Float32Array(4), shape);
  shape[0] = 7;
  assert.equal(t.shape, [2, 2]);
  assert.ok(Object.isFrozen(t.shape));
  assert.is(String(t), 'Tensor(float32, [2, 2], cpu)');
  t.dispose();
});

test('wrapNativeTensor turns a core NHWC handle into a public NCHW tensor', async () => {
  const handle = native.tensorFromData(iota(Uint8Array, 24), [1, 2, 3, 4], 'cpu', 'nhwc');
  const t = wrapNativeTensor(handle);
  assert.equal(t.shape, [1, 4, 2, 3]);
  assert.is(t.dtype, 'uint8');
  t.dispose();
});

// ---- bad input ----

test('wrong data length names both lengths and the shape', async () => {
  await assertThrowsMessage(() => Tensor.from(new Float32Array(23), [2, 3, 4]), ByolOptionError,
    'Expected data of length 24 for shape [2, 3, 4] but received length 23');
});

test('negative, fractional and non-number dims name the index', async () => {
  await assertThrowsMessage(() => Tensor.from(new Float32Array(6), [2, -3]), ByolOptionError,
    'Expected non-negative integer for shape[1] but received -3 of type number');
  await assertThrowsMessage(() => Tensor.from(new Float32Array(6), [1.5, 4]), ByolOptionError,
    'Expected non-negative integer for shape[0] but received 1.5 of type number');
  await assertThrowsMessage(() => Tensor.from(new Float32Array(6), [2, '3']), ByolOptionError,
    'Expected non-negative integer for shape[1] but received "3" of type string');
  await assertThrowsMessage(() => Tensor.from(new Float32Array(6), [2, NaN]), ByolOptionError,
    'Expected non-negative integer for shape[1] but received NaN of type number');
  await assertThrowsMessage(() => Tensor.zeros([4, 2 ** 53]), ByolOptionError,
    'Expected non-negative integer for shape[1] but received 9007199254740992 of type number');
});

test('dims count must be 1..8; shape must be an array', async () => {
  await assertThrowsMessage(() => Tensor.from(new Float32Array(1), [1, 1, 1, 1, 1, 1, 1, 1, 1]), ByolOptionError,
    'Expected 1 to 8 dimensions for shape but received 9 ([1, 1, 1, 1, 1, 1, 1, 1, 1])');
  await assertThrowsMessage(() => Tensor.from(new Float32Array(1), []), ByolOptionError,
    'Expected 1 to 8 dimensions for shape but received 0 ([])');
  await assertThrowsMessage(() => Tensor.from(new Float32Array(1), 1), ByolOptionError,
    'Expected array of 1 to 8 non-negative integers for shape but received 1 of type number');
  // 8 dims is fine.
  const t = Tensor.from(new Float32Array(2), [1, 1, 1, 1, 1, 1, 1, 2]);
  assert.equal(Array.from(await t.toArray()), [0, 0]);
  t.dispose();
});

test('unsupported data types name data, what is expected and what came', async () => {
  await assertThrowsMessage(() => Tensor.from(new Float64Array(4), [4]), ByolOptionError,
    'Expected Float32Array, Int32Array or Uint8Array for data but received Float64Array of type object; ' +
    'convert it first, e.g. Float32Array.from(data)');
  await assertThrowsMessage(() => Tensor.from(new Int16Array(4), [4]), ByolOptionError,
    /^Expected Float32Array, Int32Array or Uint8Array for data but received Int16Array of type object/);
  await assertThrowsMessage(() => Tensor.from([1, 2, 3, 4], [4]), ByolOptionError,
    'Expected Float32Array, Int32Array or Uint8Array for data but received array of length 4 of type array; ' +
    'convert it first, e.g. new Float32Array(data)');
  await assertThrowsMessage(() => Tensor.from(null, [4]), ByolOptionError,
    'Expected Float32Array, Int32Array or Uint8Array for data but received null of type null');
});

test('options are checked: unknown keys, device names, layouts, dtypes', async () => {
  await assertThrowsMessage(() => Tensor.from(new Float32Array(4), [4], { devcie: 'cpu' }), ByolOptionError,
    'Unknown option devcie; expected one of device, layout');
  await assertThrowsMessage(() => Tensor.from(new Float32Array(4), [4], { device: 'tpu' }), ByolOptionError,
    `Expected one of 'cpu', 'cuda', 'cuda:N' or 'auto' for device but received "tpu" of type string`);
  await assertThrowsMessage(() => Tensor.from(new Float32Array(4), [4], { layout: 'chw' }), ByolOptionError,
    `Expected one of 'nchw', 'nhwc' for layout but received "chw" of type string`);
  await assertThrowsMessage(() => Tensor.from(new Float32Array(4), [2, 2], { layout: 'nhwc' }), ByolOptionError,
    "Expected a 4-D shape for layout 'nhwc' but received [2, 2]");
  await assertThrowsMessage(() => Tensor.zeros([4], { dtype: 'float64' }), ByolOptionError,
    `Expected one of 'float32', 'int32', 'uint8' for dtype but received "float64" of type string`);
  await assertThrowsMessage(() => Tensor.from(new Float32Array(4), [4], 'cpu'), ByolOptionError,
    'Expected object for options but received "cpu" of type string');
  const t = Tensor.from(new Float32Array(4), [4]);
  await assertThrowsMessage(() => t.toArray({ layout: 'nhwc' }), ByolOptionError,
    "Expected a 4-D tensor for layout 'nhwc' but the tensor has shape [4]");
  t.dispose();
});

test('new Tensor() is refused', async () => {
  await assertThrowsMessage(() => new Tensor(), TypeError,
    'Tensor cannot be constructed with new; use Tensor.from() or Tensor.zeros()');
  await assertThrowsMessage(() => new native.NativeTensor(), TypeError,
    'NativeTensor cannot be constructed from JavaScript; use Tensor.from() or Tensor.zeros()');
});

test('the native edge repeats the checks (defense in depth)', async () => {
  const cases = [
    [() => native.tensorFromData(new Float64Array(2), [2], 'cpu'),
      'Expected Float32Array, Int32Array or Uint8Array for data but received Float64Array of type object'],
    [() => native.tensorFromData([1, 2], [2], 'cpu'),
      'Expected Float32Array, Int32Array or Uint8Array for data but received array of length 2 of type array'],
    [() => native.tensorFromData(new Float32Array(6), [2, -3], 'cpu'),
      'Expected non-negative integer for shape[1] but received -3 of type number'],
    [() => native.tensorFromData(new Float32Array(6), [2, 1.5], 'cpu'),
      'Expected non-negative integer for shape[1] but received 1.5 of type number'],
    [() => native.tensorFromData(new Float32Array(23), [2, 3, 4], 'cpu'),
      'Expected data of length 24 for shape [2, 3, 4] but received length 23'],
    [() => native.tensorFromData(new Float32Array(1), [1, 1, 1, 1, 1, 1, 1, 1, 1], 'cpu'),
      'Expected 1 to 8 dimensions for shape but received 9'],
    [() => native.tensorFromData(new Float32Array(4), [4], 'cpu', 'nhwc'),
      "Expected a 4-D shape for layout 'nhwc' but received [4]"],
    [() => native.tensorZeros([2], 'float16', 'cpu'),
      `Expected one of 'float32', 'int32', 'uint8' for dtype but received "float16" of type string`],
  ];
  for (const [fn, message] of cases) await assertThrowsMessage(fn, TypeError, message);
  await assertThrowsMessage(() => native.tensorFromData(new Float32Array(2), [2], 'tpu'), Error,
    /^unknown device 'tpu': expected 'cpu', 'cuda' or 'cuda:N'/);
});

// ---- dispose ----

test('dispose frees native memory at once; twice is fine; Symbol.dispose disposes', () => {
  const before = native.tensorStats();
  const t = Tensor.from(new Float32Array(1000), [10, 100]);
  let stats = native.tensorStats();
  assert.is(stats.handles, before.handles + 1);
  assert.is(stats.bytes, before.bytes + 4000);
  assert.is(t.disposed, false);
  t.dispose();
  assert.is(t.disposed, true);
  stats = native.tensorStats();
  assert.is(stats.handles, before.handles);
  assert.is(stats.bytes, before.bytes);
  t.dispose();
  t[Symbol.dispose]();
  assert.equal(native.tensorStats(), before);

  const u = Tensor.zeros([3]);
  assert.is(typeof Symbol.dispose, 'symbol');
  u[Symbol.dispose]();
  assert.is(u.disposed, true);
  assert.equal(native.tensorStats(), before);
});

test('every use after dispose names the method', async () => {
  const t = Tensor.from(new Float32Array(4), [4]);
  t.dispose();
  // Metadata stays readable (it is plain JS), data access does not.
  assert.equal(t.shape, [4]);
  assert.is(String(t), 'Tensor(float32, [4], cpu, disposed)');
  await assertThrowsMessage(() => t.toArray(), DisposedError,
    'Tensor was disposed: cannot call toArray() after dispose()');
  // toArray rejects rather than throwing synchronously.
  const pending = t.toArray();
  assert.instance(pending, Promise);
  await pending.catch(() => {});
  await assertThrowsMessage(() => unwrapTensor(t, 'images'), DisposedError,
    'Expected a live Tensor for images but the tensor was disposed');
  await assertThrowsMessage(() => unwrapTensor({}, 'images'), ByolOptionError,
    'Expected Tensor for images but received Object of type object');

  // The native handle guards every member too.
  const handle = native.tensorFromData(new Float32Array(4), [4], 'cpu');
  handle.dispose();
  handle.dispose();
  assert.is(handle.disposed, true);
  for (const member of ['shape', 'dtype', 'device', 'nbytes']) {
    await assertThrowsMessage(() => handle[member], Error, `Tensor was disposed: cannot use ${member} after dispose()`);
  }
  await assertThrowsMessage(() => handle.toArray(), Error, 'Tensor was disposed: cannot use toArray() after dispose()');
});

test('dispose during toArray: the read completes, memory is freed after it', async () => {
  const before = native.tensorStats();
  const data = iota(Float32Array, 1 << 20);
  const t = Tensor.from(data, [4, 4, 256, 256]);
  const pending = t.toArray();
  t.dispose();
  const back = await pending;
  assert.is(back.length, data.length);
  assert.is(back[12345], 12345);
  assert.equal(native.tensorStats(), before);
});

test('tensors dropped without dispose are freed by the garbage collector (safety net)', () => {
  const script = `
    const { Tensor } = require(${JSON.stringify(new URL('../dist/index.js', import.meta.url).pathname)});
    const { native } = require(${JSON.stringify(new URL('../dist/native.js', import.meta.url).pathname)});
    (async () => {
      for (let i = 0; i < 200; i++) Tensor.from(new Float32Array(1024), [32, 32]);
      const made = native.tensorStats().handles;
      for (let round = 0; round < 50 && native.tensorStats().handles > 0; round++) {
        global.gc();
        await new Promise((resolve) => setImmediate(resolve));
      }
      console.log(JSON.stringify({ made, left: native.tensorStats() }));
    })();`;
  const result = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', env: childEnv() });
  assert.is(result.status, 0, result.stderr);
  const { made, left } = JSON.parse(result.stdout.trim());
  assert.is(made, 200);
  assert.equal(left, { handles: 0, bytes: 0 });
});

// ---- async readback ----

test('toArray keeps the event loop free (setImmediate fires before it resolves)', async () => {
  const shape = [8, 3, 512, 512]; // 6.3M floats: tens of milliseconds of permutation
  const t = Tensor.zeros(shape);
  let ticks = 0;
  let resolved = false;
  const spin = () => {
    if (resolved) return;
    ticks++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const pending = t.toArray().then((array) => {
    resolved = true;
    return array;
  });
  const back = await pending;
  assert.is(back.length, 8 * 3 * 512 * 512);
  assert.ok(ticks >= 1, `the event loop turned ${ticks} times while toArray ran`);
  t.dispose();
});

test.run();
