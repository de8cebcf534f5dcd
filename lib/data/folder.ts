// folder.ts: image folders decoded with sharp: root/<class>/<image> (labels from the sorted
// class folder names, like torchvision's ImageFolder) or root/<image> (unlabeled).
// Contract: every image becomes height x width x channels uint8 (channels 3: sRGB without
// alpha; 1: luma); without `size` all images must share one size, with it each is resized to
// cover the size and center-cropped. An undecodable image, an empty class folder or a size
// mismatch is a DatasetError naming the file. sharp is loaded only when a folder is read.
import * as path from 'node:path';
import { promises as fs } from 'node:fs';

import { type Dataset, DatasetError } from './dataset';

// sharp's "types" entry is its ESM declaration (a default export); require() gives the function.
type SharpModule = typeof import('sharp').default;

export interface FolderOptions {
  // Output [height, width] (or one side for squares); default: the images' own common size.
  size?: number | [number, number];
  channels?: 1 | 3; // default 3
  // Lower-case extensions with the dot; default the formats sharp decodes.
  extensions?: string[];
  // Images decoded at once (sharp decodes on its own thread pool); default 4.
  concurrency?: number;
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

export async function loadImageFolder(root: string, options: FolderOptions = {}): Promise<Dataset> {
  const channels = options.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new TypeError(`Expected channels 1 or 3 but received ${channels}`);
  const extensions = (options.extensions ?? DEFAULT_IMAGE_EXTENSIONS).map((e) => e.toLowerCase());
  const concurrency = options.concurrency ?? 4;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 256) {
    throw new TypeError(`Expected concurrency between 1 and 256 but received ${concurrency}`);
  }
  let size: [number, number] | undefined;
  if (options.size !== undefined) {
    const s = typeof options.size === 'number' ? [options.size, options.size] : options.size;
    if (!Array.isArray(s) || s.length !== 2 || !s.every((v) => Number.isSafeInteger(v) && v >= 1 && v <= 16384)) {
      throw new TypeError(`Expected size to be an integer or [height, width] between 1 and 16384 but received ${JSON.stringify(options.size)}`);
    }
    size = [s[0], s[1]];
  }
  const isImage = (name: string) => extensions.includes(path.extname(name).toLowerCase());

  const entries = await listDir(root);
  const classDirs = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort(byName);
  const files: { file: string; label: number }[] = [];
  let classNames: string[] | undefined;
  if (classDirs.length > 0) {
    classNames = classDirs;
    for (let label = 0; label < classDirs.length; label++) {
      const dir = path.join(root, classDirs[label]);
      const images = (await listDir(dir)).filter((e) => e.isFile() && isImage(e.name)).map((e) => e.name).sort(byName);
      if (images.length === 0) {
        throw new DatasetError(dir, `class folder has no images (looked for ${extensions.join(' ')})`);
      }
      for (const name of images) files.push({ file: path.join(dir, name), label });
    }
  } else {
    for (const name of entries.filter((e) => e.isFile() && isImage(e.name)).map((e) => e.name).sort(byName)) {
      files.push({ file: path.join(root, name), label: -1 });
    }
  }
  if (files.length === 0) {
    throw new DatasetError(root, `no images found (looked for ${extensions.join(' ')} in the folder and its class subfolders)`);
  }

  const sharp = loadSharp(root);
  const decode = async (file: string): Promise<{ data: Uint8Array; width: number; height: number }> => {
    try {
      let pipeline = sharp(file, { failOn: 'error' });
      pipeline = channels === 1 ? pipeline.grayscale() : pipeline.toColourspace('srgb');
      pipeline = pipeline.removeAlpha();
      if (size) pipeline = pipeline.resize(size[1], size[0], { fit: 'cover', position: 'centre' });
      const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
      if (info.channels !== channels) throw new Error(`decoded ${info.channels} channels instead of ${channels}`);
      return { data, width: info.width, height: info.height };
    } catch (error) {
      throw new DatasetError(file, `cannot decode image: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error });
    }
  };

  // The first image fixes the size when none is given.
  const first = await decode(files[0].file);
  const height = size ? size[0] : first.height;
  const width = size ? size[1] : first.width;
  const bytes = height * width * channels;
  const images = new Uint8Array(files.length * bytes);
  const place = (i: number, image: { data: Uint8Array; width: number; height: number }) => {
    if (image.height !== height || image.width !== width) {
      throw new DatasetError(files[i].file, `is ${image.height}x${image.width} (height x width) but ${files[0].file} ` +
        `is ${height}x${width}; pass the size option to resize every image`);
    }
    images.set(image.data, i * bytes);
  };
  place(0, first);
  let next = 1;
  const worker = async () => {
    while (next < files.length) {
      const i = next++;
      place(i, await decode(files[i].file));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, files.length - 1) }, worker));

  const dataset: Dataset = {
    name: `folder:${root}`, images, n: files.length, height, width, channels, files: files.map((f) => f.file),
  };
  if (classNames) {
    dataset.labels = Int32Array.from(files, (f) => f.label);
    dataset.classes = classNames.length;
    dataset.classNames = classNames;
  }
  return dataset;
}
