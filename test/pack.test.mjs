// pack.test.mjs: the published package on a machine without build tools or oneDNN: `npm pack`
// (no build/, build-*/, test fixtures or CUDA plugin inside; size printed and bounded), installed
// with --ignore-scripts (offline when npm's cache allows) into an empty project; a node whose PATH holds nothing but node
// runs BYOL training steps on the CPU and must map byol.node, libdnnl.so.2, libOpenCL.so.1,
// libgomp.so.1 and libjpeg.so.62 from the installed prebuilds/linux-x64; CUDA is loaded only when asked for and its
// failure leaves the CPU working. Also the install script's two paths and the loader's diagnosis.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

import { missingBuildTools } from '../tools/install.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const { diagnoseBuildFailure, diagnoseLoadFailure, native, nativeSearchReport } = require('../dist/native.js');
const platform = `${process.platform}-${process.arch}`;
// The libraries a prebuild carries beside byol.node: oneDNN and its dependencies, and libjpeg
// where the build found it (binding.gyp; the checkout's addon was built the same way).
const BUNDLED = ['libdnnl.so.2', 'libOpenCL.so.1', 'libgomp.so.1', ...(native.jpegVersion === undefined ? [] : ['libjpeg.so.62'])];
// libdnnl alone is ~38 MB (gzip: ~10 MB); a tarball far above that carries something by mistake.
const MAX_TARBALL_BYTES = 30 * 1024 * 1024;

const Pack = suite('pack');
const state = {};

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options });
  const output = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.status ?? result.signal}:\n${output}`);
  return result.stdout;
}

// npm run by `npm test` exports npm_config_* (local prefix, user agent...) that would point a
// nested npm at this checkout: the nested npm keeps only its cache and registry settings.
function npmEnv() {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (/^npm_/i.test(key) && !/^npm_config_(cache|registry|userconfig)$/i.test(key)) delete env[key];
  }
  return env;
}

// The environment of a machine without build tools: PATH holds a folder with node alone.
function bareEnv(extra = {}) {
  return { PATH: state.bin, HOME: state.dir, OMP_WAIT_POLICY: 'passive', OMP_NUM_THREADS: '2', ...extra };
}

// A fresh machine lacks oneDNN and its dependencies: where a private mount namespace is allowed
// (root, or CAP_SYS_ADMIN), the system's copies of `sonames` are covered with /dev/null for the
// child alone. Returns how to wrap a command, the extra environment, and a line saying what it did.
function hideSystemCopies(sonames) {
  const plain = { command: (file, args) => [file, args], env: {} };
  const cache = spawnSync('ldconfig', ['-p'], { encoding: 'utf8', env: { PATH: `${process.env.PATH}:/sbin:/usr/sbin` } });
  // ldconfig -p lines: "\tlibdnnl.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libdnnl.so.2"
  const entries = [...(cache.stdout ?? '').matchAll(/^\s*(\S+) \(.*x86-64.*\) => (\S+)$/gm)];
  const files = [...new Set(entries.filter((match) => sonames.includes(match[1])).map((match) => realpathSync(match[2])))];
  if (!files.length) return { ...plain, note: `no system copy of ${sonames.join(', ')} to hide` };
  if (spawnSync('unshare', ['--mount', 'true']).status !== 0) {
    return { ...plain, note: `system copies left visible (no private mount namespace here): ${files.join(', ')}` };
  }
  // The shell covers the files, then runs the command with the bare PATH.
  const script = 'while [ "$1" != -- ]; do mount --bind /dev/null "$1" || exit 97; shift; done; shift; ' +
    'PATH="$BYOL_BARE_PATH"; unset BYOL_BARE_PATH; export PATH; exec "$@"';
  return {
    command: (file, args) => ['unshare', ['--mount', 'sh', '-c', script, 'sh', ...files, '--', file, ...args]],
    env: { PATH: process.env.PATH, BYOL_BARE_PATH: state.bin },
    note: `system copies hidden from the child: ${files.join(', ')}`,
  };
}

// uvu reports a failed before-hook as "(0 / 4)" and nothing else: print why, then fail.
Pack.before(() => {
  try {
    prepare();
  } catch (error) {
    console.error(`pack: setting up failed: ${error.message}`);
    throw error;
  }
});

function prepare() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return;
  const started = Date.now();
  // prebuildify rebuilds in build-prebuild/ only when a native source is newer than the
  // prebuild; the lock keeps two suites running at once from building into the same folder.
  const prebuild = [process.execPath, join(root, 'tools', 'prebuild.mjs'), '--if-stale'];
  const hasFlock = spawnSync('flock', ['--version']).status === 0;
  const [command, ...args] = hasFlock ? ['flock', join(tmpdir(), 'byol-prebuild.lock'), 'nice', '-n', '10', ...prebuild] : ['nice', '-n', '10', ...prebuild];
  process.stdout.write(run(command, args, { cwd: root }));

  state.dir = realpathSync(mkdtempSync(join(tmpdir(), 'byol-pack-')));
  state.bin = join(state.dir, 'bin');
  mkdirSync(state.bin);
  symlinkSync(process.execPath, join(state.bin, 'node'));
  const [packed] = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', state.dir], { cwd: root, env: npmEnv() }));
  state.packed = packed;
  state.tarball = join(state.dir, packed.filename);
  state.project = join(state.dir, 'project');
  mkdirSync(state.project);
  writeFileSync(join(state.project, 'package.json'), JSON.stringify({ name: 'byol-pack-test', version: '1.0.0', private: true }));
  // Offline when npm's cache holds the dependencies' registry metadata (npm ci caches only their
  // tarballs); on a fresh machine it does not, and the metadata is fetched (still no scripts, so
  // nothing is built or downloaded for byol itself).
  const install = (mode) => run('npm', ['install', '--ignore-scripts', mode, '--no-audit', '--no-fund', state.tarball],
    { cwd: state.project, env: npmEnv() });
  try {
    install('--offline');
  } catch (error) {
    if (!/ENOTCACHED/.test(error.message)) throw error;
    console.log('pack: registry metadata of the dependencies not in npm\'s cache: installing with --prefer-offline');
    install('--prefer-offline');
  }
  state.installed = join(state.project, 'node_modules', 'byol');
  state.prebuilds = join(state.installed, 'prebuilds', platform);
  console.log(`pack: prebuild + pack + offline install took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

Pack.after(() => {
  if (state.dir) rmSync(state.dir, { recursive: true, force: true });
});

Pack('the tarball holds the prebuild and nothing of the build or test folders', () => {
  if (!state.packed) return console.log('pack: skipped (prebuilds are made for linux-x64 only)');
  const { size, unpackedSize, files } = state.packed;
  console.log(`pack: ${state.packed.filename}: ${(size / 1048576).toFixed(1)} MB packed, ` +
    `${(unpackedSize / 1048576).toFixed(1)} MB unpacked, ${files.length} files`);
  assert.ok(size < MAX_TARBALL_BYTES, `tarball ${size} bytes < ${MAX_TARBALL_BYTES}`);
  const paths = files.map((file) => file.path);
  for (const name of ['byol.node', ...BUNDLED]) {
    assert.ok(paths.includes(`prebuilds/${platform}/${name}`), `tarball has prebuilds/${platform}/${name}`);
  }
  for (const name of ['dist/index.js', 'dist/native.js', 'tools/install.mjs', 'binding.gyp', 'native/core/plugin.cc']) {
    assert.ok(paths.includes(name), `tarball has ${name}`);
  }
  const unwanted = paths.filter((path) => /^(build|build-[^/]*|test|packages)\//.test(path) ||
    /libbyol_cuda\.so|\.safetensors$|\.tgz$/.test(path));
  assert.equal(unwanted, [], 'no build output, tests, fixtures or CUDA plugin in the tarball');
});

Pack('installed offline without build tools, it trains on the CPU from the bundled libraries', () => {
  if (!state.packed) return;
  assert.equal(missingBuildTools(bareEnv()), ['make', 'a C++ compiler (g++)', 'python3'], 'no build tools on the child PATH');
  assert.not.ok(existsSync(join(state.installed, 'build')), 'the install has no build/');
  // When the checkout built the CUDA plugin, install it where the separate package goes
  // (hoisted beside byol) so that the probe must find it there.
  const plugin = join(root, 'build-cmake', 'libbyol_cuda.so');
  const cudaPackage = join(state.project, 'node_modules', '@byol', `cuda-${platform}`);
  if (existsSync(plugin)) {
    mkdirSync(cudaPackage, { recursive: true });
    copyFileSync(plugin, join(cudaPackage, 'libbyol_cuda.so'));
  }
  const script = `
    const { readFileSync } = require('node:fs');
    const byol = require('byol');
    const mapped = () => [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\\n')
      .map((line) => line.split(/\\s+/)[5]).filter((path) => path && path.startsWith('/')))];
    (async () => {
      const model = await byol.Byol.create({
        encoder: { arch: 'resnet18', stem: 'cifar', inChannels: 1, width: 0.125 },
        projector: { hidden: 32, out: 16 }, predictor: { hidden: 32 }, device: 'cpu', seed: 0 });
      const n = 2 * 1 * 16 * 16;
      const view1 = byol.Tensor.from(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37)), [2, 1, 16, 16]);
      const view2 = byol.Tensor.from(Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11)), [2, 1, 16, 16]);
      const losses = [];
      for (let step = 0; step < 2; step++) losses.push((await model.step(view1, view2, { lr: 0.1, tau: 0.99 })).loss);
      const beforeCuda = mapped();
      const probe = byol.probeCuda(0);
      const auto = byol.resolveDevice('auto');
      const candidates = require(require.resolve('byol').replace(/index\\.js$/, 'native.js')).native.cudaLibraryCandidates();
      losses.push((await model.step(view1, view2, { lr: 0.1, tau: 0.99 })).loss);
      model.dispose();
      console.log(JSON.stringify({ entry: require.resolve('byol'), beforeCuda, losses, probe, auto, candidates }));
    })().catch((error) => { console.error(error.stack); process.exit(1); });`;
  const hidden = hideSystemCopies(BUNDLED);
  const out = JSON.parse(run(...hidden.command(process.execPath, ['-e', script]), { cwd: state.project, env: bareEnv(hidden.env) })
    .trim().split('\n').pop());
  console.log(`pack: ${hidden.note}`);
  const loaded = (pattern) => out.beforeCuda.filter((path) => pattern.test(path));
  console.log(`pack: byol.node from ${loaded(/byol\.node$/).join(', ')}`);
  console.log(`pack: libdnnl from ${loaded(/libdnnl/).join(', ')}`);
  console.log(`pack: losses ${out.losses.map((loss) => loss.toFixed(6)).join(', ')}`);
  assert.ok(out.entry.startsWith(state.installed), `byol resolved to ${out.entry}`);
  assert.equal(loaded(/byol\.node$/), [join(state.prebuilds, 'byol.node')]);
  for (const library of BUNDLED) {
    const base = library.replace(/\..*/, '');
    assert.equal(loaded(new RegExp(`/${base}\\.so`)), [join(state.prebuilds, library)], `${library} comes from the prebuild folder`);
  }
  assert.equal(loaded(/libbyol_cuda|libcudart|libcudnn|libcublas/), [], 'no CUDA library before CUDA is asked for');
  assert.ok(out.losses.every(Number.isFinite), `finite losses ${out.losses}`);
  assert.ok(out.losses[1] !== out.losses[0], 'the first step updated the parameters');

  const hoisted = join(cudaPackage, 'libbyol_cuda.so');
  const nested = join(state.installed, 'node_modules', '@byol', `cuda-${platform}`, 'libbyol_cuda.so');
  for (const candidate of [hoisted, nested]) {
    assert.ok(out.candidates.includes(candidate), `CUDA candidates include ${candidate}:\n${out.candidates.join('\n')}`);
  }
  if (out.probe.available) {
    assert.is(out.auto, 'cuda:0');
  } else {
    assert.is(out.auto, 'cpu', "'auto' falls back to the CPU");
    assert.ok(out.probe.reason.includes(hoisted), out.probe.reason);
    if (existsSync(plugin)) assert.not.match(out.probe.reason, new RegExp(`${hoisted}: not found`));
  }
});

Pack('the install script uses the prebuild and says which', () => {
  if (!state.packed) return;
  const out = run(process.execPath, [join(state.installed, 'tools', 'install.mjs')], { cwd: state.installed, env: bareEnv() });
  const listed = [...BUNDLED].sort().map((name) => name.replace(/\./g, '\\.')).join(', ');
  assert.match(out, new RegExp(`^byol: using the prebuild prebuilds/${platform}/byol\\.node \\(Node-API; bundled: ${listed}\\)`, 'm'));
  assert.not.ok(existsSync(join(state.installed, 'build')), 'no build from source');
});

Pack('without a fitting prebuild it builds from source, says why, and lists the fixes', () => {
  if (!state.packed) return;
  // node-gyp-build takes the architecture from npm_config_arch: no prebuild fits arm64.
  const result = spawnSync(process.execPath, [join(state.installed, 'tools', 'install.mjs')], {
    cwd: state.installed, env: bareEnv({ npm_config_arch: 'arm64' }), encoding: 'utf8',
  });
  const output = result.stdout + result.stderr;
  assert.is(result.status, 1, output);
  assert.match(output, /byol: building byol\.node from source, because No native build was found for platform=linux arch=arm64/);
  assert.match(output, /byol: runtime: linux-x64, Node\.js .*Node-API \d+ \(byol\.node needs 8\), glibc/);
  assert.match(output, /byol: building byol\.node from source failed \(node-gyp exit \d+\)\.\nfixes:\n {2}- install the build tools missing on PATH \(make, a C\+\+ compiler \(g\+\+\), python3\)/);
});

Pack.run();

const Diagnosis = suite('diagnosis');

Diagnosis('a library missing beside a prebuild means a broken install, not a missing package', () => {
  const file = join('/x/node_modules/byol/prebuilds', platform, 'byol.node');
  const fixes = diagnoseLoadFailure('libdnnl.so.2: cannot open shared object file: No such file or directory', file);
  assert.match(fixes[0], new RegExp(`prebuild in /x/node_modules/byol/prebuilds/${platform} should have libdnnl\\.so\\.2 beside byol\\.node`));
  assert.match(diagnoseLoadFailure('libdnnl.so.2: cannot open shared object file', '/x/build/Release/byol.node')[0], /apt-get install libdnnl2/);
  assert.match(diagnoseLoadFailure('libOpenCL.so.1: cannot open shared object file')[0], /ocl-icd-libopencl1/);
  assert.match(diagnoseLoadFailure('byol.node: undefined symbol: napi_create_buffer_copy')[0], /lacks Node-API 8/);
});

Diagnosis('a failed build from source gets fixes for what its output shows', () => {
  const fixes = (output, missing) => diagnoseBuildFailure(output, missing).join('\n');
  assert.match(fixes('fatal error: oneapi/dnnl/dnnl.hpp: No such file or directory', []), /apt-get install libdnnl-dev/);
  assert.match(fixes('gyp ERR! stack FetchError: request failed, reason: getaddrinfo ENOTFOUND nodejs.org', []), /npm_config_nodedir/);
  assert.match(fixes('spawn node-gyp ENOENT', ['node-gyp']), /npm install -g node-gyp/);
  assert.not.match(fixes('spawn node-gyp ENOENT', ['node-gyp']), /build tools missing/);
  assert.match(fixes('something else', []), /build-essential python3 libdnnl-dev/);
});

Diagnosis('the search report says what each place holds and which platforms have prebuilds', () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-report-'));
  try {
    mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
    mkdirSync(join(dir, 'prebuilds', 'other-arch'), { recursive: true });
    const report = nativeSearchReport(dir).join('\n');
    assert.match(report, new RegExp(`${join(dir, 'build', 'Release')}: no \\.node file`));
    assert.match(report, new RegExp(`${join(dir, 'build', 'Debug')}: no such folder`));
    assert.match(report, new RegExp(`no prebuild for ${platform}; the package has prebuilds for other-arch only`));
    mkdirSync(join(dir, 'prebuilds', platform));
    for (const name of ['byol.node', 'libdnnl.so.2']) writeFileSync(join(dir, 'prebuilds', platform, name), '');
    assert.match(nativeSearchReport(dir).join('\n'), new RegExp(`prebuilds/${platform}: byol\\.node \\(bundled: libdnnl\\.so\\.2\\)`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

Diagnosis.run();
