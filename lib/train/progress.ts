// progress.ts: what a training run shows while it works: on a TTY one line redrawn in place
// (epoch, bar, step, loss, images/s, ETA), otherwise plain lines every N steps or ~10 s.
// Contract: never throws; writes only to the given stream; message() prints a line without
// tearing the bar; finish() leaves the cursor on a fresh line.
import { type ProgressMode } from './options';

export interface ProgressUpdate {
  step: number; // completed steps
  totalSteps: number;
  epoch: number; // 0-based
  epochs: number; // total (may be fractional for step-based runs; shown rounded up)
  loss: number;
  lr: number;
  imagesPerSec: number;
  // Seconds left, or null before the rate is known.
  eta: number | null;
  // Smoothed top-1 of the online classifier on the training batches (null or absent: none).
  top1?: number | null;
}

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

// 3725 -> "1:02:05", 65 -> "1:05".
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

function formatLoss(loss: number): string {
  return Number.isFinite(loss) ? loss.toFixed(4) : String(loss);
}

export class Progress {
  readonly mode: 'bar' | 'lines' | 'none';
  readonly #stream: ProgressStream;
  readonly #printEvery: number;
  #lastLineAt = 0;
  #barShown = false;

  constructor(mode: ProgressMode, stream: ProgressStream, printEvery = 0) {
    this.#stream = stream;
    this.#printEvery = printEvery;
    if (mode === 'auto') this.mode = stream.isTTY ? 'bar' : 'lines';
    else this.mode = mode;
  }

  update(u: ProgressUpdate): void {
    if (this.mode === 'none') return;
    const epochs = Math.max(1, Math.ceil(u.epochs));
    const eta = u.eta === null ? '--:--' : formatDuration(u.eta);
    const top1 = u.top1 === undefined || u.top1 === null ? '' : `  top-1 ${(100 * u.top1).toFixed(1)}%`;
    const fields = `step ${u.step}/${u.totalSteps}  loss ${formatLoss(u.loss)}${top1}  lr ${u.lr.toPrecision(3)}  ` +
      `${u.imagesPerSec.toFixed(0)} img/s  ETA ${eta}`;
    if (this.mode === 'bar') {
      // What matters most comes first; the rest is added while the terminal has room.
      const columns = Math.max(20, this.#stream.columns ?? 100) - 1;
      const head = `epoch ${u.epoch + 1}/${epochs}`;
      const essential = [head, `step ${u.step}/${u.totalSteps}`, `loss ${formatLoss(u.loss)}`,
        ...(top1 ? [top1.trim()] : []), `${u.imagesPerSec.toFixed(0)} img/s`, `ETA ${eta}`];
      let line = essential.join('  ');
      const withLr = `${line}  lr ${u.lr.toPrecision(3)}`;
      if (withLr.length <= columns) line = withLr;
      const room = columns - line.length - 3;
      if (room >= 10) {
        const width = Math.min(30, room);
        const filled = Math.round((width * u.step) / u.totalSteps);
        line = `${head} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${line.slice(head.length + 2)}`;
      }
      // \r + erase line: redraw in place.
      this.#stream.write(`\r\x1b[2K${line.slice(0, columns)}`);
      this.#barShown = true;
      return;
    }
    const now = Date.now();
    const due = this.#printEvery > 0
      ? u.step % this.#printEvery === 0
      : now - this.#lastLineAt >= 10_000 || this.#lastLineAt === 0;
    if (due || u.step === u.totalSteps) {
      this.#lastLineAt = now;
      this.#stream.write(`epoch ${u.epoch + 1}/${epochs}  ${fields}\n`);
    }
  }

  message(text: string): void {
    if (this.mode === 'none') return;
    if (this.#barShown) this.#stream.write('\r\x1b[2K');
    this.#barShown = false;
    this.#stream.write(`${text}\n`);
  }

  finish(): void {
    if (this.#barShown) this.#stream.write('\n');
    this.#barShown = false;
  }
}
