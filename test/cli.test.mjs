// cli.test.mjs: the `byol` command (dist/cli/main.js) as a user runs it: usage and option
// errors (exit 2, flag named, before any work), a tiny synthetic train from --config + flags,
// eval (kNN + linear, baselines), embed to .npy and .safetensors, report, info --json, augment
// PNG (sharp and the built-in encoder), --no-cuda-graphs reaching the config, and SIGINT: the
// run finishes its step, writes a checkpoint, exits 130 and resumes to completion.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const require = createRequire(import.meta.url);
const { encodePng, crc32 } = require('../dist/cli/png.js');
const { TRAIN_FLAGS, optionsFromFlags, parseArgs } = require('../dist/cli/args.js');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'dist', 'cli', 'main.js');
const scratch = mkdtempSync(join(tmpdir(), 'byol-cli-'));

function byol(args, options = {}) {
  const result = spawnSync(process.execPath, [bin, ...args], {
    cwd: scratch, encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1', ...options.env }, timeout: 120_000,
  });
  return { code: result.status, out: result.stdout, err: result.stderr };
}

const TINY_MODEL = ['--data', 'synthetic', '--data-limit', '32', '--data-size', '8', '--data-classes', '4',
  '--width', '0.125', '--projector-hidden', '32', '--projector-out', '16', '--predictor-hidden', '32', '--batch-size', '8',
  '--device', 'cpu'];
const TINY = [...TINY_MODEL, '--progress', 'none'];
// TINY with some flags' values replaced.
function tinyWith(overrides) {
  const args = TINY.slice();
  for (const [flag, value] of Object.entries(overrides)) {
    const at = args.indexOf(flag);
    if (at >= 0) args[at + 1] = value;
    else args.push(flag, value);
  }
  return args;
}

test('usage: help, unknown command, unknown flag, missing value', () => {
  const help = byol(['--help']);
  assert.is(help.code, 0);
  assert.match(help.out, /Commands:\n {2}train/);
  const trainHelp = byol(['train', '--help']);
  assert.match(trainHelp.out, /--batch-size N +images per step \(256\) \[batchSize\]/);
  assert.match(trainHelp.out, /--lr LR +base learning rate, scaled by batch\/256 \(0\.2\) \[optimizer\.lr\]/);
  const unknown = byol(['trian']);
  assert.is(unknown.code, 2);
  assert.match(unknown.err, /unknown command "trian"; expected one of train, eval/);
  const flag = byol(['train', ...TINY, '--lerning-rate', '1']);
  assert.is(flag.code, 2);
  assert.match(flag.err, /^byol train: Unknown option --lerning-rate for `byol train`/);
  const near = byol(['train', '--batchsize', '8']);
  assert.match(near.err, /did you mean --batch-size\?/);
  const missing = byol(['train', '--steps']);
  assert.is(missing.code, 2);
  assert.match(missing.err, /Option --steps needs a value/);
});

test('option errors name the option and its flag, before any work', () => {
  const out = join(scratch, 'never');
  const zero = byol(['train', ...tinyWith({ '--batch-size': '0', '--out': out })]);
  assert.is(zero.code, 2);
  assert.match(zero.err, /^byol train: Expected integer between 2 and 65536 for batchSize \(--batch-size\) but received 0 of type number\n$/);
  const text = byol(['train', ...tinyWith({ '--lr': 'fast', '--out': out })]);
  assert.match(text.err, /for optimizer\.lr \(--lr\) but received "fast" of type string/);
  const arch = byol(['train', ...tinyWith({ '--arch': 'vgg', '--out': out })]);
  assert.match(arch.err, /one of 'resnet18', 'resnet34', 'resnet50' for encoder\.arch \(--arch\)/);
  const config = join(scratch, 'bad.json');
  writeFileSync(config, JSON.stringify({ optimizer: { lerningRate: 1 } }));
  const bad = byol(['train', ...TINY, '--config', config, '--out', out]);
  assert.is(bad.code, 2);
  assert.match(bad.err, /Unknown option optimizer\.lerningRate; expected one of name, lr/);
  writeFileSync(config, '{ "steps": 3,');
  assert.match(byol(['train', '--config', config]).err, /bad\.json is not valid JSON/);
  assert.ok(!existsSync(out), 'no run directory is created for a bad option');
});

test('--no-cuda-graphs sets cudaGraphs false (help, parsed options, a run\'s state.json)', () => {
  assert.match(byol(['train', '--help']).out,
    /--no-cuda-graphs +CUDA: run every step eagerly instead of replaying it as a CUDA graph \[cudaGraphs = false\]/);
  assert.equal(optionsFromFlags(parseArgs(['--no-cuda-graphs'], TRAIN_FLAGS, 'train'), TRAIN_FLAGS), { cudaGraphs: false });
  assert.equal(optionsFromFlags(parseArgs([], TRAIN_FLAGS, 'train'), TRAIN_FLAGS), {});
  assert.equal(optionsFromFlags(parseArgs(['--knn-monitor', '50', '--no-online-classifier'], TRAIN_FLAGS, 'train'), TRAIN_FLAGS),
    { knnMonitor: { every: 50 }, onlineClassifier: false });
  assert.match(byol(['train', '--help']).out, /--knn-monitor N +every N steps \(and after the last\) score a kNN .*\[knnMonitor\.every\]/);
  assert.match(byol(['train', '--no-cuda-graphs=1']).err, /Option --no-cuda-graphs takes no value/);
  const run = join(scratch, 'eager');
  const train = byol(['train', ...TINY, '--steps', '2', '--no-cuda-graphs', '--out', run]);
  assert.is(train.code, 0, train.err);
  assert.is(JSON.parse(readFileSync(join(run, 'state.json'), 'utf8')).config.cudaGraphs, false);
});

test('train (config + flags) -> eval -> embed -> report', async () => {
  const run = join(scratch, 'run');
  const config = join(scratch, 'config.json');
  // The file sets steps and the optimizer; flags give the rest and override the seed.
  writeFileSync(config, JSON.stringify({ steps: 8, seed: 1, optimizer: { name: 'lars', lr: 0.5, warmupSteps: 2 } }));
  const train = byol(['train', '--config', config, ...TINY, '--seed', '3', '--out', run, '--json']);
  assert.is(train.code, 0, train.err);
  const result = JSON.parse(train.out);
  assert.is(result.status, 'completed');
  assert.is(result.step, 8);
  const state = JSON.parse(readFileSync(join(run, 'state.json'), 'utf8'));
  assert.is(state.config.seed, 3);
  assert.is(state.config.optimizer.warmupSteps, 2);
  assert.is(readFileSync(join(run, 'log.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"loss"')).length, 8);

  const evaluation = byol(['eval', run, '--epochs', '5', '--k', '20', '--baseline']);
  assert.is(evaluation.code, 0, evaluation.err);
  assert.match(evaluation.out, /^features +linear top-1 +top-5 +kNN top-1 +top-5\nbyol .*\nrandom .*\npixels /);
  const report = JSON.parse(readFileSync(join(run, 'eval.json'), 'utf8'));
  for (const name of ['byol', 'random', 'pixels']) {
    assert.ok(report.results[name].linear.top1 >= 0 && report.results[name].linear.top1 <= 1);
    assert.is(report.results[name].knn.k, 20);
  }
  // The run had the online classifier (synthetic data has labels): eval scores it on the test
  // split's features with the checkpoint's classifier.weight / .bias, only for the trained encoder.
  assert.match(evaluation.out, /\nonline classifier \(trained during BYOL\): top-1 \d+\.\d\d%  top-5 \d+\.\d\d%\n/);
  const online = report.results.byol.online;
  assert.ok(online.top1 >= 0 && online.top1 <= online.top5 && online.top5 === 1, JSON.stringify(online)); // 4 classes
  assert.ok(!('online' in report.results.random) && !('online' in report.results.pixels));
  {
    const bytes = readFileSync(join(run, `features-${state.weights.sha256.slice(0, 16)}-test.bin`));
    const header = JSON.parse(bytes.toString('utf8', 16, 16 + bytes.readUInt32LE(8)));
    const start = 16 + bytes.readUInt32LE(8);
    const features = new Float32Array(new Uint8Array(bytes.subarray(start, start + header.n * header.dim * 4)).buffer);
    const labels = new Int32Array(new Uint8Array(bytes.subarray(start + header.n * header.dim * 4)).buffer);
    const ckpt = readFileSync(join(run, 'checkpoint.safetensors'));
    const h = JSON.parse(ckpt.toString('utf8', 8, 8 + Number(ckpt.readBigUInt64LE(0))));
    const tensor = (name) => {
      const [b, e] = h[name].data_offsets;
      const base = 8 + Number(ckpt.readBigUInt64LE(0));
      return new Float32Array(new Uint8Array(ckpt.subarray(base + b, base + e)).buffer);
    };
    const w = tensor('classifier.weight');
    const bias = tensor('classifier.bias');
    let right = 0;
    for (let i = 0; i < header.n; i++) {
      let best = -1;
      let bestValue = -Infinity;
      for (let c = 0; c < 4; c++) {
        let v = bias[c];
        for (let d = 0; d < header.dim; d++) v += w[c * header.dim + d] * features[i * header.dim + d];
        if (v > bestValue) { bestValue = v; best = c; }
      }
      if (best === labels[i]) right++;
    }
    assert.ok(Math.abs(right / header.n - online.top1) <= 1 / header.n, `recomputed ${right / header.n} vs ${online.top1}`);
  }
  // Synthetic classes differ in color and stripes: raw pixels separate them well.
  assert.ok(report.results.pixels.linear.top1 > 0.6, `pixels linear ${report.results.pixels.linear.top1}`);
  assert.ok(existsSync(join(run, `features-${state.weights.sha256.slice(0, 16)}-train.bin`)));
  const again = byol(['eval', run, '--knn', '--k', '20', '--threads', '1']);
  assert.is(again.code, 0, again.err);
  assert.match(again.err, /features of .* from the cache/);
  // One thread (--threads 1) computes the same kNN.
  assert.equal(JSON.parse(readFileSync(join(run, 'eval.json'), 'utf8')).results.byol.knn.top1, report.results.byol.knn.top1);
  assert.is(byol(['eval', run, '--knn', '--threads', '0']).code, 2);
  // The augmented protocol alone: the run's crop, merged into eval.json next to the earlier probes.
  const augmented = byol(['eval', run, '--augmented', '--augmented-epochs', '2']);
  assert.is(augmented.code, 0, augmented.err);
  assert.match(augmented.out, /^features +linear top-1 +top-5 +kNN top-1 +top-5 +aug\. linear top-1 +top-5\nbyol .* \d+\.\d\d% +\d+\.\d\d%\n/);
  assert.match(augmented.err, /augmented linear epoch 2\/2  train loss \d/);
  const merged = JSON.parse(readFileSync(join(run, 'eval.json'), 'utf8')).results.byol;
  assert.is(merged.linearAugmented.epochs, 2);
  assert.equal(merged.linearAugmented.augment.cropScale, state.config.augment.cropScale ?? [0.08, 1]);
  assert.ok(merged.linear && merged.knn, 'earlier probes kept');
  assert.is(byol(['eval', run, '--augmented-epochs', '2']).code, 2);

  const npy = byol(['embed', run, '--out', join(scratch, 'emb.npy'), '--split', 'train']);
  assert.is(npy.code, 0, npy.err);
  assert.match(npy.out, /wrote 32 x 64 features/);
  const bytes = readFileSync(join(scratch, 'emb.npy'));
  assert.match(bytes.toString('latin1', 10, 80), /'descr': '<f4', 'fortran_order': False, 'shape': \(32, 64\)/);
  assert.is(bytes.length, 128 + 32 * 64 * 4);
  assert.ok(existsSync(join(scratch, 'emb.labels.npy')));
  const st = byol(['embed', run, '--out', join(scratch, 'emb.safetensors')]);
  assert.is(st.code, 0, st.err);
  {
    // --images: a folder of PNG files holding the first 12 test-split images gives the same
    // features as the split itself, bit for bit, and lists the files in row order.
    const testSplit = byol(['embed', run, '--out', join(scratch, 'split.npy')]);
    assert.is(testSplit.code, 0, testSplit.err);
    const { loadDatasetSpec } = require('../dist/train/data.js');
    const images = join(scratch, 'images');
    mkdirSync(images);
    const split = await loadDatasetSpec(state.config.data, 'test');
    for (let i = 0; i < 12; i++) {
      writeFileSync(join(images, `img${String(i).padStart(2, '0')}.png`),
        encodePng(split.images.subarray(i * 192, (i + 1) * 192), 8, 8, 3));
    }
    writeFileSync(join(images, 'notes.txt'), 'not an image');
    const folder = byol(['embed', run, '--images', images, '--out', join(scratch, 'folder.npy')]);
    assert.is(folder.code, 0, folder.err);
    assert.match(folder.out, /wrote the 12 image files, in row order, to .*folder\.files\.txt\nwrote 12 x 64 features/);
    const rows = (file) => readFileSync(join(scratch, file)).subarray(128);
    assert.ok(rows('folder.npy').equals(rows('split.npy').subarray(0, 12 * 64 * 4)), 'folder features = split features');
    assert.equal(readFileSync(join(scratch, 'folder.files.txt'), 'utf8').trim().split('\n'),
      Array.from({ length: 12 }, (_, i) => join(images, `img${String(i).padStart(2, '0')}.png`)));
    assert.ok(!existsSync(join(scratch, 'folder.labels.npy')), 'an unlabeled folder has no labels');
    assert.is(byol(['embed', run, '--images', images, '--split', 'test', '--out', join(scratch, 'y.npy')]).code, 2);
    const missing = byol(['embed', run, '--images', join(scratch, 'nowhere'), '--out', join(scratch, 'y.npy')]);
    assert.is(missing.code, 1);
    assert.match(missing.err, /nowhere: folder not found/);
  }
  const html = byol(['report', run]);
  assert.is(html.code, 0, html.err);
  const page = readFileSync(join(run, 'report.html'), 'utf8');
  assert.match(page, /<svg [^>]*aria-label="BYOL loss"/);
  assert.match(page, /<svg [^>]*aria-label="online classifier top-1 \(%\)"/);
  assert.match(page, /Online classifier \(trained during BYOL on stop-gradient features\): top-1 \d+\.\d\d%/);
  assert.match(byol(['embed', run, '--out', join(scratch, 'x.bin')]).err, /Cannot tell the format of --out/);
});

test('info --json: platform, addon, CPU and why CUDA is (not) available', () => {
  const info = byol(['info', '--json']);
  assert.is(info.code, 0, info.err);
  const parsed = JSON.parse(info.out);
  assert.is(parsed.platform, `${process.platform}-${process.arch}`);
  assert.is(parsed.node, process.versions.node);
  assert.ok(parsed.addon.loaded && parsed.addon.path.endsWith('.node'));
  assert.ok(parsed.cpu.threads >= 1);
  assert.match(parsed.cpu.backend, /cpu/);
  assert.type(parsed.cuda.available, 'boolean');
  if (!parsed.cuda.available) assert.ok(parsed.cuda.reason.length > 0);
  const text = byol(['info']);
  assert.match(text.out, /^byol +\d+\.\d+\.\d+\nplatform .*\naddon .*\ncpu .*\n(  .*\n)+cuda /);
});

function pngInfo(bytes) {
  assert.equal([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20), colorType: bytes[25] };
}

test('bench: times the step train would run (flags, preset, config), augmentation and embedding', () => {
  const shape = ['--data', 'synthetic', '--data-size', '8', '--data-channels', '1', '--width', '0.125',
    '--projector-hidden', '32', '--projector-out', '16', '--predictor-hidden', '32', '--batch-size', '6', '--device', 'cpu'];
  const json = byol(['bench', ...shape, '--optimizer', 'adamw', '--steps', '2', '--warmup', '1', '--json']);
  assert.is(json.code, 0, json.err);
  const r = JSON.parse(json.out);
  assert.equal(r.config, {
    arch: 'resnet18', stem: 'cifar', width: 0.125, projector: { hidden: 32, out: 16 }, predictor: { hidden: 32 },
    optimizer: 'adamw', batchSize: 6, image: [8, 8, 1],
  });
  assert.is(r.device, 'cpu');
  assert.is(r.cudaGraphs, null);
  assert.ok(['fp32', 'bf16'].includes(r.convPrecision));
  for (const key of ['step', 'augment', 'embed']) {
    const t = r[key];
    assert.is(t.count, 2, key);
    assert.ok(t.msMin > 0 && t.msMin <= t.msMedian && t.msMedian <= t.msMax, `${key} ${JSON.stringify(t)}`);
    assert.ok(Math.abs(t.imagesPerSecond - (6000 / t.msMean)) < 1e-6 * t.imagesPerSecond, key);
  }
  assert.ok(Number.isFinite(r.step.loss) && r.step.loss >= 0 && r.step.loss <= 4, `loss ${r.step.loss}`);
  assert.ok(r.rss.peakMb > 0 && r.rss.startMb > 0);
  assert.ok(!('opTimes' in r));
  // --op-times: as many more steps, op by op; the rows add up to the total and name the step's ops.
  const ops = JSON.parse(byol(['bench', ...shape, '--steps', '2', '--warmup', '0', '--op-times', '--json']).out).opTimes;
  assert.is(ops.steps, 2);
  assert.ok(Math.abs(ops.rows.reduce((sum, row) => sum + row.ms, 0) - ops.msPerStep) < 1e-6 * ops.msPerStep);
  for (const [phase, op] of [['online forward', 'conv2d_forward'], ['target forward', 'conv2d_forward'],
    ['backward', 'conv2d_backward_weight'], ['optimizer', 'lars_update'], ['ema', 'ema_update']]) {
    assert.ok(ops.rows.some((row) => row.phase === phase && row.op === op && row.calls > 0 && row.ms > 0), `${phase} ${op}`);
  }
  // The table says the same; a training preset gives the model, batch and image size.
  const table = byol(['bench', '--preset', 'fashion-mnist-quick', '--batch-size', '4', '--device', 'cpu', '--steps', '1',
    '--warmup', '0', '--conv-precision', 'fp32']);
  assert.is(table.code, 0, table.err);
  assert.match(table.out, /^resnet18 \(cifar stem, width 0\.125\), projector 512\/128, predictor 512, LARS; batch 4 of 28x28x1\n/);
  assert.match(table.out, /; fp32 convolutions\n/);
  assert.match(table.out, /\ntraining step \(2 views\) +[\d.]+ +[\d.]+ +[\d.]+ +\d+ +1\naugmentation \(2 views\) .*\nembedding \(1 view, eval\) /);
  assert.match(table.out, /\n[\d.]+ steps\/s; loss [\d.]+; host RSS peak \d+ MB/);
  assert.not.match(table.out, /op times/);
  // A --config file, and data kinds whose files are not needed.
  const config = join(scratch, 'bench-config.json');
  writeFileSync(config, JSON.stringify({ encoder: { width: 0.125 }, projector: { hidden: 16, out: 8 }, predictor: false,
    batchSize: 2, device: 'cpu' }));
  const fromConfig = byol(['bench', '--config', config, '--data', 'cifar10', '--steps', '1', '--warmup', '0', '--json']);
  assert.is(fromConfig.code, 0, fromConfig.err);
  assert.equal(JSON.parse(fromConfig.out).config.image, [32, 32, 3]);
  assert.is(JSON.parse(fromConfig.out).config.predictor, false);
  // Bad flags: exit 2 before any work, naming the flag.
  const bad = [
    [['--steps', '0'], /--steps/],
    [['--width', '0.3'], /encoder\.width \(--width\)/],
    [['--data', 'folder'], /--data-size/],
    [['--epochs', '3'], /Unknown option --epochs for `byol bench`/],
    [['extra'], /no positional arguments/],
  ];
  for (const [args, message] of bad) {
    const result = byol(['bench', '--device', 'cpu', ...args]);
    assert.is(result.code, 2, `${args.join(' ')}: ${result.err}`);
    assert.match(result.err, message);
  }
  assert.match(byol(['bench', '--help']).out, /^Usage: byol bench/);
});

test('augment: PNG grid of originals and their two views', async () => {
  const out = join(scratch, 'views.png');
  const r = byol(['augment', '--data', 'synthetic', '--data-size', '16', '--count', '3', '--scale', '2', '--out', out]);
  assert.is(r.code, 0, r.err);
  assert.match(r.out, /3 samples of synthetic.*original \| view 1 \| view 2/);
  const { width, height, colorType } = pngInfo(readFileSync(out));
  assert.equal([width, height, colorType], [3 * 32 + 4 * 4, 3 * 32 + 4 * 4, 2]);

  // An image folder is streamed: only the samples shown are decoded (the broken last file is not).
  const sharp = require('sharp');
  const folder = join(scratch, 'augment-folder');
  mkdirSync(folder);
  for (let i = 0; i < 4; i++) {
    await sharp({ create: { width: 20, height: 20, channels: 3, background: { r: 60 * i, g: 90, b: 200 - 40 * i } } }).png()
      .toFile(join(folder, `${i}.png`));
  }
  writeFileSync(join(folder, '9.png'), 'not a png');
  const shown = byol(['augment', '--data', 'folder', '--data-path', folder, '--count', '2', '--out', out]);
  assert.is(shown.code, 0, shown.err);
  assert.match(shown.out, /2 samples of folder:/);
  const broken = byol(['augment', '--data', 'folder', '--data-path', folder, '--first', '3', '--out', out]);
  assert.is(broken.code, 1);
  assert.match(broken.err, /9\.png: cannot decode image/);
});

test('built-in PNG encoder: valid chunks, CRCs and pixels', () => {
  assert.is(crc32(Buffer.from('123456789')), 0xCBF43926); // the standard check value
  const pixels = Uint8Array.from({ length: 5 * 3 }, (_, i) => i * 17);
  const png = encodePng(pixels, 5, 3, 1);
  const info = pngInfo(png);
  assert.equal([info.width, info.height, info.colorType], [5, 3, 0]);
  let at = 8;
  const chunks = [];
  while (at < png.length) {
    const length = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    assert.is(png.readUInt32BE(at + 8 + length), crc32(png.subarray(at + 4, at + 8 + length)), `${type} CRC`);
    chunks.push([type, png.subarray(at + 8, at + 8 + length)]);
    at += 12 + length;
  }
  assert.equal(chunks.map((c) => c[0]), ['IHDR', 'IDAT', 'IEND']);
  const raw = zlib.inflateSync(chunks[1][1]);
  for (let y = 0; y < 3; y++) {
    assert.is(raw[y * 6], 0);
    assert.equal([...raw.subarray(y * 6 + 1, y * 6 + 6)], [...pixels.subarray(y * 5, y * 5 + 5)]);
  }
});

// Spawns `byol ARGS` and resolves once `ready(stderr)` holds; returns the child and its exit.
async function spawnUntil(args, ready, label) {
  const child = spawn(process.execPath, [bin, ...args], { cwd: scratch, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  const state = { stderr: '' };
  child.stderr.on('data', (chunk) => { state.stderr += chunk; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 60_000;
  while (!ready(state.stderr)) {
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      assert.unreachable(`${label}: not ready within 60 s: ${state.stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return { child, exited, state };
}

const loggedSteps = (run) => readFileSync(join(run, 'log.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"loss"'));

test('SIGINT / SIGTERM: finish the step, write a checkpoint, exit 130 / 143; --resume completes the run', async () => {
  const run = join(scratch, 'signals');
  const total = 400;
  const args = ['train', ...TINY_MODEL, '--steps', String(total), '--checkpoint-every', '0', '--progress', 'lines',
    '--print-every', '1', '--out', run];
  const first = await spawnUntil(args, (err) => /step 3\//.test(err), 'first run');
  first.child.kill('SIGINT');
  const firstExit = await first.exited;
  assert.equal(firstExit, { code: 130, signal: null }, first.state.stderr);
  assert.match(first.state.stderr, /SIGINT: finishing the current step and writing a checkpoint/);
  // The synthetic data has labels: the progress line shows the online classifier's smoothed top-1.
  assert.match(first.state.stderr, /step 3\/400  loss \d+\.\d{4}  top-1 \d+\.\d%  lr /);
  assert.match(first.state.stderr, /interrupted after step \d+; checkpoint written to .*; continue with --resume/);
  const state = JSON.parse(readFileSync(join(run, 'state.json'), 'utf8'));
  assert.is(state.status, 'interrupted');
  assert.is(state.step, loggedSteps(run).length, 'the checkpoint is at the last logged step');
  assert.ok(state.step >= 3 && state.step < total, `stopped at ${state.step}`);

  assert.match(byol(['train', '--resume', run, '--lr', '1']).err, /remove optimizer/);
  const second = await spawnUntil(['train', '--resume', run, '--progress', 'lines', '--print-every', '1'],
    (err) => new RegExp(`step ${state.step + 2}/`).test(err), 'resumed run');
  second.child.kill('SIGTERM');
  assert.equal(await second.exited, { code: 143, signal: null }, second.state.stderr);
  assert.match(second.state.stderr, new RegExp(`resuming at step ${state.step} of ${total} steps`));
  const after = JSON.parse(readFileSync(join(run, 'state.json'), 'utf8'));
  assert.ok(after.step >= state.step + 2);

  const last = byol(['train', '--resume', run, '--json']);
  assert.is(last.code, 0, last.err);
  assert.is(JSON.parse(last.out).status, 'completed');
  assert.match(last.err, /byol: finished 400 steps in .*; online classifier top-1 \d+\.\d% on the last training batches/);
  const steps = loggedSteps(run).map((l) => JSON.parse(l).step);
  assert.equal(steps, Array.from({ length: total }, (_, i) => i + 1), 'one log line per step, in order, no repeats');
});

test.after(() => rmSync(scratch, { recursive: true, force: true }));

test.run();
