// cifar.ts: CIFAR-10 and CIFAR-100 "binary version" batches.
// Contract: CIFAR-10 records are <label byte><3072 pixel bytes>, CIFAR-100 records
// <coarse label><fine label><3072 bytes>; pixels are channel-planar 32x32 (R plane, G, B) and
// come back NHWC. A file whose size is not a whole number of records, or a label out of range,
// is a DatasetError naming the file.
import * as path from 'node:path';

import { type Dataset, DatasetError, fileSize, readBytes, readNames, resolveDatasetDir } from './dataset';

const SIDE = 32;
const PLANE = SIDE * SIDE;
const PIXELS = 3 * PLANE;

export interface CifarOptions {
  split?: 'train' | 'test'; // default 'train'
}
export interface Cifar100Options extends CifarOptions {
  labels?: 'fine' | 'coarse'; // default 'fine' (100 classes); 'coarse' has 20
}

async function readRecords(files: string[], labelBytes: number, labelIndex: number, classes: number,
  name: string): Promise<Dataset> {
  const record = labelBytes + PIXELS;
  const counts: number[] = [];
  for (const file of files) {
    const size = await fileSize(file);
    if (size === 0 || size % record !== 0) {
      throw new DatasetError(file, `size ${size} bytes is not a whole number of ${record}-byte records ` +
        `(${Math.floor(size / record)} records and ${size % record} bytes left over): truncated or not a CIFAR binary batch`);
    }
    counts.push(size / record);
  }
  const n = counts.reduce((a, b) => a + b, 0);
  const images = new Uint8Array(n * PIXELS);
  const labels = new Int32Array(n);
  let sample = 0;
  for (let f = 0; f < files.length; f++) {
    const bytes = await readBytes(files[f]);
    for (let r = 0; r < counts[f]; r++, sample++) {
      const base = r * record;
      const label = bytes[base + labelIndex];
      if (label >= classes) {
        throw new DatasetError(files[f], `label ${label} of record ${r} is outside [0, ${classes})`);
      }
      labels[sample] = label;
      const src = base + labelBytes;
      const dst = sample * PIXELS;
      for (let p = 0; p < PLANE; p++) {
        images[dst + 3 * p] = bytes[src + p];
        images[dst + 3 * p + 1] = bytes[src + PLANE + p];
        images[dst + 3 * p + 2] = bytes[src + 2 * PLANE + p];
      }
    }
  }
  return { name, images, labels, n, height: SIDE, width: SIDE, channels: 3, classes };
}

function checkSplit(split: unknown): 'train' | 'test' {
  if (split !== 'train' && split !== 'test') {
    throw new TypeError(`Expected split 'train' or 'test' but received ${JSON.stringify(split)}`);
  }
  return split;
}

// CIFAR-10 from `dir` (or dir/cifar-10-batches-bin): data_batch_1..5.bin or test_batch.bin.
export async function loadCifar10(dir: string, options: CifarOptions = {}): Promise<Dataset> {
  const split = checkSplit(options.split ?? 'train');
  const root = await resolveDatasetDir(dir, 'cifar-10-batches-bin', split === 'train' ? 'data_batch_1.bin' : 'test_batch.bin');
  const files = split === 'train'
    ? [1, 2, 3, 4, 5].map((i) => path.join(root, `data_batch_${i}.bin`))
    : [path.join(root, 'test_batch.bin')];
  const dataset = await readRecords(files, 1, 0, 10, `cifar10/${split}`);
  const names = await readNames(path.join(root, 'batches.meta.txt'), 10);
  if (names) dataset.classNames = names;
  return dataset;
}

// CIFAR-100 from `dir` (or dir/cifar-100-binary): train.bin or test.bin.
export async function loadCifar100(dir: string, options: Cifar100Options = {}): Promise<Dataset> {
  const split = checkSplit(options.split ?? 'train');
  const kind = options.labels ?? 'fine';
  if (kind !== 'fine' && kind !== 'coarse') {
    throw new TypeError(`Expected labels 'fine' or 'coarse' but received ${JSON.stringify(kind)}`);
  }
  const root = await resolveDatasetDir(dir, 'cifar-100-binary', `${split}.bin`);
  const classes = kind === 'fine' ? 100 : 20;
  const dataset = await readRecords([path.join(root, `${split}.bin`)], 2, kind === 'fine' ? 1 : 0, classes,
    `cifar100/${split}`);
  const names = await readNames(path.join(root, `${kind}_label_names.txt`), classes);
  if (names) dataset.classNames = names;
  return dataset;
}
