// stl10.ts: STL-10 binaries (stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin), alone or
// train + unlabeled together (read in chunks, so a 2.8 GB file is never held twice).
// Contract: X files hold 3x96x96 uint8 images, each channel stored column-major (MATLAB
// order); they come back NHWC. y files hold one byte per image, classes 1..10, returned as
// 0..9. Sizes, counts and label ranges are checked; each failure names the file.
import * as path from 'node:path';

import { type Dataset, DatasetError, fileSize, readBytes, readNames, resolveDatasetDir } from './dataset';

const SIDE = 96;
const PLANE = SIDE * SIDE;
const IMAGE = 3 * PLANE;

export interface Stl10Options {
  // 'train+unlabeled': the 5000 labeled training images, then the 100000 unlabeled ones,
  // without labels (what BYOL and SimCLR pretrain on). Default 'train'.
  split?: 'train' | 'test' | 'unlabeled' | 'train+unlabeled';
  // Load only the first `limit` images (the unlabeled split is 100000 images, 2.8 GB).
  limit?: number;
}

// Images read and transposed per chunk: the file is never held twice in memory.
const CHUNK = 1024;

export async function loadStl10(dir: string, options: Stl10Options = {}): Promise<Dataset> {
  const split = options.split ?? 'train';
  if (split !== 'train' && split !== 'test' && split !== 'unlabeled' && split !== 'train+unlabeled') {
    throw new TypeError(`Expected split 'train', 'test', 'unlabeled' or 'train+unlabeled' but received ${JSON.stringify(split)}`);
  }
  const limit = options.limit;
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) {
    throw new TypeError(`Expected limit to be a positive integer but received ${limit}`);
  }
  const parts = split === 'train+unlabeled' ? ['train', 'unlabeled'] : [split];
  const root = await resolveDatasetDir(dir, 'stl10_binary', `${parts[0]}_X.bin`);
  const files: { file: string; count: number }[] = [];
  for (const part of parts) {
    const file = path.join(root, `${part}_X.bin`);
    const size = await fileSize(file);
    if (size === 0 || size % IMAGE !== 0) {
      throw new DatasetError(file, `size ${size} bytes is not a whole number of ${IMAGE}-byte 3x96x96 images ` +
        `(${size % IMAGE} bytes left over): truncated or not an STL-10 file`);
    }
    files.push({ file, count: size / IMAGE });
  }
  const total = files.reduce((sum, f) => sum + f.count, 0);
  const n = limit === undefined ? total : Math.min(limit, total);
  const images = new Uint8Array(n * IMAGE);
  let done = 0;
  for (const { file, count } of files) {
    const take = Math.min(count, n - done);
    for (let first = 0; first < take; first += CHUNK) {
      const k = Math.min(CHUNK, take - first);
      const raw = await readBytes(file, first * IMAGE, k * IMAGE);
      for (let i = 0; i < k; i++) {
        const src = i * IMAGE;
        const dst = (done + first + i) * IMAGE;
        for (let c = 0; c < 3; c++) {
          for (let x = 0; x < SIDE; x++) {
            const column = src + c * PLANE + x * SIDE;
            for (let y = 0; y < SIDE; y++) images[dst + (y * SIDE + x) * 3 + c] = raw[column + y];
          }
        }
      }
    }
    done += take;
  }
  const dataset: Dataset = { name: `stl10/${split}`, images, n, height: SIDE, width: SIDE, channels: 3 };
  if (split === 'train' || split === 'test') {
    const xFile = files[0].file;
    const yFile = path.join(root, `${split}_y.bin`);
    const count = await fileSize(yFile);
    if (count !== total) throw new DatasetError(yFile, `holds ${count} labels but ${xFile} holds ${total} images`);
    const bytes = await readBytes(yFile, 0, n);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      if (bytes[i] < 1 || bytes[i] > 10) {
        throw new DatasetError(yFile, `label ${bytes[i]} of image ${i} is outside 1..10 (STL-10 labels are 1-based)`);
      }
      labels[i] = bytes[i] - 1;
    }
    dataset.labels = labels;
    dataset.classes = 10;
    const names = await readNames(path.join(root, 'class_names.txt'), 10);
    if (names) dataset.classNames = names;
  }
  return dataset;
}
