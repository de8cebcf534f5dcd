// info.ts (cli): `byol info`: what this installation runs on: platform, the addon file, the CPU
// (features, the path our kernels dispatch to, oneDNN version and ISA, threads) and CUDA (the
// plugin, driver, runtime, cuDNN and cuBLAS with versions and the files loaded, every GPU with
// its memory, or why none can be used, with the loader's report).
// Contract: never fails because of a missing GPU; a broken addon is reported with its fixes
// (exit 1); --json prints one object with the same facts. It probes every GPU (one CUDA context
// each), which is right for a short-lived command and the reason installInfo() is not public.
import * as fs from 'node:fs';
import * as os from 'node:os';

import { devices, getNumThreads, probeCuda, type CudaStatus } from '../device';
import { native, type NativeBinding, packageRoot, runtimeDescription } from '../native';
import { type FlagSpec, formatFlags, parseArgs } from './args';

const INFO_FLAGS: FlagSpec[] = [
  { flag: '--json', type: 'boolean', help: 'print JSON' },
  { flag: '--help', type: 'boolean', help: 'show this help' },
];

// A shared library as this process loaded it. `versionFrom` says how exact `version` is:
// 'library' (the library's own version call, through the CUDA backend's description),
// 'file name' (what the file is called: often the major only, e.g. libcudnn.so.9) or
// '/proc/driver/nvidia/version' (the kernel module, when libcuda.so.1 itself did not load).
export interface LibraryInfo {
  path: string | null; // null: not loaded in this process
  version: string | null;
  versionFrom: 'library' | 'file name' | '/proc/driver/nvidia/version' | null;
}

export interface GpuInfo {
  index: number;
  available: boolean;
  name?: string;
  computeCapability?: string; // '9.0'
  multiprocessors?: number;
  memory?: string; // '79.1 GiB', as the CUDA backend reports it
  memoryGiB?: number;
  description?: string; // the backend's full line (when available)
  reason?: string; // why this GPU cannot be used (when not)
}

export interface InstallInfo {
  version: string;
  platform: string;
  node: string;
  runtime: string;
  addon: { path: string | null; loaded: boolean; compiler?: string; error?: string };
  cpu: {
    model: string;
    cores: number;
    threads: number | null;
    backend: string | null; // the CPU backend's one-line description
    features: string[] | null; // the SIMD/matrix extensions the OS reports; null: unknown here
    featuresFrom: string | null;
    // The path our multiversioned kernels run and the paths compiled in.
    kernels: ReturnType<NativeBinding['cpuInfo']>['kernels'] | null;
    onednn: { version: string; isa: string; bf16Native: boolean; path: string | null } | null;
    openmp: string | null; // the OpenMP runtime's file
    // The float32 convolution algorithm (BYOL_CPU_CONV) and what 'auto' does here.
    // Optional: reports from before the field have none.
    convolutions?: ReturnType<NativeBinding['cpuInfo']>['convolutions'] | null;
    // Image folders' JPEG fast path: libjpeg's file when the addon was built with it, else null
    // (JPEGs then decode through sharp).
    jpeg: { version: number; path: string | null } | null;
  };
  cuda: {
    available: boolean; // at least one GPU can be used
    description?: string; // the first usable GPU's backend description
    reason?: string; // when none can be used: the report for cuda:0 (loader or driver)
    plugin: { path: string | null; candidates: string[] };
    driver: LibraryInfo & { cuda: string | null }; // cuda: the CUDA version the driver supports
    runtime: LibraryInfo;
    cudnn: LibraryInfo;
    cublas: LibraryInfo;
    cublasLt: LibraryInfo;
    gpuCount: number;
    gpus: GpuInfo[];
  };
  // Where the library paths come from; null where the platform has no /proc/self/maps.
  librariesFrom: string | null;
}

// ---- pure parsers (tested with fixed inputs) --------------------------------------------------

// The file of every mapping in a /proc/<pid>/maps text, each once, in order of first appearance.
// A line is "start-end perms offset dev inode [path]"; the path may contain spaces and is
// absent for anonymous memory; pseudo-files ("[heap]", "[vdso]") are skipped.
export function parseMappedFiles(maps: string): string[] {
  const files = new Set<string>();
  for (const line of maps.split('\n')) {
    const match = /^[0-9a-f]+-[0-9a-f]+\s+\S+\s+\S+\s+\S+\s+\d+\s+(\/.*?)(?: \(deleted\))?\s*$/.exec(line);
    if (match) files.add(match[1]);
  }
  return [...files];
}

// The version a library's file name carries after ".so." (libcuda.so.580.65.06 -> 580.65.06,
// libcudnn.so.9 -> 9); null when it has none (libbyol_cuda.so).
export function versionFromFileName(file: string): string | null {
  const match = /\.so\.(\d+(?:\.\d+)*)$/.exec(file);
  return match ? match[1] : null;
}

// The first file whose name is `stem` (e.g. 'libcudnn') + ".so" + an optional version, so that
// libcudnn_graph.so.9 or libcublasLt.so.13 do not count as libcudnn or libcublas.
export function findLibrary(files: string[], stem: string): string | null {
  const pattern = new RegExp(`/${stem.replace(/[.+]/g, '\\$&')}\\.so(\\.\\d+)*$`);
  return files.find((file) => pattern.test(file)) ?? null;
}

export interface CudaDescription {
  index: number;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  memory: string;
  memoryGiB: number;
  driverCuda: string;
  runtime: string;
  cudnn: string;
  cublas: string;
}

const MEMORY_UNITS: Record<string, number> = { GiB: 1, MiB: 1 / 1024, bytes: 1 / 2 ** 30 };

// The CUDA backend's describe() line (native/cuda/cuda_backend.cc), e.g. "cuda:0: NVIDIA H100
// 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB), driver CUDA 13.0, runtime 13.0, cuDNN 9.13.0, cuBLAS
// 13.1.0, TF32 ...", as fields; null when the line does not have that shape.
export function parseCudaDescription(line: string): CudaDescription | null {
  const match = new RegExp(
    '^cuda:(\\d+): (.+) \\(sm_(\\d+)(\\d), (\\d+) SMs, ([\\d.]+) (GiB|MiB|bytes)\\), driver CUDA ([\\d.]+), ' +
    'runtime ([\\d.]+), cuDNN ([\\d.]+), cuBLAS ([\\d.]+)').exec(line);
  if (!match) return null;
  const [, index, name, major, minor, sms, amount, unit, driverCuda, runtime, cudnn, cublas] = match;
  return {
    index: Number(index),
    name,
    computeCapability: `${major}.${minor}`,
    multiprocessors: Number(sms),
    memory: `${amount} ${unit}`,
    memoryGiB: Number(amount) * MEMORY_UNITS[unit],
    driverCuda,
    runtime,
    cudnn,
    cublas,
  };
}

// How many GPUs the CUDA runtime sees, from the plugin's answer to an index past the end
// ("device index 9999 out of range: 2 GPUs found (cuda:0 ..., cuda:1 ...)"); null when the
// report is anything else (no plugin, no driver, no GPU).
export function parseGpuCount(report: string): number | null {
  const match = /device index \d+ out of range: (\d+) GPUs? found/.exec(report);
  return match ? Number(match[1]) : null;
}

// The kernel module's version from /proc/driver/nvidia/version ("NVRM version: NVIDIA UNIX
// x86_64 Kernel Module  580.65.06  Sun Jul 27 ..."); null when absent.
export function parseNvidiaDriverVersion(text: string): string | null {
  const match = /^NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s/m.exec(text);
  return match ? match[1] : null;
}

// The extensions that matter for training speed, in order of capability; the rest of the
// flags (hundreds on a server CPU) say nothing about byol.
const X86_FEATURES = ['sse4_2', 'avx', 'f16c', 'fma', 'avx2', 'avx_vnni', 'avx512f', 'avx512dq', 'avx512cd',
  'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8'];
const ARM_FEATURES = ['asimd', 'asimdhp', 'asimddp', 'sve', 'sve2', 'bf16', 'i8mm', 'sme'];

// The relevant features of the first CPU in a /proc/cpuinfo text ("flags" on x86, "Features"
// on Arm); null when the text has neither line.
export function parseCpuFeatures(cpuinfo: string): string[] | null {
  const match = /^(flags|Features)\s*:(.*)$/m.exec(cpuinfo);
  if (!match) return null;
  const present = new Set(match[2].trim().split(/\s+/));
  return (match[1] === 'flags' ? X86_FEATURES : ARM_FEATURES).filter((feature) => present.has(feature));
}

// Two aligned columns; a multi-line value continues under its first line.
export function formatTable(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([key]) => key.length)) + 2;
  let out = '';
  for (const [key, value] of rows) {
    const [first, ...rest] = value.split('\n');
    out += `${key.padEnd(width)}${first}`.trimEnd() + '\n';
    for (const line of rest) out += `${' '.repeat(width)}${line}`.trimEnd() + '\n';
  }
  return out;
}

// ---- gathering ---------------------------------------------------------------------------------

// An index no machine reaches: the plugin counts GPUs through the CUDA runtime before it checks
// the index, so this probe reports the count (honouring CUDA_VISIBLE_DEVICES and the runtime's
// own ordering, unlike nvidia-smi or /proc/driver/nvidia/gpus) without creating a context.
const COUNT_PROBE_INDEX = 9999;
// Bound for the fallback walk below, far above any single machine's GPU count.
const MAX_GPUS = 256;

function gpuEntry(index: number, status: CudaStatus): GpuInfo {
  if (!status.available) return { index, available: false, reason: status.reason ?? 'unknown reason' };
  const parsed = status.description ? parseCudaDescription(status.description) : null;
  const gpu: GpuInfo = { index, available: true, description: status.description };
  if (parsed) {
    Object.assign(gpu, {
      name: parsed.name, computeCapability: parsed.computeCapability, multiprocessors: parsed.multiprocessors,
      memory: parsed.memory, memoryGiB: parsed.memoryGiB,
    });
  }
  return gpu;
}

// Every GPU the CUDA runtime sees, each probed through `probe` (lib/device's probeCuda; a
// parameter so that tests can play a machine with GPUs), so each says whether it can be used.
export function enumerateGpus(probe: (index: number) => CudaStatus): GpuInfo[] {
  const first = probe(0);
  const count = parseGpuCount(probe(COUNT_PROBE_INDEX).reason ?? '');
  if (count !== null) {
    return Array.from({ length: count }, (_, index) => gpuEntry(index, index === 0 ? first : probe(index)));
  }
  if (!first.available) return [];
  // The plugin answered the count probe in a way this version does not read: walk the indices
  // until one fails, so at least the GPUs that work are listed.
  const gpus = [gpuEntry(0, first)];
  for (let index = 1; index < MAX_GPUS; index++) {
    const status = probe(index);
    if (!status.available) break;
    gpus.push(gpuEntry(index, status));
  }
  return gpus;
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function library(files: string[], stem: string, exact?: string): LibraryInfo {
  const path = findLibrary(files, stem);
  if (exact) return { path, version: exact, versionFrom: 'library' };
  const version = path ? versionFromFileName(path) : null;
  return { path, version, versionFrom: version ? 'file name' : null };
}

function addonPath(): string | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    return nodeGypBuild.resolve(packageRoot);
  } catch {
    return null;
  }
}

function emptyLibrary(): LibraryInfo {
  return { path: null, version: null, versionFrom: null };
}

export function installInfo(): InstallInfo {
  const cpus = os.cpus();
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const version = (require('../../package.json') as { version: string }).version;
  const cpuinfo = readText('/proc/cpuinfo');
  const features = cpuinfo === null ? null : parseCpuFeatures(cpuinfo);
  const info: InstallInfo = {
    version,
    platform: `${process.platform}-${process.arch}`,
    node: process.versions.node,
    runtime: runtimeDescription(),
    addon: { path: addonPath(), loaded: false },
    cpu: {
      model: cpus[0]?.model?.trim() ?? 'unknown',
      cores: os.availableParallelism(),
      threads: null,
      backend: null,
      features,
      featuresFrom: features === null ? null : '/proc/cpuinfo',
      kernels: null,
      onednn: null,
      convolutions: null,
      openmp: null,
      jpeg: null,
    },
    cuda: {
      available: false,
      // Declared here so that --json keeps them beside `available`; undefined ones are omitted.
      description: undefined,
      reason: undefined,
      plugin: { path: null, candidates: [] },
      driver: { ...emptyLibrary(), cuda: null },
      runtime: emptyLibrary(),
      cudnn: emptyLibrary(),
      cublas: emptyLibrary(),
      cublasLt: emptyLibrary(),
      gpuCount: 0,
      gpus: [],
    },
    librariesFrom: null,
  };
  try {
    info.cpu.backend = devices().cpu;
    info.addon.loaded = true;
    info.cpu.threads = getNumThreads();
    const cpu = native.cpuInfo();
    info.addon.compiler = cpu.compiler;
    info.cpu.kernels = cpu.kernels;
    info.cpu.convolutions = cpu.convolutions;
    info.cpu.onednn = { ...cpu.onednn, path: null };
    if (native.jpegVersion !== undefined) info.cpu.jpeg = { version: native.jpegVersion, path: null };
    info.cuda.plugin.candidates = native.cudaLibraryCandidates();
  } catch (error) {
    info.addon.error = error instanceof Error ? error.message : String(error);
    info.cuda.reason = 'the native addon did not load (see addon)';
    return info;
  }

  const gpus = enumerateGpus(probeCuda);
  const usable = gpus.find((gpu) => gpu.available);
  const exact = usable?.description ? parseCudaDescription(usable.description) : null;
  Object.assign(info.cuda, {
    available: usable !== undefined,
    gpuCount: gpus.length,
    gpus,
  });
  if (usable) info.cuda.description = usable.description;
  else info.cuda.reason = probeCuda(0).reason ?? 'unknown reason'; // cached: no second load

  // Read after the probes: the plugin and the CUDA libraries it pulls in are mapped now.
  const maps = readText('/proc/self/maps');
  if (maps !== null) {
    const files = parseMappedFiles(maps);
    info.librariesFrom = '/proc/self/maps';
    if (info.cpu.onednn) info.cpu.onednn.path = findLibrary(files, 'libdnnl');
    info.cpu.openmp = findLibrary(files, 'libgomp') ?? findLibrary(files, 'libomp') ?? findLibrary(files, 'libiomp5');
    if (info.cpu.jpeg) info.cpu.jpeg.path = findLibrary(files, 'libjpeg');
    info.cuda.plugin.path = findLibrary(files, 'libbyol_cuda');
    info.cuda.runtime = library(files, 'libcudart', exact?.runtime);
    info.cuda.cudnn = library(files, 'libcudnn', exact?.cudnn);
    info.cuda.cublas = library(files, 'libcublas', exact?.cublas);
    info.cuda.cublasLt = library(files, 'libcublasLt');
    info.cuda.driver = { ...library(files, 'libcuda'), cuda: exact?.driverCuda ?? null };
  }
  if (!info.cuda.driver.version) {
    // The kernel module can be there while libcuda.so.1 is not (a container started without the
    // NVIDIA runtime): say which driver the machine has.
    const module = parseNvidiaDriverVersion(readText('/proc/driver/nvidia/version') ?? '');
    if (module) Object.assign(info.cuda.driver, { version: module, versionFrom: '/proc/driver/nvidia/version' });
  }
  return info;
}

// ---- text output -------------------------------------------------------------------------------

// Versions in the text are bare (the JSON says where each came from): with a usable GPU the
// runtime, cuDNN and cuBLAS ones are the libraries' own; otherwise the file names' (a major).
function libraryRows(info: InstallInfo): [string, string][] {
  const { cuda } = info;
  if (info.librariesFrom === null) {
    return [['  libraries', `paths unknown (no /proc/self/maps on ${process.platform})`]];
  }
  const driverVersion = cuda.driver.version
    ? `${cuda.driver.version}${cuda.driver.cuda ? ` (CUDA ${cuda.driver.cuda})` : ''}` : '-';
  const driverWhere = cuda.driver.path ??
    `libcuda.so.1 not loaded${cuda.driver.version ? ' (version from the kernel module)' : ''}`;
  if (!cuda.plugin.path) {
    // Nothing CUDA is mapped: the plugin is what loads the runtime, cuDNN and cuBLAS.
    const rows: [string, string][] = [];
    if (cuda.driver.version) rows.push(['  driver', `${driverVersion}  ${driverWhere}`]);
    rows.push(['  libraries', 'none loaded (libbyol_cuda.so loads the CUDA runtime, cuDNN and cuBLAS)']);
    return rows;
  }
  const entries: [string, string, string][] = [
    ['driver', driverVersion, driverWhere],
    ...([['runtime', cuda.runtime, 'libcudart'], ['cuDNN', cuda.cudnn, 'libcudnn'], ['cuBLAS', cuda.cublas, 'libcublas'],
      ['cuBLASLt', cuda.cublasLt, 'libcublasLt']] as [string, LibraryInfo, string][])
      .map(([key, lib, file]): [string, string, string] => [key, lib.version ?? '-', lib.path ?? `${file} not loaded`]),
  ];
  const width = Math.max(...entries.map(([, version]) => version.length));
  return entries.map(([key, version, where]) => [`  ${key}`, `${version.padEnd(width)}  ${where}`]);
}

function gpuRows(info: InstallInfo): [string, string][] {
  if (info.cuda.gpus.length === 0) return [['  gpus', 'none (the cuda line says why)']];
  return info.cuda.gpus.map((gpu): [string, string] => {
    const key = `  gpu ${gpu.index}`;
    if (!gpu.available) return [key, `not usable: ${stripDevicePrefix(gpu.reason ?? 'unknown reason')}`];
    if (!gpu.name) return [key, gpu.description ?? 'usable'];
    return [key, `${gpu.name}, compute capability ${gpu.computeCapability}, ${gpu.multiprocessors} SMs, ${gpu.memory}`];
  });
}

// The addon prefixes every failure with the device it was for; the row's key already says it.
function stripDevicePrefix(reason: string): string {
  return reason.replace(/^device 'cuda:\d+' is not available: /, '');
}

// The float32 convolutions' algorithm, as `byol info` says it (cpu_backend.h set_conv_algorithm).
function convolutionText(c: NonNullable<InstallInfo['cpu']['convolutions']>): string {
  const setting = `BYOL_CPU_CONV=${c.algorithm}`;
  if (c.algorithm === 'gemm') return `im2col + SGEMM throughout (${setting})`;
  if (c.algorithm === 'onednn' || !c.gemmWhenAuto) return `oneDNN direct (${setting})`;
  return `im2col + SGEMM for wide layers (oneDNN runs below AVX-512 here), oneDNN direct for the rest (${setting})`;
}

export function formatInfo(info: InstallInfo): string {
  const { cpu, cuda } = info;
  const rows: [string, string][] = [
    ['byol', info.version],
    ['platform', info.runtime],
    ['addon', info.addon.loaded
      ? `${info.addon.path ?? '(loaded)'}${info.addon.compiler ? ` (built with ${info.addon.compiler})` : ''}`
      : `NOT LOADED\n${info.addon.error ?? ''}`],
    ['cpu', `${cpu.model}, ${cpu.cores} cores${cpu.threads ? `, ${cpu.threads} threads` : ''}`],
    ['  features', cpu.features
      ? `${cpu.features.join(' ') || 'none of the SIMD extensions byol uses'} (${cpu.featuresFrom})`
      : `unknown (no /proc/cpuinfo on ${process.platform})`],
  ];
  if (cpu.kernels) {
    const paths = cpu.kernels.multiversioned
      ? `picked at load time from ${cpu.kernels.variants.join(', ')}`
      : 'the only path built';
    rows.push(['  byol kernels', `${cpu.kernels.variant}: ${cpu.kernels.isa} (${paths})`]);
  }
  if (cpu.onednn) {
    rows.push(['  oneDNN', `${cpu.onednn.version}, ISA ${cpu.onednn.isa}${cpu.onednn.path ? `, ${cpu.onednn.path}` : ''}`]);
    rows.push(['  bf16 convs', cpu.onednn.bf16Native
      ? 'native (bf16 dot products): convPrecision \'auto\' uses them'
      : 'emulated (no bf16 dot products): convPrecision \'auto\' stays fp32']);
  }
  if (cpu.convolutions) rows.push(['  fp32 convs', convolutionText(cpu.convolutions)]);
  if (cpu.openmp) rows.push(['  OpenMP', cpu.openmp]);
  if (info.addon.loaded && cpu.jpeg !== undefined) { // undefined: a report from before the field
    rows.push(['  JPEG', cpu.jpeg
      ? `libjpeg API ${cpu.jpeg.version}${cpu.jpeg.path ? `, ${cpu.jpeg.path}` : ''} (image folders; other formats: sharp)`
      : 'sharp (the addon was built without libjpeg)']);
  }

  const usable = cuda.gpus.filter((gpu) => gpu.available).length;
  rows.push(['cuda', cuda.available
    ? `available: ${usable} of ${cuda.gpuCount} GPU${cuda.gpuCount === 1 ? '' : 's'} usable`
    : `not available: ${stripDevicePrefix(cuda.reason ?? 'unknown reason')}`]);
  if (info.addon.loaded) {
    rows.push(['  plugin', cuda.plugin.path ?? 'libbyol_cuda.so not loaded (the cuda line lists every path tried)']);
    rows.push(...libraryRows(info));
    rows.push(...gpuRows(info));
    // A failed load lists the same paths with why each failed; a successful one does not.
    if (cuda.plugin.path) rows.push(['  searched', cuda.plugin.candidates.join('\n')]);
  }
  return formatTable(rows);
}

export async function infoCommand(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream }): Promise<number> {
  const parsed = parseArgs(argv, INFO_FLAGS, 'info');
  if (parsed.flags.has('--help')) {
    io.out.write(`Usage: byol info [--json]\n\nOptions:\n${formatFlags(INFO_FLAGS)}\n`);
    return 0;
  }
  const info = installInfo();
  io.out.write(parsed.flags.has('--json') ? `${JSON.stringify(info, null, 2)}\n` : formatInfo(info));
  return info.addon.loaded ? 0 : 1;
}
