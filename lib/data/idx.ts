// idx.ts: MNIST-style IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
// Contract: the magic number (0x00000803 images, 0x00000801 labels: unsigned bytes) and every
// dimension are checked against the file's length, image and label counts must agree, labels
// must be below `classes`; each failure is a DatasetError naming the file.
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

import { type Dataset, DatasetError, checkLabels, firstExisting, readBytes } from './dataset';

const gunzip = promisify(zlib.gunzip);
const UBYTE = 0x08;

export interface IdxArray {
  dims: number[];
  data: Uint8Array; // the payload after the header
}

// Reads an IDX file of unsigned bytes with `ndim` dimensions (gzip detected by its magic).
export async function readIdx(file: string, ndim: number): Promise<IdxArray> {
  let bytes = await readBytes(file);
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = new Uint8Array(await gunzip(bytes));
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      throw new DatasetError(file, `damaged gzip data (${why}); the download may be truncated`, { cause: error });
    }
  }
  const expectedMagic = (UBYTE << 8) | ndim;
  if (bytes.length < 4) throw new DatasetError(file, `truncated: ${bytes.length} bytes, shorter than the IDX header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  if (magic !== expectedMagic) {
    throw new DatasetError(file, `wrong magic number 0x${magic.toString(16).padStart(8, '0')}, expected ` +
      `0x${expectedMagic.toString(16).padStart(8, '0')} (IDX unsigned bytes, ${ndim}-D ${ndim === 1 ? 'labels' : 'images'})`);
  }
  const header = 4 + 4 * ndim;
  if (bytes.length < header) {
    throw new DatasetError(file, `truncated: ${bytes.length} bytes, shorter than its ${header}-byte IDX header`);
  }
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const payload = dims.reduce((a, b) => a * b, 1);
  const found = bytes.length - header;
  if (found < payload) {
    throw new DatasetError(file, `truncated: the header declares ${dims.join(' x ')} = ${payload} bytes of data ` +
      `but the file holds ${found}`);
  }
  if (found > payload) {
    throw new DatasetError(file, `${found - payload} unexpected bytes after the ${dims.join(' x ')} data declared by the header`);
  }
  return { dims, data: bytes.subarray(header) };
}

export interface IdxFiles {
  images: string;
  labels?: string;
  classes?: number; // labels are checked to be below it (default 10)
  name?: string;
}

// An IDX image file (N x H x W) and optional label file (N) as a 1-channel dataset.
export async function loadIdx(files: IdxFiles): Promise<Dataset> {
  const classes = files.classes ?? 10;
  const images = await readIdx(files.images, 3);
  const [n, height, width] = images.dims;
  const dataset: Dataset = {
    name: files.name ?? `idx:${files.images}`, images: images.data, n, height, width, channels: 1,
  };
  if (files.labels !== undefined) {
    const labels = await readIdx(files.labels, 1);
    if (labels.dims[0] !== n) {
      throw new DatasetError(files.labels, `holds ${labels.dims[0]} labels but ${files.images} holds ${n} images`);
    }
    dataset.labels = Int32Array.from(labels.data);
    checkLabels(files.labels, dataset.labels, classes);
    dataset.classes = classes;
  }
  return dataset;
}

export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
  'Sneaker', 'Bag', 'Ankle boot'];

export interface MnistOptions {
  split?: 'train' | 'test'; // default 'train'
}

async function loadMnistLike(kind: 'mnist' | 'fashion-mnist', dir: string, options: MnistOptions = {}): Promise<Dataset> {
  const split = options.split ?? 'train';
  if (split !== 'train' && split !== 'test') {
    throw new TypeError(`Expected split 'train' or 'test' but received ${JSON.stringify(split)}`);
  }
  const prefix = split === 'train' ? 'train' : 't10k';
  const candidates = (stem: string) => [`${stem}.gz`, stem].map((f) => path.join(dir, f));
  const images = await firstExisting(candidates(`${prefix}-images-idx3-ubyte`));
  const labels = await firstExisting(candidates(`${prefix}-labels-idx1-ubyte`));
  const dataset = await loadIdx({ images, labels, classes: 10, name: `${kind}/${split}` });
  if (kind === 'fashion-mnist') dataset.classNames = FASHION_MNIST_CLASSES.slice();
  else dataset.classNames = Array.from({ length: 10 }, (_, i) => String(i));
  return dataset;
}

// Fashion-MNIST from a folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
// (Debian's dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist).
export function loadFashionMnist(dir: string, options?: MnistOptions): Promise<Dataset> {
  return loadMnistLike('fashion-mnist', dir, options);
}

// MNIST: the same file names and format.
export function loadMnist(dir: string, options?: MnistOptions): Promise<Dataset> {
  return loadMnistLike('mnist', dir, options);
}
