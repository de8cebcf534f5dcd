#!/usr/bin/env node
// prebuild.mjs: `npm run prebuild` makes prebuilds/<platform>-<arch>/byol.node with prebuildify
// (Node-API, stripped) and copies beside it, as real files, every shared library it needs that
// is neither glibc nor the C++ runtime (libdnnl.so.2, libOpenCL.so.1, libgomp.so.1), then checks
// with ldd that each resolves there. It builds in build-prebuild/, so build/ is left alone.
// `--if-stale` skips the build when that byol.node is newer than binding.gyp and every file under
// native/{core,cpu,addon,include}; `--clean` drops the objects kept from the last prebuild.
// `--cuda` (`npm run prebuild:cuda`) instead copies build-cmake/libbyol_cuda.so into the separate
// package folder packages/cuda-<platform>-<arch>/ (published as @byol/cuda-<platform>-<arch>).
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, relative } from 'node:path';

import { nodeGypCommand, nodeGypEnv, packageRoot } from './install.mjs';

const require = createRequire(import.meta.url);
const platform = `${process.platform}-${process.arch}`;
const stage = join(packageRoot, 'build-prebuild');

// Present on every glibc system that can run Node.js at all; bundling them would shadow the
// system's own (newer) copies, which other libraries in the process share.
const SYSTEM_LIBRARY = /^(linux-vdso|linux-gate|ld-linux[\w-]*|libc|libm|libdl|libpthread|librt|libutil|libresolv|libstdc\+\+|libgcc_s)\.so/;

class PrebuildError extends Error {}

function fail(message) {
  throw new PrebuildError(message);
}

// ldd's view of `file`: soname -> resolved path (null when not found).
function sharedLibraries(file, env = process.env) {
  const result = spawnSync('ldd', [file], { encoding: 'utf8', env });
  if (result.error || result.status !== 0) {
    fail(`ldd ${file} failed: ${result.error?.message ?? result.stderr.trim()} (ldd comes with glibc: libc-bin on Debian)`);
  }
  const libraries = new Map();
  for (const line of result.stdout.split('\n')) {
    const match = /^\s*(\S+) => (?:(\/\S+)|not found)/.exec(line);
    if (match) libraries.set(match[1], match[2] ?? null);
  }
  return libraries;
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

// A folder where node-gyp builds without touching the checkout's build/: binding.gyp copied,
// package.json too (prebuildify names the addon after its "name"), native/ linked.
function prepareStage() {
  mkdirSync(stage, { recursive: true });
  for (const file of ['binding.gyp', 'package.json']) copyFileSync(join(packageRoot, file), join(stage, file));
  const native = join(stage, 'native');
  if (!existsSync(native) || !lstatSync(native).isSymbolicLink()) {
    rmSync(native, { recursive: true, force: true });
    symlinkSync(join('..', 'native'), native);
  }
  // prebuildify spawns node-gyp as one executable (npm's copy is a script run by this node) and
  // asks for `rebuild`; configure + build instead keeps the objects of the previous prebuild,
  // and make still recompiles every file whose sources or compiler flags changed.
  const nodeGyp = nodeGypCommand().map((part) => `'${part.replace(/'/g, "'\\''")}'`).join(' ');
  const wrapper = join(stage, 'node-gyp.sh');
  writeFileSync(wrapper, '#!/bin/sh\n' +
    `if [ "$1" = rebuild ]; then shift; ${nodeGyp} configure "$@" && exec ${nodeGyp} build "$@"; fi\n` +
    `exec ${nodeGyp} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return wrapper;
}

function runPrebuildify(nodeGyp, out) {
  const prebuildify = require('prebuildify');
  Object.assign(process.env, nodeGypEnv());
  // node-gyp's make runs one job unless told; a first or --clean prebuild compiles every file.
  process.env.JOBS ??= String(availableParallelism());
  return new Promise((done, reject) => {
    prebuildify({
      cwd: stage,
      out,
      napi: true,
      strip: true,
      nodeGyp,
      // The running Node.js: its headers are installed (offline builds); the Node-API build
      // loads in every later Node.js.
      targets: [{ runtime: 'node', target: process.versions.node }],
    }, (error) => (error ? reject(new PrebuildError(`prebuildify failed: ${error.message}`)) : done()));
  });
}

// Copies every non-system library byol.node needs beside it (real files named by soname).
function bundleLibraries(folder, addon) {
  const bundled = [];
  for (const [name, path] of sharedLibraries(addon)) {
    if (SYSTEM_LIBRARY.test(name)) continue;
    if (!path) fail(`${addon} needs ${name}, which ldd cannot find on this machine: install it before prebuilding`);
    copyFileSync(realpathSync(path), join(folder, name));
    bundled.push({ name, from: path });
  }
  return bundled;
}

// Every bundled library must resolve inside the folder, also for the libraries' own
// dependencies (libdnnl -> libOpenCL), which only byol.node's DT_RPATH provides.
function verifyBundle(folder, addon, bundled) {
  const env = { ...process.env };
  delete env.LD_LIBRARY_PATH;
  const resolved = sharedLibraries(addon, env);
  const wrong = bundled.filter(({ name }) => !resolved.get(name) || dirname(realpathSync(resolved.get(name))) !== realpathSync(folder));
  if (wrong.length) {
    fail(`the bundled libraries do not resolve beside byol.node: ${wrong.map(({ name }) => `${name} -> ${resolved.get(name)}`).join(', ')}; ` +
      "byol.node must carry DT_RPATH $ORIGIN (binding.gyp links with -Wl,--disable-new-dtags -Wl,-rpath,'$$ORIGIN')");
  }
}

// The newest modification time among the inputs of byol.node.
function newestSource() {
  let newest = statSync(join(packageRoot, 'binding.gyp')).mtimeMs;
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else newest = Math.max(newest, statSync(path).mtimeMs);
    }
  };
  for (const folder of ['core', 'cpu', 'addon', 'include']) walk(join(packageRoot, 'native', folder));
  return newest;
}

function upToDate(folder) {
  const addon = join(folder, 'byol.node');
  return existsSync(addon) && existsSync(join(folder, 'libdnnl.so.2')) && statSync(addon).mtimeMs > newestSource();
}

function compareVersions(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const difference = (x[i] ?? 0) - (y[i] ?? 0);
    if (difference) return difference;
  }
  return 0;
}

// The newest glibc and libstdc++ symbol versions the files need: the oldest system they load
// on. Null without objdump (binutils), which only loses this line of the summary.
function runtimeRequirements(files) {
  const newest = new Map();
  for (const file of files) {
    const result = spawnSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
    if (result.status !== 0) return null;
    for (const [, name, version] of result.stdout.matchAll(/\b(GLIBC|GLIBCXX|CXXABI)_([\d.]+)\b/g)) {
      if (!newest.has(name) || compareVersions(version, newest.get(name)) > 0) newest.set(name, version);
    }
  }
  return [...newest].map(([name, version]) => `${name}_${version}`).join(', ');
}

async function prebuildCpu({ ifStale, clean }) {
  if (process.platform !== 'linux') fail(`prebuilds are made on Linux only (this is ${platform})`);
  const target = join(packageRoot, 'prebuilds', platform);
  if (ifStale && upToDate(target)) {
    console.log(`prebuild: ${relative(packageRoot, target)}/byol.node is newer than every native source: kept`);
    return;
  }
  const nodeGyp = prepareStage();
  if (clean) rmSync(join(stage, 'build'), { recursive: true, force: true });
  const out = join(stage, 'out');
  rmSync(out, { recursive: true, force: true });
  console.log(`prebuild: building byol.node for ${platform} (Node-API) in ${relative(packageRoot, stage)}/`);
  await runPrebuildify(nodeGyp, out);
  const folder = join(out, 'prebuilds', platform);
  const addon = join(folder, 'byol.node');
  if (!existsSync(addon)) fail(`prebuildify finished but ${addon} does not exist (found: ${readdirSync(folder).join(', ')})`);
  // node-gyp's make hard-links the addon to its object folder, which the next prebuild strips
  // in place: the prebuild gets a file of its own.
  copyFileSync(addon, `${addon}.copy`);
  renameSync(`${addon}.copy`, addon);
  const bundled = bundleLibraries(folder, addon);
  verifyBundle(folder, addon, bundled);

  mkdirSync(dirname(target), { recursive: true });
  rmSync(target, { recursive: true, force: true });
  renameSync(folder, target);
  console.log(`prebuild: ${relative(packageRoot, target)}/`);
  for (const name of readdirSync(target).sort()) {
    const from = bundled.find((library) => library.name === name)?.from;
    console.log(`  ${name.padEnd(16)} ${megabytes(statSync(join(target, name)).size).padStart(9)}${from ? `  (from ${from})` : ''}`);
  }
  const requirements = runtimeRequirements(readdirSync(target).map((name) => join(target, name)));
  if (requirements) console.log(`  needs at least: ${requirements} (older systems build from source on install)`);
}

function prebuildCuda() {
  const pluginName = 'libbyol_cuda.so';
  const plugin = join(packageRoot, 'build-cmake', pluginName);
  if (!existsSync(plugin)) {
    fail(`${relative(packageRoot, plugin)} was not built: run \`npm run build:cmake\` on a machine with nvcc (CUDA 13), ` +
      'cuDNN 9 and cuBLAS 13 (tools/setup.sh fetches the last two)');
  }
  const folder = join(packageRoot, 'packages', `cuda-${platform}`);
  const manifest = join(folder, 'package.json');
  if (!existsSync(manifest)) fail(`${relative(packageRoot, manifest)} is missing: there is no CUDA package for ${platform}`);
  const version = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')).version;
  const packageVersion = JSON.parse(readFileSync(manifest, 'utf8')).version;
  if (packageVersion !== version) {
    fail(`${relative(packageRoot, manifest)} has version ${packageVersion} but byol is ${version}: make them equal ` +
      '(the plugin must come from the same byol as the addon that loads it)');
  }
  copyFileSync(realpathSync(plugin), join(folder, pluginName));
  console.log(`prebuild: ${relative(packageRoot, join(folder, pluginName))} (${megabytes(statSync(plugin).size)})`);
  // cuDNN, cuBLAS and the CUDA runtime stay outside the package (hundreds of MB); say where
  // this build finds them, which is where the plugin's RUNPATH points.
  for (const [name, path] of sharedLibraries(join(folder, pluginName))) {
    if (/^lib(cudnn|cublas|cudart)/.test(name)) console.log(`  needs ${name}: ${path ?? 'not found on this machine'}`);
  }
}

try {
  if (process.argv.includes('--cuda')) prebuildCuda();
  else await prebuildCpu({ ifStale: process.argv.includes('--if-stale'), clean: process.argv.includes('--clean') });
} catch (error) {
  if (!(error instanceof PrebuildError)) throw error;
  console.error(`prebuild: ${error.message}`);
  process.exitCode = 1;
}
