// safetensors.ts: the header of a safetensors file (8-byte little-endian length, then JSON:
// tensor entries and an optional __metadata__ of strings), read without its tensor data.
// Contract: every problem is an Error naming the file; the native reader (core/safetensors.cc)
// stays the one that loads weights.
import { promises as fs } from 'node:fs';

export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface SafetensorsHeader {
  headerLength: number; // bytes of JSON after the 8-byte length
  tensors: Record<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

// Parses the header from the first bytes of the file (at least 8 + its length).
export function parseSafetensorsHeader(bytes: Uint8Array, file: string): SafetensorsHeader {
  const bad = (problem: string) => new Error(`${file}: ${problem}`);
  if (bytes.length < 8) throw bad('not a safetensors file (shorter than its 8-byte header length)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > bytes.length - 8) throw bad(`header length ${headerLength} past the end of the file`);
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, headerLength).toString('utf8'));
  } catch (error) {
    throw bad(`header is not JSON: ${(error as Error).message}`);
  }
  const { __metadata__: metadata, ...tensors } = parsed;
  return { headerLength, tensors: tensors as Record<string, SafetensorsEntry>, metadata: (metadata ?? {}) as Record<string, string> };
}

// Reads only the header of `file`.
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  const handle = await fs.open(file, 'r');
  try {
    const size = (await handle.stat()).size;
    const head = Buffer.alloc(Math.min(8, size));
    await handle.read(head, 0, head.length, 0);
    if (head.length < 8) return parseSafetensorsHeader(head, file);
    const length = Number(head.readBigUInt64LE(0));
    const bytes = Buffer.alloc(8 + Math.min(length, Math.max(0, size - 8)));
    await handle.read(bytes, 0, bytes.length, 0);
    return parseSafetensorsHeader(bytes, file);
  } finally {
    await handle.close();
  }
}
