// byol.ts: the BYOL model (../shared/BYOL.md): online encoder + projector + predictor and the
// EMA target, trained natively one step at a time, plus the learning-rate and EMA schedules.
// Contract: every option is validated here with a message naming it; heavy calls return
// Promises resolved by native AsyncWorkers (the event loop stays free) and run one at a
// time per model, in call order; dispose() frees the native memory (after a running call).
import { resolveDevice } from './device';
import { DisposedError } from './errors';
import { native } from './native';
import { readSafetensorsHeader } from './safetensors';
import { Tensor, unwrapTensor, wrapNativeTensor } from './tensor';
import type { NativeTensor } from './native';
import {
  ByolOptionError, boolean, integer, invalid, isPlainObject, knownKeys, number, oneOf, withDefault,
} from './validate';

export type Arch = 'resnet18' | 'resnet34' | 'resnet50';
export type Stem = 'cifar' | 'imagenet';
export type OptimizerName = 'lars' | 'sgd' | 'adamw';
export type InitTarget = 'copy' | 'random';

export interface EncoderOptions {
  arch?: Arch; // default 'resnet50' (BYOL.md)
  // 'cifar': 3x3 conv stride 1, no max-pool (small images); 'imagenet': 7x7/2 + max-pool.
  stem?: Stem; // default 'imagenet'
  inChannels?: 1 | 3; // default 3
  // Stage widths 64*width ... 512*width; 64*width must be an integer (0.25 -> 16). Default 1.
  width?: number;
}
export interface ProjectorOptions {
  hidden?: number; // default 4096
  out?: number; // default 256
}
export interface PredictorOptions {
  hidden?: number; // default 4096
}
// The online linear classifier of the reference implementation (BYOL.md "Evaluation"): a
// Linear(featureDim, classes) on stop_gradient(y) of view 1, trained with softmax
// cross-entropy on each step's labels by the same optimizer step. A cheap progress signal: it
// changes nothing in the BYOL update. Its weights are saved as classifier.weight / .bias.
export interface ClassifierOptions {
  classes: number; // 2..65536
}
export interface OptimizerOptions {
  name?: OptimizerName; // default 'lars'
  weightDecay?: number; // default 1.5e-6 (lars), 0 (sgd), 0.01 (adamw)
  momentum?: number; // lars, sgd; default 0.9
  trustCoefficient?: number; // lars; default 1e-3
  // lars: 'reference' (BYOL's implementation, BYOL.md) or 'solo-learn' (trust ratio
  // eta*|p| / (|g| + wd*|p| + eps), every 1-D tensor excluded).
  variant?: 'reference' | 'solo-learn';
  eps?: number; // lars 'solo-learn' epsilon; default 1e-8 there, 0 for 'reference'
  nesterov?: boolean; // sgd; default false
  beta1?: number; // adamw; default 0.9
  beta2?: number; // adamw; default 0.999
  adamEps?: number; // adamw; default 1e-8
}
export interface ByolOptions {
  encoder?: EncoderOptions;
  projector?: ProjectorOptions;
  // false: the no-predictor ablation (collapses, BYOL.md "Known results").
  predictor?: PredictorOptions | false;
  optimizer?: OptimizerOptions;
  device?: string; // 'cpu' (default), 'cuda', 'cuda:N' or 'auto'
  seed?: number; // initialization seed; default 0
  // 'copy' (default): the target starts as a copy of the online network; 'random': its own init.
  initTarget?: InitTarget;
  bnMomentum?: number; // BatchNorm running-stat momentum (PyTorch sense); default 0.1
  bnEps?: number; // default 1e-5
  // The online classifier (default false: none); step() then needs labels.
  classifier?: ClassifierOptions | false;
}

// The options after defaults, as the model uses them.
export interface ResolvedByolOptions {
  encoder: Required<EncoderOptions>;
  projector: Required<ProjectorOptions>;
  predictor: Required<PredictorOptions> | false;
  optimizer: Required<OptimizerOptions>;
  device: string;
  seed: number;
  initTarget: InitTarget;
  bnMomentum: number;
  bnEps: number;
  classifier: ClassifierOptions | false;
}

export interface StepOptions {
  lr: number; // this step's learning rate (see learningRate())
  tau: number; // this step's EMA decay in [0, 1] (see emaTau())
  // The class of each image (view1's batch order), integers in [0, classifier.classes):
  // required by a model with the online classifier, refused by one without.
  labels?: Int32Array | readonly number[];
}
export interface ClassifierStepResult {
  loss: number; // softmax cross-entropy of view 1's logits, mean over the batch, before the update
  correct: number; // images whose largest logit is their label
  count: number; // images in the batch
}
export interface StepResult {
  // L = loss(p1, z2) + loss(p2, z1) (each 2 - 2 cos, mean over the batch), before the update.
  loss: number;
  // The online classifier's result (models created with classifier only).
  classifier?: ClassifierStepResult;
}
export interface SaveWeightsOptions {
  // Also store the optimizer state (momentum or Adam moments, step count) so that loading
  // the file resumes training exactly. Default false.
  optimizer?: boolean;
}
export interface LoadWeightsResult {
  // Whether the file held optimizer state (else the optimizer starts fresh).
  optimizer: boolean;
}
export interface LoadEncoderResult {
  // Tensors of the file that are not part of the encoder and were skipped (fc.weight, fc.bias).
  ignored: string[];
}
// CUDA graph replay of the training step (Byol.setCudaGraphs). Graphs only matter on CUDA:
// there each batch shape runs eagerly twice, then its step is recorded once and replayed.
// The CPU cannot capture, so it runs eagerly and, from the third step on (the first one that
// would be recorded), reports { enabled: false, launches: 0, error: 'cpu: graph capture not supported' }.
export interface GraphStatus {
  enabled: boolean; // on, as requested, and no capture has failed
  launches: number; // steps run as a replayed graph so far
  error: string | null; // why graphs turned off by themselves (null: they never did)
}

// The native side (native/addon/model.cc). Declared here until lib/native.ts carries it.
interface NativeModel {
  step(view1: NativeTensor, view2: NativeTensor, lr: number, tau: number, labels?: Int32Array):
    Promise<{ loss: number; classifier: ClassifierStepResult | null }>;
  embed(images: NativeTensor): Promise<NativeTensor>;
  classify(images: NativeTensor): Promise<NativeTensor>;
  project(images: NativeTensor, target: boolean): Promise<NativeTensor>;
  saveWeights(path: string, optimizer: boolean): Promise<boolean>;
  loadWeights(path: string): Promise<boolean>;
  saveEncoder(path: string): Promise<boolean>;
  loadEncoder(path: string, target: boolean): Promise<string[]>;
  info(): {
    featureDim: number; outputDim: number; numParams: number; numTargetParams: number; device: string; config: string;
    classifierClasses: number;
    graphs: GraphStatus;
  };
  setUseGraphs(on: boolean): void;
  dispose(): void;
}
interface ModelBinding {
  createModel(options: Record<string, unknown>, device: string): Promise<NativeModel>;
  learningRate(step: number, baseLr: number, batchSize: number, warmupSteps: number, totalSteps: number): number;
  emaTau(step: number, tauBase: number, totalSteps: number): number;
}
function binding(): ModelBinding {
  return native as unknown as ModelBinding;
}

const MAX_SIZE = 65536;
const MAX_STEP = Number.MAX_SAFE_INTEGER;

// An optional options object: undefined gives {}, anything else must be a plain object with
// only `known` keys. `prefix` is how its keys are named in messages ('' at the top level).
function section(name: string, prefix: string, value: unknown, known: readonly string[]): Record<string, unknown> {
  if (value === undefined) return {};
  if (!isPlainObject(value)) throw invalid(name, 'object', value);
  knownKeys(prefix, value, known);
  return value;
}

// Applies the defaults and checks every option, naming it ("encoder.width", ...).
export function resolveByolOptions(options: unknown): ResolvedByolOptions {
  const o = section('options', '', options,
    ['encoder', 'projector', 'predictor', 'optimizer', 'device', 'seed', 'initTarget', 'bnMomentum', 'bnEps',
      'classifier']);
  const e = section('encoder', 'encoder', o.encoder, ['arch', 'stem', 'inChannels', 'width']);
  const arch = withDefault<Arch>(e.arch, 'resnet50', (v) => oneOf('encoder.arch', v, ['resnet18', 'resnet34', 'resnet50'] as const));
  const stem = withDefault<Stem>(e.stem, 'imagenet', (v) => oneOf('encoder.stem', v, ['cifar', 'imagenet'] as const));
  const inChannels = withDefault<1 | 3>(e.inChannels, 3, (v) => {
    if (v !== 1 && v !== 3) throw invalid('encoder.inChannels', '1 or 3', v);
    return v;
  });
  const width = withDefault(e.width, 1, (v) => {
    const w = number('encoder.width', v, 1 / 64, 64);
    if (!Number.isInteger(Math.round(64 * w * 1e9) / 1e9)) {
      throw invalid('encoder.width', 'number such that 64 * width is an integer (e.g. 0.25, 0.5, 1, 2)', v);
    }
    return w;
  });
  const p = section('projector', 'projector', o.projector, ['hidden', 'out']);
  const projector = {
    hidden: withDefault(p.hidden, 4096, (v) => integer('projector.hidden', v, 1, MAX_SIZE)),
    out: withDefault(p.out, 256, (v) => integer('projector.out', v, 1, MAX_SIZE)),
  };
  let predictor: Required<PredictorOptions> | false;
  if (o.predictor === false) {
    predictor = false;
  } else {
    if (o.predictor !== undefined && !isPlainObject(o.predictor)) {
      throw invalid('predictor', 'object or false', o.predictor);
    }
    const q = section('predictor', 'predictor', o.predictor, ['hidden']);
    predictor = { hidden: withDefault(q.hidden, 4096, (v) => integer('predictor.hidden', v, 1, MAX_SIZE)) };
  }
  const opt = section('optimizer', 'optimizer', o.optimizer,
    ['name', 'weightDecay', 'momentum', 'trustCoefficient', 'variant', 'eps', 'nesterov', 'beta1', 'beta2', 'adamEps']);
  const name = withDefault<OptimizerName>(opt.name, 'lars', (v) => oneOf('optimizer.name', v, ['lars', 'sgd', 'adamw'] as const));
  const variant = withDefault<'reference' | 'solo-learn'>(opt.variant, 'reference',
    (v) => oneOf('optimizer.variant', v, ['reference', 'solo-learn'] as const));
  const defaultDecay = name === 'lars' ? 1.5e-6 : name === 'adamw' ? 0.01 : 0;
  const optimizer: Required<OptimizerOptions> = {
    name,
    weightDecay: withDefault(opt.weightDecay, defaultDecay, (v) => number('optimizer.weightDecay', v, 0, 1000)),
    momentum: withDefault(opt.momentum, 0.9, (v) => number('optimizer.momentum', v, 0, 1)),
    trustCoefficient: withDefault(opt.trustCoefficient, 1e-3, (v) => number('optimizer.trustCoefficient', v, 0, 1000)),
    variant,
    eps: withDefault(opt.eps, variant === 'solo-learn' ? 1e-8 : 0, (v) => number('optimizer.eps', v, 0, 1)),
    nesterov: withDefault(opt.nesterov, false, (v) => boolean('optimizer.nesterov', v)),
    beta1: withDefault(opt.beta1, 0.9, (v) => number('optimizer.beta1', v, 0, 0.999999)),
    beta2: withDefault(opt.beta2, 0.999, (v) => number('optimizer.beta2', v, 0, 0.999999999)),
    adamEps: withDefault(opt.adamEps, 1e-8, (v) => number('optimizer.adamEps', v, 1e-30, 1)),
  };
  const device = withDefault(o.device, 'cpu', (v) => resolveDevice(v, 'device'));
  const seed = withDefault(o.seed, 0, (v) => integer('seed', v, 0, Number.MAX_SAFE_INTEGER));
  const initTarget = withDefault<InitTarget>(o.initTarget, 'copy', (v) => oneOf('initTarget', v, ['copy', 'random'] as const));
  const bnMomentum = withDefault(o.bnMomentum, 0.1, (v) => number('bnMomentum', v, 0, 1));
  const bnEps = withDefault(o.bnEps, 1e-5, (v) => number('bnEps', v, 1e-12, 1));
  let classifier: ClassifierOptions | false = false;
  if (o.classifier !== undefined && o.classifier !== false) {
    if (!isPlainObject(o.classifier)) throw invalid('classifier', 'object { classes } or false', o.classifier);
    const c = section('classifier', 'classifier', o.classifier, ['classes']);
    classifier = { classes: integer('classifier.classes', c.classes, 2, MAX_SIZE) };
  }
  return {
    encoder: { arch, stem, inChannels, width }, projector, predictor, optimizer, device, seed, initTarget, bnMomentum, bnEps,
    classifier,
  };
}

// The flat object native/addon/model.cc reads (its keys are the option paths).
function nativeOptions(r: ResolvedByolOptions): Record<string, unknown> {
  return {
    'encoder.arch': r.encoder.arch,
    'encoder.stem': r.encoder.stem,
    'encoder.inChannels': r.encoder.inChannels,
    'encoder.width': r.encoder.width,
    'projector.hidden': r.projector.hidden,
    'projector.out': r.projector.out,
    predictor: r.predictor !== false,
    'predictor.hidden': r.predictor === false ? 1 : r.predictor.hidden,
    'optimizer.name': r.optimizer.name,
    'optimizer.weightDecay': r.optimizer.weightDecay,
    'optimizer.momentum': r.optimizer.momentum,
    'optimizer.trustCoefficient': r.optimizer.trustCoefficient,
    'optimizer.eps': r.optimizer.eps,
    'optimizer.soloLearn': r.optimizer.variant === 'solo-learn',
    'optimizer.nesterov': r.optimizer.nesterov,
    'optimizer.beta1': r.optimizer.beta1,
    'optimizer.beta2': r.optimizer.beta2,
    'optimizer.adamEps': r.optimizer.adamEps,
    seed: r.seed,
    initTarget: r.initTarget,
    bnMomentum: r.bnMomentum,
    bnEps: r.bnEps,
    'classifier.classes': r.classifier === false ? 0 : r.classifier.classes,
  };
}

// Native errors arrive from a worker thread with no JavaScript stack: re-create them with
// the caller's stack so that failures point at user code.
function withCallSite(error: unknown, callSite: Error): Error {
  if (!(error instanceof Error)) return new Error(String(error));
  if (error instanceof ByolOptionError || error instanceof DisposedError) return error;
  const rethrown = new Error(error.message);
  rethrown.stack = `Error: ${error.message}\n${(callSite.stack ?? '').split('\n').slice(1).join('\n')}`;
  return rethrown;
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function checkPath(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(name, 'non-empty file path string', value);
  return value;
}

export class Byol implements Disposable {
  readonly options: ResolvedByolOptions;
  // Encoder output size (what embed() returns per image): 512 * width (ResNet-18/34),
  // 2048 * width (ResNet-50).
  readonly featureDim: number;
  // Projection / prediction size (projector.out).
  readonly outputDim: number;
  // Online parameters (encoder, projector, predictor) and the target's (encoder, projector).
  readonly numParams: number;
  readonly numTargetParams: number;
  readonly device: string;
  // Classes of the online classifier (0: the model has none).
  readonly classifierClasses: number;
  #native: NativeModel | null;
  // Calls run one after another in call order (the native mutex would serialize them too,
  // but not necessarily in order).
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(handle: NativeModel, options: ResolvedByolOptions) {
    this.#native = handle;
    this.options = options;
    const info = handle.info();
    this.featureDim = info.featureDim;
    this.outputDim = info.outputDim;
    this.numParams = info.numParams;
    this.numTargetParams = info.numTargetParams;
    this.device = info.device;
    this.classifierClasses = info.classifierClasses;
  }

  // A model for embedding from an encoder file written by saveEncoder() (e.g. a run's
  // encoder.safetensors) alone: the architecture and BatchNorm settings come from the file's
  // byol.config metadata, the encoder's weights and statistics (online and target) from its
  // tensors. The projector and predictor are freshly initialized: embed() gives the trained
  // representation; project() and step() would start from new heads. A torchvision file has
  // no byol.config: create the model with Byol.create and call loadEncoder() instead.
  static async fromEncoder(path: string, options: { device?: string } = {}): Promise<Byol> {
    const callSite = new Error();
    try {
      const file = checkPath('path', path);
      if (!isPlainObject(options)) throw invalid('options', 'object', options);
      knownKeys('options', options, ['device']);
      const { metadata } = await readSafetensorsHeader(file);
      const text = metadata['byol.config'];
      if (typeof text !== 'string') {
        throw new ByolOptionError(`${file} has no byol.config metadata (it was not written by saveEncoder): create ` +
          'the model with Byol.create({ encoder: ... }) and call loadEncoder()');
      }
      let config: { encoder: ByolOptions['encoder']; projector: ByolOptions['projector'];
        predictor: ByolOptions['predictor']; optimizer: { name: OptimizerName }; bnMomentum: number; bnEps: number };
      try {
        config = JSON.parse(text);
      } catch (error) {
        throw new ByolOptionError(`${file}: byol.config metadata is not JSON: ${(error as Error).message}`);
      }
      // The metadata prints float32 values with 9 digits (1e-5 as 9.99999975e-06): take the
      // shortest decimal of the same float32 back, as the options that made the model said it.
      const shortest = (x: number) => {
        if (typeof x !== 'number' || !Number.isFinite(x)) return x;
        for (let digits = 1; digits < 10; digits++) {
          const y = Number(x.toPrecision(digits));
          if (Math.fround(y) === Math.fround(x)) return y;
        }
        return x;
      };
      const model = await Byol.create({
        encoder: config.encoder, projector: config.projector, predictor: config.predictor,
        optimizer: { name: config.optimizer?.name }, bnMomentum: shortest(config.bnMomentum),
        bnEps: shortest(config.bnEps),
        ...(options.device === undefined ? {} : { device: options.device }),
      });
      try {
        await model.loadEncoder(file);
      } catch (error) {
        model.dispose();
        throw error;
      }
      return model;
    } catch (error) {
      throw withCallSite(error, callSite);
    }
  }

  // Builds and initializes the networks (off the main thread). Rejects with a
  // ByolOptionError naming the first bad option.
  static async create(options: ByolOptions = {}): Promise<Byol> {
    const callSite = new Error();
    const resolved = resolveByolOptions(options);
    try {
      const handle = await binding().createModel(nativeOptions(resolved), resolved.device);
      return new Byol(handle, resolved);
    } catch (error) {
      throw withCallSite(error, callSite);
    }
  }

  // One training step (BYOL.md "One training step") on two augmented views of the same
  // images: float32 Tensors [N, C, H, W] on the model's device, same shape, N >= 2.
  step(view1: Tensor, view2: Tensor, options: StepOptions): Promise<StepResult> {
    return this.#call('step()', (m) => {
      const a = this.#checkImages(view1, 'view1', 2);
      const b = this.#checkImages(view2, 'view2', 2);
      if (view1.shape.some((d, i) => d !== view2.shape[i])) {
        throw new ByolOptionError(
          `Expected view2 to have the shape of view1 ${formatShape(view1.shape)} but received ${formatShape(view2.shape)}`);
      }
      if (!isPlainObject(options)) throw invalid('options', 'object with lr and tau', options);
      knownKeys('options', options, ['lr', 'tau', 'labels']);
      const lr = number('options.lr', options.lr, 0, 1e6);
      const tau = number('options.tau', options.tau, 0, 1);
      const labels = this.#checkLabels(options.labels, view1.shape[0]);
      // A non-finite loss is returned as is: the caller (lib/train) decides what to keep.
      return m.step(a, b, lr, tau, labels).then((r) => (r.classifier ? { loss: r.loss, classifier: r.classifier } : { loss: r.loss }));
    });
  }

  // Logits [N, classifier.classes] of the online classifier on the encoder's output, BatchNorm
  // in eval mode (models created with classifier only).
  classify(images: Tensor): Promise<Tensor<'float32'>> {
    return this.#call('classify()', (m) => {
      if (this.classifierClasses === 0) {
        throw new ByolOptionError('classify() needs the online classifier: create the model with classifier: { classes }');
      }
      return m.classify(this.#checkImages(images, 'images', 1)).then((h) => wrapNativeTensor<'float32'>(h));
    });
  }

  // Encoder output y [N, featureDim] with BatchNorm in eval mode (running statistics).
  embed(images: Tensor): Promise<Tensor<'float32'>> {
    return this.#call('embed()', (m) =>
      m.embed(this.#checkImages(images, 'images', 1)).then((h) => wrapNativeTensor<'float32'>(h)));
  }

  // Projections z [N, outputDim] of the online (or target) encoder + projector, BatchNorm in
  // eval mode. Their spread after normalization shows collapse.
  project(images: Tensor, options: { target?: boolean } = {}): Promise<Tensor<'float32'>> {
    return this.#call('project()', (m) => {
      if (!isPlainObject(options)) throw invalid('options', 'object', options);
      knownKeys('options', options, ['target']);
      const target = withDefault(options.target, false, (v) => boolean('options.target', v));
      return m.project(this.#checkImages(images, 'images', 1), target).then((h) => wrapNativeTensor<'float32'>(h));
    });
  }

  // Writes a safetensors file with BYOL.md's names (online.encoder.*, online.projector.*,
  // predictor.*, target.*) and PyTorch layouts; atomic.
  saveWeights(path: string, options: SaveWeightsOptions = {}): Promise<void> {
    return this.#call('saveWeights()', (m) => {
      const file = checkPath('path', path);
      if (!isPlainObject(options)) throw invalid('options', 'object', options);
      knownKeys('options', options, ['optimizer']);
      const optimizer = withDefault(options.optimizer, false, (v) => boolean('options.optimizer', v));
      return m.saveWeights(file, optimizer).then(() => undefined);
    });
  }

  // Loads a file written by saveWeights() (or by PyTorch with the same names). Every tensor
  // is checked before anything changes; a file without optimizer state resets the optimizer.
  loadWeights(path: string): Promise<LoadWeightsResult> {
    return this.#call('loadWeights()', (m) =>
      m.loadWeights(checkPath('path', path)).then((optimizer) => ({ optimizer })));
  }

  // Just the online encoder with torchvision's names (conv1.weight, bn1.*, layer1.0.*, ...):
  // torchvision's resnet (conv1/maxpool swapped for the cifar stem, fc = Identity) loads it
  // with strict=True.
  saveEncoder(path: string): Promise<void> {
    return this.#call('saveEncoder()', (m) => m.saveEncoder(checkPath('path', path)).then(() => undefined));
  }

  // Loads an encoder file into the online encoder, and into the target encoder too unless
  // `target: false`: one written by saveEncoder(), or a torchvision ResNet's state_dict saved
  // with safetensors (`safetensors.torch.save_file(resnet.state_dict(), file)`; for the cifar
  // stem, conv1 must be the 3x3 one). Heads, optimizer state and counters are kept. Every
  // encoder tensor is checked (name, shape, dtype) before anything changes; torchvision's
  // classifier head (fc.weight, fc.bias) is skipped and listed in `ignored`; a missing or
  // extra tensor, or a whole weights file (use loadWeights), is an error naming it.
  loadEncoder(path: string, options: { target?: boolean } = {}): Promise<LoadEncoderResult> {
    return this.#call('loadEncoder()', (m) => {
      const file = checkPath('path', path);
      if (!isPlainObject(options)) throw invalid('options', 'object', options);
      knownKeys('options', options, ['target']);
      const target = withDefault(options.target, true, (v) => boolean('options.target', v));
      return m.loadEncoder(file, target).then((ignored) => ({ ignored }));
    });
  }

  // Turns CUDA graph replay of step() on (the default) or off; takes effect from the next
  // step, in call order. Off: every step runs eagerly, so a profile shows each layer's range
  // instead of one 'graph launch' per step. Results are the same either way.
  setCudaGraphs(on: boolean): Promise<void> {
    return this.#call('setCudaGraphs()', (m) => {
      m.setUseGraphs(boolean('on', on));
      return Promise.resolve();
    });
  }

  // Where graph replay stands now (see GraphStatus); synchronous, so a step still queued or
  // running is not counted yet.
  graphStatus(): GraphStatus {
    const m = this.#native;
    if (m === null) throw new DisposedError('Byol model was disposed: cannot call graphStatus() after dispose()');
    const { enabled, launches, error } = m.info().graphs;
    return { enabled, launches, error };
  }

  get disposed(): boolean {
    return this.#native === null;
  }

  // Frees the native memory (once a running call ends). Idempotent.
  dispose(): void {
    const handle = this.#native;
    if (handle === null) return;
    this.#native = null;
    handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    const e = this.options.encoder;
    return `Byol(${e.arch} ${e.stem} x${e.width}, ${this.numParams} parameters, ${this.device}${this.disposed ? ', disposed' : ''})`;
  }

  #checkLabels(labels: unknown, n: number): Int32Array | undefined {
    const classes = this.classifierClasses;
    if (classes === 0) {
      if (labels === undefined) return undefined;
      throw new ByolOptionError('Received options.labels but the model has no online classifier ' +
        '(create it with classifier: { classes })');
    }
    const what = `Int32Array or array of ${n} class indices in [0, ${classes}) (one per image of view1; classifier.classes ${classes})`;
    if (!(labels instanceof Int32Array) && !Array.isArray(labels)) throw invalid('options.labels', what, labels);
    const list = labels as ArrayLike<unknown>;
    if (list.length !== n) {
      throw new ByolOptionError(`Expected options.labels with ${n} entries (one per image of view1) but received ${list.length}`);
    }
    for (let i = 0; i < n; i++) {
      const v = list[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= classes) {
        throw new ByolOptionError(`Expected options.labels in [0, ${classes}) (classifier.classes) but ` +
          `options.labels[${i}] is ${String(v)}`);
      }
    }
    return labels instanceof Int32Array ? labels : Int32Array.from(labels as number[]);
  }

  #checkImages(images: unknown, name: string, minBatch: number): NativeTensor {
    if (!(images instanceof Tensor)) throw invalid(name, 'Tensor', images);
    if (images.dtype !== 'float32') throw invalid(`${name}.dtype`, "'float32'", images.dtype);
    const shape = images.shape;
    const c = this.options.encoder.inChannels;
    if (shape.length !== 4) {
      throw new ByolOptionError(`Expected ${name} of shape [N, ${c}, H, W] but received ${formatShape(shape)}`);
    }
    if (shape[1] !== c) {
      throw new ByolOptionError(
        `Expected ${name} with ${c} channels (encoder.inChannels) of shape [N, ${c}, H, W] but received ${formatShape(shape)}`);
    }
    if (shape[0] < minBatch) {
      throw new ByolOptionError(minBatch > 1
        ? `Expected ${name} with at least ${minBatch} images (BatchNorm needs 2 for batch statistics) but received ${formatShape(shape)}`
        : `Expected ${name} with at least 1 image but received ${formatShape(shape)}`);
    }
    if (shape[2] < 1 || shape[3] < 1) {
      throw new ByolOptionError(`Expected ${name} images of at least 1x1 pixels but received ${formatShape(shape)}`);
    }
    if (images.device !== this.device) {
      throw new ByolOptionError(`Expected ${name} on the model's device '${this.device}' but it is on '${images.device}'`);
    }
    return unwrapTensor(images, name);
  }

  // Runs `body` after the previous call settled; argument errors reject (never throw).
  #call<T>(method: string, body: (m: NativeModel) => Promise<T>): Promise<T> {
    const callSite = new Error();
    const run = (): Promise<T> => {
      const m = this.#native;
      if (m === null) return Promise.reject(new DisposedError(`Byol model was disposed: cannot call ${method} after dispose()`));
      try {
        return body(m).catch((error: unknown) => { throw withCallSite(error, callSite); });
      } catch (error) {
        return Promise.reject(error);
      }
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}

// ---- schedules (BYOL.md "Schedules"; k = step counted from 0, K = totalSteps) ----

export interface LearningRateOptions {
  baseLr: number; // e.g. 0.2 (BYOL, 1000 epochs) ... 0.45 (100 epochs)
  batchSize: number;
  warmupSteps: number;
  totalSteps: number;
}

// base_lr * batch / 256, linear warmup over warmupSteps (lr = k / w * scaled), then cosine
// decay to 0 at totalSteps; 0 past the end.
export function learningRate(step: number, options: LearningRateOptions): number {
  if (!isPlainObject(options)) throw invalid('options', 'object with baseLr, batchSize, warmupSteps, totalSteps', options);
  knownKeys('options', options, ['baseLr', 'batchSize', 'warmupSteps', 'totalSteps']);
  const k = integer('step', step, 0, MAX_STEP);
  const baseLr = number('baseLr', options.baseLr, 0, 1e6);
  const batchSize = integer('batchSize', options.batchSize, 1, MAX_STEP);
  const totalSteps = integer('totalSteps', options.totalSteps, 1, MAX_STEP);
  const warmupSteps = integer('warmupSteps', options.warmupSteps, 0, totalSteps);
  return binding().learningRate(k, baseLr, batchSize, warmupSteps, totalSteps);
}

export interface EmaTauOptions {
  tauBase: number; // e.g. 0.996 (1000 epochs), 0.99 (300 epochs)
  totalSteps: number;
}

// 1 - (1 - tauBase) * (cos(pi k / K) + 1) / 2: from tauBase at step 0 to 1 at totalSteps.
export function emaTau(step: number, options: EmaTauOptions): number {
  if (!isPlainObject(options)) throw invalid('options', 'object with tauBase, totalSteps', options);
  knownKeys('options', options, ['tauBase', 'totalSteps']);
  const k = integer('step', step, 0, MAX_STEP);
  const tauBase = number('tauBase', options.tauBase, 0, 1);
  const totalSteps = integer('totalSteps', options.totalSteps, 1, MAX_STEP);
  return binding().emaTau(k, tauBase, totalSteps);
}
