// synthetic.ts: a deterministic, learnable image dataset for tests and smoke runs.
// Contract: a pure function of its options (same seed, same bytes everywhere). Class k has
// its own base color and stripe orientation; each sample adds a random phase, a bright square
// at a random place and pixel noise, so classes are separable but not trivially identical.
import { type Dataset } from './dataset';
import { Rng } from './random';

export interface SyntheticOptions {
  n?: number; // default 256
  height?: number; // default 32
  width?: number; // default 32
  channels?: 1 | 3; // default 3
  classes?: number; // default 10
  seed?: number; // default 0
  noise?: number; // pixel noise standard deviation in 0..255 units; default 12
}

function checkInt(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new TypeError(`Expected ${name} to be an integer between ${min} and ${max} but received ${value}`);
  }
  return value;
}

export function syntheticDataset(options: SyntheticOptions = {}): Dataset {
  const n = checkInt('n', options.n ?? 256, 0, 1 << 24);
  const height = checkInt('height', options.height ?? 32, 1, 4096);
  const width = checkInt('width', options.width ?? 32, 1, 4096);
  const channels = options.channels ?? 3;
  if (channels !== 1 && channels !== 3) throw new TypeError(`Expected channels 1 or 3 but received ${channels}`);
  const classes = checkInt('classes', options.classes ?? 10, 1, 1000);
  const seed = checkInt('seed', options.seed ?? 0, 0, Number.MAX_SAFE_INTEGER);
  const noise = options.noise ?? 12;
  if (!Number.isFinite(noise) || noise < 0 || noise > 255) throw new TypeError(`Expected noise between 0 and 255 but received ${noise}`);

  const rng = new Rng(seed, 0x5EED);
  const images = new Uint8Array(n * height * width * channels);
  const labels = new Int32Array(n);
  const size = height * width * channels;
  for (let i = 0; i < n; i++) {
    const label = rng.below(classes);
    labels[i] = label;
    const angle = (Math.PI * label) / classes;
    const hue = label / classes;
    // Base color of the class: a hue on the color wheel (luma varies with it for 1 channel).
    const color = [0, 1 / 3, 2 / 3].map((shift) => 128 + 90 * Math.cos(2 * Math.PI * (hue - shift)));
    const frequency = (2 * Math.PI * (2 + (label % 3))) / Math.max(height, width);
    const phase = rng.uniform() * 2 * Math.PI;
    const squareSide = Math.max(1, Math.round(Math.min(height, width) / 4));
    const sy = rng.below(Math.max(1, height - squareSide + 1));
    const sx = rng.below(Math.max(1, width - squareSide + 1));
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const stripe = 40 * Math.sin(frequency * (x * cos + y * sin) + phase);
        const inSquare = y >= sy && y < sy + squareSide && x >= sx && x < sx + squareSide ? 60 : 0;
        const base = i * size + (y * width + x) * channels;
        for (let c = 0; c < channels; c++) {
          const mean = channels === 1 ? 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] : color[c];
          const value = mean + stripe + inSquare + noise * rng.normal();
          images[base + c] = Math.max(0, Math.min(255, Math.round(value)));
        }
      }
    }
  }
  return {
    name: `synthetic/${n}x${height}x${width}x${channels}`, images, labels, n, height, width, channels, classes,
    classNames: Array.from({ length: classes }, (_, k) => `class${k}`),
  };
}
