// log.ts: the run's JSON-lines log (run-dir/log.jsonl): one line per training step
// {step, epoch, loss, lr, tau, imagesPerSec, elapsed} and event lines {event, ...} (start,
// checkpoint, interrupted, diverged, end). Contract: lines are appended in order and each is
// flushed before the next step starts; on resume, lines past the checkpoint's step are dropped
// so the log reads as one uninterrupted run; readLog() skips a torn last line (a crash
// mid-write) instead of failing.
import { promises as fs } from 'node:fs';

export interface StepRecord {
  step: number; // completed steps (1-based index of this step)
  epoch: number; // 0-based epoch of this step
  loss: number;
  lr: number;
  tau: number;
  imagesPerSec: number;
  elapsed: number; // seconds of training since the run began (across resumes)
  // With the online classifier: its cross-entropy and top-1 accuracy on this step's batch
  // (view 1), before the update.
  classifierLoss?: number;
  top1?: number;
}

export interface EventRecord {
  event: string;
  step: number;
  [key: string]: unknown;
}

export type LogRecord = StepRecord | EventRecord;

export function isStepRecord(record: LogRecord): record is StepRecord {
  return !('event' in record);
}

// JSON has no NaN or Infinity; a diverged loss is written as a string so the line stays JSON.
function encode(record: LogRecord): string {
  return JSON.stringify(record, (_key, value: unknown) =>
    typeof value === 'number' && !Number.isFinite(value) ? String(value) : value);
}

// Parses log.jsonl; a line that does not parse ends the read (it can only be the torn last one).
export async function readLog(file: string): Promise<LogRecord[]> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const records: LogRecord[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      records.push(JSON.parse(line) as LogRecord);
    } catch {
      break;
    }
  }
  return records;
}

export class RunLog {
  readonly file: string;
  #handle: fs.FileHandle | null = null;

  private constructor(file: string) {
    this.file = file;
  }

  // Opens for appending. With `keepThroughStep`, records of later steps (written after the
  // checkpoint being resumed) are removed first.
  static async open(file: string, keepThroughStep?: number): Promise<RunLog> {
    const log = new RunLog(file);
    if (keepThroughStep !== undefined) {
      const kept = (await readLog(file)).filter((r) => r.step <= keepThroughStep);
      const temp = `${file}.tmp`;
      await fs.writeFile(temp, kept.map((r) => `${encode(r)}\n`).join(''));
      await fs.rename(temp, file);
    }
    log.#handle = await fs.open(file, 'a');
    return log;
  }

  async write(record: LogRecord): Promise<void> {
    if (!this.#handle) throw new Error(`${this.file}: log was closed`);
    await this.#handle.appendFile(`${encode(record)}\n`);
  }

  async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = null;
    await handle?.close();
  }
}
