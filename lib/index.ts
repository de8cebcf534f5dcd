// index.ts: the public API of byol (CommonJS; dist/index.mjs re-exports it for ESM).
// Contract: importing this module loads nothing native; the addon loads on first use.
export { Tensor, MAX_DIMS, validateShape } from './tensor';
export type { ArrayFor, DType, FromOptions, Layout, TensorData, ToArrayOptions, TypedArray, ZerosOptions } from './tensor';
export {
  devices, getCpuConvAlgorithm, getCpuConvPrecision, getNumThreads, opRate, opTimes, probeCuda, resolveDevice, setCpuConvAlgorithm,
  setCpuConvPrecision, setNumThreads, setOpTiming,
} from './device';
export type { ConvAlgorithm, ConvPrecision, OpTime, OpTimesOptions } from './device';
export type { CudaStatus, DeviceInfo, DeviceName } from './device';
export { DeviceError, DisposedError, NativeLoadError } from './errors';
export { ByolOptionError } from './validate';

// The BYOL model and its step.
export { Byol, emaTau, learningRate, resolveByolOptions } from './byol';
export type {
  Arch, ByolOptions, ClassifierOptions, ClassifierStepResult, EmaTauOptions, EncoderOptions, GraphStatus, InitTarget,
  LearningRateOptions, LoadEncoderResult, LoadWeightsResult,
  OptimizerName, OptimizerOptions, PredictorOptions, ProjectorOptions, ResolvedByolOptions,
  SaveWeightsOptions, StepOptions, StepResult, Stem,
} from './byol';

// Augmentation and data.
export { augmentBatch, augmentConfig, augmentPair, drawAugmentParams } from './augment';
export type {
  AugmentBatchOptions, AugmentConfig, AugmentConfigOptions, AugmentedBatch, AugmentParams,
  AugmentPreset, DrawOptions, Interpolation, JitterOp,
} from './augment';
export * from './data/index';

// Training, checkpoints, reports.
export { Trainer, NonFiniteLossError } from './train/trainer';
export type { TrainResult, StepMetrics, StartInfo } from './train/trainer';
export type { KnnMonitorResult } from './train/monitor';
export { resolveTrainConfig } from './train/options';
export type {
  TrainerOptions, TrainConfig, DataOptions, TrainerEncoderOptions, TrainerOptimizerOptions, DatasetKind,
  KnnMonitorOptions, ProgressMode,
} from './train/options';
export { PRESET_NAMES, presetOptions } from './train/presets';
export type { PresetName } from './train/presets';
export { CheckpointError, readRunState } from './train/checkpoint';
export type { RunState } from './train/checkpoint';
export { readLog } from './train/log';
export { renderReport, writeReport } from './train/report';

// Evaluation.
export { evaluateLinear } from './eval/linear';
export type { LinearProbeOptions, LinearProbeResult, ProbeData, FeatureSet } from './eval/linear';
export { evaluateLinearAugmented } from './eval/augmented';
export type { AugmentedLinearOptions, AugmentedLinearResult } from './eval/augmented';
export { evaluateKnn } from './eval/knn';
export type { KnnOptions, KnnResult } from './eval/knn';
export {
  embedDataset, loadRunModel, pixelFeatures, evalView, readSafetensorsF32, writeNpy, writeSafetensors,
} from './eval/embed';
export type { EmbedOptions, Embeddings } from './eval/embed';
export { evaluateRun } from './eval/run';
export type { EvaluateRunOptions, EvalReport, ProbeResults } from './eval/run';

// The package version, read from package.json so that it cannot drift.
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const version: string = (require('../package.json') as { version: string }).version;
