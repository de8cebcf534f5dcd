#!/usr/bin/env node
// bench/step_cpu.mjs: BYOL training steps per second of the native CPU step (lib/byol.ts)
// against the same step in PyTorch (bench/torch_step.py) with the same thread count, plus
// peak RSS and the RSS growth over the timed steps (it must stay flat: the step plan
// allocates its buffers once). Prints a table; with --write, replaces the "BYOL step, CPU"
// section of BENCHMARKS.md. Numbers depend on the machine and its load.
// Usage: node bench/step_cpu.mjs [--steps 20] [--warmup 2] [--threads N] [--no-torch] [--write]
//        [--batch 64] [--size 32] [--width 1] [--hidden 4096] [--out 256] [--precision fp32|bf16]
// --precision bf16: our step with bf16 convolutions (setCpuConvPrecision) against PyTorch under
// CPU autocast to bfloat16; --write then replaces the "BYOL step, CPU, bf16" section.
// PyTorch runs twice, in its default NCHW memory format and in channels_last (--torch-layout
// nchw|channels-last|both, default both); the ratio is against the faster of the two.
// PyTorch is run as `python3 bench/torch_step.py` with PYTHONPATH from the environment
// (default /root/.cache/byol/py, where tools/setup.sh BYOL_WITH_TORCH=1 installs it).
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';

import { argv, option, runPythonJson, writeBenchmarkSection } from './common.mjs';

const require = createRequire(import.meta.url);
const { Byol } = require('../dist/byol.js');
const { Tensor } = require('../dist/tensor.js');
const { setNumThreads, getNumThreads, devices, setCpuConvPrecision } = require('../dist/device.js');

const steps = Number(option('--steps', '20'));
const warmup = Number(option('--warmup', '2'));
const threads = Number(option('--threads', String(cpus().length)));
const batch = Number(option('--batch', '64'));
const size = Number(option('--size', '32'));
const width = Number(option('--width', '1'));
const hidden = Number(option('--hidden', '4096'));
const out = Number(option('--out', '256'));
const precision = option('--precision', 'fp32');
if (precision !== 'fp32' && precision !== 'bf16') throw new Error(`--precision: expected fp32 or bf16 but received ${precision}`);
const bf16 = precision === 'bf16';
const torchLayout = option('--torch-layout', 'both');
if (!['nchw', 'channels-last', 'both'].includes(torchLayout)) {
  throw new Error(`--torch-layout: expected nchw, channels-last or both but received ${torchLayout}`);
}
setNumThreads(threads);
setCpuConvPrecision(precision);

const rssMb = () => process.memoryUsage.rss() / 2 ** 20;

function randomViews() {
  // Deterministic pseudo-random normal-ish values (sum of uniforms), NCHW.
  const n = batch * 3 * size * size;
  let s = 1;
  const make = () => Float32Array.from({ length: n }, () => {
    let v = 0;
    for (let k = 0; k < 4; k++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      v += s / 2 ** 32;
    }
    return (v - 2) * 1.7;
  });
  return [Tensor.from(make(), [batch, 3, size, size]), Tensor.from(make(), [batch, 3, size, size])];
}

async function benchNative() {
  const model = await Byol.create({
    encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 3, width },
    projector: { hidden, out },
    predictor: { hidden },
    optimizer: { name: 'lars', weightDecay: 1.5e-6, momentum: 0.9, trustCoefficient: 1e-3 },
    device: 'cpu',
    seed: 0,
  });
  const [v1, v2] = randomViews();
  for (let i = 0; i < warmup; i++) await model.step(v1, v2, { lr: 0.1, tau: 0.99 });
  const rss = [rssMb()];
  let loss = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < steps; i++) {
    loss = (await model.step(v1, v2, { lr: 0.1, tau: 0.99 })).loss;
    if ((i + 1) % Math.max(1, Math.floor(steps / 10)) === 0) rss.push(rssMb());
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const result = {
    stepsPerS: steps / elapsed,
    msPerStep: (1000 * elapsed) / steps,
    threads: getNumThreads(),
    loss,
    rssStart: rss[0],
    rssEnd: rss[rss.length - 1],
    rssMax: Math.max(...rss),
    peakRss: process.resourceUsage().maxRSS / 1024,
    params: model.numParams,
  };
  model.dispose();
  v1.dispose();
  v2.dispose();
  return result;
}

function benchTorch(channelsLast) {
  return runPythonJson('torch_step.py', ['--threads', String(threads), '--steps', String(steps),
    '--warmup', String(warmup), '--batch', String(batch), '--size', String(size), '--width', String(width),
    '--hidden', String(hidden), '--out', String(out), ...(bf16 ? ['--bf16'] : []),
    ...(channelsLast ? ['--channels-last'] : [])], threads);
}

const machine = `${devices().cpu ?? 'cpu'}; ${cpus().length} cores, ${cpus()[0]?.model ?? 'unknown CPU'}`;
const caseName = `ResNet-18 cifar stem x${width}, batch ${batch}, ${size}x${size}x3, projector ${hidden}/${out}, predictor ${hidden}, LARS` +
  (bf16 ? '; bf16 (byol: bf16 convolutions; PyTorch: CPU autocast to bfloat16)' : '');
console.log(`BYOL step benchmark: ${caseName}`);
// Other processes slow both engines; the load average says how quiet the machine was.
const load = loadavg()[0].toFixed(2);
console.log(`machine: ${machine}; ${threads} threads; ${steps} timed steps after ${warmup} warm-up; load average ${load}`);
const native = await benchNative();
const layouts = { nchw: [false], 'channels-last': [true], both: [false, true] }[torchLayout];
const torchRuns = argv.includes('--no-torch') ? [] : layouts.map((channelsLast) => benchTorch(channelsLast));
const torchOk = torchRuns.filter((r) => !r.error);
// The baseline is PyTorch's faster layout on this machine.
const torch = argv.includes('--no-torch')
  ? { error: 'skipped (--no-torch)' }
  : torchOk.length ? torchOk.reduce((a, b) => (b.steps_per_s > a.steps_per_s ? b : a)) : torchRuns[0];

const fmt = (v, d = 2) => (typeof v === 'number' ? v.toFixed(d) : '-');
const rows = [
  ['engine', 'steps/s', 'ms/step', 'threads', 'peak RSS MB', 'RSS growth MB'],
  [`byol (native CPU${bf16 ? ', bf16 convolutions' : ''})`, fmt(native.stepsPerS, 3), fmt(native.msPerStep, 0), String(native.threads), fmt(native.peakRss, 0),
    fmt(native.rssEnd - native.rssStart, 1)],
];
for (const t of torchOk) {
  const details = [t.channels_last ? 'channels_last' : 'NCHW', ...(bf16 ? ['autocast bf16'] : [])].join(', ');
  rows.push([`PyTorch ${t.torch} (${details})`, fmt(t.steps_per_s, 3), fmt(t.ms_per_step, 0), String(t.threads),
    fmt(t.peak_rss_mb, 0), fmt(t.rss_mb[1] - t.rss_mb[0], 1)]);
}
for (const t of torchRuns.filter((r) => r.error)) console.log(`PyTorch: ${t.error}`);
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
const table = rows.map((r) => `| ${r.map((v, c) => v.padEnd(widths[c])).join(' | ')} |`);
table.splice(1, 0, `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`);
console.log(table.join('\n'));
const ratio = torch.error ? null : native.stepsPerS / torch.steps_per_s;
const against = torch.error ? '' : ` (PyTorch's faster layout here, ${torch.channels_last ? 'channels_last' : 'NCHW'})`;
if (ratio !== null) console.log(`ratio byol / PyTorch: ${ratio.toFixed(2)}x${against}`);
else console.log(`PyTorch: ${torch.error}`);
// Growth between the first and the last sample of the timed steps; the allocator may keep
// a few MB of slack, a leak grows with the step count.
const growth = native.rssEnd - native.rssStart;
const flat = growth < Math.max(16, 0.02 * native.rssStart);
console.log(`native RSS over the timed steps: ${fmt(native.rssStart, 0)} -> ${fmt(native.rssEnd, 0)} MB ` +
  `(max ${fmt(native.rssMax, 0)}): ${flat ? 'flat' : 'GROWING'}`);

if (argv.includes('--write')) {
  const file = writeBenchmarkSection(bf16 ? 'bench/step_cpu.mjs bf16' : 'bench/step_cpu.mjs', [
    bf16 ? '## BYOL step, CPU, bf16' : '## BYOL step, CPU',
    '',
    `\`node bench/step_cpu.mjs ${argv.join(' ')}\` (${new Date().toISOString().slice(0, 10)}, load average ${load} at the start).`,
    `Case: ${caseName}; random views, fixed lr/tau. Machine: ${machine}; ${threads} threads.`,
    'PyTorch runs the same step (bench/torch_step.py, modules of tools/ref_byol.py) with the same thread count, in its NCHW default and in channels_last.',
    '',
    ...table,
    '',
    ratio !== null ? `Ratio byol / PyTorch: **${ratio.toFixed(2)}x** steps/s${against}.` : `PyTorch: ${torch.error}.`,
    `Native RSS over the ${steps} timed steps: ${fmt(native.rssStart, 0)} -> ${fmt(native.rssEnd, 0)} MB (${flat ? 'flat' : 'growing'}).`,
  ]);
  console.log(`wrote the section to ${file}`);
}
if (!flat) process.exitCode = 1;
