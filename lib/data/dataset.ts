// dataset.ts: the in-memory dataset every loader returns, the error for damaged files and the
// file helpers they share. Contract: images are uint8 NHWC, n * height * width * channels
// bytes; labels (when present) are n int32 in [0, classes); every problem with a file throws
// DatasetError whose message starts with the file's path and says what is wrong.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

export interface Dataset {
  // What was loaded, e.g. 'fashion-mnist/train' or 'folder:/data/pets'.
  name: string;
  images: Uint8Array; // NHWC
  labels?: Int32Array;
  n: number;
  height: number;
  width: number;
  channels: number;
  classes?: number;
  classNames?: string[];
  // Image folders: the file of each image, in dataset order.
  files?: string[];
}

export class DatasetError extends Error {
  readonly file: string;
  constructor(file: string, problem: string, options?: { cause?: unknown }) {
    super(`${file}: ${problem}`, options);
    this.name = 'DatasetError';
    this.file = file;
  }
}

function describeErrno(error: unknown): string {
  const code = (error as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return 'file not found';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory, expected a file';
  return error instanceof Error ? error.message : String(error);
}

// The size of a file, or DatasetError (missing, not a regular file).
export async function fileSize(file: string): Promise<number> {
  let stat;
  try {
    stat = await fs.stat(file);
  } catch (error) {
    throw new DatasetError(file, describeErrno(error), { cause: error });
  }
  if (!stat.isFile()) throw new DatasetError(file, 'is not a regular file');
  return stat.size;
}

// Reads `length` bytes from `offset` (default: the whole file). Reads in chunks into one
// buffer, so files above 2 GiB (STL-10's unlabeled split) work where fs.readFile refuses.
export async function readBytes(file: string, offset = 0, length?: number): Promise<Uint8Array> {
  const size = await fileSize(file);
  const want = length ?? size - offset;
  if (offset + want > size) {
    throw new DatasetError(file, `truncated: expected at least ${offset + want} bytes but the file has ${size}`);
  }
  const out = new Uint8Array(want);
  let handle;
  try {
    handle = await fs.open(file, 'r');
    let done = 0;
    while (done < want) {
      const chunk = Math.min(want - done, 1 << 28);
      const { bytesRead } = await handle.read(out, done, chunk, offset + done);
      if (bytesRead === 0) throw new Error(`unexpected end of file after ${offset + done} bytes`);
      done += bytesRead;
    }
  } catch (error) {
    if (error instanceof DatasetError) throw error;
    throw new DatasetError(file, `read failed: ${describeErrno(error)}`, { cause: error });
  } finally {
    await handle?.close();
  }
  return out;
}

// The first of `candidates` that exists, or DatasetError naming the first and listing the rest.
export async function firstExisting(candidates: string[]): Promise<string> {
  for (const file of candidates) {
    try {
      const stat = await fs.stat(file);
      if (stat.isFile()) return file;
    } catch {
      // try the next name
    }
  }
  const others = candidates.slice(1);
  throw new DatasetError(candidates[0], `file not found${others.length ? ` (also tried ${others.join(', ')})` : ''}`);
}

// Throws DatasetError for the first label outside [0, classes).
export function checkLabels(file: string, labels: Int32Array, classes: number, offset = 0): void {
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i];
    if (label < 0 || label >= classes) {
      throw new DatasetError(file, `label ${label} of sample ${offset + i} is outside [0, ${classes})`);
    }
  }
}

// Where a dataset's files are: `dir` itself when it holds `probe`, else its conventional
// subfolder when that exists (the layout of the official archives), else `dir` (so that the
// missing-file error names the file the user most likely meant).
export async function resolveDatasetDir(dir: string, subfolder: string, probe: string): Promise<string> {
  const exists = async (p: string, directory: boolean) => {
    try {
      const stat = await fs.stat(p);
      return directory ? stat.isDirectory() : stat.isFile();
    } catch {
      return false;
    }
  };
  if (await exists(path.join(dir, probe), false)) return dir;
  if (await exists(path.join(dir, subfolder), true)) return path.join(dir, subfolder);
  return dir;
}

// Reads an optional one-name-per-line file (class names shipped with CIFAR and STL-10).
export async function readNames(file: string, expected: number): Promise<string[] | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  const names = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line.length > 0);
  if (names.length !== expected) {
    throw new DatasetError(file, `expected ${expected} class names, one per line, but found ${names.length}`);
  }
  return names;
}

// A new dataset holding the samples at `indices` (copies pixels and labels).
export function subset(dataset: Dataset, indices: ArrayLike<number>, name = `${dataset.name}[subset]`): Dataset {
  const size = dataset.height * dataset.width * dataset.channels;
  const images = new Uint8Array(indices.length * size);
  const labels = dataset.labels ? new Int32Array(indices.length) : undefined;
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i];
    if (!Number.isInteger(index) || index < 0 || index >= dataset.n) {
      throw new RangeError(`Expected indices[${i}] between 0 and ${dataset.n - 1} but received ${index}`);
    }
    images.set(dataset.images.subarray(index * size, (index + 1) * size), i * size);
    if (labels) labels[i] = dataset.labels![index];
  }
  const result: Dataset = { ...dataset, name, images, n: indices.length };
  if (labels) result.labels = labels;
  else delete result.labels;
  if (dataset.files) result.files = Array.from(indices, (index) => dataset.files![index]);
  return result;
}

// Checks the invariants of a Dataset built elsewhere (the loader calls this); throws a
// TypeError naming the field.
export function validateDataset(dataset: unknown, name = 'dataset'): Dataset {
  const d = dataset as Dataset;
  if (typeof d !== 'object' || d === null) throw new TypeError(`Expected a Dataset for ${name} but received ${d}`);
  for (const key of ['n', 'height', 'width', 'channels'] as const) {
    if (!Number.isSafeInteger(d[key]) || d[key] < (key === 'n' ? 0 : 1)) {
      throw new TypeError(`Expected ${name}.${key} to be a ${key === 'n' ? 'non-negative' : 'positive'} integer but received ${d[key]}`);
    }
  }
  if (d.channels !== 1 && d.channels !== 3) throw new TypeError(`Expected ${name}.channels 1 or 3 but received ${d.channels}`);
  if (!(d.images instanceof Uint8Array) || d.images.length !== d.n * d.height * d.width * d.channels) {
    throw new TypeError(`Expected ${name}.images to be a Uint8Array of n*height*width*channels = ` +
      `${d.n * d.height * d.width * d.channels} bytes but received ${d.images?.length ?? d.images}`);
  }
  if (d.labels !== undefined && (!(d.labels instanceof Int32Array) || d.labels.length !== d.n)) {
    throw new TypeError(`Expected ${name}.labels to be an Int32Array of ${d.n} labels`);
  }
  return d;
}
