// helpers.mjs: what the uvu suites share: assertions that an error of a given type has a
// message matching a pattern (RegExp) or equal to a string (both return the error for further
// checks), and the tiny training run of the trainer suites (options and CLI flags).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';

const require = createRequire(import.meta.url);

function checkError(caught, ErrorType, expected) {
  assert.ok(caught, `expected an error matching ${expected}`);
  assert.instance(caught, ErrorType);
  if (expected instanceof RegExp) assert.match(caught.message, expected);
  else assert.is(caught.message, expected);
  return caught;
}

export function throwsMessage(fn, ErrorType, expected) {
  let caught;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  return checkError(caught, ErrorType, expected);
}

export async function rejectsMessage(promise, ErrorType, expected) {
  let caught;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  return checkError(caught, ErrorType, expected);
}

// The tiny training run of the trainer suites (a few ms per step on one core), writing to `out`;
// `extra` replaces top-level options.
export function tinyRunOptions(out, extra = {}) {
  return {
    data: { kind: 'synthetic', limit: 32, size: 8, channels: 3, classes: 4 },
    encoder: { arch: 'resnet18', stem: 'cifar', width: 0.125 },
    projector: { hidden: 32, out: 16 },
    predictor: { hidden: 32 },
    batchSize: 8,
    steps: 5,
    optimizer: { name: 'lars', lr: 0.5, warmupSteps: 1 },
    device: 'cpu',
    seed: 3,
    progress: 'lines',
    printEvery: 1000,
    out,
    ...extra,
  };
}

// Runs a Trainer with `options`, collecting what it prints; resolves with the result, the text
// and the run's log records.
export async function runCollecting(options) {
  const { Trainer, readLog } = require('../dist/index.js');
  const trainer = new Trainer(options);
  let text = '';
  trainer.progressStream = { write: (chunk) => { text += chunk; }, isTTY: false };
  const result = await trainer.run();
  return { result, text, log: await readLog(join(result.runDir, 'log.jsonl')) };
}

// The CLI (dist/cli/main.js) run in `cwd` with one OpenMP thread and `env` added; spawnSync's
// result.
export function runCli(cwd, args, env = {}) {
  const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli', 'main.js');
  return spawnSync(process.execPath, [bin, ...args], {
    cwd, encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1', ...env }, timeout: 120_000,
  });
}

// `byol train` flags of a tiny CPU run of `steps` steps (add --out).
export function tinyTrainArgs(steps) {
  return ['--data', 'synthetic', '--data-limit', '16', '--data-size', '8', '--width', '0.125',
    '--projector-hidden', '16', '--projector-out', '8', '--predictor-hidden', '16', '--batch-size', '8',
    '--steps', String(steps), '--device', 'cpu', '--progress', 'lines'];
}

// STL-10 binaries: n images whose pixel (c, y, x) of image i is stlValue(i, c, y, x), stored
// as the dataset stores them (3 column-major planes of 96x96 per image).
export const stlValue = (i, c, y, x) => (i * 11 + c * 60 + y * 2 + x) & 255;
export function stlImages(n, first = 0) {
  const out = new Uint8Array(n * 27648);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) for (let x = 0; x < 96; x++) for (let y = 0; y < 96; y++) {
    out[i * 27648 + c * 9216 + x * 96 + y] = stlValue(first + i, c, y, x);
  }
  return out;
}
