// options.ts: the Trainer's options, their defaults (BYOL.md) and their validation.
// Contract: resolveTrainConfig() checks every option where the user passed it (lib/validate.ts
// messages naming the option path, e.g. "optimizer.lr"), rejects unknown keys, merges
// defaults < preset < options, and returns a JSON-serializable TrainConfig (stored in
// state.json, so a resumed run uses exactly the same settings). Nothing here touches data,
// files or native code.
import { type AugmentConfigOptions, augmentPair } from '../augment';
import type { Arch, OptimizerName, PredictorOptions, ProjectorOptions, Stem } from '../byol';
import { type DatasetLike, isStreaming } from '../data/dataset';
import { CONV_PRECISIONS, type ConvPrecision } from '../device';
import {
  ByolOptionError, boolean, integer, invalid, isPlainObject, knownKeys, number, oneOf, string, withDefault,
} from '../validate';
import { PRESET_NAMES, type PresetName, presetOptions } from './presets';

export const ARCHS = ['resnet18', 'resnet34', 'resnet50'] as const;
export const STEMS = ['cifar', 'imagenet'] as const;
export const OPTIMIZERS = ['lars', 'sgd', 'adamw'] as const;
export const DATASET_KINDS = ['fashion-mnist', 'mnist', 'cifar10', 'cifar100', 'stl10', 'folder', 'synthetic'] as const;
export const PROGRESS_MODES = ['auto', 'bar', 'lines', 'none'] as const;

export type { Arch, OptimizerName, PredictorOptions, ProjectorOptions, Stem };
export type DatasetKind = (typeof DATASET_KINDS)[number];
export type ProgressMode = (typeof PROGRESS_MODES)[number];

// Where the training images come from. Evaluation uses the same spec with the test split.
export interface DataOptions {
  kind: DatasetKind;
  // Folder of the files; default for fashion-mnist: /usr/share/datasets/fashion-mnist
  // (Debian's dataset-fashion-mnist). Not used by 'synthetic'. For 'folder': root/<class>/<image>
  // for training; evaluation reads root/train and root/test when those exist.
  path?: string;
  // Use only the first `limit` training samples (quick runs); for 'synthetic', the number of
  // training samples (default 1024).
  limit?: number;
  // 'synthetic' and 'folder': image side (synthetic default 32; folder default: the images' own).
  size?: number;
  // 'synthetic' and 'folder': 1 or 3 (default 3).
  channels?: 1 | 3;
  // 'synthetic': number of classes (default 10).
  classes?: number;
  // 'synthetic': test-split samples (default 256).
  testLimit?: number;
  // 'stl10': pretrain on the 5000 labeled training images and the 100000 unlabeled ones
  // (the usual STL-10 protocol; 2.9 GB in memory); probes and the kNN monitor fit on the
  // labeled ones. Default false.
  unlabeled?: boolean;
  // 'folder': decode each batch's images when it is needed (openImageFolder) instead of
  // holding every decoded image in memory; same pixels, same results. Default false.
  stream?: boolean;
}

// The encoder as the trainer takes it: inChannels comes from the data.
export interface TrainerEncoderOptions {
  arch?: Arch; // default 'resnet18'
  // default: 'cifar' for images up to 64 pixels a side, else 'imagenet'
  stem?: Stem;
  // Stage widths 64w, 128w, 256w, 512w; 64w must be an integer (default 1).
  width?: number;
}

// Optimizer and learning-rate schedule of a run.
export interface TrainerOptimizerOptions {
  name?: OptimizerName; // default 'lars'
  // Base learning rate; the rate used is lr * batchSize / 256 (BYOL.md). Default 0.2.
  lr?: number;
  weightDecay?: number; // default 1.5e-6
  momentum?: number; // lars, sgd; default 0.9
  trustCoefficient?: number; // lars eta; default 1e-3
  // lars: 'reference' (BYOL's implementation) or 'solo-learn' (BYOL.md "LARS").
  variant?: 'reference' | 'solo-learn';
  // Linear warmup length: give at most one. Default: 10 epochs, capped at 10% of the run.
  warmupEpochs?: number;
  warmupSteps?: number;
}

// A window of steps startStep .. stopStep - 1 (numbered as in log.jsonl: the first step is 1).
// As `profile`, the profiler capture window (nsys profile --capture-range=cudaProfilerApi): the
// profiler starts before step startStep and stops after step stopStep - 1; CUDA only, on the
// CPU the trainer says so once and trains as usual. As `opTimes`, the steps whose ops are timed.
export interface ProfileOptions {
  startStep: number;
  stopStep: number;
}

// The kNN monitor of many reproductions (BYOL.md "Evaluation"): every `every` steps (and after
// the last), the encoder (BatchNorm in eval mode) embeds the first `bankSize` training images
// and the first `testSize` test images, and a cosine kNN (k, temperature) of the test features
// against the bank is scored. Logged as 'knn-monitor' events and printed; it changes nothing
// the training computes (so it may be added or changed when resuming).
export interface KnnMonitorOptions {
  every: number;
  k?: number; // default 200 (capped at bankSize)
  temperature?: number; // default 0.1
  bankSize?: number; // default 10000
  testSize?: number; // default 10000
}

export interface FaultInjection {
  // Test hook: report a NaN loss for this (1-based) step, as a diverged run would.
  nanAtStep?: number;
}

export interface TrainerOptions {
  // Defaults for a known setup; any option given here overrides the preset's.
  preset?: PresetName;
  // A dataset spec (JSON-able, resumable from the CLI) or a Dataset object (in memory or streaming).
  data?: DataOptions | DatasetLike;
  encoder?: TrainerEncoderOptions;
  projector?: ProjectorOptions;
  // false: the no-predictor ablation.
  predictor?: PredictorOptions | false;
  batchSize?: number; // default 256
  // Length of the run: give at most one. Default 100 epochs.
  epochs?: number;
  steps?: number;
  optimizer?: TrainerOptimizerOptions;
  tauBase?: number; // default 0.996
  // Augmentation preset and overrides (lib/augment.ts), both views. Default preset:
  // 'grayscale' for 1-channel data, 'cifar' up to 64 pixels a side, else 'byol';
  // outputSize defaults to the dataset's image size.
  augment?: Omit<AugmentConfigOptions, 'view'>;
  device?: string; // 'cpu', 'cuda', 'cuda:N' or 'auto' (default)
  seed?: number; // model init, shuffling and augmentation; default 0
  threads?: number; // CPU threads (default: all cores or OMP_NUM_THREADS)
  // CPU convolution precision, 'fp32' (default), 'bf16' or 'auto' (lib/device.ts
  // ConvPrecision); 'bf16' on a CUDA device is refused.
  convPrecision?: ConvPrecision;
  // CUDA: replay each step as a CUDA graph after two eager warm-up steps (default true).
  // false runs every step eagerly (same results; a profile then shows every layer's range).
  // No effect on the CPU, which always runs eagerly.
  cudaGraphs?: boolean;
  // The online linear classifier of the reference implementation (BYOL.md "Evaluation"): a
  // linear head on stop_gradient(y) of view 1 trained on the labels in each step (it changes
  // nothing in the BYOL update). Its loss and top-1 on the training batches go to log.jsonl
  // (classifierLoss, top1) and the progress line; `byol eval` scores it on the test split.
  // Default: on when the training data has labels (and at least 2 classes).
  onlineClassifier?: boolean;
  // Run directory (log.jsonl, checkpoint.safetensors, state.json ...). Default runs/<time>.
  out?: string;
  // Checkpoint every N steps (0: only at the end). Default: once per epoch.
  checkpointEvery?: number;
  // Plain progress lines every N steps (0: time-based, about every 10 s). Default 0.
  printEvery?: number;
  // 'auto' (default): a bar on a TTY, lines otherwise. 'none' for library use.
  progress?: ProgressMode;
  // Continue the run in this directory (its state.json gives every other setting).
  resume?: string;
  // Aborting finishes the current step, writes a checkpoint and resolves run().
  signal?: AbortSignal;
  // Capture steps startStep .. stopStep - 1 under nsys (CUDA). Default: the environment
  // variable BYOL_PROFILE_STEPS ('A:B', as --profile-steps), else no window.
  profile?: ProfileOptions;
  // Time every op of steps startStep .. stopStep - 1 (lib/device.ts setOpTiming, any device):
  // the log gets an 'op-times' record and the longest rows are printed. CUDA runs those
  // steps eagerly. Default: none.
  opTimes?: ProfileOptions;
  knnMonitor?: KnnMonitorOptions;
  faultInjection?: FaultInjection;
}

// The resolved, serializable settings of a run (state.json "config").
export interface TrainConfig {
  preset: PresetName | null;
  // For an in-memory Dataset: { kind: 'memory', name }.
  data: DataOptions | { kind: 'memory'; name: string };
  encoder: { arch: Arch; stem: Stem | null; width: number };
  projector: { hidden: number; out: number };
  predictor: { hidden: number } | false;
  batchSize: number;
  epochs: number | null;
  steps: number | null;
  optimizer: { name: OptimizerName; lr: number; weightDecay: number; momentum: number; trustCoefficient: number;
    variant: 'reference' | 'solo-learn'; warmupEpochs: number | null; warmupSteps: number | null };
  tauBase: number;
  augment: Omit<AugmentConfigOptions, 'view'>;
  device: string;
  seed: number;
  threads: number | null;
  convPrecision: ConvPrecision;
  cudaGraphs: boolean;
  onlineClassifier: boolean | null; // null: on when the data has labels
  out: string;
  checkpointEvery: number | null;
  printEvery: number;
  progress: ProgressMode;
  knnMonitor: Required<KnnMonitorOptions> | null;
}

export const FASHION_MNIST_PATH = '/usr/share/datasets/fashion-mnist';

const TOP_KEYS = ['preset', 'data', 'encoder', 'projector', 'predictor', 'batchSize', 'epochs', 'steps', 'optimizer',
  'tauBase', 'augment', 'device', 'seed', 'threads', 'convPrecision', 'cudaGraphs', 'onlineClassifier', 'out',
  'checkpointEvery',
  'printEvery', 'progress', 'resume', 'signal', 'profile', 'opTimes', 'knnMonitor', 'faultInjection'] as const;
const DATA_KEYS = ['kind', 'path', 'limit', 'size', 'channels', 'classes', 'testLimit', 'stream', 'unlabeled'] as const;
const ENCODER_KEYS = ['arch', 'stem', 'width'] as const;
const PROJECTOR_KEYS = ['hidden', 'out'] as const;
const PREDICTOR_KEYS = ['hidden'] as const;
const OPTIMIZER_KEYS = ['name', 'lr', 'weightDecay', 'momentum', 'trustCoefficient', 'variant', 'warmupEpochs',
  'warmupSteps'] as const;
// Settings that may change when a run is resumed: they do not change what is computed.
export const RESUME_OVERRIDABLE = ['resume', 'device', 'threads', 'cudaGraphs', 'printEvery', 'progress', 'signal',
  'profile', 'opTimes', 'knnMonitor', 'faultInjection', 'data'] as const;

const MAX_STEPS = 2 ** 40;

// A dataset object (lib/data Dataset or StreamingDataset) rather than a spec.
export function isDatasetObject(value: unknown): value is DatasetLike {
  if (typeof value !== 'object' || value === null) return false;
  const d = value as DatasetLike;
  return d.images instanceof Uint8Array || isStreaming(d);
}

function section(name: string, value: unknown, keys: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) throw invalid(name, 'object', value);
  knownKeys(name, value, keys);
  return value;
}

// Deep merge of plain objects (arrays and other values replace); `over` wins.
export function mergeOptions<T>(base: T, over: unknown): T {
  if (!isPlainObject(base) || !isPlainObject(over)) return (over === undefined ? base : over) as T;
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    out[key] = isPlainObject(out[key]) && isPlainObject(value) ? mergeOptions(out[key], value) : value;
  }
  return out as T;
}

function resolveData(value: unknown): TrainConfig['data'] {
  if (value === undefined) {
    throw new ByolOptionError("Missing option data: give a dataset, e.g. { kind: 'fashion-mnist' } (--data fashion-mnist)");
  }
  if (isDatasetObject(value)) return { kind: 'memory', name: String(value.name ?? 'dataset') };
  const d = section('data', value, DATA_KEYS);
  const kind = oneOf('data.kind', d.kind, DATASET_KINDS);
  const out: DataOptions = { kind };
  if (kind === 'synthetic') {
    if (d.path !== undefined) throw new ByolOptionError("Option data.path does not apply to data.kind 'synthetic'");
  } else if (d.path !== undefined) {
    out.path = string('data.path', d.path);
  } else if (kind === 'fashion-mnist') {
    out.path = FASHION_MNIST_PATH;
  } else {
    throw new ByolOptionError(`Missing option data.path: data.kind '${kind}' needs the folder of its files (--data-path)`);
  }
  if (d.limit !== undefined) out.limit = integer('data.limit', d.limit, 1, 2 ** 31 - 1);
  const onlyFor = (key: string, kinds: string[]) => {
    if (d[key] !== undefined && !kinds.includes(kind)) {
      throw new ByolOptionError(`Option data.${key} applies to data.kind ${kinds.map((k) => `'${k}'`).join(' or ')}, ` +
        `not '${kind}'`);
    }
  };
  onlyFor('size', ['synthetic', 'folder']);
  onlyFor('channels', ['synthetic', 'folder']);
  onlyFor('classes', ['synthetic']);
  onlyFor('testLimit', ['synthetic']);
  onlyFor('stream', ['folder']);
  onlyFor('unlabeled', ['stl10']);
  if (d.size !== undefined) out.size = integer('data.size', d.size, 1, 16384);
  if (d.channels !== undefined) {
    if (d.channels !== 1 && d.channels !== 3) throw invalid('data.channels', '1 or 3', d.channels);
    out.channels = d.channels;
  }
  if (d.classes !== undefined) out.classes = integer('data.classes', d.classes, 1, 1000);
  if (d.testLimit !== undefined) out.testLimit = integer('data.testLimit', d.testLimit, 1, 2 ** 31 - 1);
  if (d.stream !== undefined) out.stream = boolean('data.stream', d.stream);
  if (d.unlabeled !== undefined) out.unlabeled = boolean('data.unlabeled', d.unlabeled);
  return out;
}

// Checks a profile window ({ startStep, stopStep }, start < stop); `name` is the option
// path messages use ('profile').
export function resolveProfile(name: string, value: unknown): ProfileOptions {
  const p = section(name, value, ['startStep', 'stopStep']);
  const startStep = integer(`${name}.startStep`, p.startStep, 1, MAX_STEPS);
  const stopStep = integer(`${name}.stopStep`, p.stopStep, 1, MAX_STEPS + 1);
  if (stopStep <= startStep) {
    throw invalid(`${name}.stopStep`, `integer greater than ${name}.startStep (${startStep}); the window captures ` +
      'steps startStep .. stopStep - 1', stopStep);
  }
  return { startStep, stopStep };
}

// 'A:B' (the --profile-steps flag, BYOL_PROFILE_STEPS) -> { startStep: A, stopStep: B }.
// `name` is where the text came from, for the message.
export function parseProfileSteps(name: string, text: string): ProfileOptions {
  const match = /^\s*(\d{1,15})\s*:\s*(\d{1,15})\s*$/.exec(text);
  const startStep = match ? Number(match[1]) : Number.NaN;
  const stopStep = match ? Number(match[2]) : Number.NaN;
  if (!(startStep >= 1 && stopStep > startStep && stopStep <= MAX_STEPS + 1)) {
    throw invalid(name, "steps 'A:B' with 1 <= A < B (steps A .. B - 1; the first step is 1), e.g. '10:15'",
      text);
  }
  return { startStep, stopStep };
}

function optionalCount(name: string, value: unknown, max = MAX_STEPS): number | null {
  return value === undefined || value === null ? null : integer(name, value, 0, max);
}

// Checks options (the public entry of validation) and returns the resolved configuration.
// `options.resume` is not handled here (see resumeConfig in checkpoint.ts).
export function resolveTrainConfig(options: TrainerOptions): TrainConfig {
  if (!isPlainObject(options)) throw invalid('options', 'object', options);
  knownKeys('', options, TOP_KEYS);
  const presetName = options.preset === undefined ? null : oneOf('preset', options.preset, PRESET_NAMES);
  const o = (presetName ? mergeOptions(presetOptions(presetName), options) : options) as Record<string, unknown>;

  const data = resolveData(o.data);
  const e = section('encoder', o.encoder, ENCODER_KEYS);
  const encoder = {
    arch: withDefault<Arch>(e.arch, 'resnet18', (v) => oneOf('encoder.arch', v, ARCHS)),
    stem: withDefault<Stem | null>(e.stem, null, (v) => oneOf('encoder.stem', v, STEMS)),
    width: withDefault(e.width, 1, (v) => number('encoder.width', v, 1 / 64, 16)),
  };
  if (!Number.isInteger(Math.round(encoder.width * 64 * 1e6) / 1e6)) {
    throw invalid('encoder.width', 'number w with 64*w a whole number (0.125, 0.25, 0.5, 1, 2 ...)', encoder.width);
  }
  const p = section('projector', o.projector, PROJECTOR_KEYS);
  const projector = {
    hidden: withDefault(p.hidden, 4096, (v) => integer('projector.hidden', v, 1, 1 << 16)),
    out: withDefault(p.out, 256, (v) => integer('projector.out', v, 1, 1 << 16)),
  };
  let predictor: TrainConfig['predictor'];
  if (o.predictor === false) {
    predictor = false;
  } else {
    const q = section('predictor', o.predictor, PREDICTOR_KEYS);
    predictor = { hidden: withDefault(q.hidden, 4096, (v) => integer('predictor.hidden', v, 1, 1 << 16)) };
  }
  const batchSize = withDefault(o.batchSize, 256, (v) => integer('batchSize', v, 2, 1 << 16));
  // An explicit epochs or steps beats a preset's other one; both explicit is an error.
  const explicitEpochs = options.epochs !== undefined;
  const explicitSteps = options.steps !== undefined;
  if (explicitEpochs && explicitSteps) {
    throw new ByolOptionError(`Options epochs and steps both set (${String(options.epochs)} and ${String(options.steps)}); give one of them`);
  }
  let epochs: number | null = null;
  let steps: number | null = null;
  if (explicitSteps || (!explicitEpochs && o.steps !== undefined)) steps = integer('steps', o.steps, 1, MAX_STEPS);
  else epochs = withDefault(o.epochs, 100, (v) => integer('epochs', v, 1, 1 << 20));

  const q = section('optimizer', o.optimizer, OPTIMIZER_KEYS);
  const optimizer = {
    name: withDefault<OptimizerName>(q.name, 'lars', (v) => oneOf('optimizer.name', v, OPTIMIZERS)),
    lr: withDefault(q.lr, 0.2, (v) => number('optimizer.lr', v, 0, 1e6)),
    weightDecay: withDefault(q.weightDecay, 1.5e-6, (v) => number('optimizer.weightDecay', v, 0, 10)),
    momentum: withDefault(q.momentum, 0.9, (v) => number('optimizer.momentum', v, 0, 0.9999)),
    trustCoefficient: withDefault(q.trustCoefficient, 1e-3, (v) => number('optimizer.trustCoefficient', v, 0, 1000)),
    variant: withDefault<'reference' | 'solo-learn'>(q.variant, 'reference',
      (v) => oneOf('optimizer.variant', v, ['reference', 'solo-learn'] as const)),
    warmupEpochs: q.warmupEpochs === undefined ? null : number('optimizer.warmupEpochs', q.warmupEpochs, 0, 1 << 20),
    warmupSteps: optionalCount('optimizer.warmupSteps', q.warmupSteps),
  };
  if (optimizer.warmupEpochs !== null && optimizer.warmupSteps !== null) {
    const explicit = isPlainObject(options.optimizer) ? options.optimizer : {};
    const explicitWarmupEpochs = explicit.warmupEpochs !== undefined;
    const explicitWarmupSteps = explicit.warmupSteps !== undefined;
    if (explicitWarmupSteps && !explicitWarmupEpochs) optimizer.warmupEpochs = null;
    else if (explicitWarmupEpochs && !explicitWarmupSteps) optimizer.warmupSteps = null;
    else throw new ByolOptionError('Options optimizer.warmupEpochs and optimizer.warmupSteps both set; give one of them');
  }
  const tauBase = withDefault(o.tauBase, 0.996, (v) => number('tauBase', v, 0, 1));

  const augment = section('augment', o.augment, ['preset', 'outputSize', 'interpolation', 'cropScale', 'cropRatio',
    'flipP', 'jitterP', 'brightness', 'contrast', 'saturation', 'hue', 'grayscaleP', 'blurP', 'blurSigma',
    'blurKernelFraction', 'solarizeP', 'mean', 'std']);
  // Checked now (so a typo fails before any work); resolved against the data in the trainer.
  augmentPair(augment as Omit<AugmentConfigOptions, 'view'>);

  const device = withDefault(o.device, 'auto', (v) => {
    if (typeof v !== 'string' || !/^(cpu|auto|cuda(:\d{1,4})?)$/.test(v)) {
      throw invalid('device', "one of 'cpu', 'cuda', 'cuda:N' or 'auto'", v);
    }
    return v;
  });
  const seed = withDefault(o.seed, 0, (v) => integer('seed', v, 0, Number.MAX_SAFE_INTEGER));
  const threads = withDefault<number | null>(o.threads, null, (v) => integer('threads', v, 1, 4096));
  const convPrecision = withDefault<ConvPrecision>(o.convPrecision, 'fp32',
    (v) => oneOf('convPrecision', v, CONV_PRECISIONS));
  // A state.json written before this option existed lacks it: the default applies.
  const cudaGraphs = withDefault(o.cudaGraphs, true, (v) => boolean('cudaGraphs', v));
  const onlineClassifier = withDefault<boolean | null>(o.onlineClassifier, null, (v) => boolean('onlineClassifier', v));
  const out = withDefault(o.out, defaultRunDir(), (v) => string('out', v));
  const checkpointEvery = withDefault<number | null>(o.checkpointEvery, null,
    (v) => integer('checkpointEvery', v, 0, MAX_STEPS));
  const printEvery = withDefault(o.printEvery, 0, (v) => integer('printEvery', v, 0, MAX_STEPS));
  const progress = withDefault<ProgressMode>(o.progress, 'auto', (v) => oneOf('progress', v, PROGRESS_MODES));
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalid('signal', 'AbortSignal', o.signal);
  if (o.faultInjection !== undefined) {
    const f = section('faultInjection', o.faultInjection, ['nanAtStep']);
    if (f.nanAtStep !== undefined) integer('faultInjection.nanAtStep', f.nanAtStep, 1, MAX_STEPS);
  }
  if (o.resume !== undefined) string('resume', o.resume);
  if (o.profile !== undefined) resolveProfile('profile', o.profile);
  if (o.opTimes !== undefined) resolveProfile('opTimes', o.opTimes);
  let knnMonitor: TrainConfig['knnMonitor'] = null;
  if (o.knnMonitor !== undefined) {
    const m = section('knnMonitor', o.knnMonitor, ['every', 'k', 'temperature', 'bankSize', 'testSize']);
    knnMonitor = {
      every: integer('knnMonitor.every', m.every, 1, MAX_STEPS),
      k: withDefault(m.k, 200, (v) => integer('knnMonitor.k', v, 1, 1 << 20)),
      temperature: withDefault(m.temperature, 0.1, (v) => number('knnMonitor.temperature', v, 1e-4, 1e4)),
      bankSize: withDefault(m.bankSize, 10000, (v) => integer('knnMonitor.bankSize', v, 1, 1 << 30)),
      testSize: withDefault(m.testSize, 10000, (v) => integer('knnMonitor.testSize', v, 1, 1 << 30)),
    };
  }

  return {
    preset: presetName, data, encoder, projector, predictor, batchSize,
    epochs, steps,
    optimizer, tauBase, augment: augment as TrainConfig['augment'], device, seed, threads, convPrecision, cudaGraphs,
    onlineClassifier, out, checkpointEvery, printEvery, progress, knnMonitor,
  };
}

function defaultRunDir(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '').replace('T', '-');
  return `runs/${stamp}`;
}
