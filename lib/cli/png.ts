// png.ts: writes 8-bit grayscale or RGB pixels as PNG, with sharp when it loads and with the
// small encoder below otherwise (zlib deflate + CRC-32, filter type 0 on every row).
// Contract: pixels are row-major, height x width x channels (1 or 3) bytes; the file is
// written atomically by the caller's path only when encoding succeeded.
import { promises as fs } from 'node:fs';
import * as zlib from 'node:zlib';

import { PNG_SIGNATURE, crc32, pngChunk as chunk } from '../data/png';

export { crc32 };


// The PNG file bytes (our own encoder).
export function encodePng(pixels: Uint8Array, width: number, height: number, channels: 1 | 3): Buffer {
  if (pixels.length !== width * height * channels) {
    throw new RangeError(`encodePng: expected ${width * height * channels} bytes for ${width}x${height}x${channels} ` +
      `but received ${pixels.length}`);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = channels === 1 ? 0 : 2; // color type: grayscale or truecolor
  header[10] = 0; // deflate
  header[11] = 0; // adaptive filtering
  header[12] = 0; // no interlace
  const stride = width * channels;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter: none
    raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  const signature = Buffer.from(PNG_SIGNATURE);
  return Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', zlib.deflateSync(raw, { level: 9 })),
    chunk('IEND', new Uint8Array(0))]);
}

type SharpFactory = (input: Uint8Array, options: { raw: { width: number; height: number; channels: 1 | 3 } }) =>
  { png(): { toBuffer(): Promise<Buffer> } };

function loadSharp(): SharpFactory | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require('sharp') as SharpFactory;
  } catch {
    return null;
  }
}

// Writes a PNG; returns which encoder made it.
export async function writePng(file: string, pixels: Uint8Array, width: number, height: number, channels: 1 | 3,
  options: { useSharp?: boolean } = {}): Promise<'sharp' | 'builtin'> {
  const sharp = options.useSharp === false ? null : loadSharp();
  let bytes: Buffer;
  let encoder: 'sharp' | 'builtin';
  if (sharp) {
    bytes = await sharp(pixels, { raw: { width, height, channels } }).png().toBuffer();
    encoder = 'sharp';
  } else {
    bytes = encodePng(pixels, width, height, channels);
    encoder = 'builtin';
  }
  const temp = `${file}.tmp-${process.pid}`;
  await fs.writeFile(temp, bytes);
  await fs.rename(temp, file);
  return encoder;
}
