#!/usr/bin/env node
// bench/conv_cpu.mjs: the CPU backend's two convolution algorithms side by side, per ResNet-18
// shape and pass: oneDNN's direct kernels and im2col + SGEMM (native/cpu/conv_gemm.cc), timed by
// build-cmake/native/bench/byol_bench_conv in one run, with the pick of the automatic rule
// (CpuBackend::conv_uses_gemm). The totals weigh each row by its work: the time one of each
// convolution takes with oneDNN only, GEMM only, and the automatic rule.
// Prints a table; --write replaces its section of BENCHMARKS.md.
// Usage: node bench/conv_cpu.mjs [--width 1] [--size 32] [--batch 64] [--reps 5] [--write]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { argv, option, writeBenchmarkSection } from './common.mjs';

const width = option('--width', '1');
const size = option('--size', '32');
const batch = option('--batch', '64');
const reps = option('--reps', '5');
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const program = join(root, 'build-cmake', 'native', 'bench', 'byol_bench_conv');
if (!existsSync(program)) {
  console.error(`bench/conv_cpu.mjs: ${program} is not built (npm run build:cmake)`);
  process.exit(1);
}

const load = loadavg()[0].toFixed(2);
const r = spawnSync(program, ['--width', width, '--size', size, '--batch', batch, '--reps', reps], {
  encoding: 'utf8',
  maxBuffer: 1 << 24,
});
if (r.status !== 0) {
  console.error(`bench/conv_cpu.mjs: byol_bench_conv failed (exit ${r.status}): ${(r.stderr ?? '').trim()}`);
  process.exit(1);
}
const machine = r.stderr.split('\n')[0];
const rows = r.stdout.trim().split('\n').map((line) => JSON.parse(line));

const gflop = (row) => (2 * row.N * Math.ceil(row.H / row.stride) ** 2 * row.K * row.C * row.R * row.R) / 1e9;
const table = [
  '| shape (N x H x W x C -> K, kernel/stride) | pass | oneDNN GFLOP/s | GEMM GFLOP/s | GEMM / oneDNN | auto picks |',
  '| --- | --- | --- | --- | --- | --- |',
];
const total = { onednn: 0, gemm: 0, auto: 0 };
for (const row of rows) {
  const shape = `${row.N} x ${row.H} x ${row.H} x ${row.C} -> ${row.K}, ${row.R}x${row.R}/${row.stride}`;
  table.push(`| ${shape} | ${row.pass} | ${row.onednn_gflops.toFixed(1)} | ${row.gemm_gflops.toFixed(1)} | ` +
    `${(row.gemm_gflops / row.onednn_gflops).toFixed(2)} | ${row.auto === 'gemm' ? 'GEMM' : 'oneDNN'} |`);
  const work = gflop(row);
  total.onednn += (work / row.onednn_gflops) * 1e3;
  total.gemm += (work / row.gemm_gflops) * 1e3;
  total.auto += (work / (row.auto === 'gemm' ? row.gemm_gflops : row.onednn_gflops)) * 1e3;
}
const command = `node bench/conv_cpu.mjs --width ${width} --size ${size} --batch ${batch} --reps ${reps}`;
const summary = `One of each: oneDNN ${total.onednn.toFixed(1)} ms, GEMM ${total.gemm.toFixed(1)} ms, ` +
  `automatic rule ${total.auto.toFixed(1)} ms (**${(total.onednn / total.auto).toFixed(2)}x** oneDNN's speed).`;
const lines = [
  `## CPU convolutions: oneDNN against im2col + SGEMM (width ${width}, ${size}x${size}, batch ${batch})`,
  '',
  `\`${command} --write\` (${new Date().toISOString().slice(0, 10)}, load average ${load} at the start). ` +
    `Machine: ${machine}. Median of ${reps} calls per row; the ResNet-18 cifar-stem convolutions after the stem.`,
  '',
  ...table,
  '',
  summary,
];
console.log(lines.join('\n'));
if (argv.includes('--write')) {
  const tag = `bench/conv_cpu.mjs width ${width} size ${size} batch ${batch}`;
  console.log(`wrote ${writeBenchmarkSection(tag, lines)}`);
}
