// folder.ts: image folders decoded with sharp: root/<class>/<image> (labels from the sorted
// class folder names, like torchvision's ImageFolder) or root/<image> (unlabeled).
// Contract: every image becomes height x width x channels uint8 (channels 3: sRGB without
// alpha; 1: luma); without `size` all images must share one size, with it each is scaled to
// cover the size and center-cropped (the addon's resizeCover: an antialiased triangle filter,
// as PIL and torchvision resize; sharp's lanczos3 only when the addon does not load). An undecodable image, an empty class folder or a size
// mismatch is a DatasetError naming the file. sharp is loaded only when a folder is read.
// loadImageFolder decodes everything into memory; openImageFolder lists the folder and decodes
// each batch's images when asked (a StreamingDataset), with the same pixels and order.
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';

import { type Dataset, DatasetError, type StreamingDataset, checkIndices, describeErrno } from './dataset';
import { type NativeBinding, native } from '../native';
import { decodePng } from './png';

// sharp's "types" entry is its ESM declaration (a default export); require() gives the function.
type SharpModule = typeof import('sharp').default;

export interface FolderOptions {
  // Output [height, width] (or one side for squares); default: the images' own common size.
  size?: number | [number, number];
  channels?: 1 | 3; // default 3
  // Lower-case extensions with the dot; default the formats sharp decodes.
  extensions?: string[];
  // Images read and decoded at once (file reads and sharp run on libuv's thread pool); default 16.
  concurrency?: number;
  // loadImageFolder: the most decoded bytes to hold in memory; a larger folder is refused with
  // a DatasetError that points to openImageFolder. Default: half of the machine's memory.
  maxBytes?: number;
}

export const DEFAULT_IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif'];

let sharpModule: SharpModule | undefined;
function loadSharp(root: string): SharpModule {
  if (!sharpModule) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      sharpModule = require('sharp') as SharpModule;
    } catch (error) {
      throw new DatasetError(root, 'reading image folders needs the npm package sharp, which failed to load ' +
        `(${error instanceof Error ? error.message.split('\n')[0] : String(error)}); install it with \`npm install sharp\``,
      { cause: error });
    }
  }
  return sharpModule;
}

async function listDir(dir: string) {
  try {
    return await fs.readdir(dir, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new DatasetError(dir, code === 'ENOENT' ? 'folder not found' : code === 'ENOTDIR' ? 'is not a folder'
      : `cannot list folder: ${(error as Error).message}`, { cause: error });
  }
}

// Plain code-unit order: the same on every machine and locale (Python's sorted() agrees).
const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

interface FolderListing {
  files: string[];
  labels?: Int32Array;
  classNames?: string[];
}

// The images of a folder in dataset order (class folders sorted, then file names sorted).
async function listImageFolder(root: string, extensions: string[]): Promise<FolderListing> {
  const isImage = (name: string) => extensions.includes(path.extname(name).toLowerCase());
  const entries = await listDir(root);
  const classDirs = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort(byName);
  const files: string[] = [];
  const labels: number[] = [];
  if (classDirs.length > 0) {
    for (let label = 0; label < classDirs.length; label++) {
      const dir = path.join(root, classDirs[label]);
      const images = (await listDir(dir)).filter((e) => e.isFile() && isImage(e.name)).map((e) => e.name).sort(byName);
      if (images.length === 0) {
        throw new DatasetError(dir, `class folder has no images (looked for ${extensions.join(' ')})`);
      }
      for (const name of images) {
        files.push(path.join(dir, name));
        labels.push(label);
      }
    }
  } else {
    for (const name of entries.filter((e) => e.isFile() && isImage(e.name)).map((e) => e.name).sort(byName)) {
      files.push(path.join(root, name));
    }
  }
  if (files.length === 0) {
    throw new DatasetError(root, `no images found (looked for ${extensions.join(' ')} in the folder and its class subfolders)`);
  }
  return classDirs.length > 0 ? { files, labels: Int32Array.from(labels), classNames: classDirs } : { files };
}

interface ResolvedFolderOptions {
  channels: 1 | 3;
  extensions: string[];
  concurrency: number;
  size?: [number, number];
}

function resolveFolderOptions(options: FolderOptions): ResolvedFolderOptions {
  const channels = options.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new TypeError(`Expected channels 1 or 3 but received ${channels}`);
  const extensions = (options.extensions ?? DEFAULT_IMAGE_EXTENSIONS).map((e) => e.toLowerCase());
  const concurrency = options.concurrency ?? 16;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 256) {
    throw new TypeError(`Expected concurrency between 1 and 256 but received ${concurrency}`);
  }
  const resolved: ResolvedFolderOptions = { channels, extensions, concurrency };
  if (options.maxBytes !== undefined && !(Number.isSafeInteger(options.maxBytes) && options.maxBytes >= 0)) {
    throw new TypeError(`Expected maxBytes to be a non-negative integer but received ${options.maxBytes}`);
  }
  if (options.size !== undefined) {
    const s = typeof options.size === 'number' ? [options.size, options.size] : options.size;
    if (!Array.isArray(s) || s.length !== 2 || !s.every((v) => Number.isSafeInteger(v) && v >= 1 && v <= 16384)) {
      throw new TypeError(`Expected size to be an integer or [height, width] between 1 and 16384 but received ${JSON.stringify(options.size)}`);
    }
    resolved.size = [s[0], s[1]];
  }
  return resolved;
}

interface Decoded {
  data: Uint8Array;
  width: number;
  height: number;
}

const isJpeg = (bytes: Uint8Array) => bytes.length > 3 && bytes[0] === 0xFF && bytes[1] === 0xD8 && bytes[2] === 0xFF;

// The addon's image functions, or null when it does not load (folders then read through sharp
// alone, which also resizes).
let imageFunctions: Pick<NativeBinding, 'decodeJpeg' | 'resizeCover'> | null | undefined;
function imageAddon(): Pick<NativeBinding, 'decodeJpeg' | 'resizeCover'> | null {
  if (imageFunctions === undefined) {
    try {
      imageFunctions = { decodeJpeg: native.decodeJpeg, resizeCover: native.resizeCover };
    } catch {
      imageFunctions = null;
    }
  }
  return imageFunctions;
}

// Decodes one image into channels, resized to cover `size` and centre-cropped when given.
// Plain 8-bit PNGs (decodePng) and baseline/progressive JPEGs (libjpeg in the addon) skip sharp,
// with sharp's pixels, at a fraction of its per-image cost; other files decode through sharp.
// Resizes are the addon's resizeCover (an antialiased triangle filter, as PIL and torchvision
// resize), or sharp's when the addon does not load.
async function decodeImage(sharp: SharpModule, file: string, channels: 1 | 3, size?: [number, number]): Promise<Decoded> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (error) {
    throw new DatasetError(file, `cannot read image: ${describeErrno(error)}`, { cause: error });
  }
  const addon = imageAddon();
  const fits = (image: Decoded) => !size || (image.height === size[0] && image.width === size[1]);
  // Only called with the addon loaded, or for an image that fits.
  const sized = async (image: Decoded): Promise<Decoded> => (fits(image) ? image : {
    data: await addon!.resizeCover(image.data, image.height, image.width, channels, size![0], size![1]),
    height: size![0], width: size![1],
  });
  const png = decodePng(bytes, channels);
  if (png && (addon || fits(png))) return sized(png);
  if (addon?.decodeJpeg && isJpeg(bytes)) {
    const jpeg = await addon.decodeJpeg(bytes, channels, size?.[0], size?.[1]);
    if (jpeg) return jpeg;
  }
  let image: Decoded;
  try {
    let pipeline = sharp(bytes, { failOn: 'error' });
    pipeline = channels === 1 ? pipeline.grayscale() : pipeline.toColourspace('srgb');
    pipeline = pipeline.removeAlpha();
    if (size && !addon) pipeline = pipeline.resize(size[1], size[0], { fit: 'cover', position: 'centre' });
    const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== channels) throw new Error(`decoded ${info.channels} channels instead of ${channels}`);
    image = { data, width: info.width, height: info.height };
  } catch (error) {
    throw new DatasetError(file, `cannot decode image: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error });
  }
  return addon ? sized(image) : image;
}

// The folder's images, decoded: the first one fixes the size when none is given. `decodeAll`
// decodes `files[i]` for every i of `indices` (concurrently) into `out` at row i.
class FolderDecoder {
  readonly height: number;
  readonly width: number;
  readonly #sharp: SharpModule;
  readonly #files: string[];
  readonly #options: ResolvedFolderOptions;

  private constructor(sharp: SharpModule, files: string[], options: ResolvedFolderOptions, height: number, width: number) {
    this.#sharp = sharp;
    this.#files = files;
    this.#options = options;
    this.height = height;
    this.width = width;
  }

  static async open(root: string, files: string[], options: ResolvedFolderOptions): Promise<{ decoder: FolderDecoder; first: Decoded }> {
    const sharp = loadSharp(root);
    const first = await decodeImage(sharp, files[0], options.channels, options.size);
    const [height, width] = options.size ?? [first.height, first.width];
    return { decoder: new FolderDecoder(sharp, files, options, height, width), first };
  }

  get bytes(): number {
    return this.height * this.width * this.#options.channels;
  }

  place(out: Uint8Array, row: number, index: number, image: Decoded): void {
    if (image.height !== this.height || image.width !== this.width) {
      throw new DatasetError(this.#files[index], `is ${image.height}x${image.width} (height x width) but ` +
        `${this.#files[0]} is ${this.height}x${this.width}; pass the size option to resize every image`);
    }
    out.set(image.data, row * this.bytes);
  }

  async decodeAll(indices: ArrayLike<number>, out: Uint8Array, skip = 0): Promise<void> {
    let next = skip;
    let failed = false; // the first failure stops every worker: nobody waits for the rest
    const worker = async () => {
      while (next < indices.length && !failed) {
        const row = next++;
        const index = indices[row];
        const { channels, size } = this.#options;
        try {
          this.place(out, row, index, await decodeImage(this.#sharp, this.#files[index], channels, size));
        } catch (error) {
          failed = true;
          throw error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#options.concurrency, indices.length - skip) }, worker));
  }
}

function describeFolder(root: string, listing: FolderListing, height: number, width: number, channels: 1 | 3) {
  const info = { name: `folder:${root}`, n: listing.files.length, height, width, channels, files: listing.files };
  return listing.labels ? { ...info, labels: listing.labels, classes: listing.classNames!.length, classNames: listing.classNames } : info;
}

export async function loadImageFolder(root: string, options: FolderOptions = {}): Promise<Dataset> {
  const resolved = resolveFolderOptions(options);
  const listing = await listImageFolder(root, resolved.extensions);
  const { decoder, first } = await FolderDecoder.open(root, listing.files, resolved);
  const total = listing.files.length * decoder.bytes;
  // Refused here rather than failing later in an allocation or in swap.
  const maxBytes = options.maxBytes ?? Math.floor(os.totalmem() / 2);
  if (total > maxBytes) {
    const size = (bytes: number) => (bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${bytes} bytes`);
    throw new DatasetError(root, `${listing.files.length} images of ${decoder.height}x${decoder.width}x${resolved.channels} ` +
      `take ${size(total)} decoded, more than ${options.maxBytes === undefined ? "half of this machine's memory, " : 'maxBytes '}` +
      `${size(maxBytes)}; stream them instead (openImageFolder, data.stream: true, --data-stream) or pass a smaller size`);
  }
  const images = new Uint8Array(total);
  decoder.place(images, 0, 0, first);
  await decoder.decodeAll(Int32Array.from(listing.files, (_, i) => i), images, 1);
  return { ...describeFolder(root, listing, decoder.height, decoder.width, resolved.channels), images };
}

// The folder as a StreamingDataset: listed now (and its first image decoded, to fix the size
// and fail early), every other image decoded when a batch asks for it. Memory stays at a few
// batches whatever the folder's size; the pixels equal loadImageFolder's.
export async function openImageFolder(root: string, options: FolderOptions = {}): Promise<StreamingDataset> {
  const resolved = resolveFolderOptions(options);
  const listing = await listImageFolder(root, resolved.extensions);
  const { decoder } = await FolderDecoder.open(root, listing.files, resolved);
  const info = describeFolder(root, listing, decoder.height, decoder.width, resolved.channels);
  return {
    ...info,
    read: async (indices: ArrayLike<number>) => {
      checkIndices(indices, info.n);
      const out = new Uint8Array(indices.length * decoder.bytes);
      await decoder.decodeAll(indices, out);
      return out;
    },
  };
}
