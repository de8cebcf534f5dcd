#!/usr/bin/env node
// main.ts: the `byol` command (package.json "bin": dist/cli/main.js): train, eval, embed,
// report, info, bench, augment. Contract: exit 0 on success, 1 when the work failed (message on
// stderr, no stack trace unless BYOL_DEBUG=1), 2 on a usage or option error (reported before
// any work), 130 / 143 after an interrupted training run that wrote its checkpoint.
import * as os from 'node:os';

import { writeReport } from '../train/report';
import { ByolOptionError } from '../validate';
import { UsageError } from './args';
import { augmentCommand } from './augment';
import { benchCommand } from './bench';
import { embedCommand, evalCommand } from './eval';
import { infoCommand } from './info';
import { trainCommand } from './train';

type Io = { out: NodeJS.WritableStream; err: NodeJS.WritableStream };

const HELP = `Usage: byol <command> [options]

Commands:
  train     train BYOL (flags or --config; --preset fashion-mnist | fashion-mnist-quick)
  eval      linear probe / kNN of a run's encoder on frozen features (--baseline adds
            raw pixels and a random-init encoder)
  embed     write a run's representations to .npy or .safetensors
  report    write RUN_DIR/report.html (charts of loss, lr, tau; eval results)
  info      platform, addon, CPU and CUDA status (--json)
  bench     time the training step, augmentation and embedding of a configuration here
  augment   PNG grid of images and their two augmented views

Run \`byol <command> --help\` for the options of a command.`;

async function reportCommand(argv: string[], io: Io): Promise<number> {
  if (argv.includes('--help')) {
    io.out.write('Usage: byol report RUN_DIR [--out FILE]\n\nWrites a self-contained HTML report ' +
      '(default RUN_DIR/report.html).\n');
    return 0;
  }
  let out: string | undefined;
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') {
      out = argv[++i];
      if (!out) throw new UsageError('Option --out needs a value (FILE)');
    } else if (argv[i].startsWith('--out=')) out = argv[i].slice(6);
    else if (argv[i].startsWith('-')) throw new UsageError(`Unknown option ${argv[i]} for \`byol report\``);
    else positionals.push(argv[i]);
  }
  if (positionals.length !== 1) throw new UsageError('byol report takes one run directory');
  const file = await writeReport(positionals[0], out);
  io.out.write(`wrote ${file}\n`);
  return 0;
}

const COMMANDS: Record<string, (argv: string[], io: Io) => Promise<number>> = {
  train: trainCommand,
  eval: evalCommand,
  embed: embedCommand,
  report: reportCommand,
  info: infoCommand,
  bench: benchCommand,
  augment: augmentCommand,
};

export async function main(argv: string[], io: Io = { out: process.stdout, err: process.stderr }): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    io.out.write(`${HELP}\n`);
    return command === undefined ? 2 : 0;
  }
  if (command === '--version' || command === '-v') {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    io.out.write(`${(require('../../package.json') as { version: string }).version}\n`);
    return 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    io.err.write(`byol: unknown command ${JSON.stringify(command)}; expected one of ${Object.keys(COMMANDS).join(', ')}\n`);
    return 2;
  }
  try {
    return await run(rest, io);
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    const usage = e instanceof UsageError || e instanceof ByolOptionError;
    io.err.write(`byol ${command}: ${process.env.BYOL_DEBUG === '1' ? e.stack : e.message}\n`);
    return usage ? 2 : 1;
  }
}

if (require.main === module) {
  // libuv's thread pool runs file reads, image decoding (sharp, libjpeg) and the native calls;
  // its default of 4 threads would cap a streamed image folder at 4 cores. Read at first use.
  process.env.UV_THREADPOOL_SIZE ??= String(Math.min(64, Math.max(4, os.availableParallelism())));
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (error: unknown) => {
    process.stderr.write(`byol: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exitCode = 1;
  });
}
