// augment.ts (cli): `byol augment --out views.png`: a grid with one row per sample: the
// original image, then its two BYOL views (T and T') exactly as training draws them for a
// seed and epoch, un-normalized back to pixels. Contract: the views come from the same
// augmentBatch call and keys as training (view numbers 1 and 2), so what the PNG shows is
// what the model sees; images are upscaled (nearest) to a readable size.
import { augmentBatch } from '../augment';
import { type DatasetLike, readRange } from '../data';
import { readRunState } from '../train/checkpoint';
import { loadDatasetSpec } from '../train/data';
import { type DataOptions, type TrainConfig, type TrainerOptions, resolveTrainConfig } from '../train/options';
import { trainViews } from '../train/trainer';
import { ByolOptionError, integer, oneOf } from '../validate';
import { type FlagSpec, UsageError, formatFlags, optionsFromFlags, parseArgs, withFlagNames } from './args';
import { writePng } from './png';

const AUGMENT_FLAGS: FlagSpec[] = [
  { flag: '--out', type: 'string', metavar: 'FILE', help: 'output PNG (required)' },
  { flag: '--run', type: 'string', metavar: 'RUN_DIR', help: "take data and augmentation from a run's state.json" },
  { flag: '--preset', type: 'string', path: 'preset', metavar: 'NAME', help: 'a training preset\'s data and augmentation' },
  { flag: '--data', type: 'string', path: 'data.kind', metavar: 'KIND', help: 'dataset kind (as byol train)' },
  { flag: '--data-path', type: 'string', path: 'data.path', metavar: 'DIR', help: 'folder of the dataset files' },
  { flag: '--data-size', type: 'int', path: 'data.size', metavar: 'PX', help: 'synthetic/folder image side' },
  { flag: '--data-channels', type: 'int', path: 'data.channels', metavar: 'C', help: 'synthetic/folder channels' },
  { flag: '--augment', type: 'string', path: 'augment.preset', metavar: 'PRESET', help: 'byol | cifar | grayscale' },
  { flag: '--image-size', type: 'int', path: 'augment.outputSize', metavar: 'PX', help: 'crop output side' },
  { flag: '--seed', type: 'int', path: 'seed', metavar: 'N', help: 'augmentation seed (0)' },
  { flag: '--epoch', type: 'int', metavar: 'N', help: 'epoch of the draws (0)' },
  { flag: '--count', type: 'int', metavar: 'N', help: 'samples, one per row (8)' },
  { flag: '--first', type: 'int', metavar: 'I', help: 'index of the first sample (0)' },
  { flag: '--split', type: 'string', metavar: 'SPLIT', help: 'train | test (train)' },
  { flag: '--scale', type: 'int', metavar: 'K', help: 'pixel upscaling (default: cells of about 96 px)' },
  { flag: '--help', type: 'boolean', help: 'show this help' },
];

export const AUGMENT_HELP = `Usage: byol augment --out views.png (--data KIND | --preset NAME | --run RUN_DIR) [options]

Draws a grid: each row is one sample, original | view 1 (T) | view 2 (T').

Options:
${formatFlags(AUGMENT_FLAGS)}`;

// Float views [n, C, h, w] normalized with mean/std -> uint8 pixels.
function denormalize(value: number, mean: number, std: number): number {
  return Math.max(0, Math.min(255, Math.round((value * std + mean) * 255)));
}

export async function augmentCommand(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream }): Promise<number> {
  const parsed = parseArgs(argv, AUGMENT_FLAGS, 'augment');
  const f = parsed.flags;
  if (f.has('--help')) {
    io.out.write(`${AUGMENT_HELP}\n`);
    return 0;
  }
  if (parsed.positionals.length) throw new UsageError(`byol augment takes no positional arguments (received ${parsed.positionals.join(' ')})`);
  const out = f.get('--out') as string | undefined;
  if (!out) throw new UsageError('byol augment needs --out FILE.png');
  let config: TrainConfig;
  try {
    if (f.has('--run')) {
      const state = await readRunState(f.get('--run') as string);
      config = state.config;
      if (config.data.kind === 'memory') throw new ByolOptionError('The run trained on an in-memory dataset');
    } else {
      config = resolveTrainConfig(optionsFromFlags(parsed, AUGMENT_FLAGS) as TrainerOptions);
    }
  } catch (error) {
    throw withFlagNames(error, AUGMENT_FLAGS);
  }
  const split = f.has('--split') ? oneOf('--split', f.get('--split'), ['train', 'test'] as const) : 'train';
  // A folder is streamed: only the --count images shown are decoded.
  const spec = config.data.kind === 'folder' ? { ...config.data, stream: true } : config.data;
  const dataset: DatasetLike = await loadDatasetSpec(spec as DataOptions, split);
  const count = f.has('--count') ? integer('--count', f.get('--count'), 1, 256) : 8;
  const first = f.has('--first') ? integer('--first', f.get('--first'), 0, Math.max(0, dataset.n - 1)) : 0;
  const epoch = f.has('--epoch') ? integer('--epoch', f.get('--epoch'), 0, 0xFFFFFFFF) : 0;
  const n = Math.min(count, dataset.n - first);
  const views = trainViews(config, dataset);
  const [outH, outW] = views[0].outputSize;
  const cellH = Math.max(outH, dataset.height);
  const cellW = Math.max(outW, dataset.width);
  const scale = f.has('--scale') ? integer('--scale', f.get('--scale'), 1, 64) : Math.max(1, Math.round(96 / Math.max(cellH, cellW)));
  const channels = dataset.channels as 1 | 3;
  const gap = 4;
  const width = 3 * cellW * scale + 4 * gap;
  const height = n * cellH * scale + (n + 1) * gap;
  const canvas = new Uint8Array(width * height * channels).fill(255);
  // Paints an h x w image (HWC uint8) at cell (row, col), scaled by nearest neighbour.
  const paint = (pixels: Uint8Array, h: number, w: number, row: number, col: number) => {
    const x0 = gap + col * (cellW * scale + gap);
    const y0 = gap + row * (cellH * scale + gap);
    const sh = (cellH * scale) / h;
    const sw = (cellW * scale) / w;
    for (let y = 0; y < cellH * scale; y++) {
      const sy = Math.min(h - 1, Math.floor(y / sh));
      for (let x = 0; x < cellW * scale; x++) {
        const sx = Math.min(w - 1, Math.floor(x / sw));
        for (let c = 0; c < channels; c++) canvas[((y0 + y) * width + x0 + x) * channels + c] = pixels[(sy * w + sx) * channels + c];
      }
    }
  };
  const size = dataset.height * dataset.width * channels;
  const indices = Int32Array.from({ length: n }, (_, i) => first + i);
  const images = await readRange(dataset, first, n);
  for (let i = 0; i < n; i++) paint(images.subarray(i * size, (i + 1) * size), dataset.height, dataset.width, i, 0);
  for (let v = 0; v < 2; v++) {
    const batch = await augmentBatch(images, null, {
      config: views[v], seed: config.seed, epoch, indices, view: v + 1, device: 'cpu',
      shape: [n, dataset.height, dataset.width, channels],
    });
    const data = await batch.images.toArray({ layout: 'nhwc' });
    batch.images.dispose();
    const { mean, std } = views[v];
    const pixels = new Uint8Array(outH * outW * channels);
    for (let i = 0; i < n; i++) {
      for (let p = 0; p < outH * outW; p++) {
        for (let c = 0; c < channels; c++) {
          const at = p * channels + c;
          pixels[at] = denormalize(data[i * outH * outW * channels + at], mean[c], std[c]);
        }
      }
      paint(pixels, outH, outW, i, 1 + v);
    }
  }
  const encoder = await writePng(out, canvas, width, height, channels);
  io.out.write(`wrote ${out} (${width}x${height}, ${n} samples of ${dataset.name}: original | view 1 | view 2; ` +
    `PNG by ${encoder})\n`);
  return 0;
}
