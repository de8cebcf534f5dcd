// native.ts: loads the addon byol.node with node-gyp-build and declares the type of every
// binding. Contract: the only module in lib/ that touches the raw addon; the load happens on
// first use (so `require('byol')` itself never fails) and a failure throws NativeLoadError
// saying what was tried and listing the fixes for the cause it detected.
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
  setNumThreads(threads: number): void;
  getNumThreads(): number;
}

// dist/native.js -> the package root (where package.json, build/ and prebuilds/ are).
export const packageRoot = path.resolve(__dirname, '..');

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
    `Node-API ${process.versions.napi ?? 'unknown'}, ${libc}`;
}

// The fixes for the cause a load error message shows (first match wins; always non-empty).
export function diagnoseLoadFailure(message: string): string[] {
  const rebuild = 'rebuild from source: `npm rebuild byol` (in a checkout of byol: `npm run build:native`)';
  const toolchain = 'a C++17 compiler, make, Python 3 and the oneDNN headers ' +
    '(Debian/Ubuntu: `sudo apt-get install build-essential python3 libdnnl-dev`)';
  const missingLibrary = /([\w.+-]+\.so(?:\.\d+)*): cannot open shared object file/.exec(message);
  if (missingLibrary) {
    const library = missingLibrary[1];
    if (library.startsWith('libdnnl')) {
      return [
        `install oneDNN, which byol.node links to: \`sudo apt-get install libdnnl2\` (Debian 12, Ubuntu 22.04 and later)`,
        'or use a prebuild of byol for this platform that bundles oneDNN (prebuilds/<platform>-<arch>/)',
      ];
    }
    if (library.startsWith('libgomp')) return ['install the GNU OpenMP runtime: `sudo apt-get install libgomp1`'];
    if (library.startsWith('libstdc++')) return ['install the C++ runtime: `sudo apt-get install libstdc++6`'];
    return [
      `install the package that provides ${library} (Debian/Ubuntu: \`apt-file search ${library}\`)`,
      rebuild,
    ];
  }
  if (/No native build was found/.test(message)) {
    return [
      `build byol.node on this machine: install ${toolchain}, then run \`npm rebuild byol\``,
      'or install on a platform that has a prebuild (prebuilds/<platform>-<arch>/ in the package)',
    ];
  }
  if (/GLIBC(XX)?_[\d.]+'? not found/.test(message)) {
    return [`byol.node was built against a newer C/C++ runtime than this system has: ${rebuild}`];
  }
  if (/undefined symbol/.test(message)) {
    return [`byol.node does not match the libraries it was built with (a partial or stale build): ${rebuild}`];
  }
  if (/invalid ELF header|file too short|wrong ELF class|not a valid Win32|mach-o/i.test(message)) {
    return [`byol.node was built for another platform or architecture: delete its build/ folder and ${rebuild}`];
  }
  if (/NODE_MODULE_VERSION|did not self-register/.test(message)) {
    return [`byol.node was built for another Node.js: ${rebuild}`];
  }
  return [rebuild, `if that does not help, report an issue with this whole message (the build needs ${toolchain})`];
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
    const lines = [
      'byol: could not load the native addon byol.node.',
      `  package root: ${root}`,
      `  runtime: ${runtimeDescription()}`,
      resolved
        ? `  file: ${resolved}`
        : `  looked in: ${['build/Release', 'build/Debug', `prebuilds/${process.platform}-${process.arch}`]
          .map((p) => path.join(root, p)).join(', ')}`,
      `cause: ${cause.trim()}`,
      'fixes:',
      ...diagnoseLoadFailure(cause).map((fix) => `  - ${fix}`),
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
