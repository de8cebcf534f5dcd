// trainer.ts: the BYOL training loop: data, schedules, the native step, JSON-lines log,
// progress, checkpoints, exact resume, abort and divergence handling.
// Contract: options are validated in the constructor (ByolOptionError naming the option);
// run() resolves with how the run ended ('completed' or 'interrupted' after options.signal
// aborted: the current step finishes and a checkpoint is written) and rejects on failure
// (NonFiniteLossError for a NaN/inf loss: no checkpoint is written after it, so the last
// good one stays). A run resumed from a checkpoint computes the same losses as one that was
// never stopped: data order and augmentation are keyed by (seed, epoch, sample index, view),
// schedules are pure functions of the step, and the checkpoint holds the full model and
// optimizer state. Every native call is async; the event loop stays free.
import { EventEmitter } from 'node:events';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';

import { type AugmentConfig, augmentPair } from '../augment';
import { type DatasetLike, DataLoader, validateDataset } from '../data';
import { getCpuConvPrecision, opTimesPerStep, resolveDevice, setCpuConvPrecision, setNumThreads } from '../device';
import { native } from '../native';
import { ByolOptionError, invalid, isPlainObject } from '../validate';
import {
  CHECKPOINT_FILE, CheckpointError, ENCODER_FILE, type RunPlan, type RunState, STATE_FILE, readRunStateSync,
  saveCheckpoint, verifyCheckpoint,
} from './checkpoint';
import { defaultAugmentPreset, defaultStem, loadDatasetSpec } from './data';
import { type LogRecord, RunLog, type StepRecord } from './log';
import { type ModelSpec, type StepOutcome, type TrainableModel, createModel, emaTau, learningRate } from './model';
import {
  type DataOptions, type ProfileOptions, RESUME_OVERRIDABLE, type TrainConfig, type TrainerOptions, isDatasetObject,
  mergeOptions, parseProfileSteps, resolveProfile, resolveTrainConfig,
} from './options';
import { KnnMonitor } from './monitor';
import { Progress, type ProgressStream } from './progress';

export const LOG_FILE = 'log.jsonl';
// 'A:B': the profile window when options.profile is not given (e.g. to profile a script).
export const PROFILE_ENV = 'BYOL_PROFILE_STEPS';

export type StepMetrics = StepRecord;

export interface TrainResult {
  status: 'completed' | 'interrupted';
  runDir: string;
  step: number; // completed steps
  totalSteps: number;
  loss: number | null; // of the last step
  checkpoint: string | null; // the checkpoint written last (null if none)
  elapsed: number; // seconds of training (across resumes)
}

export interface StartInfo {
  runDir: string;
  plan: RunPlan;
  config: TrainConfig;
  device: string;
  resumedFrom: number | null; // step, when resumed
}

// A NaN or infinite loss; the model is no longer trustworthy. `checkpoint` is the last good
// checkpoint (null when none was written yet).
export class NonFiniteLossError extends Error {
  readonly step: number;
  readonly loss: number;
  readonly checkpoint: string | null;
  constructor(step: number, loss: number, checkpoint: string | null, checkpointStep: number | null) {
    super(`Training diverged: the loss is ${loss} at step ${step}. ` + (checkpoint
      ? `The last good checkpoint (step ${checkpointStep}) is kept in ${checkpoint}; `
      : 'No checkpoint had been written yet; ') +
      'lower optimizer.lr (--lr), raise the warmup or check the data before resuming.');
    this.name = 'NonFiniteLossError';
    this.step = step;
    this.loss = loss;
    this.checkpoint = checkpoint;
  }
}

// Augmented views of one batch, identified by the global step.
interface PreparedBatch {
  step: number;
  views: [import('../tensor').Tensor<'float32'>, import('../tensor').Tensor<'float32'>];
  labels?: Int32Array; // the batch's classes (labeled data)
}

// Batches by global step (epoch = step / stepsPerEpoch): DataLoader's order and augmentation
// keys (view numbers 1 and 2), fetched one step at a time so that a run can start mid-epoch.
class BatchSource {
  readonly #loader: DataLoader;
  readonly #stepsPerEpoch: number;

  constructor(dataset: DatasetLike, views: [AugmentConfig, AugmentConfig], batchSize: number, stepsPerEpoch: number,
    seed: number, device: string) {
    this.#stepsPerEpoch = stepsPerEpoch;
    this.#loader = new DataLoader(dataset, { batchSize, seed, shuffle: true, dropLast: true, augment: views, device });
  }

  async fetch(step: number): Promise<PreparedBatch> {
    const batch = await this.#loader.batch(Math.floor(step / this.#stepsPerEpoch), step % this.#stepsPerEpoch);
    const [view1, view2] = batch.views!;
    return { step, views: [view1, view2], ...(batch.labels ? { labels: batch.labels } : {}) };
  }
}

function disposeBatch(batch: PreparedBatch | undefined): void {
  if (!batch) return;
  for (const view of batch.views) view.dispose();
}

// The profile window of a run: the option, else BYOL_PROFILE_STEPS, else none.
function profileWindow(option: unknown): ProfileOptions | null {
  if (option !== undefined) return resolveProfile('profile', option);
  const text = process.env[PROFILE_ENV];
  return text === undefined || text.trim() === '' ? null : parseProfileSteps(PROFILE_ENV, text);
}

// A window of steps startStep .. stopStep - 1 (numbered as in log.jsonl) that something is on
// for: opened before step startStep, closed after step stopStep - 1 or when the run ends inside
// it (abort, divergence, error). Subclasses say what opening and closing do.
abstract class StepWindow {
  protected readonly window: ProfileOptions;
  protected readonly device: string;
  protected readonly say: (text: string) => void;
  protected readonly log: RunLog;
  #state: 'waiting' | 'open' | 'done' = 'waiting';
  // For the messages: 'profile window', and what will not happen outside the run ('captured').
  protected abstract readonly what: string;
  protected abstract readonly outcome: string;

  constructor(window: ProfileOptions, device: string, say: (text: string) => void, log: RunLog) {
    this.window = window;
    this.device = device;
    this.say = say;
    this.log = log;
  }

  // Whether the window may still open (false once plan() found it outside the run).
  get pending(): boolean {
    return this.#state !== 'done';
  }

  protected get steps(): string {
    return `steps ${this.window.startStep}..${this.window.stopStep - 1}`;
  }

  // Before the run: says when the window lies outside the steps still to train.
  plan(completed: number, totalSteps: number): void {
    if (this.window.startStep > totalSteps || this.window.stopStep - 1 <= completed) {
      this.say(`byol: ${this.what} ${this.steps} is outside the steps this run trains ` +
        `(${completed + 1}..${totalSteps}); nothing will be ${this.outcome}`);
      this.#state = 'done';
    }
  }

  // `next`: the number of the step about to run (1-based, as in log.jsonl).
  async beforeStep(next: number): Promise<void> {
    if (this.#state !== 'waiting' || next < this.window.startStep) return;
    this.#state = (await this.open(next)) ? 'open' : 'done';
  }

  // `completed`: steps done so far.
  async afterStep(completed: number): Promise<void> {
    if (this.#state === 'open' && completed >= this.window.stopStep - 1) await this.close(completed);
  }

  async close(completed: number): Promise<void> {
    if (this.#state !== 'open') return;
    this.#state = 'done';
    await this.shut(completed);
  }

  // Opens before step `next`; false when it cannot (it has said why).
  protected abstract open(next: number): Promise<boolean>;
  protected abstract shut(completed: number): Promise<void>;
}

// The backend's profiler capture window (cudaProfilerStart / cudaProfilerStop). It holds the
// steps' kernels and the augmentation prefetched meanwhile; the log records where it was,
// since those steps run slower under the profiler.
class ProfilerWindow extends StepWindow {
  protected readonly what = 'profile window';
  protected readonly outcome = 'captured';

  protected async open(next: number): Promise<boolean> {
    if (!native.profilerStart(this.device)) {
      this.say(`byol: profile window ${this.steps} applies to CUDA devices only ` +
        `(nsys --capture-range=cudaProfilerApi); ${this.device} trains without one`);
      return false;
    }
    this.say(`byol: profiler capture started before step ${next} (${this.steps})`);
    await this.log.write({ event: 'profile-start', step: next - 1, device: this.device });
    return true;
  }

  protected async shut(completed: number): Promise<void> {
    native.profilerStop(this.device);
    this.say(`byol: profiler capture stopped after step ${completed}`);
    await this.log.write({ event: 'profile-stop', step: completed });
  }
}

// Rows of the op-times table printed when the window closes (the log holds all of them).
const OP_TIMES_SHOWN = 12;

// Op timing (lib/device.ts setOpTiming) for the window's steps: the backend sums each op's time
// per phase of the step; on closing, the log gets an 'op-times' record (per-step calls and ms
// of every (phase, op)) and the longest rows are printed. On CUDA the steps run eagerly while
// it is open (a graph replay would be one op), and graphs come back after it.
class OpTimesWindow extends StepWindow {
  protected readonly what = 'op timing';
  protected readonly outcome = 'timed';
  readonly #model: TrainableModel;
  #first = 0;
  #restoreGraphs = false;

  constructor(window: ProfileOptions, device: string, say: (text: string) => void, log: RunLog,
    model: TrainableModel) {
    super(window, device, say, log);
    this.#model = model;
  }

  protected async open(next: number): Promise<boolean> {
    this.#restoreGraphs = this.device !== 'cpu' && this.#model.graphStatus().enabled;
    if (this.#restoreGraphs) await this.#model.setCudaGraphs(false);
    native.setOpTiming(this.device, true);
    native.opTimes(this.device, true);
    this.#first = next;
    this.say(`byol: timing ops for ${this.steps}` +
      (this.#restoreGraphs ? ' (run eagerly: CUDA graphs are off meanwhile)' : ''));
    return true;
  }

  protected async shut(completed: number): Promise<void> {
    const rows = native.opTimes(this.device, true);
    native.setOpTiming(this.device, false);
    if (this.#restoreGraphs) await this.#model.setCudaGraphs(true);
    const steps = completed - this.#first + 1;
    if (steps <= 0) return;
    const { perStep, total, lines } = opTimesPerStep(rows, steps, OP_TIMES_SHOWN);
    await this.log.write({ event: 'op-times', step: completed, firstStep: this.#first, steps, device: this.device,
      msPerStep: total, rows: perStep });
    this.say([`byol: op times over steps ${this.#first}..${completed}: ${total.toFixed(3)} ms per step in ops ` +
      `(longest ${lines.length - 1} of ${perStep.length}; all in log.jsonl, event 'op-times')`, ...lines].join('\n'));
  }
}

// Events: 'start' (StartInfo), 'step' (StepMetrics, after each step), 'checkpoint' ({ step, file,
// state }), 'monitor' (KnnMonitorResult, after each kNN check of options.knnMonitor), 'end'
// (TrainResult).
export class Trainer extends EventEmitter {
  // The resolved configuration (for a resumed run: the stored one).
  readonly config: TrainConfig;
  readonly runDir: string;
  readonly #options: TrainerOptions;
  readonly #resumeState: RunState | null;
  readonly #dataset: DatasetLike | null;
  readonly #profile: ProfileOptions | null;
  readonly #opTimes: ProfileOptions | null;
  #running: Promise<TrainResult> | null = null;
  // Where progress goes; tests and embedders can redirect it.
  progressStream: ProgressStream = process.stderr;

  constructor(options: TrainerOptions) {
    super();
    if (!isPlainObject(options)) throw invalid('options', 'object', options);
    this.#options = options;
    if (options.resume !== undefined) {
      if (typeof options.resume !== 'string' || options.resume === '') {
        throw new ByolOptionError(`Expected non-empty string for resume but received ${JSON.stringify(options.resume)}`);
      }
      const extra = Object.keys(options).filter((k) => options[k as keyof TrainerOptions] !== undefined &&
        !(RESUME_OVERRIDABLE as readonly string[]).includes(k));
      if (extra.length > 0) {
        throw new ByolOptionError(`Option resume continues a run with the configuration in its ${STATE_FILE}; ` +
          `remove ${extra.join(', ')} (only ${RESUME_OVERRIDABLE.filter((k) => k !== 'resume').join(', ')} may change)`);
      }
      const state = readRunStateSync(options.resume);
      this.#resumeState = state;
      // Validate the stored configuration again (it may have been edited) with the overrides.
      const stored = withoutNulls({ ...state.config, preset: undefined }) as Record<string, unknown>;
      // Runs from before the online classifier have none (their checkpoints lack its tensors).
      if (!('onlineClassifier' in state.config)) stored.onlineClassifier = false;
      const overrides: Record<string, unknown> = {};
      for (const key of ['device', 'threads', 'cudaGraphs', 'printEvery', 'progress', 'signal', 'profile', 'opTimes',
        'knnMonitor', 'faultInjection'] as const) {
        if (options[key] !== undefined) overrides[key] = options[key];
      }
      if (state.config.data.kind === 'memory') {
        if (!isDatasetObject(options.data)) {
          throw new ByolOptionError(`The run in ${options.resume} trained on an in-memory dataset ` +
            `(${(state.config.data as { name: string }).name}); pass the same Dataset as option data to resume it`);
        }
        stored.data = options.data;
      } else if (options.data !== undefined) {
        throw new ByolOptionError(`Option data cannot change when resuming ${options.resume} ` +
          `(it trained on ${JSON.stringify(state.config.data)})`);
      }
      stored.out = options.resume;
      this.config = resolveTrainConfig(mergeOptions(stored, overrides) as TrainerOptions);
      this.config.preset = state.config.preset;
    } else {
      this.#resumeState = null;
      this.config = resolveTrainConfig(options);
    }
    this.#dataset = isDatasetObject(options.data) ? validateDataset(options.data, 'data', true) : null;
    this.#profile = profileWindow(options.profile);
    this.#opTimes = options.opTimes === undefined ? null : resolveProfile('opTimes', options.opTimes);
    this.runDir = path.resolve(this.config.out);
  }

  // Runs to the end (or to an abort). Calling it again returns the same promise.
  run(): Promise<TrainResult> {
    this.#running ??= this.#run();
    return this.#running;
  }

  // Metrics of every step as they come; starts the run if it has not started. Ends when the
  // run ends; throws what run() rejects with.
  async *metrics(): AsyncGenerator<StepMetrics, void, undefined> {
    const queue: StepMetrics[] = [];
    let wake: (() => void) | null = null;
    let done = false;
    let failure: unknown = null;
    const onStep = (metrics: StepMetrics) => {
      queue.push(metrics);
      wake?.();
    };
    this.on('step', onStep);
    this.run().then(() => { done = true; wake?.(); }, (error: unknown) => { failure = error; done = true; wake?.(); });
    try {
      for (;;) {
        if (queue.length > 0) {
          yield queue.shift()!;
          continue;
        }
        if (done) {
          if (failure) throw failure;
          return;
        }
        await new Promise<void>((resolve) => { wake = resolve; });
        wake = null;
      }
    } finally {
      this.off('step', onStep);
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<StepMetrics, void, undefined> {
    return this.metrics();
  }

  async #run(): Promise<TrainResult> {
    const config = this.config;
    const resume = this.#resumeState;
    const runDir = this.runDir;
    const signal = this.#options.signal;
    const nanAtStep = this.#options.faultInjection?.nanAtStep;

    if (config.threads !== null) setNumThreads(config.threads);
    const device = resolveDevice(config.device, 'device');
    if (device !== 'cpu' && config.convPrecision === 'bf16') {
      throw new ByolOptionError(`Option convPrecision 'bf16' is the CPU backend's, but this run is on ${device}; ` +
        "use 'fp32' or 'auto' (CUDA's reduced precision is TF32: BYOL_CUDA_TF32)");
    }

    // A finished or foreign run directory is never overwritten.
    if (!resume) {
      try {
        await fs.access(path.join(runDir, STATE_FILE));
        throw new ByolOptionError(`Run directory ${runDir} already holds a run (${STATE_FILE}); resume it with ` +
          `resume: '${config.out}' (--resume ${config.out}) or choose another out (--out)`);
      } catch (error) {
        if (error instanceof ByolOptionError) throw error;
      }
    }
    const dataset = this.#dataset ?? await loadDatasetSpec(config.data as DataOptions, 'train');
    const plan = this.#plan(dataset);
    const views = this.#views(dataset);
    if (resume) checkPlan(resume, plan, path.join(runDir, STATE_FILE));
    // Its test split and labels are checked before anything is written.
    const monitor = config.knnMonitor ? await KnnMonitor.open(config, dataset) : null;
    await fs.mkdir(runDir, { recursive: true });

    const spec: ModelSpec = {
      encoder: { arch: config.encoder.arch, stem: plan.stem, inChannels: plan.inChannels, width: config.encoder.width },
      projector: config.projector,
      predictor: config.predictor,
      optimizer: modelOptimizer(config),
      device,
      seed: config.seed,
      classifier: plan.classifierClasses ? { classes: plan.classifierClasses } : false,
    };
    const model = await createModel(spec);
    plan.featureDim = model.featureDim;
    let log: RunLog | null = null;
    let profiler: ProfilerWindow | null = null;
    let opTimer: OpTimesWindow | null = null;
    let step = 0;
    let pending: Promise<PreparedBatch> | null = null;
    const progress = new Progress(config.progress, this.progressStream, config.printEvery);
    // Process-wide (like the thread count): set for this run's steps, restored after it.
    const previousPrecision = device === 'cpu' ? getCpuConvPrecision() : null;
    const convPrecision = device === 'cpu' ? setCpuConvPrecision(config.convPrecision) : 'fp32';
    try {
      if (!config.cudaGraphs) await model.setCudaGraphs(false);
      // On CUDA, a capture that fails turns graphs off for the run: said once, at the step it
      // happens. Watched until then, or until a step has replayed (captures then work).
      let watchGraphs = device !== 'cpu' && config.cudaGraphs;
      let elapsedBefore = 0;
      let lastCheckpoint: string | null = null;
      let lastCheckpointStep: number | null = null;
      if (resume) {
        const weights = await verifyCheckpoint(runDir, resume);
        try {
          await model.load(weights);
        } catch (error) {
          throw new CheckpointError(weights, `cannot be loaded: ${(error as Error).message}`, { cause: error });
        }
        step = resume.step;
        elapsedBefore = resume.elapsed;
        lastCheckpoint = weights;
        lastCheckpointStep = step;
      }
      log = await RunLog.open(path.join(runDir, LOG_FILE), resume ? resume.step : undefined);
      const start: StartInfo = { runDir, plan, config, device, resumedFrom: resume ? resume.step : null };
      await log.write({ event: resume ? 'resume' : 'start', step, device, convPrecision, cudaGraphs: config.cudaGraphs,
        plan, config: config as unknown as Record<string, unknown> } as LogRecord);
      this.emit('start', start);
      progress.message(`byol: ${resume ? `resuming at step ${step} of` : 'training'} ${plan.totalSteps} steps ` +
        `(${plan.stepsPerEpoch} per epoch) on ${device}${convPrecision === 'bf16' ? ' (bf16 convolutions)' : ''}` +
        `${plan.classifierClasses ? `, online classifier on ${plan.classifierClasses} classes` : ''}; ` +
        `run directory ${runDir}`);

      if (this.#profile) {
        profiler = new ProfilerWindow(this.#profile, device, (text) => progress.message(text), log);
        profiler.plan(step, plan.totalSteps);
        if (profiler.pending && device !== 'cpu' && config.cudaGraphs) {
          progress.message("byol: CUDA graphs on: a replayed step shows as one 'graph launch' range; " +
            "--no-cuda-graphs (cudaGraphs: false) shows every layer's range");
        }
      }
      if (this.#opTimes) {
        opTimer = new OpTimesWindow(this.#opTimes, device, (text) => progress.message(text), log, model);
        opTimer.plan(step, plan.totalSteps);
      }

      const source = new BatchSource(dataset, views, config.batchSize, plan.stepsPerEpoch, config.seed, device);
      const startedAt = performance.now();
      let lastTick = startedAt;
      let lastLoss: number | null = resume?.lastLoss ?? null;
      let rate: number | null = null; // smoothed images/s for the ETA
      let top1: number | null = null; // smoothed online-classifier top-1 of the training batches
      const stateAt = (at: number, status: RunState['status']) => ({
        status,
        step: at,
        epoch: Math.floor(at / plan.stepsPerEpoch),
        stepInEpoch: at % plan.stepsPerEpoch,
        schedule: {
          baseLr: config.optimizer.lr, scaledLr: (config.optimizer.lr * config.batchSize) / 256,
          warmupSteps: plan.warmupSteps, totalSteps: plan.totalSteps, tauBase: config.tauBase,
          lr: learningRate(at, config.optimizer.lr, config.batchSize, plan.warmupSteps, plan.totalSteps),
          tau: emaTau(at, config.tauBase, plan.totalSteps),
        },
        seed: config.seed,
        elapsed: elapsedBefore + (performance.now() - startedAt) / 1000,
        lastLoss,
        config,
        plan,
        byolVersion: packageVersion(),
      });
      const checkpoint = async (at: number, status: RunState['status']) => {
        const state = await saveCheckpoint(runDir, model, stateAt(at, status));
        lastCheckpoint = path.join(runDir, CHECKPOINT_FILE);
        lastCheckpointStep = at;
        await log!.write({ event: 'checkpoint', step: at, sha256: state.weights.sha256, status });
        this.emit('checkpoint', { step: at, file: lastCheckpoint, state });
      };

      if (step < plan.totalSteps && !signal?.aborted) pending = source.fetch(step);
      let status: TrainResult['status'] = 'completed';
      while (step < plan.totalSteps) {
        if (signal?.aborted) {
          status = 'interrupted';
          break;
        }
        await profiler?.beforeStep(step + 1);
        await opTimer?.beforeStep(step + 1);
        const batch = await pending!;
        pending = step + 1 < plan.totalSteps ? source.fetch(step + 1) : null;
        // Observed now so that a failure while the step runs is not "unhandled"; awaited later.
        pending?.catch(() => undefined);
        const k = step;
        const lr = learningRate(k, config.optimizer.lr, config.batchSize, plan.warmupSteps, plan.totalSteps);
        const tau = emaTau(k, config.tauBase, plan.totalSteps);
        let loss: number;
        let classifier: StepOutcome['classifier'] = null;
        try {
          ({ loss, classifier } = await model.step(batch.views[0], batch.views[1], lr, tau,
            plan.classifierClasses ? batch.labels : undefined));
        } finally {
          disposeBatch(batch);
        }
        step += 1;
        await profiler?.afterStep(step);
        await opTimer?.afterStep(step);
        if (watchGraphs) {
          const graphs = model.graphStatus();
          if (graphs.error !== null) progress.message(`byol: CUDA graphs off: ${graphs.error}; steps run eagerly`);
          if (graphs.error !== null || graphs.launches > 0) watchGraphs = false;
        }
        if (nanAtStep === step) loss = Number.NaN;
        const now = performance.now();
        const imagesPerSec = (config.batchSize * 1000) / Math.max(1e-6, now - lastTick);
        lastTick = now;
        const record: StepRecord = {
          step, epoch: Math.floor(k / plan.stepsPerEpoch), loss, lr, tau, imagesPerSec,
          elapsed: elapsedBefore + (now - startedAt) / 1000,
          ...(classifier ? { classifierLoss: classifier.loss, top1: classifier.correct / classifier.count } : {}),
        };
        await log.write(record);
        if (!Number.isFinite(loss)) {
          await log.write({ event: 'diverged', step, loss, checkpointStep: lastCheckpointStep });
          progress.finish();
          throw new NonFiniteLossError(step, loss, lastCheckpoint, lastCheckpointStep);
        }
        lastLoss = loss;
        rate = rate === null ? imagesPerSec : 0.9 * rate + 0.1 * imagesPerSec;
        if (record.top1 !== undefined) top1 = top1 === null ? record.top1 : 0.95 * top1 + 0.05 * record.top1;
        progress.update({
          step, totalSteps: plan.totalSteps, epoch: record.epoch, epochs: plan.totalSteps / plan.stepsPerEpoch,
          loss, lr, imagesPerSec: rate, eta: step > 1 ? ((plan.totalSteps - step) * config.batchSize) / rate : null,
          top1,
        });
        this.emit('step', record);
        if (monitor?.due(step, plan.totalSteps)) {
          const r = await monitor.run(model, step);
          await log.write({ event: 'knn-monitor', ...r });
          progress.message(`byol: kNN monitor at step ${step}: top-1 ${(100 * r.top1).toFixed(2)}%  top-5 ` +
            `${(100 * r.top5).toFixed(2)}% (k ${r.k}, ${r.bank} training images against ${r.test} test images, ` +
            `${r.seconds.toFixed(1)} s)`);
          this.emit('monitor', r);
        }
        if (step === plan.totalSteps) break;
        if (signal?.aborted) {
          status = 'interrupted';
          break;
        }
        if (plan.checkpointEvery > 0 && step % plan.checkpointEvery === 0) await checkpoint(step, 'running');
      }
      await profiler?.close(step);
      await opTimer?.close(step);
      if (status === 'completed') {
        if (lastCheckpointStep !== step) await checkpoint(step, 'completed');
        await model.saveEncoder(path.join(runDir, ENCODER_FILE));
      } else if (lastCheckpointStep !== step) {
        await checkpoint(step, 'interrupted');
      }
      const elapsed = elapsedBefore + (performance.now() - startedAt) / 1000;
      await log.write({ event: status === 'completed' ? 'end' : 'interrupted', step, elapsed,
        ...(device !== 'cpu' ? { graphs: model.graphStatus() } : {}) });
      progress.finish();
      progress.message(status === 'completed'
        ? `byol: finished ${step} steps in ${elapsed.toFixed(1)} s; checkpoint ${lastCheckpoint}` +
          (top1 !== null ? `; online classifier top-1 ${(100 * top1).toFixed(1)}% on the last training batches ` +
            '(smoothed; byol eval scores it on the test split)' : '')
        : `byol: interrupted after step ${step}; checkpoint written to ${lastCheckpoint}; ` +
          `continue with --resume ${runDir}`);
      const result: TrainResult = {
        status, runDir, step, totalSteps: plan.totalSteps, loss: lastLoss, checkpoint: lastCheckpoint, elapsed,
      };
      this.emit('end', result);
      return result;
    } finally {
      // A run that ends inside the window (abort, divergence, error) still closes it; a
      // failure here must not hide the run's own error.
      await profiler?.close(step).catch(() => undefined);
      await opTimer?.close(step).catch(() => undefined);
      progress.finish();
      if (pending) {
        const left = pending;
        left.then(disposeBatch, () => undefined);
      }
      await log?.close();
      model.dispose();
      if (previousPrecision !== null) setCpuConvPrecision(previousPrecision);
    }
  }

  // Everything the run derives from its configuration and data.
  #plan(dataset: DatasetLike): RunPlan {
    const config = this.config;
    const views = this.#views(dataset);
    const imageSize = views[0].outputSize;
    const stepsPerEpoch = Math.floor(dataset.n / config.batchSize);
    if (stepsPerEpoch < 1) {
      throw new ByolOptionError(`Expected batchSize at most the dataset size ${dataset.n} (${dataset.name}) but ` +
        `received ${config.batchSize}`);
    }
    const totalSteps = config.steps ?? config.epochs! * stepsPerEpoch;
    const o = config.optimizer;
    const warmupSteps = o.warmupSteps ?? (o.warmupEpochs !== null
      ? Math.round(o.warmupEpochs * stepsPerEpoch)
      // BYOL.md's 10 epochs, but never more than a tenth of a short run.
      : Math.min(10 * stepsPerEpoch, Math.floor(totalSteps / 10)));
    if (warmupSteps > totalSteps) {
      throw new ByolOptionError(`Expected a warmup of at most the run's ${totalSteps} steps but ` +
        `optimizer.${o.warmupSteps !== null ? 'warmupSteps' : 'warmupEpochs'} gives ${warmupSteps}; ` +
        'give a shorter optimizer.warmupSteps');
    }
    return {
      datasetName: dataset.name, datasetSize: dataset.n, inChannels: dataset.channels, imageSize,
      stem: config.encoder.stem ?? defaultStem(Math.max(...imageSize)), stepsPerEpoch, totalSteps, warmupSteps,
      checkpointEvery: config.checkpointEvery ?? stepsPerEpoch, featureDim: 0,
      classifierClasses: classifierClasses(config.onlineClassifier, dataset),
    };
  }

  #views(dataset: DatasetLike): [AugmentConfig, AugmentConfig] {
    return trainViews(this.config, dataset);
  }
}

// The two augmentation configs of a run on `dataset` (also used by evaluation and the CLI's
// augment command).
export function trainViews(config: TrainConfig, dataset: DatasetLike): [AugmentConfig, AugmentConfig] {
  const augment = { ...config.augment };
  augment.preset ??= defaultAugmentPreset(dataset);
  augment.outputSize ??= [dataset.height, dataset.width];
  return augmentPair(augment);
}

// The model's optimizer settings of a run (the schedule-related ones stay in the trainer).
export function modelOptimizer(config: TrainConfig): ModelSpec['optimizer'] {
  const o = config.optimizer;
  return { name: o.name, weightDecay: o.weightDecay, momentum: o.momentum, trustCoefficient: o.trustCoefficient,
    variant: o.variant };
}

// Classes of the online classifier for a run on `dataset`: config true needs labels of >= 2
// classes; null (the default) uses them when there are. The count is dataset.classes, or the
// largest label + 1 for a dataset that does not say; every label is checked against it here,
// before any step, so a bad one is named with its sample rather than failing a step.
function classifierClasses(option: boolean | null, dataset: DatasetLike): number {
  if (option === false) return 0;
  let classes = 0;
  if (dataset.labels && dataset.n > 0) {
    let max = -1;
    for (const label of dataset.labels) if (label > max) max = label;
    classes = dataset.classes ?? max + 1;
    for (let i = 0; i < dataset.n; i++) {
      const label = dataset.labels[i];
      if (label < 0 || label >= classes) {
        throw new ByolOptionError(`The online classifier needs labels in [0, ${classes}) but ${dataset.name} has ` +
          `label ${label} at sample ${i}${dataset.classes === undefined ? '' : ` (classes ${dataset.classes})`}; ` +
          'fix the labels or set onlineClassifier: false (--no-online-classifier)');
      }
    }
  }
  if (classes >= 2) return classes;
  if (option === true) {
    throw new ByolOptionError(`Option onlineClassifier needs a dataset with labels of at least 2 classes, but ` +
      `${dataset.name} has ${dataset.labels ? `${classes} class${classes === 1 ? '' : 'es'}` : 'no labels'}`);
  }
  return 0;
}

function checkPlan(state: RunState, plan: RunPlan, file: string): void {
  const keys = ['datasetSize', 'inChannels', 'stepsPerEpoch', 'totalSteps', 'warmupSteps', 'classifierClasses'] as const;
  for (const key of keys) {
    if ((state.plan[key] ?? 0) !== (plan[key] ?? 0)) {
      throw new CheckpointError(file, `the run was planned with ${key} ${state.plan[key]} but the data now gives ` +
        `${plan[key]} (dataset ${plan.datasetName}); resuming would not continue the same run`);
    }
  }
  const [h, w] = state.plan.imageSize;
  if (h !== plan.imageSize[0] || w !== plan.imageSize[1]) {
    throw new CheckpointError(file, `the run was planned with image size ${h}x${w} but now gets ` +
      `${plan.imageSize[0]}x${plan.imageSize[1]}`);
  }
}

// state.json writes unset options as null; the options API spells them as absent.
function withoutNulls(value: unknown): unknown {
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) if (v !== null) out[key] = withoutNulls(v);
  return out;
}

function packageVersion(): string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return (require('../../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
