// cuda_sim.sim.mjs: the CUDA plugin's own behaviour from Node, on the simulated GPU
// (native/tests/cuda_sim, built as build-cmake/libbyol_cuda_sim.so). `npm test` runs this file
// in its "simulated GPU (js)" suite with BYOL_CUDA_LIBRARY pointing there; the plain JS suite
// leaves it out (its name does not end in .test.mjs). Checked here:
//   - what a machine lacks (no driver, no GPU, a driver too old, a GPU older than the kernels'
//     sm_80, a device index out of range),
//     as the plugin itself reports it through probeCuda/resolveDevice (BYOL_SIM_* settings);
//   - out of GPU memory: the error names the size asked and what the pool holds, and the model
//     steps on exactly as a fresh one does;
//   - a GPU without memory pools: graph replay turns itself off with the reason, and the steps
//     (every buffer from cudaMalloc) give exactly the losses of the pooled GPU's graph replays;
//   - the trainer on 'cuda' (graph replay on): exact resume (3 + 3 steps = 6 straight steps),
//     one blocking wait for the GPU per step (the next batch's augmentation and uploads do not
//     wait for the running step), and the CLI training on real Fashion-MNIST with a
//     checkpoint and encoder written.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runCli, tinyRunOptions } from './helpers.mjs';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const simLibrary = join(root, 'build-cmake', 'libbyol_cuda_sim.so');
const { Trainer } = require('../dist/train/trainer.js');
const { readLog } = require('../dist/train/log.js');
const { probeCuda } = require('../dist/index.js');

const scratch = mkdtempSync(join(tmpdir(), 'byol-sim-'));
let runs = 0;
const newRunDir = () => join(scratch, `run${++runs}`);
const stepLosses = async (dir) => (await readLog(join(dir, 'log.jsonl'))).filter((r) => !('event' in r)).map((r) => r.loss);

// Runs `script` in a fresh Node process on the simulated GPU with `env` (its settings are read
// once per process); resolves with the JSON it prints last.
function child(script, env = {}) {
  const run = spawnSync(process.execPath, ['-e', script], {
    cwd: root, encoding: 'utf8', env: { ...process.env, BYOL_CUDA_LIBRARY: simLibrary, ...env },
  });
  assert.is(run.status, 0, run.stderr);
  return JSON.parse(run.stdout.trim().split('\n').pop());
}

const probeScript = `const b = require('.');
const out = { probe: b.probeCuda(0) };
try { b.resolveDevice('cuda:2'); out.second = 'no error'; } catch (e) { out.second = e.message; }
console.log(JSON.stringify(out));`;

test('this suite runs on the simulated GPU', () => {
  assert.ok(existsSync(simLibrary), `${simLibrary} is not built (npm run build:cmake)`);
  assert.is(process.env.BYOL_CUDA_LIBRARY, simLibrary, 'run through `node test/run.mjs --only sim`');
  const probe = probeCuda(0);
  assert.ok(probe.available, probe.reason);
  assert.match(probe.description, /^cuda:0: byol simulated GPU \(host CPU\) \(sm_90, \d+ SMs/);
});

test('what the machine lacks, in the plugin\'s own words', () => {
  const cases = [
    [{ BYOL_SIM_DRIVER: '0' }, /cuda: no NVIDIA driver: libcuda\.so\.1 was not found .* install the driver/],
    [{ BYOL_SIM_DEVICES: '0' }, /cuda: no GPU: the NVIDIA driver \(CUDA 13\.0\) found no CUDA device; check nvidia-smi/],
    [{ BYOL_SIM_DRIVER: '12080' },
      /the NVIDIA driver supports CUDA up to 12\.8 but libbyol_cuda\.so was built with CUDA 13\.0: update the NVIDIA driver/],
    [{ BYOL_SIM_CC: '7.5' },
      /\(compute capability 7\.5\) cannot run libbyol_cuda\.so's kernels: cudaErrorNoKernelImageForDevice: .*rebuild with -DCMAKE_CUDA_ARCHITECTURES=75\)/],
  ];
  for (const [env, reason] of cases) {
    const out = child(probeScript, env);
    assert.is(out.probe.available, false, JSON.stringify(env));
    assert.match(out.probe.reason, /^device 'cuda:0' is not available: /);
    assert.match(out.probe.reason, reason);
    // cuda:2 of a one-GPU machine: the machine-wide causes come first, else the index.
    assert.match(out.second, env.BYOL_SIM_CC ? /cuda: device index 2 out of range: 1 GPU found/ : reason);
  }
  assert.match(child(probeScript, { BYOL_SIM_CC: '8.6' }).probe.description, /\(sm_86, /);
  const two = child(probeScript, { BYOL_SIM_DEVICES: '2' });
  assert.is(two.probe.available, true);
  assert.match(two.second, /cuda: device index 2 out of range: 2 GPUs found \(cuda:0 byol simulated GPU \(host CPU\), cuda:1 /);
});

test('out of GPU memory: the size asked and the pool in the message, the model unharmed', () => {
  const out = child(`const b = require('.');
(async () => {
  const cfg = { encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 1, width: 0.125 }, projector: { hidden: 64, out: 32 },
    predictor: { hidden: 64 }, device: 'cuda', seed: 0 };
  const x = b.Tensor.from(new Float32Array(8 * 256).map((_, i) => Math.sin(i * 0.37)), [8, 1, 16, 16], { device: 'cuda' });
  const a = await b.Byol.create(cfg);
  const big = b.Tensor.zeros([512, 1, 32, 32], { device: 'cuda' });
  let error = null;
  try { await a.step(big, big, { lr: 0.1, tau: 0.99 }); } catch (e) { error = e.message; }
  const after = [];
  for (let i = 0; i < 3; ++i) after.push((await a.step(x, x, { lr: 0.1, tau: 0.99 })).loss);
  a.dispose();
  const fresh = await b.Byol.create(cfg);
  const expected = [];
  for (let i = 0; i < 3; ++i) expected.push((await fresh.step(x, x, { lr: 0.1, tau: 0.99 })).loss);
  console.log(JSON.stringify({ error, after, expected }));
})();`, { BYOL_SIM_MEMORY_MB: '64' });
  assert.match(out.error, /^cuda: alloc: out of GPU memory: asked for [\d.]+ MiB \(\d+ bytes\) for a tensor on cuda:0 \(byol simulated GPU \(host CPU\)\), [\d.]+ MiB free of 64 MiB; byol's pool holds [\d.]+ MiB/);
  assert.match(out.error, /use a smaller batch or image size/);
  assert.equal(out.after, out.expected);
});

test('a GPU without memory pools: graphs off with the reason, the same losses from cudaMalloc', () => {
  const script = `const b = require('.');
(async () => {
  const m = await b.Byol.create({ encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 1, width: 0.125 },
    projector: { hidden: 64, out: 32 }, predictor: { hidden: 64 }, device: 'cuda', seed: 0 });
  const x = b.Tensor.from(new Float32Array(8 * 256).map((_, i) => Math.cos(i * 0.11)), [8, 1, 16, 16], { device: 'cuda' });
  const losses = [];
  for (let i = 0; i < 5; ++i) losses.push((await m.step(x, x, { lr: 0.1, tau: 0.99 })).loss);
  console.log(JSON.stringify({ losses, graphs: m.graphStatus() }));
})();`;
  const pooled = child(script);
  const plain = child(script, { BYOL_SIM_POOLS: '0' });
  assert.is(pooled.graphs.error, null);
  assert.is(pooled.graphs.launches, 3);
  assert.equal(plain.graphs, { enabled: false, launches: 0, error: plain.graphs.error });
  assert.match(plain.graphs.error, /^cuda: CUDA graphs need stream-ordered memory pools, which byol simulated GPU \(host CPU\) does not offer/);
  assert.equal(plain.losses, pooled.losses);
});

test('trainer on cuda with graph replay: 3 steps + resume 3 = 6 straight steps, exactly', async () => {
  const tiny = (extra) => tinyRunOptions(newRunDir(), {
    steps: 6, device: 'cuda', checkpointEvery: 0, progress: 'none', optimizer: { name: 'lars', lr: 0.5, warmupSteps: 2 }, ...extra,
  });
  const straight = tiny();
  const done = await new Trainer(straight).run();
  assert.is(done.status, 'completed');
  const expected = await stepLosses(straight.out);
  assert.is(expected.length, 6);
  assert.ok(expected.every(Number.isFinite), JSON.stringify(expected));
  const start = (await readLog(join(straight.out, 'log.jsonl'))).find((r) => r.event === 'start');
  assert.is(start.device, 'cuda:0');
  assert.is(start.cudaGraphs, true);

  const controller = new AbortController();
  const split = tiny({ signal: controller.signal });
  const first = new Trainer(split);
  first.on('step', (m) => { if (m.step === 3) controller.abort(); });
  assert.is((await first.run()).status, 'interrupted');
  const resumed = await new Trainer({ resume: split.out, progress: 'none' }).run();
  assert.is(resumed.step, 6);
  assert.equal(await stepLosses(split.out), expected);
});

test('the trainer waits for the GPU once per step (augmentation and uploads run ahead)', () => {
  // BYOL_SIM_STATS=1: the simulated runtime prints its count of blocking host waits at exit.
  const waits = (steps) => {
    const out = newRunDir();
    const run = runCli(root, ['train', '--data', 'synthetic', '--data-limit', '64', '--data-size', '16', '--width', '0.125',
      '--projector-hidden', '32', '--projector-out', '16', '--predictor-hidden', '32', '--batch-size', '8',
      '--steps', String(steps), '--device', 'cuda', '--progress', 'none', '--checkpoint-every', '0', '--out', out],
    { BYOL_SIM_STATS: '1' });
    assert.is(run.status, 0, run.stderr);
    const m = run.stderr.match(/cuda \(simulated\): \d+ work items \(0 on the legacy stream\), (\d+) blocking host waits/);
    assert.ok(m, run.stderr);
    return +m[1];
  };
  // Steps 5..8 come after the graph capture (step 3): 4 more steps, 4 more waits (each loss).
  assert.is(waits(8) - waits(4), 4);
});

test('byol train --device cuda on real Fashion-MNIST writes a checkpoint and an encoder', () => {
  const out = newRunDir();
  const run = runCli(root, ['train', '--data', 'fashion-mnist', '--data-limit', '64', '--width', '0.125',
    '--projector-hidden', '64', '--projector-out', '32', '--predictor-hidden', '64', '--batch-size', '16', '--steps', '4',
    '--device', 'cuda', '--out', out, '--progress', 'none', '--json']);
  assert.is(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout);
  assert.is(result.status, 'completed');
  assert.is(result.step, 4);
  for (const file of ['checkpoint.safetensors', 'encoder.safetensors', 'state.json']) assert.ok(existsSync(join(out, file)), file);
  assert.match(readFileSync(join(out, 'log.jsonl'), 'utf8'), /"device":"cuda:0"/);
});

test.after(() => rmSync(scratch, { recursive: true, force: true }));

test.run();
