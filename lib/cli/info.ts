// info.ts (cli): `byol info`: what this installation runs on: platform, Node.js, the addon
// file, the CPU (model, threads, oneDNN) and whether CUDA can be used (or why not).
// Contract: never fails because of a missing GPU; a broken addon is reported as such with its
// fixes (exit 1); --json prints one object with the same facts.
import * as os from 'node:os';

import { devices, getNumThreads } from '../device';
import { packageRoot, runtimeDescription } from '../native';
import { type FlagSpec, formatFlags, parseArgs } from './args';

const INFO_FLAGS: FlagSpec[] = [
  { flag: '--json', type: 'boolean', help: 'print JSON' },
  { flag: '--help', type: 'boolean', help: 'show this help' },
];

export interface InstallInfo {
  version: string;
  platform: string;
  node: string;
  runtime: string;
  addon: { path: string | null; loaded: boolean; error?: string };
  cpu: { model: string; cores: number; threads: number | null; backend: string | null };
  cuda: { available: boolean; description?: string; reason?: string };
}

function addonPath(): string | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    return nodeGypBuild.resolve(packageRoot);
  } catch {
    return null;
  }
}

export function installInfo(): InstallInfo {
  const cpus = os.cpus();
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const version = (require('../../package.json') as { version: string }).version;
  const info: InstallInfo = {
    version,
    platform: `${process.platform}-${process.arch}`,
    node: process.versions.node,
    runtime: runtimeDescription(),
    addon: { path: addonPath(), loaded: false },
    cpu: { model: cpus[0]?.model?.trim() ?? 'unknown', cores: os.availableParallelism(), threads: null, backend: null },
    cuda: { available: false },
  };
  try {
    const found = devices();
    info.addon.loaded = true;
    info.cpu.backend = found.cpu;
    info.cpu.threads = getNumThreads();
    info.cuda = found.cuda;
  } catch (error) {
    info.addon.error = error instanceof Error ? error.message : String(error);
    info.cuda = { available: false, reason: 'the native addon did not load (see addon)' };
  }
  return info;
}

export async function infoCommand(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream }): Promise<number> {
  const parsed = parseArgs(argv, INFO_FLAGS, 'info');
  if (parsed.flags.has('--help')) {
    io.out.write(`Usage: byol info [--json]\n\nOptions:\n${formatFlags(INFO_FLAGS)}\n`);
    return 0;
  }
  const info = installInfo();
  if (parsed.flags.has('--json')) {
    io.out.write(`${JSON.stringify(info, null, 2)}\n`);
    return info.addon.loaded ? 0 : 1;
  }
  const rows: [string, string][] = [
    ['byol', info.version],
    ['platform', info.runtime],
    ['addon', info.addon.loaded ? info.addon.path ?? '(loaded)' : `NOT LOADED\n${info.addon.error ?? ''}`],
    ['cpu', `${info.cpu.model}, ${info.cpu.cores} cores`],
    ['cpu backend', info.cpu.backend ? `${info.cpu.backend} (threads: ${info.cpu.threads})` : '-'],
    ['cuda', info.cuda.available ? `available: ${info.cuda.description ?? ''}` : `not available: ${info.cuda.reason ?? 'unknown'}`],
  ];
  for (const [key, value] of rows) {
    const [first, ...rest] = value.split('\n');
    io.out.write(`${key.padEnd(12)} ${first}\n`);
    for (const line of rest) io.out.write(`${' '.repeat(13)}${line}\n`);
  }
  return info.addon.loaded ? 0 : 1;
}
