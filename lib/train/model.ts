// model.ts (train): the one adapter between the trainer/evaluation and lib/byol.ts (the Byol
// model class). Contract: everything train/ and eval/ need from a model goes through
// TrainableModel (so an API change of Byol touches this file only); schedules are lib/byol.ts's.
import {
  Byol, type ClassifierStepResult, type GraphStatus, emaTau as byolEmaTau, learningRate as byolLearningRate,
} from '../byol';
import type { Tensor } from '../tensor';
import { type Arch, type OptimizerName, type Stem } from './options';

export interface ModelSpec {
  encoder: { arch: Arch; stem: Stem; inChannels: number; width: number };
  projector: { hidden: number; out: number };
  predictor: { hidden: number } | false;
  optimizer: { name: OptimizerName; weightDecay: number; momentum: number; trustCoefficient: number;
    variant: 'reference' | 'solo-learn' };
  device: string;
  seed: number;
  classifier?: { classes: number } | false; // the online classifier (default none)
}

// What one step gives back: the BYOL loss, and the online classifier's cross-entropy, hits
// and batch size when the model has one.
export interface StepOutcome {
  loss: number;
  classifier: ClassifierStepResult | null;
}

export interface TrainableModel {
  // Dimension of the encoder output y (what embed returns per image).
  readonly featureDim: number;
  readonly device: string;
  // One BYOL step on two normalized views [N, C, H, W] (float32 on the model's device);
  // resolves to the loss computed before the update. `labels`: the batch's classes, for a
  // model with the online classifier.
  step(view1: Tensor<'float32'>, view2: Tensor<'float32'>, lr: number, tau: number, labels?: Int32Array):
    Promise<StepOutcome>;
  // Encoder output y, BatchNorm in eval mode: [N, featureDim] row-major.
  embed(images: Tensor<'float32'>): Promise<Float32Array>;
  // Weights of both networks plus the optimizer state (BYOL.md "Weights").
  save(file: string): Promise<void>;
  load(file: string): Promise<void>;
  // Just the online encoder, with torchvision names.
  saveEncoder(file: string): Promise<void>;
  // CUDA graph replay of step() (Byol.setCudaGraphs / graphStatus); the CPU always runs eagerly.
  setCudaGraphs(on: boolean): Promise<void>;
  graphStatus(): GraphStatus;
  dispose(): void;
}

class ByolAdapter implements TrainableModel {
  readonly featureDim: number;
  readonly device: string;
  readonly #model: Byol;

  readonly #owned: boolean;

  constructor(model: Byol, device: string, featureDim: number, owned = true) {
    this.#model = model;
    this.#owned = owned;
    this.device = device;
    this.featureDim = featureDim;
  }

  async step(view1: Tensor<'float32'>, view2: Tensor<'float32'>, lr: number, tau: number, labels?: Int32Array):
    Promise<StepOutcome> {
    const r = await this.#model.step(view1, view2, labels ? { lr, tau, labels } : { lr, tau });
    return { loss: r.loss, classifier: r.classifier ?? null };
  }

  async embed(images: Tensor<'float32'>): Promise<Float32Array> {
    const features = await this.#model.embed(images);
    try {
      return (await features.toArray()) as Float32Array;
    } finally {
      features.dispose();
    }
  }

  async save(file: string): Promise<void> {
    await this.#model.saveWeights(file, { optimizer: true });
  }

  async load(file: string): Promise<void> {
    await this.#model.loadWeights(file);
  }

  async saveEncoder(file: string): Promise<void> {
    await this.#model.saveEncoder(file);
  }

  setCudaGraphs(on: boolean): Promise<void> {
    return this.#model.setCudaGraphs(on);
  }

  graphStatus(): GraphStatus {
    return this.#model.graphStatus();
  }

  dispose(): void {
    if (this.#owned) this.#model.dispose();
  }
}

// The Byol model of a spec (the caller owns it).
export function createByol(spec: ModelSpec): Promise<Byol> {
  return Byol.create({
    encoder: { ...spec.encoder, inChannels: spec.encoder.inChannels as 1 | 3 },
    projector: { ...spec.projector },
    predictor: spec.predictor === false ? false : { ...spec.predictor },
    optimizer: { ...spec.optimizer },
    device: spec.device,
    seed: spec.seed,
    classifier: spec.classifier ?? false,
  });
}

export async function createModel(spec: ModelSpec): Promise<TrainableModel> {
  const model = await createByol(spec);
  return new ByolAdapter(model, model.device, model.featureDim);
}

// A TrainableModel for a Byol the caller built (or an adapter already). The caller keeps
// ownership: disposing the adapter does not dispose their model.
export function asTrainableModel(model: unknown, name = 'model'): TrainableModel {
  if (model instanceof ByolAdapter) return model;
  if (!(model instanceof Byol)) {
    throw new TypeError(`Expected a Byol model (Byol.create()) for ${name} but received ${String(model)}`);
  }
  return new ByolAdapter(model, model.device, model.featureDim, false);
}

// ---- schedules (BYOL.md "Schedules"; k = step index from 0, K = total steps) ----
// Positional forms of lib/byol.ts's learningRate / emaTau (computed natively, so the trainer
// and the core agree to the bit).

// base_lr * batch / 256 with linear warmup over `warmupSteps`, then cosine decay to 0 at K.
export function learningRate(step: number, baseLr: number, batchSize: number, warmupSteps: number,
  totalSteps: number): number {
  return byolLearningRate(step, { baseLr, batchSize, warmupSteps, totalSteps });
}

// 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2, k clamped to K.
export function emaTau(step: number, tauBase: number, totalSteps: number): number {
  return byolEmaTau(step, { tauBase, totalSteps });
}
