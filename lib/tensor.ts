// tensor.ts: the public Tensor, an n-d array held in native memory on one device.
// Contract: shapes are public (4-D = NCHW like PyTorch; the core stores NHWC and the addon
// permutes at the edge, never JS); every input is validated here before native code sees
// it; dispose() frees the memory at once, and a FinalizationRegistry is only a safety net.
import { resolveDevice } from './device';
import { DisposedError } from './errors';
import { native, type DType, type Layout, type NativeTensor, type TypedArray } from './native';
import { ByolOptionError, invalid, isPlainObject, knownKeys, oneOf, withDefault } from './validate';

export type { DType, Layout, TypedArray };

// Node < 18.18 has no Symbol.dispose; this is TypeScript's recommended polyfill (a no-op
// where the runtime defines it), so that `using` and t[Symbol.dispose]() work everywhere.
(Symbol as { dispose?: symbol }).dispose ??= Symbol('Symbol.dispose');

// What Tensor.from accepts. Uint8ClampedArray (canvas ImageData) is taken as uint8: same
// bytes, and toArray gives a Uint8Array back. Node's Buffer is a Uint8Array.
export type TensorData = Float32Array | Int32Array | Uint8Array | Uint8ClampedArray;

export type ArrayFor<D extends DType> =
  D extends 'float32' ? Float32Array : D extends 'int32' ? Int32Array : D extends 'uint8' ? Uint8Array : TypedArray;

export interface FromOptions {
  // 'cpu' (default), 'cuda', 'cuda:N' or 'auto'.
  device?: string;
  // 'nchw' (default): data and shape are NCHW for 4-D. 'nhwc': 4-D data is NHWC and `shape`
  // is given as [N, H, W, C] (as image decoders produce); the tensor's shape is still NCHW.
  layout?: Layout;
}

export interface ZerosOptions<D extends DType = DType> {
  dtype?: D; // default 'float32'
  device?: string; // default 'cpu'
}

export interface ToArrayOptions {
  // 'nchw' (default): 4-D data in the public order. 'nhwc': the core's own order (4-D only),
  // which is also what pixel-interleaved image libraries expect.
  layout?: Layout;
}

export const MAX_DIMS = 8;

const INTERNAL = Symbol('byol.Tensor');
const DATA_EXPECTED = 'Float32Array, Int32Array or Uint8Array';

// Frees native memory of tensors collected without dispose(); holds the handle, not the Tensor.
const finalizer = new FinalizationRegistry<NativeTensor>((handle) => handle.dispose());

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

// Checks a public shape: an array of 1 to 8 non-negative safe integers whose product is a
// safe integer. Returns a copy. `name` is used in messages ("shape", "options.shape" ...).
export function validateShape(shape: unknown, name = 'shape'): number[] {
  if (!Array.isArray(shape)) throw invalid(name, `array of 1 to ${MAX_DIMS} non-negative integers`, shape);
  if (shape.length < 1 || shape.length > MAX_DIMS) {
    throw new ByolOptionError(
      `Expected 1 to ${MAX_DIMS} dimensions for ${name} but received ${shape.length} (${formatShape(shape)})`);
  }
  let size = 1;
  const copy: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    const dim: unknown = shape[i];
    if (typeof dim !== 'number' || !Number.isSafeInteger(dim) || dim < 0) {
      throw invalid(`${name}[${i}]`, 'non-negative integer', dim);
    }
    size *= dim;
    copy.push(dim);
  }
  if (!Number.isSafeInteger(size)) {
    throw new ByolOptionError(
      `Expected at most ${Number.MAX_SAFE_INTEGER} elements for ${name} but received ${formatShape(copy)}`);
  }
  return copy;
}

// The dtype of a data array, or a TypeError naming `data`. The tag test (not instanceof)
// also accepts arrays made in another realm (vm contexts, worker transfers).
function dtypeOfData(data: unknown): DType {
  const tag = Object.prototype.toString.call(data);
  if (tag === '[object Float32Array]') return 'float32';
  if (tag === '[object Int32Array]') return 'int32';
  if (tag === '[object Uint8Array]' || tag === '[object Uint8ClampedArray]') return 'uint8';
  if (Array.isArray(data)) {
    throw new ByolOptionError(`Expected ${DATA_EXPECTED} for data but received array of length ` +
      `${data.length} of type array; convert it first, e.g. new Float32Array(data)`);
  }
  const error = invalid('data', DATA_EXPECTED, data);
  if (ArrayBuffer.isView(data)) error.message += '; convert it first, e.g. Float32Array.from(data)';
  throw error;
}

function parseOptions(options: unknown, known: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (!isPlainObject(options)) throw invalid('options', 'object', options);
  knownKeys('', options, known);
  return options;
}

// Native errors have no JavaScript frames; give them the stack of the call that started
// the work, so that they point at user code.
function withCallSite(error: unknown, callSite: Error): unknown {
  if (error instanceof Error && callSite.stack) {
    const frames = callSite.stack.split('\n').slice(1).join('\n');
    error.stack = `${error.name}: ${error.message}\n${frames}`;
  }
  return error;
}

// Reads a tensor's private handle; set by the class's static block (module-internal access).
let handleOf: (tensor: Tensor) => NativeTensor | null;

export class Tensor<D extends DType = DType> implements Disposable {
  // Public shape: NCHW for 4-D. Frozen; typed mutable for easy passing to helpers.
  readonly shape: number[];
  readonly dtype: D;
  // 'cpu' or 'cuda:N'.
  readonly device: string;
  // Number of elements.
  readonly size: number;
  #handle: NativeTensor | null;

  /** @internal Use Tensor.from() or Tensor.zeros(). */
  constructor(token: symbol, handle: NativeTensor, shape: number[]) {
    if (token !== INTERNAL) {
      throw new TypeError('Tensor cannot be constructed with new; use Tensor.from() or Tensor.zeros()');
    }
    this.#handle = handle;
    this.shape = Object.freeze(shape.slice()) as number[];
    this.dtype = handle.dtype as D;
    this.device = handle.device;
    this.size = shape.reduce((a, b) => a * b, 1);
    finalizer.register(this, handle, this);
  }

  // Copies `data` into a new tensor. The dtype follows the array (Float32Array -> float32,
  // Int32Array -> int32, Uint8Array, Buffer or Uint8ClampedArray -> uint8); shape describes
  // the data (NCHW for 4-D unless options.layout is 'nhwc'), and its product must equal
  // data.length.
  static from(data: Float32Array, shape: readonly number[], options?: FromOptions): Tensor<'float32'>;
  static from(data: Int32Array, shape: readonly number[], options?: FromOptions): Tensor<'int32'>;
  static from(data: Uint8Array | Uint8ClampedArray, shape: readonly number[], options?: FromOptions): Tensor<'uint8'>;
  static from(data: TensorData, shape: readonly number[], options?: FromOptions): Tensor;
  static from(data: TensorData, shape: readonly number[], options?: FromOptions): Tensor {
    dtypeOfData(data);
    const dims = validateShape(shape);
    const opts = parseOptions(options, ['device', 'layout']);
    const layout = withDefault<Layout>(opts.layout, 'nchw', (v) => oneOf('layout', v, ['nchw', 'nhwc'] as const));
    if (layout === 'nhwc' && dims.length !== 4) {
      throw new ByolOptionError(`Expected a 4-D shape for layout 'nhwc' but received ${formatShape(dims)}`);
    }
    const size = dims.reduce((a, b) => a * b, 1);
    if (size !== data.length) {
      throw new ByolOptionError(
        `Expected data of length ${size} for shape ${formatShape(dims)} but received length ${data.length}`);
    }
    const device = resolveDevice(withDefault(opts.device, 'cpu', (v) => v), 'device');
    const handle = native.tensorFromData(data, dims, device, layout);
    const publicShape = layout === 'nhwc' ? [dims[0], dims[3], dims[1], dims[2]] : dims;
    return new Tensor(INTERNAL, handle, publicShape);
  }

  // A tensor of zeros; shape is public (NCHW for 4-D).
  static zeros<Z extends DType = 'float32'>(shape: readonly number[], options?: ZerosOptions<Z>): Tensor<Z> {
    const dims = validateShape(shape);
    const opts = parseOptions(options, ['dtype', 'device']);
    const dtype = withDefault<DType>(opts.dtype, 'float32', (v) => oneOf('dtype', v, ['float32', 'int32', 'uint8'] as const));
    const device = resolveDevice(withDefault(opts.device, 'cpu', (v) => v), 'device');
    return new Tensor(INTERNAL, native.tensorZeros(dims, dtype, device), dims) as Tensor<Z>;
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  // Reads the data back into a new TypedArray of the tensor's dtype (NCHW order for 4-D
  // unless options.layout is 'nhwc'). The copy (and permutation) runs off the main thread.
  // Rejects (never throws) on bad options or a disposed tensor.
  toArray(options?: ToArrayOptions): Promise<ArrayFor<D>> {
    const callSite = new Error();
    try {
      const handle = this.#live('toArray()');
      const opts = parseOptions(options, ['layout']);
      const layout = withDefault<Layout>(opts.layout, 'nchw', (v) => oneOf('layout', v, ['nchw', 'nhwc'] as const));
      if (layout === 'nhwc' && this.shape.length !== 4) {
        throw new ByolOptionError(
          `Expected a 4-D tensor for layout 'nhwc' but the tensor has shape ${formatShape(this.shape)}`);
      }
      return handle.toArray(layout).then(
        (array) => array as ArrayFor<D>,
        (error: unknown) => { throw withCallSite(error, callSite); });
    } catch (error) {
      return Promise.reject(error);
    }
  }

  // Frees the native memory now. Calling it again does nothing.
  dispose(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    finalizer.unregister(this);
    handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${formatShape(this.shape)}, ${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  #live(method: string): NativeTensor {
    if (this.#handle === null) throw new DisposedError(`Tensor was disposed: cannot call ${method} after dispose()`);
    return this.#handle;
  }

  static {
    handleOf = (tensor) => tensor.#handle;
  }
}

/** @internal For lib/ modules that pass tensors to native bindings: the live handle. Throws
 * ByolOptionError (a TypeError) naming the argument `name` when the value is not a Tensor,
 * DisposedError naming it when the tensor was disposed. */
export function unwrapTensor(tensor: unknown, name: string): NativeTensor {
  if (!(tensor instanceof Tensor)) throw invalid(name, 'Tensor', tensor);
  const handle = handleOf(tensor);
  if (handle === null) {
    throw new DisposedError(`Expected a live Tensor for ${name} but the tensor was disposed`);
  }
  return handle;
}

/** @internal Wraps a handle returned by a native binding; 4-D core shapes (NHWC) become
 * public NCHW shapes. */
export function wrapNativeTensor<D extends DType = DType>(handle: NativeTensor): Tensor<D> {
  const core = handle.shape;
  const shape = core.length === 4 ? [core[0], core[3], core[1], core[2]] : core;
  return new Tensor(INTERNAL, handle, shape) as Tensor<D>;
}
