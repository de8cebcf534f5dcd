// png.ts (data): a PNG decoder for the plain files image datasets are usually made of: 8-bit,
// not interlaced, gray, gray + alpha, RGB, RGBA or palette, without colour-management chunks.
// Contract: for those it returns exactly the pixels sharp's folder pipeline gives (alpha
// dropped, gray repeated into RGB, palette looked up), at a small fraction of sharp's
// per-image cost (sharp spends ~2 ms of CPU on a 28x28 PNG); for anything else (16-bit,
// interlaced, a colour profile, colour to gray, a bad CRC, damaged data) it returns null and the
// caller decodes with sharp, which also words the errors. test/data.test.mjs compares it with
// sharp on every kind of file it accepts or declines.
import * as zlib from 'node:zlib';

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

// CRC-32 of PNG chunks (ISO 3309), continuing from `crc`.
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xFF] ^ (c >>> 8);
  return ~c >>> 0;
}

export const PNG_SIGNATURE = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

// One chunk: length, type, data, CRC of type + data.
export function pngChunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

export interface DecodedPng {
  data: Uint8Array; // height x width x channels
  width: number;
  height: number;
}

// Samples per pixel of each colour type (0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA).
const SAMPLES: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
// Chunks that would make sharp transform colours: decline them.
const COLOUR_CHUNKS = new Set(['iCCP', 'gAMA', 'cHRM', 'sBIT', 'cICP', 'mDCV']);

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// Reverses the per-row filters of `raw` ((1 + stride) bytes a row) into rows of `stride` bytes.
function unfilter(raw: Uint8Array, height: number, stride: number, bpp: number): Uint8Array | null {
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const up = row - stride; // previous row in `out` (absent for y = 0)
    switch (filter) {
      case 0:
        out.set(raw.subarray(src, src + stride), row);
        break;
      case 1:
        for (let x = 0; x < stride; x++) out[row + x] = raw[src + x] + (x >= bpp ? out[row + x - bpp] : 0);
        break;
      case 2:
        for (let x = 0; x < stride; x++) out[row + x] = raw[src + x] + (y > 0 ? out[up + x] : 0);
        break;
      case 3:
        for (let x = 0; x < stride; x++) {
          const left = x >= bpp ? out[row + x - bpp] : 0;
          const above = y > 0 ? out[up + x] : 0;
          out[row + x] = raw[src + x] + ((left + above) >>> 1);
        }
        break;
      case 4:
        for (let x = 0; x < stride; x++) {
          const left = x >= bpp ? out[row + x - bpp] : 0;
          const above = y > 0 ? out[up + x] : 0;
          const corner = x >= bpp && y > 0 ? out[up + x - bpp] : 0;
          out[row + x] = raw[src + x] + paeth(left, above, corner);
        }
        break;
      default:
        return null; // not a PNG filter: damaged
    }
  }
  return out;
}

export function decodePng(file: Uint8Array, channels: 1 | 3): DecodedPng | null {
  if (file.length < 8 || PNG_SIGNATURE.some((b, i) => file[i] !== b)) return null;
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let width = 0;
  let height = 0;
  let colourType = -1;
  let palette: Uint8Array | null = null;
  const idat: Uint8Array[] = [];
  let ended = false;
  for (let at = 8; at + 12 <= file.length && !ended;) {
    const length = view.getUint32(at);
    if (at + 12 + length > file.length) return null;
    const type = String.fromCharCode(file[at + 4], file[at + 5], file[at + 6], file[at + 7]);
    const data = file.subarray(at + 8, at + 8 + length);
    if (crc32(file.subarray(at + 4, at + 8 + length)) !== view.getUint32(at + 8 + length)) return null;
    if (type === 'IHDR') {
      if (length !== 13) return null;
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const [depth, colour, compression, filter, interlace] = data.subarray(8, 13);
      if (depth !== 8 || !(colour in SAMPLES) || compression !== 0 || filter !== 0 || interlace !== 0) return null;
      colourType = colour;
    } else if (type === 'PLTE') {
      palette = data;
    } else if (type === 'tRNS') {
      if (colourType !== 3) return null; // transparency keyed on a colour: leave it to sharp
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      ended = true;
    } else if (COLOUR_CHUNKS.has(type)) {
      return null;
    } else if ((file[at + 4] & 0x20) === 0) {
      return null; // an unknown critical chunk
    }
    at += 12 + length;
  }
  if (!ended || colourType < 0 || width === 0 || height === 0 || idat.length === 0) return null;
  if (width * height > 1 << 26) return null; // large images: sharp streams them
  const gray = colourType === 0 || colourType === 4;
  if (channels === 1 && !gray) return null; // colour to gray: sharp's conversion
  const samples = SAMPLES[colourType];
  const stride = width * samples;
  let raw: Uint8Array;
  try {
    raw = zlib.inflateSync(idat.length === 1 ? idat[0] : Buffer.concat(idat));
  } catch {
    return null;
  }
  if (raw.length !== (stride + 1) * height) return null;
  const pixels = unfilter(raw, height, stride, samples);
  if (!pixels) return null;
  if (samples === channels && (colourType === 0 || colourType === 2)) return { data: pixels, width, height };
  const n = width * height;
  const out = new Uint8Array(n * channels);
  if (gray) {
    // gray (+ alpha): the gray sample, once or three times
    for (let p = 0; p < n; p++) {
      const v = pixels[p * samples];
      if (channels === 1) out[p] = v;
      else out[3 * p] = out[3 * p + 1] = out[3 * p + 2] = v;
    }
  } else if (colourType === 3) {
    if (!palette || palette.length % 3 !== 0) return null;
    const entries = palette.length / 3;
    for (let p = 0; p < n; p++) {
      const index = pixels[p];
      if (index >= entries) return null;
      out[3 * p] = palette[3 * index];
      out[3 * p + 1] = palette[3 * index + 1];
      out[3 * p + 2] = palette[3 * index + 2];
    }
  } else {
    // RGBA: alpha dropped
    for (let p = 0; p < n; p++) {
      out[3 * p] = pixels[4 * p];
      out[3 * p + 1] = pixels[4 * p + 1];
      out[3 * p + 2] = pixels[4 * p + 2];
    }
  }
  return { data: out, width, height };
}
