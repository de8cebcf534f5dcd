// checkpoint.ts: the run directory's resumable state: checkpoint.safetensors (weights and
// optimizer state, written by the model) and state.json (where the run stands, its schedules,
// seed, configuration and the SHA-256 of the weights file).
// Contract: both files are written atomically (temp file, fsync, rename; weights first, so a
// state.json always describes a complete weights file or the previous one); readRunState()
// and verifyCheckpoint() refuse a damaged or mismatched pair with CheckpointError naming the file.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { isPlainObject } from '../validate';
import type { TrainableModel } from './model';
import type { TrainConfig } from './options';

export const STATE_FILE = 'state.json';
export const CHECKPOINT_FILE = 'checkpoint.safetensors';
export const ENCODER_FILE = 'encoder.safetensors';
export const STATE_FORMAT = 'byol-run-state';
export const STATE_VERSION = 1;

export class CheckpointError extends Error {
  readonly file: string;
  constructor(file: string, problem: string, options?: { cause?: unknown }) {
    super(`${file}: ${problem}`, options);
    this.name = 'CheckpointError';
    this.file = file;
  }
}

// What the run derived from its configuration and data; a resumed run must derive the same.
export interface RunPlan {
  datasetName: string;
  datasetSize: number;
  inChannels: number;
  imageSize: [number, number];
  stem: 'cifar' | 'imagenet';
  stepsPerEpoch: number;
  totalSteps: number;
  warmupSteps: number;
  checkpointEvery: number;
  featureDim: number;
  // Classes of the online classifier (0: none; absent in runs made before it existed).
  classifierClasses?: number;
}

export interface RunState {
  format: typeof STATE_FORMAT;
  version: number;
  // 'running' while steps remain; 'interrupted' after a signal; 'completed' at the end.
  status: 'running' | 'interrupted' | 'completed';
  step: number; // completed steps; the next step has index `step`
  epoch: number; // epoch of the next step (0-based)
  stepInEpoch: number; // position of the next step within its epoch
  // Schedule values of the next step (k = step), and what they derive from.
  schedule: { baseLr: number; scaledLr: number; warmupSteps: number; totalSteps: number; tauBase: number;
    lr: number; tau: number };
  seed: number;
  elapsed: number; // seconds of training so far
  lastLoss: number | null;
  config: TrainConfig;
  plan: RunPlan;
  weights: { file: string; sha256: string; bytes: number };
  byolVersion: string;
  savedAt: string;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    const stream = createReadStream(file);
    stream.on('data', (chunk) => hash.update(chunk));
    stream.on('error', reject);
    stream.on('end', resolve);
  });
  return hash.digest('hex');
}

async function fsyncFile(file: string): Promise<void> {
  const handle = await fs.open(file, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

// fsync of the directory makes the renames themselves durable; not every file system allows
// opening a directory, which only weakens durability, never correctness.
async function fsyncDir(dir: string): Promise<void> {
  try {
    const handle = await fs.open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // see above
  }
}

export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  const temp = `${file}.tmp-${process.pid}`;
  try {
    await fs.writeFile(temp, data);
    await fsyncFile(temp);
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
  await fsyncDir(path.dirname(file));
}

// Writes checkpoint.safetensors through the model, then state.json with its checksum.
export async function saveCheckpoint(runDir: string, model: TrainableModel,
  state: Omit<RunState, 'weights' | 'format' | 'version' | 'savedAt'>): Promise<RunState> {
  const file = path.join(runDir, CHECKPOINT_FILE);
  const temp = `${file}.tmp-${process.pid}`;
  let sha256: string;
  let bytes: number;
  try {
    await model.save(temp);
    await fsyncFile(temp);
    [sha256, bytes] = await Promise.all([sha256File(temp), fs.stat(temp).then((s) => s.size)]);
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
  const full: RunState = {
    format: STATE_FORMAT, version: STATE_VERSION, ...state,
    weights: { file: CHECKPOINT_FILE, sha256, bytes }, savedAt: new Date().toISOString(),
  };
  await writeFileAtomic(path.join(runDir, STATE_FILE), `${JSON.stringify(full, null, 2)}\n`);
  return full;
}

function parseState(file: string, text: string): RunState {
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(file, `is not valid JSON (${(error as Error).message}); the file is damaged`, { cause: error });
  }
  if (!isPlainObject(state) || state.format !== STATE_FORMAT) {
    throw new CheckpointError(file, `is not a byol run state (expected "format": "${STATE_FORMAT}")`);
  }
  if (state.version !== STATE_VERSION) {
    throw new CheckpointError(file, `has state version ${String(state.version)}; this byol reads version ${STATE_VERSION}`);
  }
  const s = state as unknown as RunState;
  const count = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const problems: string[] = [];
  if (!count(s.step)) problems.push('step');
  if (!count(s.epoch)) problems.push('epoch');
  if (!count(s.stepInEpoch)) problems.push('stepInEpoch');
  if (!count(s.seed)) problems.push('seed');
  if (!isPlainObject(s.config)) problems.push('config');
  if (!isPlainObject(s.plan) || !count(s.plan.totalSteps) || !count(s.plan.stepsPerEpoch)) problems.push('plan');
  if (!isPlainObject(s.weights) || typeof s.weights.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(s.weights.sha256) ||
      typeof s.weights.file !== 'string' || !count(s.weights.bytes)) {
    problems.push('weights');
  }
  if (problems.length > 0) {
    throw new CheckpointError(file, `is damaged: missing or invalid field(s) ${problems.join(', ')}`);
  }
  if (s.plan.stepsPerEpoch > 0 && s.epoch * s.plan.stepsPerEpoch + s.stepInEpoch !== s.step) {
    throw new CheckpointError(file, `is inconsistent: epoch ${s.epoch} position ${s.stepInEpoch} is not step ${s.step}`);
  }
  return s;
}

function readError(file: string, error: unknown, what: string): CheckpointError {
  const code = (error as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? `not found: ${what}` : `cannot be read (${(error as Error).message})`;
  return new CheckpointError(file, why, { cause: error });
}

// Reads run-dir/state.json (synchronously: it is small, and the Trainer constructor needs the
// configuration to validate options before any work).
export function readRunStateSync(runDir: string): RunState {
  const file = path.join(runDir, STATE_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw readError(file, error, `${runDir} holds no resumable run (no checkpoint was written there)`);
  }
  return parseState(file, text);
}

export async function readRunState(runDir: string): Promise<RunState> {
  const file = path.join(runDir, STATE_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw readError(file, error, `${runDir} holds no resumable run (no checkpoint was written there)`);
  }
  return parseState(file, text);
}

// Checks the weights file against state.json (size, then SHA-256) and returns its path.
export async function verifyCheckpoint(runDir: string, state: RunState): Promise<string> {
  const file = path.join(runDir, state.weights.file);
  let size: number;
  try {
    size = (await fs.stat(file)).size;
  } catch (error) {
    throw readError(file, error, `the weights that ${path.join(runDir, STATE_FILE)} refers to are missing`);
  }
  if (size !== state.weights.bytes) {
    throw new CheckpointError(file, `is ${size} bytes but ${STATE_FILE} recorded ${state.weights.bytes}: the file ` +
      'is truncated or was replaced; refusing to load it');
  }
  const sha256 = await sha256File(file);
  if (sha256 !== state.weights.sha256) {
    throw new CheckpointError(file, `SHA-256 ${sha256} does not match ${state.weights.sha256} recorded in ` +
      `${STATE_FILE}: the file is corrupted or was replaced; refusing to load it`);
  }
  return file;
}
