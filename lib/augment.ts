// augment.ts: BYOL's image augmentations (BYOL.md "Augmentations"): typed configs, presets and
// augmentBatch(), which turns uint8 NHWC images into normalized float views on a device.
// Contract: every option is validated here (lib/validate.ts messages) before native code sees
// it; parameters are drawn natively from Philox keyed by (seed, epoch, sample index, view), so
// the same key gives the same view on every device and thread count, and runs replay.
import { resolveDevice } from './device';
import { native, type NativeTensor } from './native';
import { Tensor, unwrapTensor, wrapNativeTensor } from './tensor';
import {
  ByolOptionError, integer, invalid, isPlainObject, knownKeys, number, numberRange, oneOf, withDefault,
} from './validate';

export type Interpolation = 'bilinear' | 'bicubic';
export type AugmentPreset = 'byol' | 'cifar' | 'grayscale';
export type JitterOp = 'brightness' | 'contrast' | 'saturation' | 'hue';

// Every distribution the per-sample parameters are drawn from (a resolved config).
export interface AugmentConfig {
  // Output [height, width] of the random resized crop.
  outputSize: [number, number];
  interpolation: Interpolation;
  // Crop area fraction ~ U[cropScale] and aspect ~ exp(U[log cropRatio]) (torchvision's
  // RandomResizedCrop: 10 attempts, then a center crop).
  cropScale: [number, number];
  cropRatio: [number, number];
  flipP: number;
  // Color jitter with probability jitterP: brightness delta ~ U[-b, b] (additive), contrast
  // and saturation factors ~ U[max(0, 1 - s), 1 + s], hue shift ~ U[-h, h] turns, applied
  // in a random order with a clamp to [0, 1] after each.
  jitterP: number;
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  grayscaleP: number;
  // Gaussian blur: taps per axis 2*floor(floor(side*blurKernelFraction)/2)+1, sigma ~ U[blurSigma].
  blurP: number;
  blurSigma: [number, number];
  blurKernelFraction: number;
  solarizeP: number;
  // Per-channel normalization after augmentation: one entry per image channel (1 or 3).
  mean: number[];
  std: number[];
}

// What augmentConfig() accepts: a preset and view, then any field overridden.
export interface AugmentConfigOptions extends Partial<Omit<AugmentConfig, 'outputSize'>> {
  preset?: AugmentPreset; // default 'byol'
  view?: 1 | 2; // 1 = T, 2 = T' of BYOL.md; default 1
  outputSize?: number | [number, number]; // default: 224 (byol), 32 (cifar), 28 (grayscale)
}

const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

// The presets of byol/augment.h, value for value (the native presets and these must draw the
// same parameters; test/augment.test.mjs checks it against the Python reference).
function presetConfig(preset: AugmentPreset, view: 1 | 2): AugmentConfig {
  const byol: AugmentConfig = {
    outputSize: [224, 224], interpolation: 'bicubic', cropScale: [0.08, 1], cropRatio: [3 / 4, 4 / 3],
    flipP: 0.5, jitterP: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, grayscaleP: 0.2,
    blurP: view === 1 ? 1.0 : 0.1, blurSigma: [0.1, 2.0], blurKernelFraction: 0.1,
    solarizeP: view === 1 ? 0.0 : 0.2, mean: IMAGENET_MEAN.slice(), std: IMAGENET_STD.slice(),
  };
  if (preset === 'cifar') {
    // Small-image practice: no blur; CIFAR-10 statistics.
    return { ...byol, outputSize: [32, 32], blurP: 0, mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] };
  }
  if (preset === 'grayscale') {
    // One channel (Fashion-MNIST): saturation, hue and grayscale are no-ops; no blur at 28x28.
    return { ...byol, outputSize: [28, 28], blurP: 0, saturation: 0, hue: 0, grayscaleP: 0, mean: [0.2860], std: [0.3530] };
  }
  return byol;
}

const CONFIG_KEYS = ['preset', 'view', 'outputSize', 'interpolation', 'cropScale', 'cropRatio', 'flipP', 'jitterP',
  'brightness', 'contrast', 'saturation', 'hue', 'grayscaleP', 'blurP', 'blurSigma', 'blurKernelFraction',
  'solarizeP', 'mean', 'std'] as const;

function outputSize(name: string, value: unknown): [number, number] {
  if (typeof value === 'number') {
    const side = integer(name, value, 1, 16384);
    return [side, side];
  }
  if (!Array.isArray(value) || value.length !== 2) {
    throw invalid(name, 'integer between 1 and 16384 or [height, width] of such integers', value);
  }
  return [integer(`${name}[0]`, value[0], 1, 16384), integer(`${name}[1]`, value[1], 1, 16384)];
}

function channelStats(name: string, value: unknown, positive: boolean): number[] {
  const expected = `array of 1 or 3 finite numbers${positive ? ' > 0' : ''}`;
  if (!Array.isArray(value) || (value.length !== 1 && value.length !== 3)) throw invalid(name, expected, value);
  return value.map((v: unknown, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || (positive && v <= 0)) {
      throw invalid(`${name}[${i}]`, `finite number${positive ? ' > 0' : ''}`, v);
    }
    return v;
  });
}

// Resolves a preset plus overrides into a complete, validated config. `name` prefixes messages.
export function augmentConfig(options: AugmentConfigOptions = {}, name = 'config'): AugmentConfig {
  if (!isPlainObject(options)) throw invalid(name, 'object', options);
  knownKeys(name, options, CONFIG_KEYS);
  const o = options as Record<string, unknown>;
  const at = (key: string) => `${name}.${key}`;
  const preset = withDefault<AugmentPreset>(o.preset, 'byol', (v) => oneOf(at('preset'), v, ['byol', 'cifar', 'grayscale'] as const));
  const view = withDefault<1 | 2>(o.view, 1, (v) => integer(at('view'), v, 1, 2) as 1 | 2);
  const c = presetConfig(preset, view);
  const probability = (key: keyof AugmentConfig) => withDefault(o[key], c[key] as number, (v) => number(at(key), v, 0, 1));
  const config: AugmentConfig = {
    outputSize: withDefault(o.outputSize, c.outputSize, (v) => outputSize(at('outputSize'), v)),
    interpolation: withDefault(o.interpolation, c.interpolation, (v) => oneOf(at('interpolation'), v, ['bilinear', 'bicubic'] as const)),
    cropScale: withDefault(o.cropScale, c.cropScale, (v) => numberRange(at('cropScale'), v, 0, 1, true)),
    cropRatio: withDefault(o.cropRatio, c.cropRatio, (v) => numberRange(at('cropRatio'), v, 0.001, 1000)),
    flipP: probability('flipP'),
    jitterP: probability('jitterP'),
    brightness: withDefault(o.brightness, c.brightness, (v) => number(at('brightness'), v, 0, 1)),
    contrast: withDefault(o.contrast, c.contrast, (v) => number(at('contrast'), v, 0, 10)),
    saturation: withDefault(o.saturation, c.saturation, (v) => number(at('saturation'), v, 0, 10)),
    hue: withDefault(o.hue, c.hue, (v) => number(at('hue'), v, 0, 0.5)),
    grayscaleP: probability('grayscaleP'),
    blurP: probability('blurP'),
    blurSigma: withDefault(o.blurSigma, c.blurSigma, (v) => numberRange(at('blurSigma'), v, 0.001, 1000)),
    blurKernelFraction: withDefault(o.blurKernelFraction, c.blurKernelFraction, (v) => number(at('blurKernelFraction'), v, 0, 1)),
    solarizeP: probability('solarizeP'),
    mean: withDefault(o.mean, c.mean, (v) => channelStats(at('mean'), v, false)),
    std: withDefault(o.std, c.std, (v) => channelStats(at('std'), v, true)),
  };
  if (config.mean.length !== config.std.length) {
    throw new ByolOptionError(`Expected ${at('mean')} and ${at('std')} of the same length but received ` +
      `${config.mean.length} and ${config.std.length}`);
  }
  return config;
}

// The two BYOL views (T, T') of a preset, with the same overrides applied to both.
export function augmentPair(options: Omit<AugmentConfigOptions, 'view'> = {}): [AugmentConfig, AugmentConfig] {
  if (isPlainObject(options) && 'view' in options) {
    throw new ByolOptionError('augmentPair() makes both views; remove the view option');
  }
  return [augmentConfig({ ...options, view: 1 }), augmentConfig({ ...options, view: 2 })];
}

// An already-resolved config passes through unchanged but re-validated (it may come from JSON).
function resolveConfig(value: unknown, name: string): AugmentConfig {
  if (!isPlainObject(value)) throw invalid(name, 'object (an AugmentConfig or AugmentConfigOptions)', value);
  return augmentConfig(value as AugmentConfigOptions, name);
}

export interface AugmentBatchOptions {
  config: AugmentConfig | AugmentConfigOptions;
  // Key of the parameter draws: (seed, epoch, indices[i], view).
  seed: number | bigint;
  epoch: number;
  // Dataset index of each image (not its position in the batch): a sample gets the same view
  // for a given seed, epoch and view whichever batch it lands in.
  indices: Int32Array | readonly number[];
  view: number;
  device?: string; // default 'cpu'
  // [N, H, W, C] of a Uint8Array of NHWC pixels; omitted for a Tensor.
  shape?: readonly number[];
}

export interface AugmentedBatch {
  // float32, public shape [N, C, outH, outW] (NHWC in the core), normalized; dispose() it.
  images: Tensor<'float32'>;
  labels?: Int32Array;
  indices: Int32Array;
}

const MAX_INDEX = 0xFFFFFFFF;

function seedValue(name: string, value: unknown): number | bigint {
  if (typeof value === 'bigint') {
    if (value < 0n || value > 0xFFFFFFFFFFFFFFFFn) throw invalid(name, 'integer between 0 and 2^64 - 1', value);
    return value;
  }
  return integer(name, value, 0, Number.MAX_SAFE_INTEGER);
}

function indexArray(name: string, value: unknown, n: number): Int32Array | number[] {
  if (value instanceof Int32Array) {
    for (let i = 0; i < value.length; i++) if (value[i] < 0) throw invalid(`${name}[${i}]`, 'integer >= 0', value[i]);
  } else if (Array.isArray(value)) {
    value.forEach((v: unknown, i) => integer(`${name}[${i}]`, v, 0, MAX_INDEX));
  } else {
    throw invalid(name, 'Int32Array or array of integers', value);
  }
  if (value.length !== n) {
    throw new ByolOptionError(`Expected ${name} to hold ${n} entries (one per image) but received ${value.length}`);
  }
  return value;
}

// Native errors carry no JavaScript frames; point them at the caller.
function withCallSite(error: unknown, callSite: Error): unknown {
  if (error instanceof Error && callSite.stack) {
    error.stack = `${error.name}: ${error.message}\n${callSite.stack.split('\n').slice(1).join('\n')}`;
  }
  return error;
}

// The addon's augmentation bindings (native/addon/augment.cc). Declared here until
// lib/native.ts's NativeBinding lists them.
interface AugmentBinding {
  augment(images: Uint8Array | NativeTensor, shape: number[] | null, config: AugmentConfig, seed: number | bigint,
    epoch: number, indices: Int32Array | readonly number[], view: number, device: string): Promise<NativeTensor>;
  drawAugmentParams(config: AugmentConfig, seed: number | bigint, epoch: number, indices: Int32Array | readonly number[],
    view: number, height: number, width: number): AugmentParams[];
}
function augmentBinding(): AugmentBinding {
  const binding = native as unknown as AugmentBinding;
  if (typeof binding.augment !== 'function' || typeof binding.drawAugmentParams !== 'function') {
    // A byol.node from before the augmentation bindings, or one built without them.
    throw new Error('byol: this build of byol.node has no augmentation bindings (augment, drawAugmentParams); ' +
      'rebuild it: `npm rebuild byol` (in a checkout: `npm run build:native`)');
  }
  return binding;
}

// Augments a batch: images is a Uint8Array of NHWC pixels (with options.shape) or a uint8
// Tensor [N, C, H, W]. Labels, when given, pass through (Int32Array, one per image). Rejects
// (never throws) on bad options, with the option named.
export function augmentBatch(images: Uint8Array | Tensor<'uint8'>, labels: Int32Array | null | undefined,
  options: AugmentBatchOptions): Promise<AugmentedBatch> {
  const callSite = new Error();
  try {
    if (!isPlainObject(options)) throw invalid('options', 'object', options);
    knownKeys('options', options as unknown as Record<string, unknown>,
      ['config', 'seed', 'epoch', 'indices', 'view', 'device', 'shape']);
    let source: Uint8Array | NativeTensor;
    let shape: number[];
    if (images instanceof Tensor) {
      if (images.dtype !== 'uint8' || images.shape.length !== 4) {
        throw invalid('images', 'uint8 Tensor of shape [N, C, H, W]', `${images}`);
      }
      if (options.shape !== undefined) throw new ByolOptionError('options.shape is only for Uint8Array images; a Tensor has its own shape');
      const [n, c, h, w] = images.shape;
      shape = [n, h, w, c];
      source = unwrapTensor(images, 'images');
    } else if (images instanceof Uint8Array) {
      if (!Array.isArray(options.shape) || options.shape.length !== 4) {
        throw invalid('options.shape', '[N, H, W, C] for Uint8Array images', options.shape);
      }
      shape = [integer('options.shape[0]', options.shape[0], 0, 2 ** 31 - 1),
        integer('options.shape[1]', options.shape[1], 1, 2 ** 31 - 1),
        integer('options.shape[2]', options.shape[2], 1, 2 ** 31 - 1),
        options.shape[3] as number];
      if (shape[3] !== 1 && shape[3] !== 3) throw invalid('options.shape[3]', 'channels 1 or 3', options.shape[3]);
      const bytes = shape[0] * shape[1] * shape[2] * shape[3];
      if (images.length !== bytes) {
        throw new ByolOptionError(`Expected images to hold N*H*W*C = ${bytes} bytes for options.shape ` +
          `[${shape.join(', ')}] but received ${images.length}`);
      }
      source = images;
    } else {
      throw invalid('images', 'Uint8Array (NHWC) or uint8 Tensor', images);
    }
    const [n, , , channels] = shape;
    if (channels !== 1 && channels !== 3) throw invalid('images', 'a Tensor with 1 or 3 channels', `${images}`);
    const config = resolveConfig(options.config, 'options.config');
    if (config.mean.length !== channels) {
      throw new ByolOptionError(`Expected options.config.mean and std with ${channels} entries (one per image ` +
        `channel) but received ${config.mean.length}; use preset 'grayscale' for 1-channel images`);
    }
    const seed = seedValue('options.seed', options.seed);
    const epoch = integer('options.epoch', options.epoch, 0, MAX_INDEX);
    const indices = indexArray('options.indices', options.indices, n);
    const view = integer('options.view', options.view, 0, 65535);
    const device = resolveDevice(withDefault(options.device, 'cpu', (v) => v), 'options.device');
    if (labels !== undefined && labels !== null) {
      if (!(labels instanceof Int32Array)) throw invalid('labels', 'Int32Array', labels);
      if (labels.length !== n) {
        throw new ByolOptionError(`Expected labels to hold ${n} entries (one per image) but received ${labels.length}`);
      }
    }
    const indexCopy = Int32Array.from(indices as ArrayLike<number>);
    return augmentBinding().augment(source, source instanceof Uint8Array ? shape : null, config, seed, epoch, indices, view, device)
      .then((handle) => {
        const result: AugmentedBatch = { images: wrapNativeTensor<'float32'>(handle), indices: indexCopy };
        if (labels) result.labels = labels;
        return result;
      }, (error: unknown) => { throw withCallSite(error, callSite); });
  } catch (error) {
    return Promise.reject(withCallSite(error, callSite));
  }
}

// One sample's drawn parameters (what augmentBatch applies), for inspection and tests.
export interface AugmentParams {
  crop: [number, number, number, number]; // x0, y0, width, height in source pixels
  flip: boolean;
  jitter: boolean;
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  jitterOrder: JitterOp[];
  grayscale: boolean;
  blur: boolean;
  blurSigma: number;
  blurSize: [number, number];
  solarize: boolean;
}

export interface DrawOptions {
  config: AugmentConfig | AugmentConfigOptions;
  seed: number | bigint;
  epoch: number;
  indices: Int32Array | readonly number[];
  view: number;
  height: number; // source image size
  width: number;
}

// The parameters augmentBatch would draw for each index; synchronous, cheap.
export function drawAugmentParams(options: DrawOptions): AugmentParams[] {
  if (!isPlainObject(options)) throw invalid('options', 'object', options);
  knownKeys('options', options as unknown as Record<string, unknown>,
    ['config', 'seed', 'epoch', 'indices', 'view', 'height', 'width']);
  const config = resolveConfig(options.config, 'options.config');
  const indices = options.indices;
  const n = indices instanceof Int32Array || Array.isArray(indices) ? indices.length : 0;
  return augmentBinding().drawAugmentParams(config, seedValue('options.seed', options.seed),
    integer('options.epoch', options.epoch, 0, MAX_INDEX), indexArray('options.indices', indices, n),
    integer('options.view', options.view, 0, 65535), integer('options.height', options.height, 1, 1 << 20),
    integer('options.width', options.width, 1, 1 << 20));
}

// For loader.ts: validates a list of view configs (1 to 8).
export function resolveViews(value: unknown, name: string): AugmentConfig[] {
  if (!Array.isArray(value) || value.length < 1 || value.length > 8) {
    throw invalid(name, 'array of 1 to 8 augmentation configs (e.g. augmentPair())', value);
  }
  return value.map((v, i) => resolveConfig(v, `${name}[${i}]`));
}
