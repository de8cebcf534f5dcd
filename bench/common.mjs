// bench/common.mjs: what the benchmark scripts share: their command line, running a side
// program (PyTorch's script, the native benchmark) for its JSON result, and writing one
// benchmark's section of BENCHMARKS.md.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCHMARKS_FILE = join(dirname(fileURLToPath(import.meta.url)), '..', 'BENCHMARKS.md');

// The script's command-line arguments, and the value given after flag `name` (else `fallback`).
export const argv = process.argv.slice(2);
export const option = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);

// Runs `command ...args` and returns the JSON object of its last stdout line, or { error }
// naming it as `label` with the end of its stderr.
export function runJson(label, command, args, env = process.env) {
  const r = spawnSync(command, args, { env, encoding: 'utf8', maxBuffer: 1 << 24 });
  const line = (r.stdout ?? '').trim().split('\n').pop();
  if (r.status !== 0 || !line?.startsWith('{')) {
    return { error: `${label} failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}` };
  }
  return JSON.parse(line);
}

// Runs `python3 bench/<script> ...args` with PYTHONPATH from the environment (default
// /root/.cache/byol/py, where tools/setup.sh BYOL_WITH_TORCH=1 installs torch and pillow) and
// OMP_NUM_THREADS `threads`; returns the JSON object of its last stdout line, or { error }.
export function runPythonJson(script, args, threads) {
  const env = { ...process.env, PYTHONPATH: process.env.PYTHONPATH ?? '/root/.cache/byol/py', OMP_NUM_THREADS: String(threads) };
  return runJson(`python3 bench/${script}`, 'python3', [join(dirname(BENCHMARKS_FILE), 'bench', script), ...args], env);
}

// Writes a section between `<!-- TAG: begin -->` and `<!-- TAG: end -->` of BENCHMARKS.md
// (replaced in place, else appended).
export function writeBenchmarkSection(tag, lines, file = BENCHMARKS_FILE) {
  const begin = `<!-- ${tag}: begin -->`;
  const end = `<!-- ${tag}: end -->`;
  const section = [begin, ...lines, end].join('\n');
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n\nEvery number here comes from a script in bench/; each section says the command.\n';
  if (text.includes(begin) && text.includes(end)) {
    text = text.slice(0, text.indexOf(begin)) + section + text.slice(text.indexOf(end) + end.length);
  } else {
    text = `${text.trimEnd()}\n\n${section}\n`;
  }
  writeFileSync(file, text);
  return file;
}
