// op_times.test.mjs: op timing (where a step's time goes): the public setOpTiming / opTimes
// functions on a Byol model's steps (call counts known from the network, times that add up),
// argument errors naming the argument, and the trainer's opTimes window (--op-times A:B): the
// same losses as an untimed run, one 'op-times' log record per window with per-step rows, the
// table it prints and the report's section, a window outside the run or cut short by its end. On a GPU the window also
// runs its steps eagerly and graphs come back after it.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runCli, runCollecting, throwsMessage, tinyRunOptions, tinyTrainArgs } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Byol, ByolOptionError, Tensor, Trainer, opRate, opTimes, setOpTiming } = require('../dist/index.js');
const { native } = require('../dist/native.js');
const { renderReport } = require('../dist/train/report.js');

const scratch = mkdtempSync(join(tmpdir(), 'byol-optimes-'));
let runCounter = 0;
const newRunDir = () => join(scratch, `run${++runCounter}`);
// ResNet-18: stem conv + 8 blocks x 2 + 3 downsample convs, each once per view.
const R18_CONVS = 20;

const tiny = (extra = {}) => tinyRunOptions(newRunDir(), extra);
const losses = (log) => log.filter((r) => !('event' in r)).map((r) => r.loss);
const row = (rows, phase, op) => rows.find((r) => r.phase === phase && r.op === op);

function views(n, hw, value) {
  const data = new Float32Array(n * 3 * hw * hw);
  for (let i = 0; i < data.length; i++) data[i] = value * (((i * 7919) % 17) / 17 - 0.5);
  return Tensor.from(data, [n, 3, hw, hw]);
}

test('setOpTiming / opTimes on Byol steps: counts per phase, times that fit the wall clock, reset, off', async () => {
  const model = await Byol.create({
    encoder: { arch: 'resnet18', stem: 'cifar', width: 0.125 }, projector: { hidden: 32, out: 16 },
    predictor: { hidden: 32 }, device: 'cpu',
  });
  const v1 = views(8, 8, 1);
  const v2 = views(8, 8, 0.5);
  try {
    await model.step(v1, v2, { lr: 0.1, tau: 0.99 });
    setOpTiming('cpu', true);
    opTimes('cpu', { reset: true });
    const t0 = performance.now();
    for (let i = 0; i < 3; i++) await model.step(v1, v2, { lr: 0.1, tau: 0.99 });
    const wall = performance.now() - t0;
    const rows = opTimes('cpu');
    assert.is(row(rows, 'online forward', 'conv2d_forward').calls, 3 * 2 * R18_CONVS);
    assert.is(row(rows, 'target forward', 'conv2d_forward').calls, 3 * 2 * R18_CONVS);
    assert.is(row(rows, 'backward', 'conv2d_backward_data').calls, 3 * 2 * (R18_CONVS - 1));
    assert.is(row(rows, 'optimizer', 'lars_update').calls, 3);
    assert.is(row(rows, 'ema', 'ema_update').calls, 3);
    const phases = [...new Set(rows.map((r) => r.phase))];
    for (const p of ['target forward', 'online forward', 'loss', 'backward', 'optimizer', 'ema']) {
      assert.ok(phases.includes(p), `phase ${p} in ${phases}`);
    }
    const total = rows.reduce((sum, r) => sum + r.ms, 0);
    assert.ok(total > 0 && total <= wall * 1.02 + 1, `${total} ms in ops within ${wall} ms wall`);
    assert.ok(rows.every((r) => typeof r.phase === 'string' && r.calls > 0 && r.ms >= 0 && r.flops >= 0 && r.bytes >= 0));
    // Convolutions and linear layers report operations, memory-bound ops bytes.
    const conv = row(rows, 'online forward', 'conv2d_forward');
    assert.ok(conv.flops > 0 && conv.bytes > 0, JSON.stringify(conv));
    assert.ok(row(rows, 'backward', 'batchnorm_backward').bytes > 0);
    assert.match(opRate(conv), /^\d+\.\d GFLOP\/s$/);
    assert.match(opRate(row(rows, 'ema', 'ema_update')), /^\d+\.\d GB\/s$/);
    assert.is(opRate({ flops: 0, bytes: 0, ms: 1 }), '-');
    assert.equal(opTimes('cpu', { reset: true }), rows, 'reading again gives the same sums');
    assert.equal(opTimes('cpu'), [], 'reset cleared them');
    setOpTiming('cpu', false);
    await model.step(v1, v2, { lr: 0.1, tau: 0.99 });
    assert.equal(opTimes('cpu'), [], 'nothing is timed while off');
  } finally {
    setOpTiming('cpu', false);
    model.dispose();
    v1.dispose();
    v2.dispose();
  }
});

test('setOpTiming / opTimes: bad arguments name the argument', () => {
  throwsMessage(() => setOpTiming('cpu', 'yes'), ByolOptionError, /^Expected boolean for on but received "yes"/);
  throwsMessage(() => opTimes('cpu', { reset: 1 }), ByolOptionError, /^Expected boolean for reset but received 1/);
  throwsMessage(() => opTimes('tpu'), ByolOptionError, /for device but received "tpu"/);
  throwsMessage(() => opTimes('cpu', true), ByolOptionError, /^Expected object for options but received true/);
  throwsMessage(() => opTimes('cpu', { rest: true }), ByolOptionError, /^Unknown option options\.rest; expected one of reset/);
  throwsMessage(() => native.setOpTiming('cpu'), TypeError, /^Expected boolean for on but received undefined/);
  throwsMessage(() => native.opTimes('cpu', 'x'), TypeError, /^Expected boolean for reset but received "x"/);
});

test('trainer opTimes window: same losses, one op-times record, the table printed', async () => {
  const plain = await runCollecting(tiny());
  const timed = await runCollecting(tiny({ opTimes: { startStep: 2, stopStep: 4 } }));
  assert.equal(losses(timed.log), losses(plain.log));
  const records = timed.log.filter((r) => r.event === 'op-times');
  assert.is(records.length, 1);
  const [rec] = records;
  assert.is(rec.firstStep, 2);
  assert.is(rec.step, 3);
  assert.is(rec.steps, 2);
  assert.is(rec.device, 'cpu');
  assert.is(row(rec.rows, 'online forward', 'conv2d_forward').calls, 2 * R18_CONVS, 'calls are per step');
  assert.ok(Math.abs(rec.msPerStep - rec.rows.reduce((s, r) => s + r.ms, 0)) < 1e-9);
  assert.match(timed.text, /byol: timing ops for steps 2\.\.3\n/);
  assert.match(timed.text, /byol: op times over steps 2\.\.3: [\d.]+ ms per step in ops \(longest 12 of \d+; all in log\.jsonl, event 'op-times'\)\n {2}phase +op +calls +ms\/step +share +rate\n/);
  assert.match(timed.text, /\n {2}(target|online) forward +conv2d_forward +40\.0 +[\d.]+ +[\d.]+% +[\d.]+ GFLOP\/s\n/);
  assert.match(timed.text, /\n {2}\S.* +batchnorm_\w+ +\d+\.\d +[\d.]+ +[\d.]+% +[\d.]+ GB\/s\n/);
  assert.not.match(plain.text, /op times|timing ops/);
  // Timing is off again after the window.
  assert.equal(opTimes('cpu'), []);
  // The HTML report shows the record; a run without one has no such section.
  const html = await renderReport(timed.result.runDir);
  assert.match(html, /<h2>Where a step's time goes<\/h2>\n<table class="results"><caption>steps 2\.\.3 on cpu: [\d.]+ ms per step in ops \(wall time of each op\)/);
  assert.match(html, /<tr><th>online forward<\/th><th>conv2d_forward<\/th><td>40\.0<\/td>/);
  assert.not.match(await renderReport(plain.result.runDir), /Where a step/);
});

test('trainer opTimes window: outside the run is said; cut short by the end of the run is closed', async () => {
  const outside = await runCollecting(tiny({ steps: 3, opTimes: { startStep: 5, stopStep: 8 } }));
  assert.match(outside.text, /byol: op timing steps 5\.\.7 is outside the steps this run trains \(1\.\.3\); nothing will be timed\n/);
  assert.ok(outside.log.every((r) => r.event !== 'op-times'));
  const short = await runCollecting(tiny({ steps: 3, opTimes: { startStep: 2, stopStep: 10 } }));
  const [rec] = short.log.filter((r) => r.event === 'op-times');
  assert.equal([rec.firstStep, rec.step, rec.steps], [2, 3, 2]);
  throwsMessage(() => new Trainer(tiny({ opTimes: '2:4' })), ByolOptionError,
    /^Expected object for opTimes but received "2:4" of type string$/);
  throwsMessage(() => new Trainer(tiny({ opTimes: { startStep: 4, stopStep: 2 } })), ByolOptionError,
    /for opTimes\.stopStep but received 2/);
  // May be given when resuming (it does not change what is computed).
  new Trainer({ resume: short.result.runDir, opTimes: { startStep: 1, stopStep: 2 } });
});

test('cli: --op-times in the help, checked before any work, prints the table', () => {
  const byol = (args) => runCli(scratch, args);
  assert.match(byol(['train', '--help']).stdout, /--op-times A:B +time every op of steps A\.\.B-1/);
  const tinyArgs = tinyTrainArgs(3);
  const bad = byol(['train', ...tinyArgs, '--out', newRunDir(), '--op-times', '3-4']);
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /Expected steps 'A:B' .* for --op-times but received "3-4"/);
  const ok = byol(['train', ...tinyArgs, '--out', newRunDir(), '--op-times', '2:4']);
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /byol: op times over steps 2\.\.3: /);
});

test('cuda run (GPU machines): the window runs eagerly and graphs come back after it', async () => {
  if (!native.probeCuda(0).available) {
    console.log('  (no GPU: the CUDA op-times run is covered on GPU machines only)');
    return;
  }
  const { text, log } = await runCollecting(tiny({ device: 'cuda', steps: 9, opTimes: { startStep: 4, stopStep: 6 } }));
  assert.match(text, /byol: timing ops for steps 4\.\.5 \(run eagerly: CUDA graphs are off meanwhile\)\n/);
  const [rec] = log.filter((r) => r.event === 'op-times');
  assert.is(row(rec.rows, 'online forward', 'conv2d_forward').calls, 2 * R18_CONVS);
  assert.not.ok(rec.rows.some((r) => r.op === 'graph_launch'), 'no replay inside the window');
  const end = log.find((r) => r.event === 'end');
  assert.ok(end.graphs.enabled && end.graphs.launches > 0, JSON.stringify(end.graphs));
});

test.after(() => rmSync(scratch, { recursive: true, force: true }));

test.run();
