// data.ts (train): turns a DataOptions spec into a DatasetLike for a split ('train' for training
// and fitting probes, 'test' for evaluation), and gives the defaults that follow from the data.
// Contract: one place maps spec kinds onto lib/data loaders; a split a kind lacks is an error
// naming the option; `limit` keeps the first samples (a deterministic subset).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { type AugmentPreset } from '../augment';
import {
  type DatasetLike, loadCifar10, loadCifar100, loadFashionMnist, loadImageFolder, loadMnist, loadStl10, openImageFolder, subset,
  syntheticDataset,
} from '../data';
import { ByolOptionError } from '../validate';
import { type DataOptions, type Stem } from './options';

export type Split = 'train' | 'test';

async function isDirectory(dir: string): Promise<boolean> {
  try {
    return (await fs.stat(dir)).isDirectory();
  } catch {
    return false;
  }
}

// Seeds of the synthetic splits: different samples from the same class distributions.
const SYNTHETIC_SEED = { train: 0, test: 1_000_003 };

export async function loadDatasetSpec(spec: DataOptions, split: Split): Promise<DatasetLike> {
  let dataset: DatasetLike;
  switch (spec.kind) {
    case 'synthetic': {
      const n = split === 'train' ? spec.limit ?? 1024 : spec.testLimit ?? 256;
      const side = spec.size ?? 32;
      dataset = syntheticDataset({
        n, height: side, width: side, channels: spec.channels ?? 3, classes: spec.classes ?? 10,
        seed: SYNTHETIC_SEED[split],
      });
      return dataset;
    }
    case 'fashion-mnist':
      dataset = await loadFashionMnist(spec.path!, { split });
      break;
    case 'mnist':
      dataset = await loadMnist(spec.path!, { split });
      break;
    case 'cifar10':
      dataset = await loadCifar10(spec.path!, { split });
      break;
    case 'cifar100':
      dataset = await loadCifar100(spec.path!, { split });
      break;
    case 'stl10':
      // Training uses the 5000 labeled train images, and with `unlabeled` the 100000 unlabeled
      // ones after them (a 2.8 GB read).
      dataset = await loadStl10(spec.path!, {
        split: split === 'train' && spec.unlabeled ? 'train+unlabeled' : split,
        limit: split === 'train' ? spec.limit : undefined,
      });
      break;
    case 'folder': {
      const root = spec.path!;
      const splitDir = path.join(root, split);
      let dir = root;
      if (await isDirectory(splitDir)) dir = splitDir;
      else if (split === 'test') {
        throw new ByolOptionError(`data.path ${root} has no test/ folder: evaluation of a 'folder' dataset needs ` +
          'root/train/<class>/... and root/test/<class>/...');
      }
      const options = { size: spec.size, channels: spec.channels ?? 3 };
      dataset = spec.stream ? await openImageFolder(dir, options) : await loadImageFolder(dir, options);
      break;
    }
    default:
      throw new ByolOptionError(`Unknown data.kind ${JSON.stringify((spec as DataOptions).kind)}`);
  }
  if (split === 'train' && spec.limit !== undefined) dataset = firstSamples(dataset, spec.limit);
  return dataset;
}

// The spec probes fit on: the whole labeled training split (no training-time `limit`, except
// for 'synthetic' where it is the size; no STL-10 unlabeled images).
export function probeSpec(spec: DataOptions): DataOptions {
  const out = { ...spec };
  if (out.kind !== 'synthetic') delete out.limit;
  delete out.unlabeled;
  return out;
}

// The first `count` samples of `dataset` (all of it when it has no more), named "<name>[:count]".
export function firstSamples(dataset: DatasetLike, count: number): DatasetLike {
  if (count >= dataset.n) return dataset;
  return subset(dataset, Int32Array.from({ length: count }, (_, i) => i), `${dataset.name}[:${count}]`);
}

// The augmentation preset that suits the data (when the user named none).
export function defaultAugmentPreset(dataset: DatasetLike): AugmentPreset {
  if (dataset.channels === 1) return 'grayscale';
  return Math.max(dataset.height, dataset.width) <= 64 ? 'cifar' : 'byol';
}

// The stem that suits an image size: small images keep their resolution.
export function defaultStem(imageSide: number): Stem {
  return imageSide <= 64 ? 'cifar' : 'imagenet';
}
