// profile.test.mjs: the profiler capture window (nsys --capture-range=cudaProfilerApi): the
// profile option, --profile-steps and BYOL_PROFILE_STEPS (validation naming where the value
// came from), the native profilerStart/profilerStop binding (false on the CPU, the device
// named on errors), and tiny runs: on the CPU the trainer says once that the window is
// CUDA-only and trains the same losses; with a GPU the log records the window's steps.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runCli, runCollecting, throwsMessage, tinyRunOptions, tinyTrainArgs } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Trainer, PROFILE_ENV } = require('../dist/train/trainer.js');
const { parseProfileSteps, resolveProfile } = require('../dist/train/options.js');
const { native } = require('../dist/native.js');
const { ByolOptionError } = require('../dist/validate.js');

const scratch = mkdtempSync(join(tmpdir(), 'byol-profile-'));
let runCounter = 0;
const newRunDir = () => join(scratch, `run${++runCounter}`);

// The trainer suites' tiny run (helpers.mjs).
const tiny = (extra = {}) => tinyRunOptions(newRunDir(), extra);
const losses = (log) => log.filter((r) => !('event' in r)).map((r) => r.loss);

test('profile option: integers, 1 <= startStep < stopStep, messages name the option', () => {
  assert.equal(resolveProfile('profile', { startStep: 10, stopStep: 15 }), { startStep: 10, stopStep: 15 });
  throwsMessage(() => new Trainer(tiny({ profile: '10:15' })), ByolOptionError,
    /^Expected object for profile but received "10:15" of type string$/);
  throwsMessage(() => new Trainer(tiny({ profile: { startStep: 0, stopStep: 4 } })), ByolOptionError,
    /^Expected integer between 1 and \d+ for profile\.startStep but received 0 of type number$/);
  throwsMessage(() => new Trainer(tiny({ profile: { startStep: 2.5, stopStep: 4 } })), ByolOptionError,
    /for profile\.startStep but received 2\.5/);
  throwsMessage(() => new Trainer(tiny({ profile: { startStep: 3 } })), ByolOptionError,
    /for profile\.stopStep but received undefined/);
  throwsMessage(() => new Trainer(tiny({ profile: { startStep: 4, stopStep: 4 } })), ByolOptionError,
    /^Expected integer greater than profile\.startStep \(4\); the window captures steps startStep \.\. stopStep - 1 for profile\.stopStep but received 4 of type number$/);
  throwsMessage(() => new Trainer(tiny({ profile: { start: 1, stopStep: 4 } })), ByolOptionError,
    /^Unknown option profile\.start; expected one of startStep, stopStep$/);
});

test("'A:B' text (--profile-steps, BYOL_PROFILE_STEPS): parsed, or rejected naming its source", () => {
  assert.equal(parseProfileSteps('--profile-steps', '10:15'), { startStep: 10, stopStep: 15 });
  assert.equal(parseProfileSteps('--profile-steps', ' 1 : 2 '), { startStep: 1, stopStep: 2 });
  for (const bad of ['5', '5:5', '6:5', '0:3', 'a:b', '1:2:3', '-1:3', '']) {
    throwsMessage(() => parseProfileSteps('--profile-steps', bad), ByolOptionError,
      new RegExp(`^Expected steps 'A:B' with 1 <= A < B .* for --profile-steps but received ${JSON.stringify(bad)} of type string$`));
  }
  const saved = process.env[PROFILE_ENV];
  try {
    process.env[PROFILE_ENV] = '7';
    throwsMessage(() => new Trainer(tiny()), ByolOptionError, /for BYOL_PROFILE_STEPS but received "7"/);
    // The option wins over the environment (the bad variable is never read).
    new Trainer(tiny({ profile: { startStep: 1, stopStep: 2 } }));
  } finally {
    if (saved === undefined) delete process.env[PROFILE_ENV];
    else process.env[PROFILE_ENV] = saved;
  }
});

test('native profilerStart/profilerStop: false on the CPU, errors name the device', () => {
  assert.is(native.profilerStart('cpu'), false);
  assert.is(native.profilerStop('cpu'), false);
  throwsMessage(() => native.profilerStart(), TypeError, /^Expected non-empty string for device but received undefined/);
  throwsMessage(() => native.profilerStart('tpu'), Error, /^profilerStart: .*tpu/);
  if (native.probeCuda(0).available) {
    // No profiler attached: cudaProfilerStart/Stop are accepted and do nothing.
    assert.is(native.profilerStart('cuda:0'), true);
    assert.is(native.profilerStop('cuda:0'), true);
  } else {
    throwsMessage(() => native.profilerStop('cuda:0'), Error, /^profilerStop: .*libbyol_cuda/);
  }
});

test('cpu run with a window: one line says it is CUDA-only; same losses, no window in the log', async () => {
  const plain = await runCollecting(tiny());
  const profiled = await runCollecting(tiny({ profile: { startStep: 2, stopStep: 4 } }));
  assert.is(profiled.result.status, 'completed');
  const notes = profiled.text.split('\n').filter((line) => /profile window/.test(line));
  assert.equal(notes, ['byol: profile window steps 2..3 applies to CUDA devices only ' +
    '(nsys --capture-range=cudaProfilerApi); cpu trains without one']);
  assert.not.match(plain.text, /profile window|profiler/);
  assert.equal(losses(profiled.log), losses(plain.log));
  assert.ok(profiled.log.every((r) => !/^profile/.test(r.event ?? '')));

  // The window may change when resuming (it does not change what is computed), and is checked.
  new Trainer({ resume: profiled.result.runDir, profile: { startStep: 1, stopStep: 2 } });
  throwsMessage(() => new Trainer({ resume: profiled.result.runDir, profile: { startStep: 2, stopStep: 1 } }),
    ByolOptionError, /for profile\.stopStep but received 1/);
});

test('a window outside the steps of the run is reported, not silently ignored', async () => {
  const { text } = await runCollecting(tiny({ steps: 3, profile: { startStep: 5, stopStep: 8 } }));
  assert.match(text, /byol: profile window steps 5\.\.7 is outside the steps this run trains \(1\.\.3\); nothing will be captured\n/);
  assert.not.match(text, /CUDA devices only/);
});

test('cuda run (GPU machines): the log records the window around steps A..B-1', async () => {
  if (!native.probeCuda(0).available) {
    console.log('  (no GPU: the CUDA window run is covered on GPU machines only)');
    return;
  }
  const { text, log } = await runCollecting(tiny({ device: 'cuda', steps: 5, profile: { startStep: 2, stopStep: 4 } }));
  assert.match(text, /byol: profiler capture started before step 2 \(steps 2\.\.3\)\n/);
  assert.match(text, /byol: profiler capture stopped after step 3\n/);
  const events = log.filter((r) => /^profile/.test(r.event ?? '')).map((r) => [r.event, r.step]);
  assert.equal(events, [['profile-start', 1], ['profile-stop', 3]]);
  // Ends inside the window: the run closes it.
  const short = await runCollecting(tiny({ device: 'cuda', steps: 3, profile: { startStep: 2, stopStep: 10 } }));
  assert.equal(short.log.filter((r) => /^profile/.test(r.event ?? '')).map((r) => [r.event, r.step]),
    [['profile-start', 1], ['profile-stop', 3]]);
});

test('cli: --profile-steps is in the help, parsed before any work, and accepted on the CPU', () => {
  const byol = (args) => runCli(scratch, args);
  const help = byol(['train', '--help']);
  assert.match(help.stdout, /--profile-steps A:B +CUDA: capture steps A\.\.B-1 under nsys --capture-range=cudaProfilerApi/);
  const tinyArgs = tinyTrainArgs(2);
  const bad = byol(['train', ...tinyArgs, '--out', newRunDir(), '--profile-steps', '3']);
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /Expected steps 'A:B' .* for --profile-steps but received "3"/);
  const ok = byol(['train', ...tinyArgs, '--out', newRunDir(), '--profile-steps', '1:2']);
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /profile window steps 1\.\.1 applies to CUDA devices only/);
});

test.after(() => rmSync(scratch, { recursive: true, force: true }));

test.run();
