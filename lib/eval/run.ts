// run.ts (eval): evaluation of a run directory, as `byol eval` does it: features of the train
// and test splits (cached), then the linear probe and/or kNN, optionally the baselines (raw
// pixels and a randomly initialized encoder of the same architecture) with the same probes,
// and on request the linear probe on augmented views (augmented.ts; encoders only); results
// are merged into run-dir/eval.json (kept per weights checksum).
// Contract: the trained model comes from the verified checkpoint; every feature set is
// computed once per (weights, dataset, preprocessing) and reused from the cache.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { type DatasetLike, centerCrop, inMemory } from '../data';
import { CHECKPOINT_FILE, writeFileAtomic } from '../train/checkpoint';
import { asTrainableModel } from '../train/model';
import { loadDatasetSpec, probeSpec } from '../train/data';
import { trainViews } from '../train/trainer';
import { type DataOptions } from '../train/options';
import { ByolOptionError, boolean, invalid, isPlainObject, knownKeys, number, withDefault } from '../validate';
import {
  type Embeddings, type FeatureEncoder, type RunModel, cachedFeatures, deterministicView, embedDataset, evalView, loadRunModel, pixelFeatures, readSafetensorsF32,
} from './embed';
import { type AugmentedLinearOptions, type AugmentedLinearResult, trainAugmentedProbe } from './augmented';
import { type KnnOptions, type KnnResult, evaluateKnn } from './knn';
import { type LinearProbeOptions, type LinearProbeResult, accuracy, evaluateLinear } from './linear';

export const EVAL_FILE = 'eval.json';

export interface EvaluateRunOptions {
  linear?: boolean | LinearProbeOptions; // default true
  // The linear probe on augmented views (BYOL.md's protocol; encoders only, not raw pixels).
  // Default false. Its crop defaults to the run's training crop.
  linearAugmented?: boolean | Omit<AugmentedLinearOptions, 'view' | 'features' | 'signal'>;
  knn?: boolean | KnnOptions; // default true
  // Also evaluate raw pixels and a random-init encoder with the same probes. Default false.
  baselines?: boolean;
  device?: string; // default: the run's device
  batchSize?: number; // embedding batch size; default 256
  // Embed the central fraction of every image, resized to the training size (BYOL.md's
  // test-time center crop: 0.875 = 224 of 256). Default 1: the whole image.
  centerCrop?: number;
  // Training data for the test split when the run trained on an in-memory dataset.
  data?: { train: DatasetLike; test: DatasetLike };
  onMessage?: (text: string) => void;
}

export interface ProbeResults {
  linear?: LinearProbeResult;
  // Trained on crop + flip views re-drawn every epoch, scored on the deterministic test features.
  linearAugmented?: AugmentedLinearResult;
  knn?: KnnResult;
  // The online classifier trained during BYOL (runs that had one; trained encoder only),
  // scored on the test split's features.
  online?: { top1: number; top5: number };
}

export interface EvalReport {
  runDir: string;
  step: number;
  sha256: string;
  dataset: { train: string; test: string };
  results: Record<string, ProbeResults>; // 'byol', 'random', 'pixels'
  centerCrop: number; // the fraction the features saw (results merge only with the same one)
  updatedAt: string;
}

const SOURCE_LABELS: Record<string, string> = {
  byol: 'trained encoder', random: 'random-init encoder', pixels: 'raw pixels',
};

interface FeatureSource {
  features: (dataset: DatasetLike, split: string) => Promise<Embeddings>;
  encoder?: FeatureEncoder; // the model behind the features (none for raw pixels)
  dispose?: () => void;
}

function percent(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

function probeOption<T extends object>(name: string, value: unknown): T | null {
  if (value === undefined || value === true) return {} as T;
  if (value === false) return null;
  if (!isPlainObject(value)) throw invalid(name, 'boolean or object of probe options', value);
  return value as T;
}

async function datasets(runDir: string, spec: DataOptions | { kind: 'memory' }, given?: { train: DatasetLike; test: DatasetLike }) {
  if (given) return given;
  if (spec.kind === 'memory') {
    throw new ByolOptionError(`The run in ${runDir} trained on an in-memory dataset; pass data: { train, test }`);
  }
  // The full training split (a training-time limit does not shrink the probe's data), and
  // the test split.
  const full = probeSpec(spec as DataOptions);
  const [train, test] = await Promise.all([loadDatasetSpec(full, 'train'), loadDatasetSpec(full, 'test')]);
  if (!train.labels || !test.labels) {
    throw new ByolOptionError(`Evaluation needs labels, but ${!train.labels ? train.name : test.name} has none`);
  }
  return { train, test };
}

export async function evaluateRun(runDir: string, options: EvaluateRunOptions = {}): Promise<EvalReport> {
  if (!isPlainObject(options as unknown)) throw invalid('options', 'object', options);
  knownKeys('options', options as unknown as Record<string, unknown>,
    ['linear', 'linearAugmented', 'knn', 'baselines', 'device', 'batchSize', 'centerCrop', 'data', 'onMessage']);
  const crop = withDefault(options.centerCrop, 1, (v) => number('options.centerCrop', v, 0.01, 1));
  const linearOptions = probeOption<LinearProbeOptions>('options.linear', options.linear);
  const knnOptions = probeOption<KnnOptions>('options.knn', options.knn);
  const augmentedOptions = options.linearAugmented === undefined
    ? null : probeOption<AugmentedLinearOptions>('options.linearAugmented', options.linearAugmented);
  if (augmentedOptions) {
    for (const key of ['view', 'features', 'signal']) {
      if (key in augmentedOptions) throw new ByolOptionError(`options.linearAugmented.${key} is set by evaluateRun; leave it out`);
    }
  }
  if (!linearOptions && !knnOptions && !augmentedOptions) {
    throw new ByolOptionError('Nothing to evaluate: options.linear, options.knn and options.linearAugmented are all false');
  }
  const baselines = withDefault(options.baselines, false, (v) => boolean('options.baselines', v));
  const say = options.onMessage ?? (() => undefined);

  const trained = await loadRunModel(runDir, { device: options.device });
  const { state } = trained;
  const { train, test } = await datasets(runDir, state.config.data, options.data);
  // The deterministic features: the whole image, or its center, resized to the training size.
  const [evalTrain, evalTest] = [centerCrop(train, crop), centerCrop(test, crop)];
  const view = deterministicView(evalView(state.config, train), evalTrain.height, evalTrain.width);
  // The augmented probe's crop defaults to the one the encoder was trained with.
  const trainCrop = trainViews(state.config, train)[0];
  const embedWith = (run: RunModel) => async (dataset: DatasetLike, split: string) => {
    const result = await cachedFeatures(runDir, run.key, split, dataset, view, run.model.featureDim, () => {
      say(`embedding ${dataset.name} (${dataset.n} images) with the ${run.key.startsWith('random') ? 'random' : 'trained'} encoder`);
      return embedDataset(run.model, dataset, { view, batchSize: options.batchSize });
    });
    if (result.cached) say(`features of ${dataset.name} from the cache (${run.key.slice(0, 16)})`);
    return result;
  };
  const sources: { name: string; open: () => Promise<FeatureSource> }[] = [
    { name: 'byol', open: async () => ({ features: embedWith(trained), encoder: asTrainableModel(trained.model) }) },
  ];
  if (baselines) {
    sources.push({
      name: 'random',
      open: async () => {
        const random = await loadRunModel(runDir, { device: options.device, random: true });
        return { features: embedWith(random), encoder: asTrainableModel(random.model), dispose: () => random.model.dispose() };
      },
    });
    sources.push({ name: 'pixels', open: async () => ({ features: async (d: DatasetLike) => pixelFeatures(await inMemory(d)) }) });
  }

  const results: Record<string, ProbeResults> = {};
  try {
    for (const entry of sources) {
      const source = await entry.open();
      try {
        const trainFeatures = await source.features(evalTrain, 'train');
        const testFeatures = await source.features(evalTest, 'test');
        const data = {
          train: { features: trainFeatures.features, labels: train.labels! },
          test: { features: testFeatures.features, labels: test.labels! },
          dim: trainFeatures.dim,
          classes: train.classes,
        };
        const out: ProbeResults = {};
        const label = SOURCE_LABELS[entry.name] ?? entry.name;
        const classes = state.plan.classifierClasses ?? 0;
        if (entry.name === 'byol' && classes > 0 && classes === train.classes) {
          // The checkpoint's classifier on the same eval-mode features (what Byol.classify computes).
          const file = path.join(runDir, CHECKPOINT_FILE);
          const w = await readSafetensorsF32(file, ['classifier.weight', 'classifier.bias']);
          out.online = accuracy(testFeatures.features, test.labels!, Float64Array.from(w['classifier.weight'].data),
            Float64Array.from(w['classifier.bias'].data), data.dim, classes);
          say(`${label}: online classifier (trained with BYOL) top-1 ${percent(out.online.top1)}  top-5 ${percent(out.online.top5)}`);
        }
        if (knnOptions) {
          say(`${label}: kNN (k ${knnOptions.k ?? 200}, T ${knnOptions.temperature ?? 0.1}) on ${data.dim}-d features`);
          out.knn = await evaluateKnn(data, knnOptions);
          say(`${label}: kNN top-1 ${percent(out.knn.top1)}  top-5 ${percent(out.knn.top5)}`);
        }
        if (linearOptions) {
          say(`${label}: linear probe (${linearOptions.epochs ?? 100} epochs) on ${data.dim}-d features`);
          out.linear = await evaluateLinear(data, linearOptions);
          say(`${label}: linear top-1 ${percent(out.linear.top1)}  top-5 ${percent(out.linear.top5)}`);
        }
        if (augmentedOptions && source.encoder) {
          const epochs = augmentedOptions.epochs ?? 80;
          say(`${label}: linear probe on augmented views (${epochs} epochs, crop + flip re-drawn each epoch)`);
          const t0 = Date.now();
          out.linearAugmented = await trainAugmentedProbe(source.encoder, { train, test }, {
            ...augmentedOptions, cropScale: augmentedOptions.cropScale ?? trainCrop.cropScale,
            cropRatio: augmentedOptions.cropRatio ?? trainCrop.cropRatio, view,
            features: { train: trainFeatures.features, test: testFeatures.features },
            onEpoch: (epoch, total, loss) => {
              say(`${label}: augmented linear epoch ${epoch}/${total}  train loss ${loss.toFixed(4)}  ` +
                `(${((Date.now() - t0) / 1000).toFixed(0)} s)`);
              augmentedOptions.onEpoch?.(epoch, total, loss);
            },
          });
          say(`${label}: augmented linear top-1 ${percent(out.linearAugmented.top1)}  top-5 ${percent(out.linearAugmented.top5)}`);
        } else if (augmentedOptions) {
          say(`${label}: no augmented linear probe (raw pixels have no encoder to re-embed views with)`);
        }
        results[entry.name] = out;
      } finally {
        source.dispose?.();
      }
    }
  } finally {
    trained.model.dispose();
  }

  // Merge with earlier results of the same weights (e.g. --knn now, --linear before).
  const file = path.join(runDir, EVAL_FILE);
  let merged = results;
  try {
    const previous = JSON.parse(await fs.readFile(file, 'utf8')) as EvalReport;
    if (previous.sha256 === state.weights.sha256 && (previous.centerCrop ?? 1) === crop) {
      merged = { ...previous.results };
      for (const [name, probes] of Object.entries(results)) merged[name] = { ...merged[name], ...probes };
    }
  } catch {
    // no earlier results (or unreadable ones, which are replaced)
  }
  const report: EvalReport = {
    runDir: path.resolve(runDir), step: state.step, sha256: state.weights.sha256, centerCrop: crop,
    dataset: { train: train.name, test: test.name }, results: merged, updatedAt: new Date().toISOString(),
  };
  await writeFileAtomic(file, `${JSON.stringify(report, null, 2)}\n`);
  return report;
}
