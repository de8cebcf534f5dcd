#!/usr/bin/env node
// bench/dispatch.mjs: what calling the CPU step from Node costs on top of the step itself.
// Times the same BYOL step three ways on the same machine in one run: natively
// (build-cmake/native/bench/byol_bench_step, one host thread throughout), from Node
// (Byol.step, random views), and from Node the way the trainer runs it (the next batch's two
// views augmented while the step runs). Median ms per step; the ratios to the native step are
// the dispatch overhead. Prints a table; --write replaces its section of BENCHMARKS.md.
// Usage: node bench/dispatch.mjs [--steps 20] [--warmup 3] [--width 0.125] [--size 28]
//        [--channels 1] [--batch 128] [--hidden 512] [--out 128] [--write]
// Defaults: the fashion-mnist-quick preset's model (small ops, where dispatch costs show most).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { argv, option, runJson, writeBenchmarkSection } from './common.mjs';

const require = createRequire(import.meta.url);
const { Byol } = require('../dist/byol.js');
const { Tensor } = require('../dist/tensor.js');
const { augmentBatch, augmentConfig } = require('../dist/augment.js');
const { devices, getNumThreads } = require('../dist/device.js');

const steps = Number(option('--steps', '20'));
const warmup = Number(option('--warmup', '3'));
const width = Number(option('--width', '0.125'));
const size = Number(option('--size', '28'));
const channels = Number(option('--channels', '1'));
const batch = Number(option('--batch', '128'));
const hidden = Number(option('--hidden', '512'));
const out = Number(option('--out', '128'));
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nativeBench = join(root, 'build-cmake', 'native', 'bench', 'byol_bench_step');

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

function runNative() {
  if (!existsSync(nativeBench)) return { error: `${nativeBench} not built (npm run build:cmake)` };
  const args = ['--arch', 'resnet18', '--stem', 'cifar', '--width', String(width), '--channels', String(channels),
    '--size', String(size), '--batch', String(batch), '--hidden', String(hidden), '--out', String(out),
    '--pred-hidden', String(hidden), '--warmup', String(warmup), '--steps', String(steps), '--max-seconds', '600',
    '--threads', String(getNumThreads())];
  const result = runJson('byol_bench_step', nativeBench, args);
  return result.error ? result : { ms: result.ms_per_step_median };
}

async function runNode(withAugment) {
  const model = await Byol.create({
    encoder: { arch: 'resnet18', stem: 'cifar', inChannels: channels, width },
    projector: { hidden, out },
    predictor: { hidden },
    optimizer: { name: 'lars' },
    device: 'cpu',
    seed: 0,
  });
  const n = batch * channels * size * size;
  const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
  const v1 = Tensor.from(values, [batch, channels, size, size]);
  const v2 = Tensor.from(values.map((v) => -v), [batch, channels, size, size]);
  const images = Uint8Array.from({ length: n }, (_, i) => (i * 131) % 251);
  const config = augmentConfig({ preset: channels === 1 ? 'grayscale' : 'cifar', outputSize: size });
  const indices = Int32Array.from({ length: batch }, (_, i) => i);
  const augmentNext = (epoch) => Promise.all([1, 2].map((view) => augmentBatch(images, null,
    { config, seed: 0, epoch, indices, view, device: 'cpu', shape: [batch, size, size, channels] })));
  const times = [];
  try {
    for (let i = 0; i < warmup + steps; i++) {
      const start = performance.now();
      const next = withAugment ? augmentNext(i) : null;
      await model.step(v1, v2, { lr: 0.01, tau: 0.99 });
      if (next) for (const view of await next) view.images.dispose();
      if (i >= warmup) times.push(performance.now() - start);
    }
  } finally {
    v1.dispose();
    v2.dispose();
    model.dispose();
  }
  return { ms: median(times) };
}

const load = loadavg()[0];
const native = runNative();
const node = await runNode(false);
const trainer = await runNode(true);

const cpuLine = devices().cpu;
const rows = [
  ['native step (byol_bench_step)', native],
  ['Byol.step from Node', node],
  ['Byol.step + next batch augmented meanwhile', trainer],
];
const fmt = (ms) => (ms === undefined ? '-' : ms.toFixed(1));
const table = [
  '| how the step is called | ms/step (median) | vs native |',
  '| --- | --- | --- |',
  ...rows.map(([name, r]) => `| ${name} | ${r.error ? `error: ${r.error}` : fmt(r.ms)} | ${r.ms && native.ms ? `${(r.ms / native.ms).toFixed(2)}x` : '-'} |`),
];
const caseLine = `ResNet-18 cifar stem x${width}, batch ${batch}, ${size}x${size}x${channels}, projector ${hidden}/${out}, ` +
  `predictor ${hidden}, LARS; ${steps} timed steps after ${warmup} warm-up, median.`;
console.log(`dispatch benchmark: ${cpuLine}; ${cpus().length} cores; load average ${load.toFixed(2)}`);
console.log(caseLine);
for (const line of table) console.log(line);

if (argv.includes('--write')) {
  const date = new Date().toISOString().slice(0, 10);
  const file = writeBenchmarkSection('bench/dispatch.mjs', [
    '## Steps called from Node (CPU)',
    '',
    `\`node bench/dispatch.mjs --write\` (${date}, load average ${load.toFixed(2)} at the start). ${caseLine}`,
    `Machine: ${cpuLine}; ${cpus().length} cores. The same step natively, through the addon, and through the addon with`,
    "the next batch's augmentation running meanwhile (as the trainer runs it). The addon runs all CPU work on one",
    'compute thread (docs/ARCHITECTURE.md, "The TypeScript layer"); the last column is what dispatch costs.',
    '',
    ...table,
  ]);
  console.log(`wrote ${file}`);
}
