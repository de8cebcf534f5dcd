#!/usr/bin/env node
// run.mjs: the whole test suite (`npm test`): the C++ test runner (op table vs PyTorch
// fixtures, CUDA vs CPU where a GPU exists), the same CUDA cases and the JS suites with CUDA
// branches on the simulated GPU (native/tests/cuda_sim), the race check (the emulated CUDA kernels under
// ThreadSanitizer, byol_tests_race), the uvu tests of the JS API and the benchmark report's
// Python tests, then one closing line "N passed, N failed, N skipped" summing them.
// Exit 1 on any failure.
// Arguments: --only native|sim|race|js|bench, and a filter passed to the C++ runners (--filter X).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : null;
const filter = argv.includes('--filter') ? argv[argv.indexOf('--filter') + 1] : null;
const totals = { passed: 0, failed: 0, skipped: 0 };
const parts = [];

function run(name, command, args, parse, env = {}) {
  const started = Date.now();
  const result = spawnSync(command, args, {
    cwd: root,
    encoding: 'utf8',
    // Passive OpenMP waiting: spinning threads steal the 2 cores from each other under load.
    env: { OMP_WAIT_POLICY: 'passive', ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...env },
    maxBuffer: 256 * 1024 * 1024,
  });
  const output = (result.stdout ?? '') + (result.stderr ?? '');
  process.stdout.write(output);
  let counts = result.error ? null : parse(output);
  if (!counts) {
    console.log(`\n${name}: no test summary found (exit ${result.status}${result.error ? `, ${result.error.message}` : ''}): counted as 1 failure`);
    counts = { passed: 0, failed: 1, skipped: 0 };
  } else if (result.status !== 0 && counts.failed === 0) {
    console.log(`\n${name}: exited with ${result.status} although no test failed: counted as 1 failure`);
    counts.failed = 1;
  }
  for (const k of Object.keys(totals)) totals[k] += counts[k];
  parts.push({ name, ...counts, seconds: (Date.now() - started) / 1000 });
}

// The C++ runners end with "N passed, N failed, N skipped".
function parseRunner(out) {
  const m = [...out.matchAll(/^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$/gm)].pop();
  return m && { passed: +m[1], failed: +m[2], skipped: +(m[3] ?? 0) };
}

// uvu ends with "Total: N", "Passed: N" and "Skipped: N".
function parseUvu(out) {
  const total = out.match(/Total:\s+(\d+)/);
  const passed = out.match(/Passed:\s+(\d+)/);
  const skipped = out.match(/Skipped:\s+(\d+)/);
  if (!total || !passed) return null;
  return { passed: +passed[1], failed: +total[1] - +passed[1], skipped: skipped ? +skipped[1] : 0 };
}

if (only === null || only === 'native') {
  const runner = ['build-cmake/native/tests/byol_tests', 'build-cmake/byol_tests']
    .map((p) => join(root, p)).find((p) => existsSync(p));
  if (!runner) {
    console.log('native: the C++ test runner is not built (run `npm run build:cmake`): counted as 1 failure');
    totals.failed += 1;
    parts.push({ name: 'native (C++ runner)', passed: 0, failed: 1, skipped: 0, seconds: 0 });
  } else {
    run('native (C++ runner)', runner, filter ? ['--filter', filter] : [], parseRunner);
  }
}

// The simulated GPU (native/tests/cuda_sim): libbyol_cuda.so's own sources built against a
// host CUDA runtime, cuDNN and cuBLAS, loaded as the CUDA plugin. Every @cuda case of the C++
// runner runs on it (the step-time case skips: its timings would mean nothing), then the JS
// suites whose CUDA branches only run where a CUDA device loads (device, op timing, profiling)
// and the plugin's own checks from Node (test/*.sim.mjs).
const simLibrary = join(root, 'build-cmake/libbyol_cuda_sim.so');
const simJs = '^((device|op_times|profile)\\.test|[\\w-]+\\.sim)\\.mjs$';
if (only === null || only === 'sim') {
  const runner = join(root, 'build-cmake/native/tests/byol_tests');
  if (!existsSync(simLibrary) || !existsSync(runner)) {
    console.log('simulated GPU: libbyol_cuda_sim.so or byol_tests is not built (run `npm run build:cmake`): counted as 1 failure');
    totals.failed += 1;
    parts.push({ name: 'simulated GPU', passed: 0, failed: 1, skipped: 0, seconds: 0 });
  } else {
    const env = { BYOL_CUDA_LIBRARY: simLibrary, BYOL_TEST_NO_TIMING: '1' };
    // BYOL_SIM_STATS: the simulated runtime's line at exit. Every case frees what it allocated,
    // so the runner must end with no device memory and no pinned host memory left, and the
    // backend queues all its work on its own stream (work on the legacy stream would serialize
    // with every other stream on a GPU).
    run('simulated GPU (C++)', runner, ['--backend', 'cuda', '--filter', filter ?? '@cuda'], (out) => {
      const counts = parseRunner(out);
      const stats = out.match(/cuda \(simulated\): \d+ work items \((\d+) on the legacy stream\), \d+ blocking host waits, (\d+) bytes of device memory still allocated, (\d+) pinned host allocations/);
      if (!counts) return counts;
      const problem = !stats ? 'no BYOL_SIM_STATS line at exit'
        : +stats[1] ? `${stats[1]} work items on the legacy stream`
        : +stats[2] || +stats[3] ? `${stats[2]} bytes of device memory and ${stats[3]} pinned allocations left at exit (a leak)` : null;
      if (problem) {
        console.log(`simulated GPU (C++): ${problem}: counted as 1 failure`);
        counts.failed += 1;
      }
      return counts;
    }, { ...env, BYOL_SIM_STATS: '1' });
    if (!filter) run('simulated GPU (js)', process.execPath, [join(root, 'node_modules', 'uvu', 'bin.js'), 'test', simJs], parseUvu, env);
  }
}

// The race check runs each kernel's cases once: it leaves out the cases that launch the same
// kernels again (the ResNet-18 step fixtures next to the ResNet-50 one, three steps in two
// schedules, graph replays), which take over 8 minutes under ThreadSanitizer. A --filter
// selects from all of them.
const raceSkip = 'step/r18_cifar,emu/step_same_bits,graph/';
if (only === null || only === 'race') {
  const race = join(root, 'build-cmake/native/tests/byol_tests_race');
  if (!existsSync(race)) {
    console.log('race check: byol_tests_race is not built (needs a compiler with ThreadSanitizer fibers): counted as 1 skipped');
    totals.skipped += 1;
    parts.push({ name: 'race check (TSan)', passed: 0, failed: 0, skipped: 1, seconds: 0 });
  } else {
    run('race check (TSan)', race, filter ? ['--filter', filter] : ['--skip', raceSkip], parseRunner);
  }
}

if (only === null || only === 'js') {
  const uvu = join(root, 'node_modules', 'uvu', 'bin.js');
  run('js (uvu)', process.execPath, [uvu, 'test', '\\.test\\.mjs$'], parseUvu);
}

// The benchmark report's own tests (bench/gpu_report.py renders BENCHMARKS.md's GPU section
// from JSON lines; checked on made-up lines, no GPU or PyTorch needed).
if (only === null || only === 'bench') {
  run('bench (python)', process.env.PYTHON ?? 'python3', [join('bench', 'test_gpu_report.py')], (out) => {
    const ran = out.match(/^Ran (\d+) tests?/m);
    if (!ran) return null;
    const status = out.match(/^(OK|FAILED)(?: \((.*)\))?\s*$/m);
    if (!status) return null;
    const count = (key) => +(status[2]?.match(new RegExp(`${key}=(\\d+)`))?.[1] ?? 0);
    const failed = count('failures') + count('errors');
    const skipped = count('skipped');
    return { passed: +ran[1] - failed - skipped, failed, skipped };
  });
}

console.log('\nsuite                    passed  failed  skipped  seconds');
for (const p of parts) {
  console.log(`${p.name.padEnd(24)} ${String(p.passed).padStart(6)}  ${String(p.failed).padStart(6)}  ${String(p.skipped).padStart(7)}  ${p.seconds.toFixed(1).padStart(7)}`);
}
console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(totals.failed > 0 ? 1 : 0);
