// package.test.mjs: the package as users load it: require('byol') and import from 'byol'
// (resolved by name through package.json "exports", from a script inside the package
// folder), both giving the same objects; and the addon loader's failure messages.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

// Children get the parent's environment minus color settings: test runners set FORCE_COLOR,
// which colors console.log output and makes Node print warnings about NO_COLOR.
function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.FORCE_COLOR;
  delete env.NO_COLOR;
  return env;
}
const { NativeLoadError, diagnoseLoadFailure, loadBinding } = (() => {
  const native = require('../dist/native.js');
  const errors = require('../dist/errors.js');
  return { ...native, NativeLoadError: errors.NativeLoadError };
})();

// Runs a script in a child process with cwd = the package folder, so that the bare name
// 'byol' resolves to this package (self-reference through "exports").
function runInPackage(args) {
  const result = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', env: childEnv() });
  assert.is(result.status, 0, `node ${args.join(' ')}\n${result.stderr}`);
  return JSON.parse(result.stdout.trim());
}

const roundTrip = `
  const t = byol.Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [1, 2, 1, 3]);
  const values = Array.from(await t.toArray());
  t.dispose();
`;

test("require('byol') works and round-trips a tensor", () => {
  const out = runInPackage(['-e', `(async () => {
    const byol = require('byol');
    const byPath = require(${JSON.stringify(root)});
    ${roundTrip}
    console.log(JSON.stringify({ same: byol === byPath, values, keys: Object.keys(byol).sort() }));
  })()`]);
  assert.ok(out.same, "require('byol') and require(<repo folder>) are one module");
  assert.equal(out.values, [1, 2, 3, 4, 5, 6]);
  for (const name of ['Tensor', 'devices', 'probeCuda', 'resolveDevice', 'setNumThreads', 'getNumThreads',
    'ByolOptionError', 'DisposedError', 'DeviceError', 'version']) {
    assert.ok(out.keys.includes(name), `require('byol').${name} exists`);
  }
});

test("import from 'byol' works, with the same named exports as require", () => {
  const out = runInPackage(['--input-type=module', '-e', `
    import * as byol from 'byol';
    import { Tensor } from 'byol';
    import { createRequire } from 'node:module';
    const cjs = createRequire(import.meta.url)('byol');
    const viaFile = await import(${JSON.stringify(new URL('../dist/index.mjs', import.meta.url).href)});
    ${roundTrip}
    const names = Object.keys(cjs).filter((k) => k !== '__esModule');
    console.log(JSON.stringify({
      sameClass: Tensor === cjs.Tensor && viaFile.Tensor === cjs.Tensor,
      missing: names.filter((k) => byol[k] !== cjs[k]),
      defaultIsCjs: byol.default === cjs,
      values,
    }));`]);
  assert.ok(out.sameClass, 'ESM and CJS give the same Tensor class');
  assert.equal(out.missing, [], 'every CommonJS export is an ESM named export');
  assert.ok(out.defaultIsCjs);
  assert.equal(out.values, [1, 2, 3, 4, 5, 6]);
});

test("requiring 'byol' does not load the native addon until it is used", () => {
  const out = runInPackage(['-e', `
    const byol = require('byol');
    const loaded = () => Object.keys(require.cache).some((p) => p.endsWith('.node'));
    const before = loaded();
    byol.getNumThreads();
    console.log(JSON.stringify({ before, after: loaded(), version: byol.version }));`]);
  assert.is(out.before, false);
  assert.is(out.after, true);
  assert.is(out.version, require('../package.json').version);
});

// ---- loader failures ----

function loadFailure(fakeRoot) {
  let caught;
  try {
    loadBinding(fakeRoot);
  } catch (error) {
    caught = error;
  }
  assert.instance(caught, NativeLoadError);
  return caught;
}

test('no build at all: says what was tried and how to build', () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-noload-'));
  try {
    const error = loadFailure(dir);
    const m = error.message;
    assert.match(m, /^byol: could not load the native addon byol\.node\./);
    assert.ok(m.includes(`package root: ${dir}`), m);
    assert.ok(m.includes(`${process.platform}-${process.arch}`), m);
    assert.ok(m.includes(`Node-API ${process.versions.napi}`), m);
    const glibc = process.report.getReport().header.glibcVersionRuntime;
    if (glibc) assert.ok(m.includes(`glibc ${glibc}`), m);
    assert.ok(m.includes(join(dir, 'build/Release')), m);
    assert.match(m, /cause: No native build was found/);
    assert.match(m, /npm rebuild byol/);
    assert.match(m, /libdnnl-dev/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt byol.node: names the file and says it was built for another platform', () => {
  const dir = mkdtempSync(join(tmpdir(), 'byol-badelf-'));
  try {
    mkdirSync(join(dir, 'build', 'Release'), { recursive: true });
    writeFileSync(join(dir, 'build', 'Release', 'byol.node'), 'this is not an ELF file');
    const m = loadFailure(dir).message;
    assert.ok(m.includes(`file: ${join(dir, 'build', 'Release', 'byol.node')}`), m);
    assert.match(m, /invalid ELF header|file too short/);
    assert.match(m, /npm rebuild byol/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the diagnosis lists fixes for each cause it recognizes', () => {
  const fixes = (message) => diagnoseLoadFailure(message).join('\n');
  assert.match(fixes('libdnnl.so.2: cannot open shared object file: No such file or directory'),
    /sudo apt-get install libdnnl2[\s\S]*prebuild/);
  assert.match(fixes('libgomp.so.1: cannot open shared object file: No such file or directory'),
    /sudo apt-get install libgomp1/);
  assert.match(fixes('libfoo.so.3: cannot open shared object file: No such file or directory'),
    /apt-file search libfoo\.so\.3/);
  assert.match(fixes('No native build was found for platform=linux arch=x64'), /npm rebuild byol[\s\S]*prebuild/);
  assert.match(fixes("/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found"), /newer C\/C\+\+ runtime/);
  assert.match(fixes('byol.node: undefined symbol: _ZN4byol16make_cpu_backendEi'), /stale build/);
  assert.match(fixes('something nobody expected'), /npm rebuild byol[\s\S]*report an issue/);
});

test.run();
