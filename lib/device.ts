// device.ts: device names, the CUDA probe and the CPU thread count.
// Contract: 'cpu' never touches CUDA; CUDA is probed only when asked for (devices(),
// probeCuda(), or a 'cuda'/'auto' device), once per GPU; 'auto' prefers CUDA and falls back
// to the CPU with one console.warn line saying why. Names resolve to 'cpu' or 'cuda:N'.
import { DeviceError } from './errors';
import { native, type CudaProbe, type OpTime } from './native';
import { integer, invalid, isPlainObject, knownKeys, oneOf } from './validate';

export type DeviceName = 'cpu' | 'cuda' | `cuda:${number}` | 'auto';

export interface CudaStatus {
  available: boolean;
  // Why CUDA cannot be used: the loader's report (every path tried and why it failed).
  reason?: string;
  // What it runs on, when available.
  description?: string;
}

export interface DeviceInfo {
  // One line: what the CPU backend runs on (threads, oneDNN version).
  cpu: string;
  cuda: CudaStatus;
}

const DEVICE_PATTERN = /^(cpu|auto|cuda(?::(\d{1,4}))?)$/;
const cudaProbes = new Map<number, CudaStatus>();
let warnedAutoFallback = false;

function parseDevice(device: unknown, name: string): { kind: 'cpu' | 'auto' | 'cuda'; index: number } {
  const match = typeof device === 'string' ? DEVICE_PATTERN.exec(device) : null;
  if (!match) throw invalid(name, "one of 'cpu', 'cuda', 'cuda:N' or 'auto'", device);
  if (match[1] === 'cpu' || match[1] === 'auto') return { kind: match[1], index: 0 };
  return { kind: 'cuda', index: match[2] === undefined ? 0 : Number(match[2]) };
}

// A loader report in one line: its first line (without the path list) and its hint; the
// whole report stays available from probeCuda().reason.
function oneLine(report: string): string {
  const lines = report.split('\n');
  const hint = lines.find((line) => line.startsWith('hint: '));
  const head = lines[0].replace(/[;:]?\s*tried:$/, '');
  return `${head}${hint ? ` (${hint})` : ''}${lines.length > 1 ? '; probeCuda().reason has the full report' : ''}`;
}

// Loads the CUDA backend for GPU `index` (first call only; the answer is cached for the
// process) and says whether it can be used. Never throws for a machine without CUDA.
export function probeCuda(index = 0): CudaStatus {
  integer('index', index, 0, 9999);
  let status = cudaProbes.get(index);
  if (!status) {
    const probe: CudaProbe = native.probeCuda(index);
    status = probe.available
      ? { available: true, description: probe.description }
      : { available: false, reason: probe.reason };
    cudaProbes.set(index, status);
  }
  return { ...status };
}

// What this process can compute on. Probes CUDA (GPU 0) the first time it is called.
export function devices(): DeviceInfo {
  return { cpu: native.describeDevice('cpu'), cuda: probeCuda(0) };
}

// The canonical device for a name: 'cpu' or 'cuda:N'. 'cuda' means 'cuda:0'. A CUDA device
// that cannot be used throws DeviceError with the loader's report; 'auto' then gives 'cpu'.
// `name` is the option name used in error messages.
export function resolveDevice(device: unknown, name = 'device'): string {
  const parsed = parseDevice(device, name);
  if (parsed.kind === 'cpu') return 'cpu';
  const status = probeCuda(parsed.index);
  const canonical = `cuda:${parsed.index}`;
  if (status.available) return canonical;
  if (parsed.kind === 'cuda') throw new DeviceError(canonical, status.reason ?? 'unknown reason');
  if (!warnedAutoFallback) {
    warnedAutoFallback = true;
    console.warn(`byol: device 'auto' is using the CPU: ${oneLine(status.reason ?? 'unknown reason')}`);
  }
  return 'cpu';
}

// Threads for the CPU backend's OpenMP kernels and oneDNN (default: OMP_NUM_THREADS, else
// all cores). Applies to work started after the call.
export function setNumThreads(threads: number): void {
  native.setNumThreads(integer('threads', threads, 1, 4096));
}

export function getNumThreads(): number {
  return native.getNumThreads();
}

// Precision of the CPU backend's convolutions. 'fp32': float32 throughout (the default; what
// the PyTorch fixtures check). 'bf16': forward and backward-data convolutions read activations
// and weights rounded to bfloat16 and accumulate in float32 (backward-weight, batch norm, the
// MLPs, the loss and the optimizer stay float32), about 2x faster convolutions on CPUs with
// bf16 dot products (AVX512_BF16, AMX) and slower elsewhere. 'auto': bf16 where the CPU has
// them, else fp32. The CUDA backend's reduced precision is TF32 (BYOL_CUDA_TF32).
export type ConvPrecision = 'fp32' | 'bf16' | 'auto';
export const CONV_PRECISIONS: readonly ConvPrecision[] = ['fp32', 'bf16', 'auto'];

// What `precision` means on this machine ('auto' resolved); `name` is the option's name.
export function resolveConvPrecision(precision: unknown, name = 'precision'): 'fp32' | 'bf16' {
  const p = oneOf(name, precision, CONV_PRECISIONS);
  if (p === 'auto') return native.cpuInfo().onednn.bf16Native ? 'bf16' : 'fp32';
  return p;
}

// Sets the CPU backend's convolution precision for work started after the call (process-wide,
// like the thread count) and returns the one in effect.
export function setCpuConvPrecision(precision: ConvPrecision): 'fp32' | 'bf16' {
  const resolved = resolveConvPrecision(precision);
  native.setCpuConvPrecision(resolved);
  return resolved;
}

export function getCpuConvPrecision(): 'fp32' | 'bf16' {
  return native.getCpuConvPrecision();
}

// Which code computes the CPU backend's float32 convolutions. 'auto' (the default, or the
// BYOL_CPU_CONV environment variable's value at start): im2col + SGEMM for wide layers where
// oneDNN has no AVX-512 kernels, oneDNN's direct convolutions elsewhere; 'onednn' or 'gemm'
// force one. Both agree to float rounding. Process-wide, from the next op on.
export type ConvAlgorithm = 'auto' | 'onednn' | 'gemm';
export const CONV_ALGORITHMS: readonly ConvAlgorithm[] = ['auto', 'onednn', 'gemm'];

export function setCpuConvAlgorithm(algorithm: ConvAlgorithm): ConvAlgorithm {
  native.setCpuConvAlgorithm(oneOf('algorithm', algorithm, CONV_ALGORITHMS));
  return algorithm;
}

export function getCpuConvAlgorithm(): ConvAlgorithm {
  return native.getCpuConvAlgorithm();
}

// Op timing: where a step's time goes, without an external profiler. While on, the device's
// backend times every op it runs (CPU: wall time of the call; CUDA: device time between events
// around it, costing a few microseconds of host time per op) and sums it per phase of the step
// ('target forward', 'online forward', 'loss', 'backward', 'optimizer', 'ema'; '(no range)'
// outside a step, e.g. augmentation) and op ('conv2d_forward', 'batchnorm_backward', ...).
// Process-wide per device, like the thread count. A CUDA graph replay is one op
// ('graph_launch'): turn graphs off (Byol.setCudaGraphs(false)) to see the step op by op.
// `device` is a device name ('cpu', 'cuda', 'cuda:N'; 'auto' resolves as for a model).
export type { OpTime } from './native';

export function setOpTiming(device: string, on: boolean): void {
  const name = resolveDevice(device);
  if (typeof on !== 'boolean') throw invalid('on', 'boolean', on);
  native.setOpTiming(name, on);
}

export interface OpTimesOptions {
  // Clear the sums after reading them (default false).
  reset?: boolean;
}

// What a row's nominal work over its time comes to: '312.0 GFLOP/s' (convolutions, linear
// layers), '18.2 GB/s' (memory-bound ops), '-' when the op gives no work. Hold it against the
// machine's peak (a CPU's FMA throughput, a GPU's memory bandwidth) to see what is slow.
export function opRate(row: Pick<OpTime, 'flops' | 'bytes' | 'ms'>): string {
  if (!(row.ms > 0) || !(row.flops > 0 || row.bytes > 0)) return '-';
  return row.flops > 0 ? `${(row.flops / row.ms / 1e6).toFixed(1)} GFLOP/s` : `${(row.bytes / row.ms / 1e6).toFixed(1)} GB/s`;
}

// Op times summed over `steps` steps as per-step rows, their total, and a printable table of
// the `limit` longest (phase, op, calls, ms/step, share, rate): what `byol train --op-times`
// and `byol bench --op-times` print.
export function opTimesPerStep(rows: OpTime[], steps: number, limit: number): { perStep: OpTime[]; total: number;
  lines: string[] } {
  const perStep = rows.map((r) => ({
    phase: r.phase, op: r.op, calls: r.calls / steps, ms: r.ms / steps, flops: r.flops / steps, bytes: r.bytes / steps,
  }));
  const total = perStep.reduce((sum, r) => sum + r.ms, 0);
  const shown = [...perStep].sort((a, b) => b.ms - a.ms).slice(0, limit);
  const lines = [
    `  ${'phase'.padEnd(16)} ${'op'.padEnd(24)} ${'calls'.padStart(7)} ${'ms/step'.padStart(10)} ${'share'.padStart(6)}  rate`,
    ...shown.map((r) => `  ${r.phase.padEnd(16)} ${r.op.padEnd(24)} ${r.calls.toFixed(1).padStart(7)} ` +
      `${r.ms.toFixed(3).padStart(10)} ${(total > 0 ? (100 * r.ms) / total : 0).toFixed(1).padStart(5)}%  ${opRate(r)}`),
  ];
  return { perStep, total, lines };
}

// The sums since timing went on (or the last reset), longest first within each phase, phases in
// the order they ran. Waits for the device's queued work (none after an awaited step).
export function opTimes(device: string, options: OpTimesOptions = {}): OpTime[] {
  const name = resolveDevice(device);
  if (!isPlainObject(options)) throw invalid('options', 'object', options);
  knownKeys('options', options, ['reset']);
  const reset = options.reset ?? false;
  if (typeof reset !== 'boolean') throw invalid('reset', 'boolean', reset);
  return native.opTimes(name, reset);
}
