// train.ts (cli): `byol train`: flags and --config JSON mapped one-to-one onto TrainerOptions
// (args.ts TRAIN_FLAGS; --profile-steps A:B and --op-times A:B are parsed here into profile and
// opTimes), then Trainer.run()
// with SIGINT/SIGTERM wired to its AbortSignal.
// Contract: every option problem is reported before any work (exit 2); a first SIGINT or
// SIGTERM finishes the current step and writes a checkpoint (exit 130 / 143), a second SIGINT
// quits at once; divergence and file errors exit 1 with the message.
import { promises as fs } from 'node:fs';

import { type TrainerOptions, mergeOptions, parseProfileSteps } from '../train/options';
import { PROFILE_ENV, Trainer } from '../train/trainer';
import { ByolOptionError, isPlainObject } from '../validate';
import {
  type FlagSpec, TRAIN_FLAGS, UsageError, formatFlags, optionsFromFlags, parseArgs, withFlagNames,
} from './args';

// args.ts's table plus the flags this command turns into options itself.
const FLAGS: FlagSpec[] = [
  ...TRAIN_FLAGS.filter((f) => f.flag !== '--json' && f.flag !== '--help'),
  { flag: '--profile-steps', type: 'string', metavar: 'A:B',
    help: `CUDA: capture steps A..B-1 under nsys --capture-range=cudaProfilerApi [profile; env ${PROFILE_ENV}]` },
  { flag: '--op-times', type: 'string', metavar: 'A:B',
    help: 'time every op of steps A..B-1, print the longest, log all (event op-times) [opTimes]' },
  ...TRAIN_FLAGS.filter((f) => f.flag === '--json' || f.flag === '--help'),
];

export const TRAIN_HELP = `Usage: byol train [--preset NAME] [--config FILE] [options]
       byol train --resume RUN_DIR

Trains BYOL. Precedence: defaults < --preset < --config file < flags. A config file is a
JSON object of TrainerOptions (the same names as the TypeScript API, e.g.
{"data": {"kind": "fashion-mnist"}, "optimizer": {"lr": 1.0}}); each flag sets the
option shown in brackets. Relative paths are relative to the current directory.

Options:
${formatFlags(FLAGS)}

Profiling (CUDA): nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop
  byol train --device cuda --profile-steps 20:25 ... records steps 20..24 (log.jsonl numbering).
Where a step's time goes (any device): byol train --op-times 20:25 ... prints the time per
  step of each op (convolution, batch norm, ...) in each phase (forward, backward, ...).

Files in the run directory: log.jsonl (every step), checkpoint.safetensors + state.json
(resumable), encoder.safetensors (at the end; torchvision names).
Ctrl-C (SIGINT) or SIGTERM: finishes the step, writes a checkpoint, exits 130 / 143.`;

// A --config file: a JSON object of TrainerOptions (also read by `byol bench`).
export async function readConfig(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new UsageError(`Cannot read --config ${file}: ${(error as NodeJS.ErrnoException).code === 'ENOENT'
      ? 'file not found' : (error as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`--config ${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (!isPlainObject(value)) throw new UsageError(`--config ${file} must hold a JSON object of TrainerOptions`);
  if ('signal' in value) throw new ByolOptionError(`Option signal cannot come from a config file (${file})`);
  return value;
}

export async function trainCommand(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream }): Promise<number> {
  const parsed = parseArgs(argv, FLAGS, 'train');
  if (parsed.flags.has('--help')) {
    io.out.write(`${TRAIN_HELP}\n`);
    return 0;
  }
  if (parsed.positionals.length > 0) {
    throw new UsageError(`byol train takes no positional arguments (received ${parsed.positionals.join(' ')}); ` +
      'options are flags, e.g. --data fashion-mnist');
  }
  const configFile = parsed.flags.get('--config') as string | undefined;
  let options: Record<string, unknown> = configFile ? await readConfig(configFile) : {};
  options = mergeOptions(options, optionsFromFlags(parsed, FLAGS));
  const profileSteps = parsed.flags.get('--profile-steps') as string | undefined;
  if (profileSteps !== undefined) options.profile = parseProfileSteps('--profile-steps', profileSteps);
  const opTimeSteps = parsed.flags.get('--op-times') as string | undefined;
  if (opTimeSteps !== undefined) options.opTimes = parseProfileSteps('--op-times', opTimeSteps);
  const controller = new AbortController();
  options.signal = controller.signal;

  let trainer: Trainer;
  try {
    trainer = new Trainer(options as TrainerOptions);
  } catch (error) {
    throw withFlagNames(error, FLAGS);
  }

  let received: NodeJS.Signals | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    if (received) {
      if (signal === 'SIGINT') {
        io.err.write('\nbyol: second interrupt, quitting without a checkpoint\n');
        process.exit(130);
      }
      return;
    }
    received = signal;
    io.err.write(`\nbyol: ${signal}: finishing the current step and writing a checkpoint (Ctrl-C again quits at once)\n`);
    controller.abort(new Error(`received ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const result = await trainer.run().catch((error: unknown) => { throw withFlagNames(error, FLAGS); });
    if (parsed.flags.has('--json')) io.out.write(`${JSON.stringify(result)}\n`);
    else {
      io.out.write(`${result.status} ${result.step}/${result.totalSteps} steps, last loss ` +
        `${result.loss === null ? '-' : result.loss.toFixed(4)}, run directory ${result.runDir}\n`);
    }
    if (result.status === 'interrupted') return received === 'SIGTERM' ? 143 : 130;
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
