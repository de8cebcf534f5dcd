// info.test.mjs: `byol info` and `byol info --json` as a user runs them (fields, types, the
// table's alignment, the loader's report when CUDA cannot be used, every GPU when it can), and
// the pure functions behind them on fixed inputs: /proc/self/maps, library versions from file
// names, the CUDA backend's description, the GPU count report, GPU enumeration over a played
// probe, /proc/cpuinfo, the NVIDIA driver version, and the whole table for a GPU machine.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const require = createRequire(import.meta.url);
const {
  enumerateGpus, findLibrary, formatInfo, formatTable, parseCpuFeatures, parseCudaDescription, parseGpuCount, parseMappedFiles,
  parseNvidiaDriverVersion, versionFromFileName,
} = require('../dist/cli/info.js');
const { native } = require('../dist/native.js');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'dist', 'cli', 'main.js');

function byol(args, env = {}) {
  const childEnv = { ...process.env, OMP_NUM_THREADS: '1', ...env };
  delete childEnv.FORCE_COLOR;
  delete childEnv.NO_COLOR;
  if (!('BYOL_CPU_CONV' in env)) delete childEnv.BYOL_CPU_CONV; // the tests read the default
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: childEnv, timeout: 120_000 });
  return { code: result.status, out: result.stdout, err: result.stderr };
}

// ---- parsers on fixed inputs ------------------------------------------------------------------

// Shaped like a real process after the CUDA plugin loaded (pip wheels for cuDNN and cuBLAS, the
// toolkit's runtime, the driver's libcuda), with the line kinds maps has: anonymous memory, a
// pseudo-file, a path with a space, a deleted file, the same file mapped several times.
const MAPS = `\
55d0c0a00000-55d0c0a3c000 r--p 00000000 fe:00 1051   /usr/bin/node
55d0c0a3c000-55d0c2000000 r-xp 0003c000 fe:00 1051   /usr/bin/node
55d0c3000000-55d0c3400000 rw-p 00000000 00:00 0      [heap]
7f1a00000000-7f1a00021000 rw-p 00000000 00:00 0
7f1a10000000-7f1a10200000 r-xp 00000000 fe:00 2001   /opt/app/node_modules/byol/build/Release/byol.node
7f1a10200000-7f1a10210000 r--p 00200000 fe:00 2001   /opt/app/node_modules/byol/build/Release/byol.node
7f1a20000000-7f1a22000000 r-xp 00000000 fe:00 3001   /usr/lib/x86_64-linux-gnu/libdnnl.so.2.6
7f1a23000000-7f1a23040000 r-xp 00000000 fe:00 3002   /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0
7f1a30000000-7f1a30100000 r-xp 00000000 fe:00 4001   /opt/app/node_modules/@byol/cuda-linux-x64/libbyol_cuda.so
7f1a31000000-7f1a31080000 r-xp 00000000 fe:00 4002   /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcudart.so.13.0.96
7f1a32000000-7f1a32020000 r-xp 00000000 fe:00 4003   /home/me/my env/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn.so.9
7f1a33000000-7f1a38000000 r-xp 00000000 fe:00 4004   /home/me/my env/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn_graph.so.9
7f1a39000000-7f1a3a000000 r-xp 00000000 fe:00 4005   /home/me/my env/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13
7f1a3b000000-7f1a3b100000 r-xp 00000000 fe:00 4006   /home/me/my env/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13
7f1a3c000000-7f1a3d000000 r-xp 00000000 fe:00 4007   /usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06
7f1a3e000000-7f1a3e001000 rw-s 00000000 00:05 4008   /tmp/stale.so (deleted)
7ffd5c000000-7ffd5c002000 r-xp 00000000 00:00 0      [vdso]
`;

test('parseMappedFiles: each mapped file once, in order; no anonymous memory or pseudo-files', () => {
  const files = parseMappedFiles(MAPS);
  assert.equal(files, [
    '/usr/bin/node',
    '/opt/app/node_modules/byol/build/Release/byol.node',
    '/usr/lib/x86_64-linux-gnu/libdnnl.so.2.6',
    '/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0',
    '/opt/app/node_modules/@byol/cuda-linux-x64/libbyol_cuda.so',
    '/usr/local/cuda-13.0/targets/x86_64-linux/lib/libcudart.so.13.0.96',
    '/home/me/my env/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn.so.9',
    '/home/me/my env/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn_graph.so.9',
    '/home/me/my env/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13',
    '/home/me/my env/lib/python3.12/site-packages/nvidia/cu13/lib/libcublas.so.13',
    '/usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06',
    '/tmp/stale.so',
  ]);
  assert.equal(parseMappedFiles(''), []);
});

test('findLibrary: the exact stem, not a longer library sharing its prefix', () => {
  const files = parseMappedFiles(MAPS);
  const lib = (stem) => findLibrary(files, stem)?.split('/').pop() ?? null;
  assert.is(lib('libcudnn'), 'libcudnn.so.9'); // not libcudnn_graph.so.9
  assert.is(lib('libcublas'), 'libcublas.so.13'); // not libcublasLt.so.13, which comes first
  assert.is(lib('libcublasLt'), 'libcublasLt.so.13');
  assert.is(lib('libcuda'), 'libcuda.so.580.65.06'); // not libcudart
  assert.is(lib('libcudart'), 'libcudart.so.13.0.96');
  assert.is(lib('libbyol_cuda'), 'libbyol_cuda.so');
  assert.is(lib('libdnnl'), 'libdnnl.so.2.6');
  assert.is(lib('libiomp5'), null);
});

test('versionFromFileName: the digits after .so, or null', () => {
  assert.is(versionFromFileName('/usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06'), '580.65.06');
  assert.is(versionFromFileName('/x/libcudnn.so.9'), '9');
  assert.is(versionFromFileName('/x/libcudart.so.13.0.96'), '13.0.96');
  assert.is(versionFromFileName('/x/libbyol_cuda.so'), null);
  assert.is(versionFromFileName('/x/libfoo.so.1.rc2'), null);
});

// The exact shape of CudaBackend::describe() (native/cuda/cuda_backend.cc).
const H100 = 'cuda:0: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.2 GiB), driver CUDA 13.0, runtime 13.0, ' +
  'cuDNN 9.13.0, cuBLAS 13.1.0, TF32 conv off / matmul off';

test('parseCudaDescription: name, compute capability, SMs, memory and the four versions', () => {
  assert.equal(parseCudaDescription(H100), {
    index: 0, name: 'NVIDIA H100 80GB HBM3', computeCapability: '9.0', multiprocessors: 132, memory: '79.2 GiB',
    memoryGiB: 79.2, driverCuda: '13.0', runtime: '13.0', cudnn: '9.13.0', cublas: '13.1.0',
  });
  const b200 = parseCudaDescription('cuda:3: NVIDIA B200 (sm_100, 148 SMs, 178 GiB), driver CUDA 13.1, runtime 13.0, ' +
    'cuDNN 9.14.1, cuBLAS 13.0.2, TF32 conv on / matmul off, cuDNN benchmark');
  assert.equal([b200.index, b200.computeCapability, b200.memory, b200.driverCuda], [3, '10.0', '178 GiB', '13.1']);
  const small = parseCudaDescription('cuda:1: Tiny GPU (sm_86, 2 SMs, 512 MiB), driver CUDA 13.0, runtime 13.0, ' +
    'cuDNN 9.0.0, cuBLAS 13.0.0, TF32 conv off / matmul off');
  assert.is(small.memoryGiB, 0.5);
  assert.is(small.computeCapability, '8.6');
  assert.is(parseCudaDescription('cpu: AMD EPYC, 2 threads, oneDNN 2.6.3 (avx512_core_bf16)'), null);
});

test('parseGpuCount: the count from an out-of-range report, null from any other report', () => {
  const report = (tail) => `device 'cuda:9999' is not available: cuda: device index 9999 out of range: ${tail} ` +
    '(cuda_backend.cc:127)\n(loaded /opt/libbyol_cuda.so for device 9999)';
  assert.is(parseGpuCount(report('1 GPU found (cuda:0 NVIDIA H100 80GB HBM3)')), 1);
  assert.is(parseGpuCount(report('8 GPUs found (cuda:0 A, cuda:1 B)')), 8);
  assert.is(parseGpuCount("device 'cuda:9999' is not available: cuda: no GPU: the NVIDIA driver (CUDA 13.0) found " +
    'no CUDA device; check nvidia-smi (cuda_backend.cc:120)'), null);
  assert.is(parseGpuCount('cuda: could not load the CUDA backend library (libbyol_cuda.so); tried:\n  x: not found'), null);
});

// A machine as the CUDA probe sees it: `gpus` descriptions (null = that GPU fails), answering
// any other index as the plugin does; records the indices asked for.
function fakeProbe(gpus, { countReport } = {}) {
  const asked = [];
  const probe = (index) => {
    asked.push(index);
    if (index < gpus.length) {
      return gpus[index] ? { available: true, description: gpus[index].replace(/^cuda:\d+/, `cuda:${index}`) }
        : { available: false, reason: `device 'cuda:${index}' is not available: cuda: out of memory` };
    }
    const found = `${gpus.length} GPU${gpus.length === 1 ? '' : 's'} found`;
    return { available: false, reason: countReport ?? `device 'cuda:${index}' is not available: cuda: device index ${index} out of range: ${found} (x)` };
  };
  return { probe, asked };
}

test('enumerateGpus: counts with one probe past the end, then probes each GPU once', () => {
  const { probe, asked } = fakeProbe([H100, null, H100.replace('132 SMs', '114 SMs')]);
  const gpus = enumerateGpus(probe);
  assert.equal(asked, [0, 9999, 1, 2]);
  assert.equal(gpus.map((gpu) => [gpu.index, gpu.available, gpu.multiprocessors ?? null]),
    [[0, true, 132], [1, false, null], [2, true, 114]]);
  assert.match(gpus[1].reason, /out of memory/);
  assert.is(gpus[2].memory, '79.2 GiB');
});

test('enumerateGpus: no GPU (no plugin, driver or device) gives none; an unreadable count walks the indices', () => {
  const noDriver = fakeProbe([], { countReport: 'cuda: no NVIDIA driver: libcuda.so.1 was not found' });
  assert.equal(enumerateGpus(noDriver.probe), []);
  assert.equal(enumerateGpus(fakeProbe([]).probe), []);
  const walk = fakeProbe([H100, H100], { countReport: 'cuda: a report this version cannot read' });
  assert.equal(enumerateGpus(walk.probe).map((gpu) => gpu.index), [0, 1]);
  assert.equal(walk.asked, [0, 9999, 1, 2]);
});

test('parseNvidiaDriverVersion: the kernel module version, or null', () => {
  const text = 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:32 UTC 2025\n' +
    'GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n';
  assert.is(parseNvidiaDriverVersion(text), '580.65.06');
  assert.is(parseNvidiaDriverVersion('NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  575.57  Release Build\n'),
    '575.57');
  assert.is(parseNvidiaDriverVersion(''), null);
});

test('parseCpuFeatures: the extensions byol cares about, in order of capability', () => {
  const x86 = 'processor\t: 0\nflags\t\t: fpu sse sse2 avx512_bf16 avx2 fma amx_tile avx avx512f sse4_2 bmi2\n' +
    'processor\t: 1\nflags\t\t: fpu sse\n';
  assert.equal(parseCpuFeatures(x86), ['sse4_2', 'avx', 'fma', 'avx2', 'avx512f', 'avx512_bf16', 'amx_tile']);
  const arm = 'processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve sve2 bf16 i8mm asimddp\nCPU implementer\t: 0x41\n';
  assert.equal(parseCpuFeatures(arm), ['asimd', 'asimddp', 'sve', 'sve2', 'bf16', 'i8mm']);
  assert.equal(parseCpuFeatures('flags\t: fpu sse\n'), []);
  assert.is(parseCpuFeatures('processor : 0\n'), null);
});

test('formatTable: one value column; continuation lines under it; no trailing spaces', () => {
  assert.is(formatTable([['a', '1'], ['  longer', 'x\ny'], ['b', '']]), 'a         1\n  longer  x\n          y\nb\n');
});

test('formatInfo: a GPU machine as a table: versions and files of each library, every GPU', () => {
  const { probe } = fakeProbe([H100, null]);
  const gpus = enumerateGpus(probe);
  const lib = (path, version, versionFrom) => ({ path, version, versionFrom });
  const text = formatInfo({
    version: '0.1.0', platform: 'linux-x64', node: '20.20.2', runtime: 'linux-x64, Node.js 20.20.2',
    addon: { path: '/app/byol.node', loaded: true, compiler: 'GCC 12.2.0' },
    cpu: {
      model: 'Xeon', cores: 16, threads: 16, backend: 'cpu: Xeon', features: ['avx', 'fma', 'avx2'], featuresFrom: '/proc/cpuinfo',
      kernels: { variant: 'x86-64-v3', isa: 'AVX2, FMA, BMI2, F16C', variants: ['x86-64-v4', 'x86-64-v3', 'x86-64'], multiversioned: true },
      onednn: { version: '2.6.3', isa: 'avx2', bf16Native: false, path: '/usr/lib/libdnnl.so.2.6' }, openmp: '/usr/lib/libgomp.so.1.0.0',
      convolutions: { algorithm: 'auto', gemmWhenAuto: true },
    },
    cuda: {
      available: true, description: H100,
      plugin: { path: '/app/libbyol_cuda.so', candidates: ['/app/libbyol_cuda.so', 'libbyol_cuda.so'] },
      driver: { ...lib('/usr/lib/libcuda.so.580.65.06', '580.65.06', 'file name'), cuda: '13.0' },
      runtime: lib('/cuda/libcudart.so.13', '13.0', 'library'),
      cudnn: lib('/w/libcudnn.so.9', '9.13.0', 'library'),
      cublas: lib('/w/libcublas.so.13', '13.1.0', 'library'),
      cublasLt: lib('/w/libcublasLt.so.13', '13', 'file name'),
      gpuCount: gpus.length, gpus,
    },
    librariesFrom: '/proc/self/maps',
  });
  assert.is(text, `\
byol            0.1.0
platform        linux-x64, Node.js 20.20.2
addon           /app/byol.node (built with GCC 12.2.0)
cpu             Xeon, 16 cores, 16 threads
  features      avx fma avx2 (/proc/cpuinfo)
  byol kernels  x86-64-v3: AVX2, FMA, BMI2, F16C (picked at load time from x86-64-v4, x86-64-v3, x86-64)
  oneDNN        2.6.3, ISA avx2, /usr/lib/libdnnl.so.2.6
  bf16 convs    emulated (no bf16 dot products): convPrecision 'auto' stays fp32
  fp32 convs    im2col + SGEMM for wide layers (oneDNN runs below AVX-512 here), oneDNN direct for the rest (BYOL_CPU_CONV=auto)
  OpenMP        /usr/lib/libgomp.so.1.0.0
cuda            available: 1 of 2 GPUs usable
  plugin        /app/libbyol_cuda.so
  driver        580.65.06 (CUDA 13.0)  /usr/lib/libcuda.so.580.65.06
  runtime       13.0                   /cuda/libcudart.so.13
  cuDNN         9.13.0                 /w/libcudnn.so.9
  cuBLAS        13.1.0                 /w/libcublas.so.13
  cuBLASLt      13                     /w/libcublasLt.so.13
  gpu 0         NVIDIA H100 80GB HBM3, compute capability 9.0, 132 SMs, 79.2 GiB
  gpu 1         not usable: cuda: out of memory
  searched      /app/libbyol_cuda.so
                libbyol_cuda.so
`);
});

// ---- the command ------------------------------------------------------------------------------

// One run of each form serves the tests below (each run probes every GPU).
let jsonRun;
function infoJson() {
  jsonRun ??= byol(['info', '--json']);
  assert.is(jsonRun.code, 0, jsonRun.err);
  return JSON.parse(jsonRun.out);
}

test('info --json: structured CPU facts: features, kernel path, oneDNN version and ISA, threads', () => {
  const info = infoJson(); // run with OMP_NUM_THREADS=1
  assert.is(info.cpu.threads, 1); // follows OMP_NUM_THREADS: the real setting, not the core count
  const { onednn, kernels } = info.cpu;
  assert.match(onednn.version, /^\d+\.\d+\.\d+$/);
  assert.ok(info.cpu.backend.includes(`oneDNN ${onednn.version} (${onednn.isa})`), info.cpu.backend);
  assert.is(onednn.bf16Native, ['avx512_core_bf16', 'avx512_core_amx'].includes(onednn.isa));
  // The automatic convolution rule takes GEMMs exactly below AVX-512, and the backend says so.
  assert.equal(info.cpu.convolutions, { algorithm: 'auto', gemmWhenAuto: !onednn.isa.startsWith('avx512') });
  assert.is(info.cpu.backend.includes('im2col+SGEMM for wide convolutions'), info.cpu.convolutions.gemmWhenAuto, info.cpu.backend);
  // The JPEG fast path: present exactly when the addon has the binding; then libjpeg is mapped.
  const { native } = require('../dist/native.js');
  if (native.jpegVersion === undefined) assert.is(info.cpu.jpeg, null);
  else if (process.platform === 'linux') assert.match(info.cpu.jpeg.path, /libjpeg\.so/);
  assert.ok(kernels.variants.includes(kernels.variant));
  assert.is(kernels.multiversioned, kernels.variants.length > 1);
  assert.type(kernels.isa, 'string');
  assert.match(info.addon.compiler, /^(GCC|clang|MSVC) /);
  if (process.platform === 'linux') {
    assert.is(info.librariesFrom, '/proc/self/maps');
    assert.ok(Array.isArray(info.cpu.features) && info.cpu.featuresFrom === '/proc/cpuinfo');
    // The file oneDNN was loaded from: the system's or the one bundled beside a prebuild.
    assert.match(onednn.path, /\/libdnnl\.so[.\d]*$/);
  }
});

// What GCC's resolver should pick for `target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")`
// given the OS's flags (the x86-64 psABI levels; lzcnt is "abm" in /proc/cpuinfo).
function expectedKernelPath(flags) {
  const has = (...names) => names.every((name) => flags.has(name));
  if (has('avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl', 'avx2', 'fma')) return 'x86-64-v4';
  if (has('avx', 'avx2', 'bmi1', 'bmi2', 'f16c', 'fma', 'abm', 'movbe', 'xsave')) return 'x86-64-v3';
  return 'x86-64';
}

test('info --json: the kernel path native dispatch picked agrees with the CPU flags', () => {
  const { kernels } = infoJson().cpu;
  if (!kernels.multiversioned || !existsSync('/proc/cpuinfo')) return; // one path, nothing to pick
  const line = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  assert.ok(line, '/proc/cpuinfo has no flags line on a multiversioned (x86-64) build');
  assert.is(kernels.variant, expectedKernelPath(new Set(line[1].trim().split(/\s+/))));
});

test('info --json: CUDA fields: plugin search list, libraries, GPUs, or why none', () => {
  const { cuda } = infoJson();
  assert.equal(cuda.plugin.candidates, native.cudaLibraryCandidates());
  assert.is(cuda.plugin.candidates.at(-1), 'libbyol_cuda.so'); // the loader's own search comes last
  for (const key of ['driver', 'runtime', 'cudnn', 'cublas', 'cublasLt']) {
    assert.equal(Object.keys(cuda[key]).filter((k) => k !== 'cuda').sort(), ['path', 'version', 'versionFrom'], key);
  }
  assert.is(cuda.gpuCount, cuda.gpus.length);
  if (cuda.available) {
    assert.is(cuda.reason, undefined);
    assert.equal(cuda.gpus.map((gpu) => gpu.index), [...cuda.gpus.keys()]);
    const usable = cuda.gpus.find((gpu) => gpu.available);
    assert.ok(usable.memoryGiB > 0 && usable.multiprocessors > 0, JSON.stringify(usable));
    assert.match(usable.computeCapability, /^\d+\.\d$/);
    assert.match(cuda.plugin.path, /libbyol_cuda\.so$/);
    for (const key of ['runtime', 'cudnn', 'cublas']) {
      assert.is(cuda[key].versionFrom, 'library', key);
      assert.match(cuda[key].path, /\.so[.\d]*$/, key);
    }
    assert.match(cuda.driver.cuda, /^\d+\.\d+$/);
  } else {
    assert.equal(cuda.gpus, []);
    assert.ok(cuda.reason.length > 0);
    assert.is(cuda.description, undefined);
  }
});

test('info: an aligned table; without CUDA it says why with the loader report', () => {
  const run = byol(['info'], { BYOL_CUDA_LIBRARY: join(root, 'no-such-dir', 'libbyol_cuda.so') });
  assert.is(run.code, 0, run.err);
  const lines = run.out.trimEnd().split('\n');
  const keys = lines.filter((line) => /^\S/.test(line) || /^  \S/.test(line)).map((line) => line.trim().split(/\s{2,}/)[0]);
  // OpenMP's file is known only where /proc/self/maps is.
  const expected = ['byol', 'platform', 'addon', 'cpu', 'features', 'byol kernels', 'oneDNN', 'bf16 convs', 'fp32 convs',
    ...(process.platform === 'linux' ? ['OpenMP'] : []), 'JPEG', 'cuda', 'plugin'];
  assert.equal(keys.slice(0, expected.length), expected);
  // Every row's value starts in one column; continuation lines (which may indent further, as
  // the loader's list of paths does) leave the key column blank.
  const column = lines[0].indexOf('0.');
  assert.ok(column > 0);
  for (const line of lines) {
    const isRow = /^(\S|  \S)/.test(line);
    const aligned = isRow
      ? line[column - 1] === ' ' && line[column] !== ' ' && line[column] !== undefined
      : line.length > column && line.slice(0, column).trim() === '';
    assert.ok(aligned, `misaligned: ${JSON.stringify(line)}`);
  }
  assert.not.match(run.out, / $/m);
  if (/^cuda +available:/m.test(run.out)) return; // a later candidate loaded: nothing to explain
  const cuda = run.out.slice(run.out.indexOf('\ncuda ') + 1);
  assert.match(cuda, /^cuda +not available: /);
  assert.match(cuda, /\n  gpus +none \(the cuda line says why\)/);
  const missing = join(root, 'no-such-dir', 'libbyol_cuda.so');
  const plugin = /\n  plugin +(\S+)/.exec(cuda)?.[1];
  if (plugin && plugin.startsWith('/')) {
    // A later candidate (e.g. a CMake build) loaded and failed after loading (no driver on a
    // machine without a GPU): the cuda line gives that cause, and the searched list starts
    // with the override that was not there.
    assert.match(cuda, new RegExp(`\\n  searched +${missing.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\n`));
  } else {
    // Nothing loaded: the cuda line lists every path tried, with why each failed.
    assert.ok(cuda.includes(`${missing}: not found`), cuda);
  }
});

test('info: a GPU machine lists every GPU with its memory and where each CUDA library was found', () => {
  const json = infoJson();
  if (!json.cuda.available) return; // the no-GPU report is checked above
  const run = byol(['info']);
  for (const gpu of json.cuda.gpus) {
    assert.match(run.out, new RegExp(`\\n  gpu ${gpu.index} +${gpu.available ? '.*, \\d+ SMs, [\\d.]+ [GM]iB' : 'not usable: '}`));
  }
  for (const key of ['runtime', 'cuDNN', 'cuBLAS']) assert.match(run.out, new RegExp(`\\n  ${key} +[\\d.]+ +/\\S`));
  assert.match(run.out, /\n  searched +\S/);
});

test.run();
