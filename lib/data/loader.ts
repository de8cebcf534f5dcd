// loader.ts: batches of a Dataset (or StreamingDataset) for training: seeded shuffling per epoch, optional drop of
// the last partial batch, and prefetching (the next batch is gathered and augmented natively
// while the caller's step runs).
// Contract: the order of an epoch is a pure function of (seed, epoch); augmented views are
// keyed by (seed, epoch, dataset index, view number), so a run replays exactly. Views are
// Tensors the caller owns (dispose them, or call disposeBatch); views prepared ahead and never
// handed out are disposed by the loader when iteration stops early.
import { type AugmentConfig, type AugmentConfigOptions, augmentBatch, resolveViews } from '../augment';
import { resolveDevice } from '../device';
import { type Tensor } from '../tensor';
import { ByolOptionError, boolean, integer, invalid, isPlainObject, knownKeys, withDefault } from '../validate';
import { type DatasetLike, readSamples, validateDataset } from './dataset';
import { permutation } from './random';

export interface LoaderOptions {
  batchSize: number;
  shuffle?: boolean; // default true
  seed?: number | bigint; // shuffling and augmentation; default 0
  dropLast?: boolean; // drop the last batch when smaller than batchSize; default false
  // One config per view (e.g. augmentPair({ preset: 'cifar' })); omitted: no views.
  augment?: (AugmentConfig | AugmentConfigOptions)[];
  device?: string; // where views are made; default 'cpu'
  prefetch?: number; // batches prepared ahead of the one in use, 0..8; default 1
}

export interface Batch {
  epoch: number;
  step: number; // index of the batch within its epoch
  n: number;
  height: number;
  width: number;
  channels: number;
  images: Uint8Array; // NHWC uint8 of this batch's samples, in batch order
  labels?: Int32Array;
  indices: Int32Array; // dataset index of each sample
  views?: Tensor<'float32'>[]; // one per augment config: [n, C, outH, outW], normalized
}

export function disposeBatch(batch: Batch): void {
  for (const view of batch.views ?? []) view.dispose();
}

const KEYS = ['batchSize', 'shuffle', 'seed', 'dropLast', 'augment', 'device', 'prefetch'] as const;

export class DataLoader {
  readonly dataset: DatasetLike;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number | bigint;
  readonly dropLast: boolean;
  readonly views: AugmentConfig[];
  readonly device: string;
  readonly prefetch: number;

  constructor(dataset: DatasetLike, options: LoaderOptions) {
    this.dataset = validateDataset(dataset, 'dataset', true);
    if (!isPlainObject(options)) throw invalid('options', 'object', options);
    knownKeys('options', options as unknown as Record<string, unknown>, KEYS);
    this.batchSize = integer('options.batchSize', options.batchSize, 1, 1 << 20);
    this.shuffle = withDefault(options.shuffle, true, (v) => boolean('options.shuffle', v));
    this.seed = withDefault<number | bigint>(options.seed, 0, (v) => {
      if (typeof v === 'bigint' && v >= 0n && v < 1n << 64n) return v;
      return integer('options.seed', v, 0, Number.MAX_SAFE_INTEGER);
    });
    this.dropLast = withDefault(options.dropLast, false, (v) => boolean('options.dropLast', v));
    this.views = options.augment === undefined ? [] : resolveViews(options.augment, 'options.augment');
    for (const [i, view] of this.views.entries()) {
      if (view.mean.length !== dataset.channels) {
        throw new ByolOptionError(`Expected options.augment[${i}].mean with ${dataset.channels} entries for ` +
          `${dataset.channels}-channel images but received ${view.mean.length}; use preset 'grayscale' for 1 channel`);
      }
    }
    this.device = resolveDevice(withDefault(options.device, 'cpu', (v) => v), 'options.device');
    this.prefetch = withDefault(options.prefetch, 1, (v) => integer('options.prefetch', v, 0, 8));
  }

  get batchesPerEpoch(): number {
    const n = this.dataset.n;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  // Dataset indices in the order epoch `epoch` visits them.
  order(epoch: number): Int32Array {
    integer('epoch', epoch, 0, 0xFFFFFFFF);
    if (!this.shuffle) return Int32Array.from({ length: this.dataset.n }, (_, i) => i);
    return permutation(this.dataset.n, this.seed, epoch);
  }

  #last: { epoch: number; order: Int32Array } | null = null;

  // Batch `step` of epoch `epoch` on its own, as epoch() would give it (e.g. to start mid-epoch,
  // as a resumed training run does). The epoch's order is kept for the next call.
  batch(epoch: number, step: number): Promise<Batch> {
    if (this.#last?.epoch !== epoch) this.#last = { epoch, order: this.order(epoch) };
    integer('step', step, 0, Math.max(0, this.batchesPerEpoch - 1));
    return this.#prepare(this.#last.order, epoch, step);
  }

  // Gathers batch `step` of an epoch's order and starts its augmentation.
  async #prepare(order: Int32Array, epoch: number, step: number): Promise<Batch> {
    const { dataset } = this;
    const start = step * this.batchSize;
    const indices = order.slice(start, Math.min(start + this.batchSize, order.length));
    const n = indices.length;
    const images = await readSamples(dataset, indices);
    const batch: Batch = { epoch, step, n, height: dataset.height, width: dataset.width, channels: dataset.channels, images, indices };
    if (dataset.labels) batch.labels = indices.length ? Int32Array.from(indices, (i) => dataset.labels![i]) : new Int32Array(0);
    if (this.views.length > 0) {
      const views: Tensor<'float32'>[] = [];
      const shape = [n, dataset.height, dataset.width, dataset.channels];
      try {
        // One view at a time: each already uses every core.
        for (let v = 0; v < this.views.length; v++) {
          const out = await augmentBatch(images, null, {
            config: this.views[v], seed: this.seed, epoch, indices, view: v + 1, device: this.device, shape,
          });
          views.push(out.images);
        }
      } catch (error) {
        for (const view of views) view.dispose();
        throw error;
      }
      batch.views = views;
    }
    return batch;
  }

  // The batches of one epoch. While the caller works on batch k, batches k+1..k+prefetch are
  // being prepared.
  async *epoch(epoch: number): AsyncGenerator<Batch, void, undefined> {
    const order = this.order(epoch);
    const total = this.batchesPerEpoch;
    const pending: Promise<Batch>[] = [];
    let next = 0;
    const launch = () => {
      const promise = this.#prepare(order, epoch, next++);
      // Observed at once so that a failure while the caller is busy is not "unhandled"; the
      // same promise is awaited (and rethrows) when its turn comes.
      promise.catch(() => undefined);
      pending.push(promise);
    };
    try {
      while (pending.length > 0 || next < total) {
        if (pending.length === 0) launch();
        const batch = await pending.shift()!;
        while (next < total && pending.length < this.prefetch) launch();
        yield batch;
      }
    } finally {
      // Stopped early (break, throw): free the views nobody will receive.
      for (const promise of pending) promise.then(disposeBatch, () => undefined);
    }
  }
}
