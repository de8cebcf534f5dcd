// device.test.mjs: devices(), the CUDA probe and its error messages, 'auto' fallback, device
// name validation and the CPU thread count. Both outcomes of the CUDA probe are tested: a
// machine without a usable GPU checks the failure report, a GPU machine the round trip.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { ByolOptionError, DeviceError, Tensor, devices, getCpuConvPrecision, getNumThreads, probeCuda, resolveDevice,
  setCpuConvPrecision, setNumThreads }
  from '../dist/index.js';
import { throwsMessage } from './helpers.mjs';

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
const indexPath = new URL('../dist/index.js', import.meta.url).pathname;


test('devices() describes the CPU and the CUDA status', () => {
  const info = devices();
  assert.equal(Object.keys(info).sort(), ['cpu', 'cuda']);
  assert.type(info.cpu, 'string');
  assert.match(info.cpu, /^cpu/);
  assert.type(info.cuda.available, 'boolean');
  if (info.cuda.available) {
    assert.type(info.cuda.description, 'string');
    assert.is(info.cuda.reason, undefined);
  } else {
    assert.type(info.cuda.reason, 'string');
    assert.ok(info.cuda.reason.length > 0);
    assert.is(info.cuda.description, undefined);
  }
  // The probe runs once per process; asking again gives the same answer.
  assert.equal(probeCuda(0), info.cuda);
  assert.equal(devices(), info);
});

test("asking for 'cuda' either works or says what was tried; the CPU is unaffected", async () => {
  const status = probeCuda(0);
  if (status.available) {
    const data = Float32Array.from({ length: 120 }, (_, i) => i * 0.5);
    const t = Tensor.from(data, [2, 3, 4, 5], { device: 'cuda' });
    assert.is(t.device, 'cuda:0');
    assert.equal(Array.from(await t.toArray()), Array.from(data));
    t.dispose();
  } else {
    for (const request of [() => Tensor.from(new Float32Array(4), [4], { device: 'cuda' }),
      () => Tensor.zeros([4], { device: 'cuda:0' }), () => resolveDevice('cuda')]) {
      const error = throwsMessage(request, DeviceError, /^device 'cuda:0' is not available: /);
      assert.is(error.device, 'cuda:0');
      // The message carries the loader's report. Either no plugin loaded, and it lists every
      // candidate path with why it failed, or one loaded (built here without a GPU) and the
      // plugin's own reason comes with the path it was loaded from.
      const candidates = native.cudaLibraryCandidates();
      assert.ok(candidates.length > 0);
      const loaded = /\(loaded (\S+) for device 0\)/.exec(error.message);
      if (loaded) {
        assert.ok(existsSync(loaded[1]), `the plugin path in the message exists: ${loaded[1]}`);
        assert.match(loaded[1], /libbyol_cuda/);
      } else {
        for (const path of candidates) assert.ok(error.message.includes(path), `message mentions ${path}:\n${error.message}`);
      }
      assert.match(error.message, /libbyol_cuda/);
    }
    // Another GPU index is probed separately and named in its own message.
    throwsMessage(() => resolveDevice('cuda:3'), DeviceError, /^device 'cuda:3' is not available: /);
  }
  const t = Tensor.from(new Int32Array([5, 6, 7]), [3], { device: 'cpu' });
  assert.equal(Array.from(await t.toArray()), [5, 6, 7]);
  t.dispose();
});

test("'auto' picks CUDA when it works, else the CPU with exactly one warning line", () => {
  const script = `
    const { Tensor, resolveDevice } = require(${JSON.stringify(indexPath)});
    const first = resolveDevice('auto');
    const second = resolveDevice('auto');
    const t = Tensor.from(new Float32Array(2), [2], { device: 'auto' });
    console.log(JSON.stringify({ first, second, tensor: t.device }));
    t.dispose();`;
  const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: childEnv() });
  assert.is(result.status, 0, result.stderr);
  const { first, second, tensor } = JSON.parse(result.stdout.trim());
  const warnings = result.stderr.split('\n').filter((line) => line.startsWith('byol:'));
  if (probeCuda(0).available) {
    assert.equal([first, second, tensor], ['cuda:0', 'cuda:0', 'cuda:0']);
    assert.equal(warnings, []);
  } else {
    assert.equal([first, second, tensor], ['cpu', 'cpu', 'cpu']);
    assert.is(warnings.length, 1, result.stderr);
    assert.match(warnings[0], /^byol: device 'auto' is using the CPU: device 'cuda:0' is not available: ./);
  }
});

test('device names are validated and canonical', () => {
  assert.is(resolveDevice('cpu'), 'cpu');
  for (const bad of ['gpu', 'cuda:', 'cuda:-1', 'cuda:1.5', 'CPU', '', 'cuda:12345']) {
    throwsMessage(() => resolveDevice(bad), ByolOptionError,
      `Expected one of 'cpu', 'cuda', 'cuda:N' or 'auto' for device but received ${JSON.stringify(bad)} of type string`);
  }
  throwsMessage(() => resolveDevice(0), ByolOptionError,
    "Expected one of 'cpu', 'cuda', 'cuda:N' or 'auto' for device but received 0 of type number");
  throwsMessage(() => resolveDevice(undefined, 'options.device'), ByolOptionError,
    "Expected one of 'cpu', 'cuda', 'cuda:N' or 'auto' for options.device but received undefined of type undefined");
  throwsMessage(() => probeCuda(-1), ByolOptionError,
    'Expected integer between 0 and 9999 for index but received -1 of type number');
});

test('setCpuConvAlgorithm: auto | onednn | gemm reach the backend and agree; bad values name the parameter', async () => {
  const { Byol, getCpuConvAlgorithm, setCpuConvAlgorithm } = require('../dist/index.js');
  const start = getCpuConvAlgorithm();
  assert.is(start, process.env.BYOL_CPU_CONV || 'auto');
  const model = await Byol.create({ encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 1, width: 0.5 },
    projector: { hidden: 64, out: 32 }, predictor: { hidden: 64 }, optimizer: { name: 'lars' }, device: 'cpu', seed: 3 });
  const images = Tensor.from(Float32Array.from({ length: 4 * 16 * 16 }, (_, i) => Math.sin(i * 0.7)), [4, 1, 16, 16]);
  const embed = async () => Array.from(await (await model.embed(images)).toArray());
  try {
    assert.is(setCpuConvAlgorithm('gemm'), 'gemm');
    assert.is(getCpuConvAlgorithm(), 'gemm');
    assert.match(devices().cpu, /, gemm convolutions$/);
    const viaGemm = await embed();
    throwsMessage(() => setCpuConvAlgorithm('fast'), ByolOptionError,
      'Expected one of \'auto\', \'onednn\', \'gemm\' for algorithm but received "fast" of type string');
    assert.is(getCpuConvAlgorithm(), 'gemm');
    assert.is(setCpuConvAlgorithm('onednn'), 'onednn');
    assert.match(devices().cpu, /, onednn convolutions$/);
    const viaOnednn = await embed();
    // The same features to float rounding (32-256 channels: every layer but the stem switches).
    const scale = Math.max(...viaOnednn.map(Math.abs));
    const worst = Math.max(...viaGemm.map((v, i) => Math.abs(v - viaOnednn[i])));
    assert.ok(worst <= 1e-4 * scale, `gemm vs oneDNN embeddings differ by ${worst} (scale ${scale})`);
    assert.ok(viaGemm.some((v, i) => v !== viaOnednn[i]), 'both settings gave the same bits: did the setting reach the backend?');
  } finally {
    setCpuConvAlgorithm(start);
    model.dispose();
    images.dispose();
  }
  assert.is(getCpuConvAlgorithm(), start);
});

test('setCpuConvPrecision: fp32 | bf16 | auto (bf16 only where oneDNN has bf16 dot products)', () => {
  assert.is(getCpuConvPrecision(), 'fp32');
  if (!require('../dist/native.js').native.cpuInfo().onednn.bf16Supported) {
    // Below AVX-512 oneDNN 2.6 has no bf16 convolutions: refused with the reason, fp32 stays.
    assert.throws(() => setCpuConvPrecision('bf16'), /bf16 convolutions need a CPU with AVX-512/);
    assert.is(getCpuConvPrecision(), 'fp32');
    assert.is(setCpuConvPrecision('auto'), 'fp32');
    return;
  }
  try {
    assert.is(setCpuConvPrecision('bf16'), 'bf16');
    assert.is(getCpuConvPrecision(), 'bf16');
    assert.match(devices().cpu, /, bf16 convolutions$/);
    const { onednn } = require('../dist/native.js').native.cpuInfo();
    assert.is(setCpuConvPrecision('auto'), onednn.bf16Native ? 'bf16' : 'fp32');
    assert.is(setCpuConvPrecision('fp32'), 'fp32');
    assert.not.match(devices().cpu, /bf16 convolutions/);
  } finally {
    setCpuConvPrecision('fp32');
  }
  throwsMessage(() => setCpuConvPrecision('fp16'), ByolOptionError,
    `Expected one of 'fp32', 'bf16', 'auto' for precision but received "fp16" of type string`);
  assert.is(getCpuConvPrecision(), 'fp32');
});

test('setNumThreads / getNumThreads', async () => {
  const original = getNumThreads();
  assert.ok(Number.isInteger(original) && original >= 1, `getNumThreads() = ${original}`);
  try {
    setNumThreads(1);
    assert.is(getNumThreads(), 1);
    // Work still runs (on the pool thread, which applies the setting) after the change.
    const data = Float32Array.from({ length: 2 * 3 * 300 * 300 }, (_, i) => i % 1000);
    const t = Tensor.from(data, [2, 3, 300, 300]);
    const back = await t.toArray();
    assert.is(back[2 * 3 * 300 * 300 - 1], data[data.length - 1]);
    t.dispose();
    setNumThreads(3);
    assert.is(getNumThreads(), 3);
  } finally {
    setNumThreads(original);
  }
  throwsMessage(() => setNumThreads(0), ByolOptionError,
    'Expected integer between 1 and 4096 for threads but received 0 of type number');
  throwsMessage(() => setNumThreads(2.5), ByolOptionError,
    'Expected integer between 1 and 4096 for threads but received 2.5 of type number');
  assert.is(getNumThreads(), original);
});

test('OMP_NUM_THREADS is the default thread count', () => {
  const script = `console.log(String(require(${JSON.stringify(indexPath)}).getNumThreads()))`;
  const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: childEnv({ OMP_NUM_THREADS: '3' }) });
  assert.is(result.status, 0, result.stderr);
  assert.is(result.stdout.trim(), '3');
});

// Every OpenMP region runs on the addon's compute thread (native/addon/compute.cc): work
// arriving on different libuv threads used to give each of them a libgomp pool of its own, and
// more pool threads than CPUs turned every barrier into futex waits (steps 1.3-1.6x slower).
// Here: concurrent steps, augmentation and downloads on a 4-thread libuv pool with 2 OpenMP
// threads, and large Tensor.from copies on the JavaScript thread, start no thread besides the
// compute thread and its one libgomp worker (both named byol-compute), and a later
// setNumThreads() reaches the CPU backend.
test('CPU work runs on one compute thread; setNumThreads applies to the backend', () => {
  const script = `
    const fs = require('node:fs');
    const byol = require(${JSON.stringify(indexPath)});
    const threads = () => {
      const names = {};
      for (const t of fs.readdirSync('/proc/self/task')) {
        try { const n = fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim(); names[n] = (names[n] || 0) + 1; }
        catch { /* exited meanwhile */ }
      }
      return names;
    };
    (async () => {
      await Promise.all([1, 2, 3, 4].map(() => fs.promises.stat('/')));  // the libuv pool exists
      const before = threads();
      const model = await byol.Byol.create({ encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 1, width: 0.125 },
        projector: { hidden: 64, out: 32 }, predictor: { hidden: 64 }, optimizer: { name: 'lars' }, device: 'cpu' });
      const images = new Uint8Array(64 * 28 * 28).map((_, i) => i % 251);
      const views = await Promise.all([1, 2].map((view) => byol.augmentBatch(images, null, {
        config: byol.augmentConfig({ preset: 'grayscale' }), seed: 0, epoch: 0, indices: Int32Array.from({ length: 64 }, (_, i) => i), view,
        shape: [64, 28, 28, 1] })));
      const [v1, v2] = views.map((v) => v.images);
      // Copies on the JavaScript thread, large enough that the CPU backend would split them over
      // an OpenMP team: an NCHW batch (permuted to NHWC) and a flat 8 MB tensor.
      const big = [byol.Tensor.from(new Float32Array(2 * 3 * 256 * 256), [2, 3, 256, 256]),
        byol.Tensor.from(new Float32Array(2_000_000), [2_000_000])];
      await Promise.all([model.step(v1, v2, { lr: 0.1, tau: 0.99 }), v1.toArray(), model.embed(v2),
        model.step(v2, v1, { lr: 0.1, tau: 0.99 }), v2.toArray()]);
      const after = threads();
      for (const t of big) t.dispose();
      byol.setNumThreads(1);
      await v1.toArray();  // a task on the compute thread applies the count
      const described = byol.devices().cpu;
      console.log(JSON.stringify({ before, after, described }));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8',
    env: childEnv({ UV_THREADPOOL_SIZE: '4', OMP_NUM_THREADS: '2' }) });
  assert.is(result.status, 0, result.stderr);
  const { before, after, described } = JSON.parse(result.stdout.trim().split('\n').pop());
  assert.is(before['byol-compute'] ?? 0, 0, JSON.stringify(before));
  assert.is(after['byol-compute'], 2, `compute thread and its OpenMP worker: ${JSON.stringify(after)}`);
  // Every other thread existed before the work (libuv's pool, V8's platform threads).
  const others = (names) => Object.entries(names).reduce((n, [name, k]) => n + (name === 'byol-compute' ? 0 : k), 0);
  assert.is(others(after), others(before), `threads besides byol-compute: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  assert.match(described, /, 1 thread,/);
});

test.run();
