#!/usr/bin/env node
// bench/stream.mjs: how fast a streaming image folder (openImageFolder: sharp decode per batch)
// feeds training, against PyTorch's way of streaming the same folder (bench/torch_stream.py:
// PIL in DataLoader worker processes) on the same machine in the same run. Writes three
// folders of generated images to a temporary directory: Fashion-MNIST-like 28x28 grayscale
// PNG, STL-10-like 96x96 JPEG, and ImageNet-like 500x375 JPEG read at 224x224 (cover + center
// crop); reads shuffled batches (one read ahead, as the loader prefetches) for --seconds per
// case after a warm-up epoch and prints images/s. --write replaces the "Streaming image folders" section of BENCHMARKS.md.
// Usage: node bench/stream.mjs [--seconds 3] [--workers N] [--no-torch] [--write]
// PyTorch runs as `python3 bench/torch_stream.py` with PYTHONPATH from the environment
// (default /root/.cache/byol/py, where tools/setup.sh BYOL_WITH_TORCH=1 installs torch and pillow).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

import { argv, option, runPythonJson, writeBenchmarkSection } from './common.mjs';

const require = createRequire(import.meta.url);
const sharp = require('sharp');
const { openImageFolder, permutation } = require('../dist/data/index.js');

const seconds = Number(option('--seconds', '3'));
const workers = Number(option('--workers', String(cpus().length)));
const load = loadavg()[0].toFixed(2);

const cases = [
  { name: '28x28 gray PNG', n: 3000, side: [28, 28], channels: 1, format: 'png', batch: 256 },
  { name: '96x96 RGB JPEG', n: 1500, side: [96, 96], channels: 3, format: 'jpeg', batch: 256 },
  { name: '500x375 JPEG -> 224x224', n: 320, side: [375, 500], channels: 3, format: 'jpeg', batch: 64, size: [224, 224] },
];

// Smooth shapes plus noise: compresses like a photo more than flat colour or white noise does.
function picture(h, w, c, k) {
  const out = new Uint8Array(h * w * c);
  let s = (k * 2654435761) >>> 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      for (let ch = 0; ch < c; ch++) {
        const wave = Math.sin((x + k * 7) / (9 + ch * 4)) * Math.cos((y - k * 3) / (7 + ch * 3));
        out[(y * w + x) * c + ch] = Math.max(0, Math.min(255, 128 + 100 * wave + ((s >>> 24) & 31) - 16));
      }
    }
  }
  return out;
}

async function writeFolder(dir, c) {
  for (let cls = 0; cls < 4; cls++) mkdirSync(join(dir, `class${cls}`), { recursive: true });
  const [h, w] = c.side;
  for (let i = 0; i < c.n; i++) {
    let image = sharp(Buffer.from(picture(h, w, c.channels, i)), { raw: { width: w, height: h, channels: c.channels } });
    if (c.channels === 1) image = image.toColourspace('b-w'); // a grayscale file (colour type 0), as PIL writes them
    const file = join(dir, `class${i % 4}`, `${String(i).padStart(6, '0')}.${c.format === 'png' ? 'png' : 'jpg'}`);
    await (c.format === 'png' ? image.png() : image.jpeg({ quality: 90 })).toFile(file);
  }
}

async function benchOurs(dir, c, concurrency) {
  const ds = await openImageFolder(dir, { channels: c.channels, size: c.size, concurrency });
  const epoch = async (e) => {
    const order = permutation(ds.n, 1, e);
    // One batch read ahead, as DataLoader and the trainer prefetch.
    const read = (start) => ds.read(order.subarray(start, Math.min(ds.n, start + c.batch)));
    let images = 0;
    let next = read(0);
    for (let start = 0; start < ds.n; start += c.batch) {
      const pixels = await next;
      if (start + c.batch < ds.n) next = read(start + c.batch);
      images += pixels.length / (ds.height * ds.width * ds.channels);
    }
    return images;
  };
  await epoch(0); // warm-up: file cache, sharp's thread pool
  let images = 0;
  let epochs = 0;
  const start = performance.now();
  while ((performance.now() - start) / 1000 < seconds || epochs < 1) images += await epoch(++epochs);
  return images / ((performance.now() - start) / 1000);
}

function benchTorch(dir, c) {
  return runPythonJson('torch_stream.py', ['--dir', dir, '--channels', String(c.channels), '--batch', String(c.batch),
    '--workers', String(workers), '--seconds', String(seconds), ...(c.size ? ['--size', ...c.size.map(String)] : [])], 1);
}

const scratch = mkdtempSync(join(tmpdir(), 'byol-stream-bench-'));
const fmt = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const header = ['case', 'images', 'batch', 'byol (concurrency 4)', 'byol (concurrency 16, default)',
  `PyTorch (${workers} workers)`, 'ratio'];
const table = [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`];
let torchVersion = null;
let torchError = null;
try {
  console.log(`stream benchmark: ${cpus()[0].model.trim()}, ${cpus().length} cores, load ${load}; images/s of shuffled batches`);
  console.log(header.join('  |  '));
  for (const [k, c] of cases.entries()) {
    const dir = join(scratch, `case${k}`);
    await writeFolder(dir, c);
    const low = await benchOurs(dir, c, 4);
    const high = await benchOurs(dir, c, 16);
    const torch = argv.includes('--no-torch') ? { error: 'skipped (--no-torch)' } : benchTorch(dir, c);
    if (torch.error) torchError = torch.error;
    else torchVersion = torch.torch;
    const best = Math.max(low, high);
    const row = [c.name, String(c.n), String(c.batch), fmt(low), fmt(high), torch.error ? '-' : fmt(torch.images_per_s),
      torch.error ? '-' : `${(best / torch.images_per_s).toFixed(2)}x`];
    table.push(`| ${row.join(' | ')} |`);
    console.log(row.join('  |  '));
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
if (torchError) console.log(`PyTorch: ${torchError}`);

if (argv.includes('--write')) {
  const file = writeBenchmarkSection('bench/stream.mjs', [
    '## Streaming image folders (CPU)',
    '',
    `\`node bench/stream.mjs ${argv.join(' ')}\` (${new Date().toISOString().slice(0, 10)}, ${cpus()[0].model.trim()}, ` +
      `${cpus().length} cores, load average ${load} at the start).`,
    'Images/s of shuffled batches (one read ahead) from a folder of generated images after a warm-up epoch (files in the page cache):',
    "byol's `openImageFolder(...).read(indices)` (sharp/libvips, `concurrency` images in flight) against a PyTorch",
    `${torchVersion ? `${torchVersion} ` : ''}DataLoader over a PIL Dataset doing the same decode, convert, resize-to-cover and center crop`,
    '(bench/torch_stream.py; PIL resizes bilinear where sharp uses lanczos3). Ratio: byol\'s better column / PyTorch.',
    '',
    ...table,
    ...(torchError ? ['', `PyTorch: ${torchError}.`] : []),
  ]);
  console.log(`wrote the section to ${file}`);
}
