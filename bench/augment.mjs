#!/usr/bin/env node
// bench/augment.mjs: augmented images per second of augmentBatch (native draws + kernel) for
// CIFAR-size (32x32 -> 32x32, 'cifar' preset) and ImageNet-size (256x256 -> 224x224, 'byol'
// preset, both views) batches. Prints a table; numbers depend on the machine and its load.
// Usage: node bench/augment.mjs [--device cpu|cuda] [--seconds 2] [--threads N]
import { createRequire } from 'node:module';
import { cpus } from 'node:os';

import { argv, option } from './common.mjs';

const require = createRequire(import.meta.url);
const { augmentBatch, augmentPair } = require('../dist/augment.js');
const { setNumThreads, getNumThreads, devices } = require('../dist/device.js');

const device = option('--device', 'cpu');
const seconds = Number(option('--seconds', '2'));
if (argv.includes('--threads')) setNumThreads(Number(option('--threads')));

function pixels(n) {
  const out = new Uint8Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

const cases = [
  { name: 'cifar 32x32 -> 32x32', batch: 256, side: 32, preset: 'cifar', outputSize: 32 },
  { name: 'byol 256x256 -> 224x224', batch: 32, side: 256, preset: 'byol', outputSize: 224 },
];

console.log(`augment benchmark: ${device === 'cpu' ? devices().cpu : device}, ${getNumThreads()} threads, ${cpus().length} cores`);
console.log('case                       view  batch  images/s   ms/batch');
for (const c of cases) {
  const shape = [c.batch, c.side, c.side, 3];
  const images = pixels(c.batch * c.side * c.side * 3);
  const views = augmentPair({ preset: c.preset, outputSize: c.outputSize });
  for (const [v, config] of views.entries()) {
    const indices = Int32Array.from({ length: c.batch }, (_, i) => i);
    const run = async (epoch) => {
      const out = await augmentBatch(images, null, { config, seed: 1, epoch, indices, view: v + 1, device, shape });
      out.images.dispose();
    };
    await run(0);  // warm-up: thread pool, page faults
    let done = 0;
    const start = process.hrtime.bigint();
    let elapsed = 0;
    while (elapsed < seconds || done < 3) {
      await run(done + 1);
      done++;
      elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    }
    const perSecond = (done * c.batch) / elapsed;
    console.log(`${c.name.padEnd(26)} T${v === 0 ? ' ' : "'"}   ${String(c.batch).padStart(5)}  ${perSecond.toFixed(0).padStart(8)}  ${((elapsed / done) * 1000).toFixed(1).padStart(9)}`);
  }
}
