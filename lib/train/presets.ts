// presets.ts: named Trainer option sets for known setups (`--preset NAME`, `preset: NAME`).
// Contract: a preset is a partial TrainerOptions; options given next to it override its
// values one by one (deep merge). Every number here has its reason beside it.
import type { TrainerOptions } from './options';

export const PRESET_NAMES = ['fashion-mnist', 'fashion-mnist-quick'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

// Fashion-MNIST, 60000 28x28 grayscale training images. ResNet-18 with the small-image stem
// at width 0.25 (stages 16-32-64-128, y has 128 dims): a full-width ResNet-18 costs 16x the
// compute, which a CPU run cannot afford, and Fashion-MNIST does not need it (a 2-layer CNN
// reaches 91.6% supervised). Images stay 28x28: the cifar stem keeps the resolution, so the
// stages run at 28, 14, 7 and 4 pixels.
// Sized for about 30 minutes on 2 CPU cores: 15 epochs of 468 steps of 128 images at 460-600
// images/s with bf16 convolutions (fp32 ran 503 images/s on the same machine when idle, ~30
// minutes; CPUs without bf16 dot products run fp32, 'auto' below). Measured (2026-11-28, 2-core AMD EPYC with AVX512_BF16): 29 min 3 s of
// training; linear probe 87.94% top-1 on the test split (kNN 84.07%) against 77.50% for this
// encoder at random init and 83.46% for raw pixels (BENCHMARKS.md). The previous recipe (13
// epochs, fp32, crop scale [0.2, 1]) gave 87.38% and 87.83% on seeds 0 and 1.
const fashionMnist: TrainerOptions = {
  data: { kind: 'fashion-mnist' },
  encoder: { arch: 'resnet18', stem: 'cifar', width: 0.25 },
  // The MLPs are cheap next to the convolutions; a 1024-wide hidden layer is plenty for a
  // 128-d representation (solo-learn's small-image configs use 4096 for 512-d).
  projector: { hidden: 1024, out: 256 },
  predictor: { hidden: 1024 },
  batchSize: 128,
  epochs: 15,
  // bf16 convolutions where the CPU has bf16 dot products (1.13x faster training here, 570 vs
  // 503 images/s; a 3-epoch run scored 83.9% against 82.6% in fp32, within seed noise),
  // fp32 elsewhere.
  convPrecision: 'auto',
  // LARS as the reference implements it (trust coefficient 1e-3). The reference's base LR
  // 0.2 is tuned for batch 4096 (scaled LR 3.2); for runs of a few thousand steps a scaled
  // LR of 2.0 (base 4.0 x 128/256) learned fastest. 3-epoch sweep, linear probe top-1 (one
  // seed each): batch 256 / LR 2.0 / tau 0.98: 81.0%; batch 128 / LR 1.0 / tau 0.99: 81.8%;
  // batch 128 / LR 2.0 / tau 0.99: 82.2%; the same with crop scale [0.08, 1]: 79.5%.
  optimizer: { name: 'lars', lr: 4.0, weightDecay: 1e-5, warmupEpochs: 1 },
  // The EMA horizon 1 / (1 - tau) must be short next to the run: 0.996 (1000 epochs) would
  // barely move the target in ~6000 steps; 0.99 gives ~100 steps.
  tauBase: 0.99,
  // An 8% crop of a 28x28 image is ~8x8 pixels, mostly background or texture; 0.2 keeps a
  // recognizable part of the garment (and scored 2.7 points higher in the sweep above), 0.35
  // more so. 3-epoch sweep, linear probe top-1, seeds 0 / 1: [0.2, 1] 82.2% / 83.9%;
  // [0.35, 1] 82.6% / 85.6% (83.9% for seed 0 in bf16); [0.5, 1] 83.2% (seed 0).
  augment: { preset: 'grayscale', outputSize: 28, cropScale: [0.35, 1] },
  checkpointEvery: 500,
};

// The same recipe cut to a few minutes on two CPU cores (1200 steps of 128 images: 153 s on an
// AVX-512 machine, 237 s on an AVX2-only one): a 10000-image subset and a thinner encoder. A smoke run, not a result:
// kNN top-1 on the Fashion-MNIST test split 75.0% against 64.2% for the same encoder at
// random init. Sweep at 600 steps (one seed each): lr 2.0 / tau 0.95 72.9%, lr 1.0 / tau
// 0.99 64.1%, lr 1.0 / tau 0.95 68.6%, lr 4.0 / tau 0.95 70.1%, lr 2.0 / tau 0.9 69.8%.
const fashionMnistQuick: TrainerOptions = {
  ...fashionMnist,
  // The recipe these numbers were measured with (before the full preset moved to crop scale
  // 0.35 and bf16 convolutions).
  convPrecision: 'fp32',
  augment: { preset: 'grayscale', outputSize: 28, cropScale: [0.2, 1] },
  data: { kind: 'fashion-mnist', limit: 10000 },
  encoder: { arch: 'resnet18', stem: 'cifar', width: 0.125 },
  projector: { hidden: 512, out: 128 },
  predictor: { hidden: 512 },
  batchSize: 128,
  epochs: undefined,
  steps: 1200,
  optimizer: { name: 'lars', lr: 2.0, weightDecay: 1e-5, warmupSteps: 100 },
  tauBase: 0.95,
  checkpointEvery: 200,
};

// A copy of a preset's options (callers may mutate the result).
export function presetOptions(name: PresetName): TrainerOptions {
  const preset = name === 'fashion-mnist' ? fashionMnist : fashionMnistQuick;
  return JSON.parse(JSON.stringify(preset)) as TrainerOptions;
}
