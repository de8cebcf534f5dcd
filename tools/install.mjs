#!/usr/bin/env node
// install.mjs: the package's "install" script. Uses the byol.node that node-gyp-build finds
// (a prebuild, or an existing build) when it loads on this machine, and says which; otherwise
// says why, builds from source with `node-gyp rebuild`, and ends a failed build with the fixes
// for what it detected and exit code 1. Exports the node-gyp helpers tools/prebuild.mjs shares.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, delimiter, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

// npm hands its bundled node-gyp to scripts (npm_config_node_gyp); outside npm, a node-gyp
// installed beside byol, then npm's copy beside this node, then one on PATH.
export function nodeGypCommand(env = process.env) {
  const scripts = [env.npm_config_node_gyp];
  try {
    scripts.push(require.resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed beside byol: the next candidates
  }
  scripts.push(join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const script = scripts.find((candidate) => candidate && existsSync(candidate));
  return script ? [process.execPath, script] : ['node-gyp'];
}

// node-gyp downloads Node's headers unless told where they are. The headers installed with
// this very node (<prefix>/include/node) match it, so using them makes offline builds work.
export function nodeGypEnv(env = process.env) {
  if (env.npm_config_nodedir) return { ...env };
  const prefix = resolve(dirname(process.execPath), '..');
  try {
    const header = readFileSync(join(prefix, 'include', 'node', 'node_version.h'), 'utf8');
    const part = (name) => header.match(new RegExp(`#define\\s+NODE_${name}_VERSION\\s+(\\d+)`))?.[1];
    const version = ['MAJOR', 'MINOR', 'PATCH'].map(part).join('.');
    if (version === process.versions.node && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) {
      return { ...env, npm_config_nodedir: prefix };
    }
  } catch {
    // no headers installed with this node: node-gyp downloads them
  }
  return { ...env };
}

// The tools `node-gyp rebuild` needs that are not on PATH.
export function missingBuildTools(env = process.env) {
  const dirs = (env.PATH ?? '').split(delimiter).filter(Boolean);
  const found = (command) => {
    const name = command.trim().split(/\s+/).pop() ?? '';
    return isAbsolute(name) ? existsSync(name) : dirs.some((dir) => existsSync(join(dir, name)));
  };
  const missing = [];
  if (!found('make')) missing.push('make');
  if (!(env.CXX ? found(env.CXX) : ['c++', 'g++', 'clang++'].some(found))) missing.push(env.CXX ? `${env.CXX} (CXX)` : 'a C++ compiler (g++)');
  if (!(env.npm_config_python || env.PYTHON ? found(env.npm_config_python || env.PYTHON) : ['python3', 'python'].some(found))) {
    missing.push('python3');
  }
  return missing;
}

// Why `file` does not load in a fresh node process (the error's own line), or null when it loads.
export function loadError(file) {
  const result = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)})`], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (result.status === 0) return null;
  if (result.error) return result.error.message;
  const lines = (result.stderr ?? '').split('\n').map((line) => line.trim()).filter(Boolean);
  return lines.find((line) => /^\w*Error: /.test(line))?.replace(/^\w*Error: /, '') ??
    lines.pop() ?? `node exited with ${result.status ?? result.signal}`;
}

// dist/native.js (the loader's diagnosis), absent in a git checkout before `prepare` ran.
function nativeHelpers() {
  try {
    return require(join(packageRoot, 'dist', 'native.js'));
  } catch {
    return null;
  }
}

function describe(file) {
  const where = relative(packageRoot, file);
  if (basename(dirname(dirname(file))) !== 'prebuilds') return `the existing build ${where}`;
  const bundled = readdirSync(dirname(file)).filter((name) => /\.so(\.\d+)*$/.test(name));
  return `the prebuild ${where} (Node-API${bundled.length ? `; bundled: ${bundled.join(', ')}` : ''})`;
}

function say(line) {
  console.log(`byol: ${line}`);
}

// Runs `node-gyp rebuild`, showing its output and keeping the tail for the diagnosis.
function rebuild() {
  const [command, ...args] = nodeGypCommand();
  const env = nodeGypEnv();
  if (env.npm_config_nodedir && !process.env.npm_config_nodedir) say(`using the Node.js headers in ${env.npm_config_nodedir}`);
  return new Promise((done) => {
    let tail = '';
    const keep = (chunk, stream) => {
      stream.write(chunk);
      tail = (tail + chunk.toString()).slice(-65536);
    };
    const child = spawn(command, [...args, 'rebuild'], { cwd: packageRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk) => keep(chunk, process.stdout));
    child.stderr.on('data', (chunk) => keep(chunk, process.stderr));
    child.on('error', (error) => done({ code: 1, output: `${tail}\n${error.message}`, missingNodeGyp: error.code === 'ENOENT' }));
    child.on('close', (code, signal) => done({ code: code ?? 1, output: tail + (signal ? `\nnode-gyp killed by ${signal}` : '') }));
  });
}

async function main() {
  const helpers = nativeHelpers();
  let reason;
  if (process.env.npm_config_build_from_source === 'true') {
    reason = 'a build from source was requested (--build-from-source)';
  } else {
    let file;
    try {
      file = require('node-gyp-build').resolve(packageRoot);
    } catch (error) {
      reason = String(error.message).split('\n')[0];
    }
    if (file) {
      const failure = loadError(file);
      if (!failure) {
        say(`using ${describe(file)}`);
        return 0;
      }
      reason = `${relative(packageRoot, file)} does not load here: ${failure}`;
    }
  }
  say(`building byol.node from source, because ${reason}`);
  if (helpers) {
    say(`runtime: ${helpers.runtimeDescription()}`);
    for (const line of helpers.nativeSearchReport(packageRoot)) say(`  ${line}`);
  }
  const built = await rebuild();
  const missing = missingBuildTools();
  if (built.missingNodeGyp) missing.unshift('node-gyp');
  if (built.code === 0) {
    const file = join(packageRoot, 'build', 'Release', 'byol.node');
    const failure = existsSync(file) ? loadError(file) : `node-gyp finished but ${file} does not exist`;
    if (!failure) {
      say(`built ${relative(packageRoot, file)}`);
      return 0;
    }
    console.error(`byol: the build from source does not load: ${failure}\nfixes:`);
    const fixes = helpers ? helpers.diagnoseLoadFailure(failure, file) : ['report an issue with this whole output'];
    for (const fix of fixes) console.error(`  - ${fix}`);
    return 1;
  }
  console.error(`byol: building byol.node from source failed (node-gyp exit ${built.code}).\nfixes:`);
  const fixes = helpers
    ? helpers.diagnoseBuildFailure(built.output, missing)
    : [`install a C++17 compiler, make, Python 3 and oneDNN (Debian/Ubuntu: sudo apt-get install build-essential python3 libdnnl-dev)` +
      `${missing.length ? `; missing on PATH: ${missing.join(', ')}` : ''}, then run npm rebuild byol`];
  for (const fix of fixes) console.error(`  - ${fix}`);
  return 1;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main();
}
