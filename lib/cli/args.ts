// args.ts: the CLI's flag parser and the table mapping `byol train` flags one-to-one onto
// TrainerOptions paths. Contract: an unknown flag, a missing value or a repeated flag throws
// UsageError naming it before any work; values keep their raw text when they do not parse as
// the flag's type, so that option validation (lib/validate.ts) reports what the user typed;
// messages about an option path get the flag added ("for batchSize (--batch-size)").
import { ByolOptionError } from '../validate';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export type FlagType = 'int' | 'number' | 'string' | 'boolean' | 'list';

export interface FlagSpec {
  flag: string; // '--batch-size'
  type: FlagType;
  // Dotted TrainerOptions path ('optimizer.lr'); absent for flags handled by the command.
  path?: string;
  help: string;
  // For boolean flags: the value stored at `path` when the flag is given.
  value?: unknown;
  metavar?: string;
}

export interface ParsedArgs {
  flags: Map<string, unknown>; // by flag name ('--lr')
  positionals: string[];
}

function convert(spec: FlagSpec, text: string): unknown {
  if (spec.type === 'int' || spec.type === 'number') {
    // Keep the text when it is not a plain number: the validator names it.
    if (/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(text.trim())) return Number(text);
    return text;
  }
  if (spec.type === 'list') return text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  return text;
}

export function parseArgs(argv: string[], specs: FlagSpec[], command: string): ParsedArgs {
  const byFlag = new Map(specs.map((s) => [s.flag, s]));
  const flags = new Map<string, unknown>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = byFlag.get(name);
    if (!spec) {
      const near = specs.map((s) => s.flag).filter((f) => editDistance(f, name) <= 2);
      throw new UsageError(`Unknown option ${name} for \`byol ${command}\`` +
        (near.length ? `; did you mean ${near.join(' or ')}?` : '') + ` (see \`byol ${command} --help\`)`);
    }
    if (flags.has(spec.flag)) throw new UsageError(`Option ${spec.flag} was given twice`);
    if (spec.type === 'boolean') {
      if (eq > 0) throw new UsageError(`Option ${spec.flag} takes no value (received ${arg})`);
      flags.set(spec.flag, spec.value ?? true);
      continue;
    }
    let text: string;
    if (eq > 0) {
      text = arg.slice(eq + 1);
    } else {
      if (i + 1 >= argv.length || (argv[i + 1].startsWith('--') && argv[i + 1].length > 2)) {
        throw new UsageError(`Option ${spec.flag} needs a value (${spec.metavar ?? spec.type})`);
      }
      text = argv[++i];
    }
    flags.set(spec.flag, convert(spec, text));
  }
  return { flags, positionals };
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) dp[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      dp[i][j] = Math.min(dp[i - 1][j] + 1, dp[i][j - 1] + 1, dp[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return dp[a.length][b.length];
}

// Sets `value` at a dotted path of `target`, creating objects on the way.
export function setPath(target: Record<string, unknown>, dotted: string, value: unknown): void {
  const keys = dotted.split('.');
  let node = target;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]] = value;
}

// The options object the flags with a `path` describe.
export function optionsFromFlags(parsed: ParsedArgs, specs: FlagSpec[]): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const spec of specs) {
    if (spec.path && parsed.flags.has(spec.flag)) setPath(options, spec.path, parsed.flags.get(spec.flag));
  }
  return options;
}

// Adds the flag to option-error messages that name a mapped option path.
export function withFlagNames(error: unknown, specs: FlagSpec[]): unknown {
  if (!(error instanceof ByolOptionError)) return error;
  let message = error.message;
  const mapped = specs.filter((s) => s.path).sort((a, b) => b.path!.length - a.path!.length);
  for (const spec of mapped) {
    const pattern = new RegExp(`(for|option|Option|options) ${spec.path!.replace(/\./g, '\\.')}(?=[\\s,;:)]|$)`);
    if (pattern.test(message)) {
      message = message.replace(pattern, `$1 ${spec.path} (${spec.flag})`);
      break;
    }
  }
  const copy = new ByolOptionError(message);
  copy.stack = error.stack;
  return copy;
}

// Help text lines for a flag table.
export function formatFlags(specs: FlagSpec[]): string {
  const rows = specs.map((s) => [`${s.flag}${s.type === 'boolean' ? '' : ` ${s.metavar ?? s.type.toUpperCase()}`}`,
    s.path ? `${s.help} [${s.path}${s.value !== undefined ? ` = ${JSON.stringify(s.value)}` : ''}]` : s.help]);
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  return rows.map(([flag, help]) => `  ${flag.padEnd(width)}${help}`).join('\n');
}

// ---- `byol train` ----

export const TRAIN_FLAGS: FlagSpec[] = [
  { flag: '--preset', type: 'string', path: 'preset', metavar: 'NAME', help: "fashion-mnist | fashion-mnist-quick" },
  { flag: '--config', type: 'string', metavar: 'FILE', help: 'JSON file of TrainerOptions (flags override it)' },
  { flag: '--resume', type: 'string', path: 'resume', metavar: 'RUN_DIR', help: 'continue the run in RUN_DIR' },
  { flag: '--data', type: 'string', path: 'data.kind', metavar: 'KIND',
    help: 'fashion-mnist | mnist | cifar10 | cifar100 | stl10 | folder | synthetic' },
  { flag: '--data-path', type: 'string', path: 'data.path', metavar: 'DIR', help: 'folder of the dataset files' },
  { flag: '--data-limit', type: 'int', path: 'data.limit', metavar: 'N', help: 'train on the first N samples' },
  { flag: '--data-size', type: 'int', path: 'data.size', metavar: 'PX', help: 'synthetic/folder image side' },
  { flag: '--data-channels', type: 'int', path: 'data.channels', metavar: 'C', help: 'synthetic/folder channels (1 or 3)' },
  { flag: '--data-unlabeled', type: 'boolean', path: 'data.unlabeled', value: true,
    help: "stl10: pretrain on the 100000 unlabeled images too (probes use the labeled ones)" },
  { flag: '--data-stream', type: 'boolean', path: 'data.stream', value: true,
    help: 'folder: decode each batch from disk instead of holding every image in memory' },
  { flag: '--data-classes', type: 'int', path: 'data.classes', metavar: 'N', help: 'synthetic classes' },
  { flag: '--arch', type: 'string', path: 'encoder.arch', metavar: 'ARCH', help: 'resnet18 | resnet34 | resnet50' },
  { flag: '--stem', type: 'string', path: 'encoder.stem', metavar: 'STEM', help: 'cifar | imagenet (default by image size)' },
  { flag: '--width', type: 'number', path: 'encoder.width', metavar: 'W', help: 'ResNet width multiplier (0.125, 0.25 ... 1)' },
  { flag: '--projector-hidden', type: 'int', path: 'projector.hidden', metavar: 'N', help: 'projector hidden size (4096)' },
  { flag: '--projector-out', type: 'int', path: 'projector.out', metavar: 'N', help: 'projection size (256)' },
  { flag: '--predictor-hidden', type: 'int', path: 'predictor.hidden', metavar: 'N', help: 'predictor hidden size (4096)' },
  { flag: '--no-predictor', type: 'boolean', path: 'predictor', value: false, help: 'the no-predictor ablation' },
  { flag: '--batch-size', type: 'int', path: 'batchSize', metavar: 'N', help: 'images per step (256)' },
  { flag: '--epochs', type: 'int', path: 'epochs', metavar: 'N', help: 'run length in epochs (100)' },
  { flag: '--steps', type: 'int', path: 'steps', metavar: 'N', help: 'run length in steps (instead of epochs)' },
  { flag: '--optimizer', type: 'string', path: 'optimizer.name', metavar: 'NAME', help: 'lars | sgd | adamw' },
  { flag: '--lr', type: 'number', path: 'optimizer.lr', metavar: 'LR', help: 'base learning rate, scaled by batch/256 (0.2)' },
  { flag: '--weight-decay', type: 'number', path: 'optimizer.weightDecay', metavar: 'WD', help: 'weight decay (1.5e-6)' },
  { flag: '--momentum', type: 'number', path: 'optimizer.momentum', metavar: 'M', help: 'momentum (0.9)' },
  { flag: '--trust-coefficient', type: 'number', path: 'optimizer.trustCoefficient', metavar: 'ETA',
    help: 'LARS trust coefficient (1e-3)' },
  { flag: '--lars-variant', type: 'string', path: 'optimizer.variant', metavar: 'V',
    help: 'reference | solo-learn (reference)' },
  { flag: '--warmup-epochs', type: 'number', path: 'optimizer.warmupEpochs', metavar: 'N',
    help: 'linear warmup (default 10 epochs, at most 10% of the run)' },
  { flag: '--warmup-steps', type: 'int', path: 'optimizer.warmupSteps', metavar: 'N', help: 'linear warmup in steps' },
  { flag: '--tau-base', type: 'number', path: 'tauBase', metavar: 'TAU', help: 'EMA tau at step 0 (0.996)' },
  { flag: '--augment', type: 'string', path: 'augment.preset', metavar: 'PRESET',
    help: 'byol | cifar | grayscale (default by data)' },
  { flag: '--image-size', type: 'int', path: 'augment.outputSize', metavar: 'PX',
    help: 'crop output side (default: the data\'s)' },
  { flag: '--device', type: 'string', path: 'device', metavar: 'DEV', help: 'cpu | cuda | cuda:N | auto (auto)' },
  { flag: '--seed', type: 'int', path: 'seed', metavar: 'N', help: 'init, shuffling and augmentation seed (0)' },
  { flag: '--threads', type: 'int', path: 'threads', metavar: 'N', help: 'CPU threads (all cores)' },
  { flag: '--conv-precision', type: 'string', path: 'convPrecision', metavar: 'P',
    help: 'CPU convolutions: fp32 | bf16 | auto (bf16 where the CPU has bf16 dot products) (fp32)' },
  { flag: '--no-cuda-graphs', type: 'boolean', path: 'cudaGraphs', value: false,
    help: 'CUDA: run every step eagerly instead of replaying it as a CUDA graph' },
  { flag: '--knn-monitor', type: 'int', path: 'knnMonitor.every', metavar: 'N',
    help: 'every N steps (and after the last) score a kNN of test images against training images (off)' },
  { flag: '--no-online-classifier', type: 'boolean', path: 'onlineClassifier', value: false,
    help: 'no online linear classifier (default: one on the labels, when the data has them)' },
  { flag: '--out', type: 'string', path: 'out', metavar: 'DIR', help: 'run directory (runs/<time>)' },
  { flag: '--checkpoint-every', type: 'int', path: 'checkpointEvery', metavar: 'N',
    help: 'checkpoint every N steps, 0 = only at the end (1 epoch)' },
  { flag: '--print-every', type: 'int', path: 'printEvery', metavar: 'N',
    help: 'progress line every N steps when not a TTY (0 = every ~10 s)' },
  { flag: '--progress', type: 'string', path: 'progress', metavar: 'MODE', help: 'auto | bar | lines | none' },
  { flag: '--json', type: 'boolean', help: 'print the result as JSON on stdout' },
  { flag: '--help', type: 'boolean', help: 'show this help' },
];
