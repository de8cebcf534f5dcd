// bench.ts (cli): `byol bench`: how fast this installation runs the BYOL step that `byol train`
// would run with the same flags (model, batch, image size, device, threads, precision), on a
// batch of synthetic images of the data's shape: the training step (two views in, loss out,
// optimizer and EMA included), the augmentation of the batch into its two views, and the
// eval-mode embedding (what `byol eval` / `byol embed` run per batch); with --op-times, where
// the step's time goes op by op. Reads no data files.
// Contract: flags are checked before any work (exit 2 on a bad one); the step is timed from
// the call to the loss on the host, as the trainer waits for it; the views are made once,
// so augmentation is timed apart from the step; the table and --json carry the same numbers.
import { augmentBatch } from '../augment';
import { Byol } from '../byol';
import { type Dataset, syntheticDataset } from '../data';
import {
  type OpTime, devices, getNumThreads, opTimes, opTimesPerStep, probeCuda, resolveDevice, setCpuConvPrecision, setNumThreads, setOpTiming,
} from '../device';
import { type Tensor } from '../tensor';
import { defaultStem } from '../train/data';
import { type DataOptions, type TrainConfig, type TrainerOptions, mergeOptions, resolveTrainConfig } from '../train/options';
import { modelOptimizer, trainViews } from '../train/trainer';
import { ByolOptionError, integer, isPlainObject, number } from '../validate';
import { type FlagSpec, TRAIN_FLAGS, UsageError, formatFlags, optionsFromFlags, parseArgs, withFlagNames } from './args';
import { readConfig } from './train';

// The flags of `byol train` that shape the step, then bench's own.
const SHAPING = ['--preset', '--data', '--data-size', '--data-channels', '--arch', '--stem', '--width', '--projector-hidden',
  '--projector-out', '--predictor-hidden', '--no-predictor', '--batch-size', '--optimizer', '--lars-variant', '--augment',
  '--image-size', '--device', '--threads', '--conv-precision', '--no-cuda-graphs'];
const FLAGS: FlagSpec[] = [
  ...TRAIN_FLAGS.filter((f) => SHAPING.includes(f.flag)),
  { flag: '--config', type: 'string', metavar: 'FILE', help: 'JSON file of TrainerOptions (its model, batch and device)' },
  { flag: '--steps', type: 'int', metavar: 'N', help: 'timed steps (default: as many as fit in --seconds, at least 3)' },
  { flag: '--seconds', type: 'number', metavar: 'S', help: 'time budget of the timed steps (10)' },
  { flag: '--warmup', type: 'int', metavar: 'N', help: 'untimed steps first (3: CUDA graphs are recorded on the third)' },
  { flag: '--op-times', type: 'boolean', help: 'then time every op of as many more steps and print the longest (CUDA: eagerly)' },
  { flag: '--json', type: 'boolean', help: 'print the results as JSON on stdout' },
  { flag: '--help', type: 'boolean', help: 'show this help' },
];

export const BENCH_HELP = `Usage: byol bench [--preset NAME] [--config FILE] [options]

Times the BYOL step that \`byol train\` runs with the same flags, on this machine: the
training step (both views through the online and target networks, loss, backward, optimizer,
EMA), the augmentation of a batch into its two views, and the eval-mode embedding of a batch.
The images are synthetic, of the data's shape (fashion-mnist and mnist 28x28x1, cifar10/100
32x32x3, stl10 96x96x3, synthetic and folder --data-size x --data-size x --data-channels);
no data files are read. Default data: synthetic 32x32x3. A side-by-side with PyTorch on the
same machine: bench/ in the repository.

Options:
${formatFlags(FLAGS)}`;

export interface BenchTiming {
  count: number; // timed repetitions
  msMedian: number;
  msMean: number;
  msMin: number;
  msMax: number;
  imagesPerSecond: number; // images of the batch per second at the mean time
}

export interface BenchResult {
  config: { arch: string; stem: string; width: number; projector: { hidden: number; out: number };
    predictor: { hidden: number } | false; optimizer: string; batchSize: number; image: [number, number, number] };
  device: string;
  deviceInfo: string;
  threads: number;
  convPrecision: 'fp32' | 'bf16' | null; // CPU only
  step: BenchTiming & { stepsPerSecond: number; loss: number };
  augment: BenchTiming;
  embed: BenchTiming;
  rss: { peakMb: number; startMb: number; endMb: number };
  cudaGraphs: { enabled: boolean; launches: number; error: string | null } | null;
  // With --op-times: per-step time of every (phase, op) over extra steps, and their total.
  opTimes?: { steps: number; msPerStep: number; rows: OpTime[] };
}

// Height, width and channels of the training images of a data spec, without reading them.
function imageShape(data: DataOptions): [number, number, number] {
  switch (data.kind) {
    case 'fashion-mnist':
    case 'mnist':
      return [28, 28, 1];
    case 'cifar10':
    case 'cifar100':
      return [32, 32, 3];
    case 'stl10':
      return [96, 96, 3];
    case 'synthetic':
      return [data.size ?? 32, data.size ?? 32, data.channels ?? 3];
    case 'folder':
      if (data.size === undefined) {
        throw new ByolOptionError('No images are read: give the size of folder data with --data-size PX');
      }
      return [data.size, data.size, data.channels ?? 3];
    default:
      throw new ByolOptionError(`Unknown data.kind ${JSON.stringify((data as DataOptions).kind)}`);
  }
}

function timing(ms: number[], images: number): BenchTiming {
  const sorted = [...ms].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
  return { count: ms.length, msMedian: median, msMean: mean, msMin: sorted[0], msMax: sorted[sorted.length - 1],
    imagesPerSecond: (1000 * images) / mean };
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const rssMb = () => process.memoryUsage.rss() / 2 ** 20;

// Runs `once` `warmup` times untimed, then `steps` times (or until `seconds` have passed, at
// least 3 times) timed; resolves to the times in ms.
async function timeIt(once: () => Promise<void>, warmup: number, steps: number | null, seconds: number,
  onTimedStart?: () => void): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await once();
  onTimedStart?.();
  const ms: number[] = [];
  const start = nowMs();
  while (steps !== null ? ms.length < steps : ms.length < 3 || nowMs() - start < 1000 * seconds) {
    const t = nowMs();
    await once();
    ms.push(nowMs() - t);
  }
  return ms;
}

export async function runBench(config: TrainConfig, options: { steps: number | null; warmup: number; seconds: number;
  opTimes?: boolean; onMessage?: (text: string) => void }): Promise<BenchResult> {
  const say = options.onMessage ?? (() => undefined);
  if (config.data.kind === 'memory') throw new ByolOptionError('byol bench needs a data kind, not an in-memory dataset');
  const [height, width, channels] = imageShape(config.data);
  const device = resolveDevice(config.device, 'device');
  if (config.threads !== null) setNumThreads(config.threads);
  const convPrecision = device === 'cpu' ? setCpuConvPrecision(config.convPrecision) : null;
  const batch = config.batchSize;
  const data: Dataset = syntheticDataset({ n: batch, height, width, channels: channels as 1 | 3, seed: 1 });
  const views = trainViews(config, data);
  const [outH, outW] = views[0].outputSize;
  const stem = config.encoder.stem ?? defaultStem(Math.max(outH, outW));
  const model = await Byol.create({
    encoder: { arch: config.encoder.arch, stem, inChannels: channels as 1 | 3, width: config.encoder.width },
    projector: { ...config.projector },
    predictor: config.predictor === false ? false : { ...config.predictor },
    optimizer: modelOptimizer(config),
    device,
    seed: config.seed,
  });
  const made: Tensor<'float32'>[] = [];
  try {
    await model.setCudaGraphs(config.cudaGraphs);
    const indices = Int32Array.from({ length: batch }, (_, i) => i);
    const augment = async () => {
      for (const v of made.splice(0)) v.dispose();
      for (const [view, config] of views.entries()) {
        const out = await augmentBatch(data.images, null, {
          config, seed: 0, epoch: 0, indices, view, device, shape: [batch, height, width, channels],
        });
        made.push(out.images);
      }
    };
    say(`augmentation: ${batch} images of ${height}x${width}x${channels} into two ${outH}x${outW} views`);
    const augmentMs = await timeIt(augment, 1, options.steps, Math.min(options.seconds, 2));
    const [v1, v2] = made;
    say(`training step: ${options.warmup} untimed, then ${options.steps ?? `${options.seconds} s of`} timed`);
    let loss = NaN;
    let rssStart = 0;
    const stepMs = await timeIt(async () => {
      loss = (await model.step(v1, v2, { lr: 0.01, tau: 0.99 })).loss;
    }, options.warmup, options.steps, options.seconds, () => { rssStart = rssMb(); });
    const rssEnd = rssMb();
    say('embedding: eval-mode forward of one view');
    const embedMs = await timeIt(async () => { (await model.embed(v1)).dispose(); }, 1, options.steps,
      Math.min(options.seconds, 5));
    const graphs = model.graphStatus();
    let ops: BenchResult['opTimes'];
    if (options.opTimes) {
      // As many steps again, each op timed (a graph replay would be one op: eager on CUDA).
      say(`op times: ${stepMs.length} more steps with every op timed`);
      if (graphs.enabled) await model.setCudaGraphs(false);
      setOpTiming(device, true);
      opTimes(device, { reset: true });
      for (let i = 0; i < stepMs.length; i++) await model.step(v1, v2, { lr: 0.01, tau: 0.99 });
      const { perStep, total } = opTimesPerStep(opTimes(device, { reset: true }), stepMs.length, Infinity);
      setOpTiming(device, false);
      ops = { steps: stepMs.length, msPerStep: total, rows: perStep };
    }
    const step = timing(stepMs, batch);
    return {
      config: {
        arch: config.encoder.arch, stem, width: config.encoder.width, projector: { ...config.projector },
        predictor: config.predictor === false ? false : { ...config.predictor }, optimizer: config.optimizer.name,
        batchSize: batch, image: [outH, outW, channels],
      },
      device,
      deviceInfo: device === 'cpu' ? devices().cpu : (probeCuda(Number(device.slice('cuda:'.length))).description ?? device),
      threads: getNumThreads(),
      convPrecision,
      step: { ...step, stepsPerSecond: 1000 / step.msMean, loss },
      augment: timing(augmentMs, batch),
      embed: timing(embedMs, batch),
      rss: { peakMb: process.resourceUsage().maxRSS / 1024, startMb: rssStart, endMb: rssEnd },
      cudaGraphs: device === 'cpu' ? null : { enabled: graphs.enabled, launches: graphs.launches, error: graphs.error ?? null },
      ...(ops ? { opTimes: ops } : {}),
    };
  } finally {
    for (const v of made) v.dispose();
    model.dispose();
  }
}

export async function benchCommand(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream }): Promise<number> {
  const parsed = parseArgs(argv, FLAGS, 'bench');
  const f = parsed.flags;
  if (f.has('--help')) {
    io.out.write(`${BENCH_HELP}\n`);
    return 0;
  }
  if (parsed.positionals.length > 0) throw new UsageError(`byol bench takes no positional arguments (received ${parsed.positionals.join(' ')})`);
  const steps = f.has('--steps') ? integer('--steps', f.get('--steps'), 1, 1e6) : null;
  const seconds = f.has('--seconds') ? number('--seconds', f.get('--seconds'), 0.001, 86400) : 10;
  const warmup = f.has('--warmup') ? integer('--warmup', f.get('--warmup'), 0, 1000) : 3;
  let options: Record<string, unknown> = {};
  const configFile = f.get('--config') as string | undefined;
  if (configFile) options = await readConfig(configFile);
  options = mergeOptions(options, optionsFromFlags(parsed, FLAGS));
  // Only the shape of the data matters: no data means synthetic 32x32x3, and a kind that
  // needs a path gets a placeholder (nothing is read).
  if (options.data === undefined && options.preset === undefined) options.data = { kind: 'synthetic' };
  const data = options.data as Record<string, unknown> | undefined;
  if (isPlainObject(data) && data.kind !== 'synthetic' && data.kind !== 'fashion-mnist' && data.path === undefined) {
    options.data = { ...data, path: '(not read by byol bench)' };
  }
  let config: TrainConfig;
  let result: BenchResult;
  try {
    config = resolveTrainConfig(options as TrainerOptions);
    result = await runBench(config, { steps, warmup, seconds, opTimes: f.has('--op-times'),
      onMessage: (text) => io.err.write(`byol bench: ${text}\n`) });
  } catch (error) {
    throw withFlagNames(error, FLAGS);
  }
  if (f.has('--json')) {
    io.out.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  }
  const c = result.config;
  io.out.write(`${c.arch} (${c.stem} stem, width ${c.width}), projector ${c.projector.hidden}/${c.projector.out}, ` +
    `${c.predictor ? `predictor ${c.predictor.hidden}` : 'no predictor'}, ${c.optimizer.toUpperCase()}; batch ${c.batchSize} of ` +
    `${c.image[0]}x${c.image[1]}x${c.image[2]}\n`);
  const info = result.deviceInfo.startsWith(result.device) ? result.deviceInfo : `${result.device}: ${result.deviceInfo}`;
  io.out.write(`${info}${result.convPrecision ? `; ${result.convPrecision} convolutions` : ''}\n`);
  const rows = [
    ['work per batch', 'median ms', 'min ms', 'max ms', 'images/s', 'runs'],
    ...([['training step (2 views)', result.step], ['augmentation (2 views)', result.augment],
      ['embedding (1 view, eval)', result.embed]] as const).map(([name, t]) =>
      [name, t.msMedian.toFixed(1), t.msMin.toFixed(1), t.msMax.toFixed(1), t.imagesPerSecond.toFixed(0), String(t.count)]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [k, row] of rows.entries()) {
    io.out.write(`${row.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ')}\n`);
    if (k === 0) io.out.write(`${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  }
  io.out.write(`${result.step.stepsPerSecond.toFixed(3)} steps/s; loss ${result.step.loss.toFixed(4)}; ` +
    `host RSS peak ${result.rss.peakMb.toFixed(0)} MB, ${result.rss.startMb.toFixed(0)} -> ${result.rss.endMb.toFixed(0)} MB over the timed steps\n`);
  if (result.opTimes) {
    const { lines } = opTimesPerStep(result.opTimes.rows, 1, 15);
    io.out.write(`op times over ${result.opTimes.steps} more steps: ${result.opTimes.msPerStep.toFixed(3)} ms per step in ops ` +
      `(longest ${lines.length - 1} of ${result.opTimes.rows.length}; --json has all)\n${lines.join('\n')}\n`);
  }
  if (result.cudaGraphs) {
    io.out.write(`CUDA graphs: ${result.cudaGraphs.enabled ? `on, ${result.cudaGraphs.launches} launches` : 'off'}` +
      `${result.cudaGraphs.error ? ` (${result.cudaGraphs.error})` : ''}\n`);
  }
  return 0;
}
