// monitor.ts (train): the trainer's kNN monitor (options.ts KnnMonitorOptions; BYOL.md
// "Evaluation"): every N steps, eval-mode encoder features of a fixed bank of training images
// and of test images, scored by cosine kNN. Contract: the bank and test sets are the first
// images of their splits (the same ones at every check and after a resume); a check reads the
// model (embed: BatchNorm in eval mode) and changes nothing the training computes.
import { type AugmentConfig } from '../augment';
import { type DatasetLike, inMemory, isStreaming } from '../data';
import { embedDataset, evalView } from '../eval/embed';
import { evaluateKnn } from '../eval/knn';
import { ByolOptionError } from '../validate';
import { firstSamples, loadDatasetSpec } from './data';
import type { TrainableModel } from './model';
import type { DataOptions, TrainConfig } from './options';

export interface KnnMonitorResult {
  step: number;
  top1: number;
  top5: number;
  k: number; // as used (capped at the bank size)
  bank: number; // training images in the bank
  test: number; // test images scored
  seconds: number;
}

// The most decoded bytes of streamed bank + test images the monitor holds in memory.
const MONITOR_MEMORY_BYTES = 1 << 30;

export class KnnMonitor {
  readonly #options: NonNullable<TrainConfig['knnMonitor']>;
  readonly #bank: DatasetLike;
  readonly #test: DatasetLike;
  readonly #view: AugmentConfig; // the evaluation preprocessing of both sets

  private constructor(config: TrainConfig, bank: DatasetLike, test: DatasetLike) {
    this.#options = config.knnMonitor!;
    this.#bank = bank;
    this.#test = test;
    this.#view = evalView(config, bank);
  }

  // Loads the test split of the run's dataset spec; throws a ByolOptionError naming
  // knnMonitor when there is none or either split lacks labels.
  static async open(config: TrainConfig, train: DatasetLike): Promise<KnnMonitor> {
    const options = config.knnMonitor!;
    if (config.data.kind === 'memory') {
      throw new ByolOptionError(`Option knnMonitor needs a test split, but the run trains on an in-memory dataset ` +
        `(${train.name}); use a dataset spec (data: { kind, path }) or evaluate with evaluateRun({ data })`);
    }
    const spec = config.data as DataOptions;
    const test = await loadDatasetSpec(spec, 'test');
    // STL-10 with its unlabeled images: the bank comes from the labeled training images.
    if (spec.unlabeled) train = await loadDatasetSpec({ ...spec, unlabeled: false }, 'train');
    for (const d of [train, test]) {
      if (!d.labels) throw new ByolOptionError(`Option knnMonitor needs labels, but ${d.name} has none`);
    }
    const [bank, scored] = [firstSamples(train, options.bankSize), firstSamples(test, options.testSize)];
    // Streamed splits: the two subsets are decoded once here when they are small enough, not
    // at every check.
    const bytes = (d: DatasetLike) => (isStreaming(d) ? d.n * d.height * d.width * d.channels : 0);
    const keep = bytes(bank) + bytes(scored) <= MONITOR_MEMORY_BYTES;
    return new KnnMonitor(config, keep ? await inMemory(bank) : bank, keep ? await inMemory(scored) : scored);
  }

  // Whether a check follows step `step` (1-based): every `every` steps, and after the last.
  due(step: number, totalSteps: number): boolean {
    return step % this.#options.every === 0 || step === totalSteps;
  }

  async run(model: TrainableModel, step: number): Promise<KnnMonitorResult> {
    const started = Date.now();
    const bank = await embedDataset(model, this.#bank, { view: this.#view });
    const test = await embedDataset(model, this.#test, { view: this.#view });
    const classes = Math.max(this.#bank.classes ?? 0, this.#test.classes ?? 0) || undefined;
    const k = Math.min(this.#options.k, this.#bank.n);
    const result = await evaluateKnn({
      train: { features: bank.features, labels: this.#bank.labels! },
      test: { features: test.features, labels: this.#test.labels! },
      dim: bank.dim,
      ...(classes ? { classes } : {}),
    }, { k, temperature: this.#options.temperature });
    return {
      step, top1: result.top1, top5: result.top5, k, bank: this.#bank.n, test: this.#test.n,
      seconds: (Date.now() - started) / 1000,
    };
  }
}
