// native.ts: loads the addon byol.node with node-gyp-build and declares the type of every
// binding. Contract: the only module in lib/ that touches the raw addon; the load happens on
// first use (so `require('byol')` itself never fails) and a failure throws NativeLoadError
// saying what was tried and listing the fixes for the cause it detected.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { NativeLoadError } from './errors';

export type DType = 'float32' | 'int32' | 'uint8';
export type TypedArray = Float32Array | Int32Array | Uint8Array;
// 'nchw': 4-D data in the public (PyTorch) order. 'nhwc': in the core's own order.
export type Layout = 'nchw' | 'nhwc';

// A tensor handle: a byol::Tensor inside a JS object. Its shape is the CORE shape (a 4-D
// tensor is NHWC); lib/tensor.ts keeps the public NCHW shape. Every member except `disposed`
// and dispose() throws "Tensor was disposed" after dispose().
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DType;
  readonly device: string; // 'cpu' or 'cuda:N'
  readonly nbytes: number;
  readonly disposed: boolean;
  // Download (and for 4-D tensors with layout 'nchw', permute NHWC -> NCHW) off the main
  // thread. 'nhwc' is only valid for 4-D tensors.
  toArray(layout?: Layout): Promise<TypedArray>;
  // Frees the storage now; idempotent.
  dispose(): void;
}

export interface CudaProbe {
  available: boolean;
  description?: string; // when available: the backend's one-line description
  reason?: string; // when not: the loader's report (paths tried, why each failed)
}

export interface NativeBinding {
  // The handle class (constructing it from JavaScript throws; native code creates handles).
  NativeTensor: abstract new () => NativeTensor;
  // Copies data into a new tensor. dtype follows the array: Float32Array -> float32,
  // Int32Array -> int32, Uint8Array / Uint8ClampedArray -> uint8. shape describes `data`:
  // NCHW for 4-D with layout 'nchw' (the default), NHWC with layout 'nhwc'.
  tensorFromData(data: TypedArray | Uint8ClampedArray, shape: number[], device: string, layout?: Layout): NativeTensor;
  // shape is public (4-D = NCHW).
  tensorZeros(shape: number[], dtype: DType, device: string): NativeTensor;
  // Live (neither disposed nor collected) handles in this process and the bytes they hold.
  tensorStats(): { handles: number; bytes: number };

  // The backend's description ("cpu: ..., N threads, oneDNN x.y.z"); creates the backend on
  // first use, so for 'cuda[:N]' it throws an Error with the loader's report on failure.
  describeDevice(device: string): string;
  // Tries to load the CUDA backend for GPU `index`; never throws for a missing GPU.
  probeCuda(index: number): CudaProbe;
  // Where the CUDA plugin libbyol_cuda.so is looked for, in order.
  cudaLibraryCandidates(): string[];
  // What the CPU backend computes with (creates no backend): oneDNN's library version and the
  // ISA its JIT dispatches to; the code path our multiversioned kernels run ('x86-64-v4',
  // 'x86-64-v3', 'x86-64', or the build's one path) and every path compiled; the compiler.
  cpuInfo(): {
    // bf16Native: the ISA has bf16 dot products (AVX512_BF16 or AMX), where bf16 convolutions pay off.
    // bf16Supported: oneDNN runs bf16 convolutions at all (AVX-512 and up; setCpuConvPrecision('bf16') throws otherwise).
    onednn: { version: string; isa: string; bf16Native: boolean; bf16Supported: boolean };
    kernels: { variant: string; isa: string; variants: string[]; multiversioned: boolean };
    compiler: string;
    // The float32 convolution algorithm (BYOL_CPU_CONV: 'auto', 'onednn' or 'gemm'; 'auto' when
    // unset) and whether 'auto' runs wide convolutions as im2col + SGEMM here (below AVX-512).
    convolutions: { algorithm: string; gemmWhenAuto: boolean };
  };
  setNumThreads(threads: number): void;
  getNumThreads(): number;
  // The CPU backend's convolution precision (process-wide; applies to work started after).
  setCpuConvPrecision(precision: 'fp32' | 'bf16'): void;
  getCpuConvPrecision(): 'fp32' | 'bf16';
  // The CPU backend's float32 convolution algorithm (process-wide; from the next op on).
  setCpuConvAlgorithm(algorithm: 'auto' | 'onednn' | 'gemm'): void;
  getCpuConvAlgorithm(): 'auto' | 'onednn' | 'gemm';
  // The profiler capture window of a device's backend (nsys --capture-range=cudaProfilerApi):
  // true when it has one (CUDA: cudaProfilerStart/Stop; stop first waits for queued work),
  // false when not (CPU). Throws naming the device when it cannot be created.
  profilerStart(device: string): boolean;
  profilerStop(device: string): boolean;
  // Op timing of a device's backend: true when it can time ops (both backends can).
  setOpTiming(device: string, on: boolean): boolean;
  // The sums since timing went on or the last reset (waits for the device's queued work).
  opTimes(device: string, reset: boolean): OpTime[];
  // Image folders (native/addon/image.cc): the image scaled to cover outHeight x outWidth and
  // centre-cropped (antialiased triangle filter).
  resizeCover(pixels: Uint8Array, height: number, width: number, channels: number, outHeight: number,
    outWidth: number): Promise<Uint8Array>;
  // Present when the addon was built with libjpeg: the pixels sharp would give (resized with
  // resizeCover when outHeight/outWidth are given), or null for a file left to sharp.
  decodeJpeg?(bytes: Uint8Array, channels: 1 | 3, outHeight?: number, outWidth?: number):
    Promise<{ data: Uint8Array; width: number; height: number } | null>;
  jpegVersion?: number; // libjpeg's API version (62, 80, ...)
  // The evaluation's weighted kNN (native/cpu/knn.h) on the compute thread: rows already
  // L2-normalized; counts of test rows whose class ranks first / in the top five. The arrays
  // are read while the promise is pending.
  // One minibatch step of the linear probe (native/cpu/linear_probe.h), synchronous, on the
  // compute thread: updates the four state arrays, returns the rows' summed cross-entropy.
  sgdLinearStep(weights: Float64Array, bias: Float64Array, velocityW: Float64Array, velocityB: Float64Array,
    x: Float32Array, rows: Int32Array, start: number, count: number, labels: Int32Array, dim: number, classes: number,
    lr: number, momentum: number, nesterov: boolean, weightDecay: number): number;
  knnClassify(train: Float32Array, trainLabels: Int32Array, test: Float32Array, testLabels: Int32Array, dim: number,
    classes: number, k: number, temperature: number): Promise<{ top1: number; top5: number }>;
}

// One row of an op-time profile: the phase of the step, the op, calls and summed milliseconds,
// and the calls' nominal work: floating-point operations of convolutions and linear layers
// (2 per multiply-add), bytes the memory-bound ops read and write; 0 where an op gives none.
export interface OpTime {
  phase: string;
  op: string;
  calls: number;
  ms: number;
  flops: number;
  bytes: number;
}

// dist/native.js -> the package root (where package.json, build/ and prebuilds/ are).
export const packageRoot = path.resolve(__dirname, '..');

// The Node-API version byol.node is compiled for (binding.gyp NAPI_VERSION, package.json
// binary.napi_versions): a runtime with less lacks functions the addon calls.
export const requiredNapiVersion = 8;

interface NodeGypBuild {
  (dir: string): unknown;
  resolve(dir: string): string;
}

// What the loader knows about this runtime, for messages.
export function runtimeDescription(): string {
  let libc = 'libc unknown (not glibc; musl?)';
  try {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
    const glibc = report?.header?.glibcVersionRuntime;
    if (glibc) libc = `glibc ${glibc}`;
  } catch {
    // process.report can be disabled; the rest of the message is still useful.
  }
  return `${process.platform}-${process.arch}, Node.js ${process.versions.node}, ` +
    `Node-API ${process.versions.napi ?? 'unknown'} (byol.node needs ${requiredNapiVersion}), ${libc}`;
}

function listDir(dir: string): string[] | undefined {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return undefined;
  }
}

// Where byol.node is looked for under `root`, in node-gyp-build's order, one line each with
// what is there: build/Release, build/Debug, then prebuilds/<platform>-<arch> (with the
// libraries bundled beside the addon, or the platforms the package does have prebuilds for).
export function nativeSearchReport(root: string = packageRoot): string[] {
  const lines: string[] = [];
  for (const folder of ['build/Release', 'build/Debug']) {
    const dir = path.join(root, folder);
    const addons = listDir(dir)?.filter((f) => f.endsWith('.node'));
    lines.push(`${dir}: ${addons === undefined ? 'no such folder' : addons.length ? addons.join(', ') : 'no .node file'}`);
  }
  const platform = `${process.platform}-${process.arch}`;
  const prebuilds = path.join(root, 'prebuilds');
  const platforms = listDir(prebuilds);
  const dir = path.join(prebuilds, platform);
  const files = listDir(dir);
  if (files === undefined) {
    const others = platforms?.length ? `; the package has prebuilds for ${platforms.join(', ')} only` : '';
    lines.push(`${dir}: no such folder (no prebuild for ${platform}${others})`);
  } else {
    const addons = files.filter((f) => f.endsWith('.node'));
    const libraries = files.filter((f) => /\.so(\.\d+)*$/.test(f));
    lines.push(`${dir}: ${addons.length ? addons.join(', ') : 'no .node file'}` +
      (libraries.length ? ` (bundled: ${libraries.join(', ')})` : ''));
  }
  return lines;
}

const REBUILD = 'rebuild from source: `npm rebuild byol` (in a checkout of byol: `npm run build:native`)';
const TOOLCHAIN = 'a C++17 compiler, make, Python 3 and the oneDNN headers ' +
  '(Debian/Ubuntu: `sudo apt-get install build-essential python3 libdnnl-dev`)';

// The fixes for the cause a load error message shows (first match wins; always non-empty).
// `file` is the byol.node that failed to load, when one was found: a library missing beside a
// prebuild means an incomplete install rather than a missing system package.
export function diagnoseLoadFailure(message: string, file?: string): string[] {
  const missingLibrary = /([\w.+-]+\.so(?:\.\d+)*): cannot open shared object file/.exec(message);
  if (missingLibrary) {
    const library = missingLibrary[1];
    const folder = file ? path.dirname(file) : undefined;
    if (folder && path.basename(path.dirname(folder)) === 'prebuilds' && !/^lib(c|m|dl|pthread|rt|stdc\+\+|gcc_s)\.so/.test(library)) {
      return [
        `the prebuild in ${folder} should have ${library} beside byol.node but it is missing: reinstall byol ` +
          '(`npm install byol --force`); a copy or bundler that keeps only .node files breaks prebuilds',
        `or ${REBUILD}`,
      ];
    }
    if (library.startsWith('libdnnl')) {
      return [
        `install oneDNN, which byol.node links to: \`sudo apt-get install libdnnl2\` (Debian 12, Ubuntu 22.04 and later)`,
        'or use a prebuild of byol for this platform that bundles oneDNN (prebuilds/<platform>-<arch>/)',
      ];
    }
    if (library.startsWith('libgomp')) return ['install the GNU OpenMP runtime: `sudo apt-get install libgomp1`'];
    if (library.startsWith('libOpenCL')) {
      return ['install the OpenCL loader that Debian\'s oneDNN links to: `sudo apt-get install ocl-icd-libopencl1`'];
    }
    if (library.startsWith('libstdc++')) return ['install the C++ runtime: `sudo apt-get install libstdc++6`'];
    return [
      `install the package that provides ${library} (Debian/Ubuntu: \`apt-file search ${library}\`)`,
      REBUILD,
    ];
  }
  if (/No native build was found/.test(message)) {
    return [
      `build byol.node on this machine: install ${TOOLCHAIN}, then run \`npm rebuild byol\``,
      'or install on a platform that has a prebuild (prebuilds/<platform>-<arch>/ in the package)',
    ];
  }
  if (/GLIBC(XX)?_[\d.]+'? not found/.test(message)) {
    return [`byol.node was built against a newer C/C++ runtime than this system has: ${REBUILD}`];
  }
  if (/undefined symbol: napi_/.test(message)) {
    return [`this Node.js lacks Node-API ${requiredNapiVersion}, which byol.node needs: use Node.js 18 or later`];
  }
  if (/undefined symbol/.test(message)) {
    return [`byol.node does not match the libraries it was built with (a partial or stale build): ${REBUILD}`];
  }
  if (/invalid ELF header|file too short|wrong ELF class|not a valid Win32|mach-o/i.test(message)) {
    return [`byol.node was built for another platform or architecture: delete its build/ folder and ${REBUILD}`];
  }
  if (/NODE_MODULE_VERSION|did not self-register/.test(message)) {
    return [`byol.node was built for another Node.js: ${REBUILD}`];
  }
  return [REBUILD, `if that does not help, report an issue with this whole message (the build needs ${TOOLCHAIN})`];
}

// The fixes for a failed `node-gyp rebuild` of byol.node, from its output and the build tools
// missing on PATH (always non-empty). Used by the install script (tools/install.mjs).
export function diagnoseBuildFailure(output: string, missingTools: string[] = []): string[] {
  const fixes: string[] = [];
  if (missingTools.includes('node-gyp')) fixes.push('install node-gyp: `npm install -g node-gyp` (npm runs its own copy for install scripts)');
  const systemTools = missingTools.filter((tool) => tool !== 'node-gyp');
  if (systemTools.length) {
    fixes.push(`install the build tools missing on PATH (${systemTools.join(', ')}): ` +
      'Debian/Ubuntu: `sudo apt-get install build-essential python3`');
  }
  if (/dnnl\.hpp|oneapi\/dnnl|cannot find -ldnnl/.test(output)) {
    fixes.push('install the oneDNN headers and library: `sudo apt-get install libdnnl-dev` (Debian 12, Ubuntu 22.04 and later)');
  }
  if (/ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|getaddrinfo|(tarball|headers) download failed/i.test(output)) {
    fixes.push('node-gyp could not download the Node.js headers: connect to the network, or point it at installed ' +
      'headers: `export npm_config_nodedir=<node prefix>` (the folder holding include/node/node_api.h)');
  }
  if (/unrecognized command.line option.*(std=c\+\+17|fopenmp)|omp\.h: No such file/.test(output)) {
    fixes.push('the compiler lacks C++17 or OpenMP: use g++ 9 or later (`sudo apt-get install g++`)');
  }
  if (!fixes.length) fixes.push(`install ${TOOLCHAIN}, then run \`npm rebuild byol\``);
  fixes.push('or install byol on a platform it has a prebuild for (linux-x64 with glibc)');
  return fixes;
}

// Loads byol.node from `root` (build/Release, build/Debug, then prebuilds/, as node-gyp-build
// looks) or throws NativeLoadError.
export function loadBinding(root: string = packageRoot): NativeBinding {
  let resolved: string | undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const nodeGypBuild = require('node-gyp-build') as NodeGypBuild;
    resolved = nodeGypBuild.resolve(root);
    return require(resolved) as NativeBinding;
  } catch (error) {
    const cause = error instanceof Error ? error.message : String(error);
    // node-gyp-build honours BYOL_PREBUILD: a folder it searches instead of the package root.
    const override = process.env.BYOL_PREBUILD;
    const lines = [
      'byol: could not load the native addon byol.node.',
      `  package root: ${root}`,
      `  runtime: ${runtimeDescription()}`,
      ...(override ? [`  BYOL_PREBUILD: ${override} (searched instead of the package root)`] : []),
      ...(resolved ? [`  file: ${resolved}`] : []),
      '  looked in (in this order):',
      ...nativeSearchReport(override || root).map((line) => `    ${line}`),
      `cause: ${cause.trim()}`,
      'fixes:',
      ...diagnoseLoadFailure(cause, resolved).map((fix) => `  - ${fix}`),
    ];
    throw new NativeLoadError(lines.join('\n'), error);
  }
}

let binding: NativeBinding | undefined;
let loadFailure: NativeLoadError | undefined;

export function loadNative(): NativeBinding {
  if (binding) return binding;
  // A failed load is remembered: retrying would only repeat the same file-system probes.
  if (loadFailure) throw loadFailure;
  try {
    binding = loadBinding();
    return binding;
  } catch (error) {
    loadFailure = error as NativeLoadError;
    throw error;
  }
}

// The addon, loaded on first property access.
export const native: NativeBinding = new Proxy({} as NativeBinding, {
  get(_target, key) {
    return Reflect.get(loadNative(), key);
  },
  has(_target, key) {
    return Reflect.has(loadNative(), key);
  },
});
