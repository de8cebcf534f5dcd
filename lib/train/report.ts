// report.ts: a self-contained HTML report of a run: inline SVG line charts of loss (raw and
// smoothed), learning rate, EMA tau and throughput from log.jsonl (and, when the run had them,
// the online classifier's top-1 and the kNN monitor's checks), where a step's time went
// (the log's last op-times record, when the run timed ops), the run's configuration from
// state.json and the evaluation results from eval.json.
// Contract: the HTML references nothing outside itself (no scripts, fonts, images or styles
// from elsewhere); every text taken from files is escaped; missing state.json or eval.json
// only leave their sections out, a missing or empty log.jsonl is an error naming the file.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { opRate } from '../device';
import { STATE_FILE, type RunState } from './checkpoint';
import { type StepRecord, isStepRecord, readLog } from './log';
import { LOG_FILE } from './trainer';

export const REPORT_FILE = 'report.html';

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
  width?: number;
  opacity?: number;
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

// Round tick positions covering [lo, hi] (about `count` of them).
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    return niceTicks(lo - pad, hi + pad, count);
  }
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function formatTick(value: number): string {
  if (value === 0) return '0';
  const abs = Math.abs(value);
  if (abs >= 1e5 || abs < 1e-3) return value.toExponential(1);
  return String(Number(value.toPrecision(4)));
}

// At most `max` points: each bucket of consecutive points becomes its mean (a chart of 100000
// steps stays small and still shows the trend).
export function downsample(points: [number, number][], max = 800): [number, number][] {
  if (points.length <= max) return points;
  const out: [number, number][] = [];
  const per = points.length / max;
  for (let b = 0; b < max; b++) {
    const from = Math.floor(b * per);
    const to = Math.floor((b + 1) * per);
    let sx = 0;
    let sy = 0;
    for (let i = from; i < to; i++) {
      sx += points[i][0];
      sy += points[i][1];
    }
    out.push([sx / (to - from), sy / (to - from)]);
  }
  return out;
}

// An SVG line chart with axes, ticks and a legend.
export function lineChart(title: string, series: Series[], xLabel = 'step'): string {
  const width = 640;
  const height = 260;
  const left = 64;
  const right = 16;
  const top = 28;
  const bottom = 40;
  const finite = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (finite.length === 0) {
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="60" role="img"><text x="8" y="30">` +
      `${escapeHtml(title)}: no data</text></svg>`;
  }
  const xs = finite.map((p) => p[0]);
  const ys = finite.map((p) => p[1]);
  // Steps start near 0: draw the axis from 0 so the warmup is visible as such.
  const xMin = Math.min(...xs);
  const xTicks = niceTicks(xMin >= 0 && xMin <= 0.05 * Math.max(...xs) ? 0 : xMin, Math.max(...xs));
  const yTicks = niceTicks(Math.min(...ys), Math.max(...ys));
  const x0 = Math.min(xTicks[0], Math.min(...xs));
  const x1 = Math.max(xTicks[xTicks.length - 1], Math.max(...xs));
  const y0 = Math.min(yTicks[0], Math.min(...ys));
  const y1 = Math.max(yTicks[yTicks.length - 1], Math.max(...ys));
  const sx = (x: number) => left + ((x - x0) / (x1 - x0 || 1)) * (width - left - right);
  const sy = (y: number) => top + (1 - (y - y0) / (y1 - y0 || 1)) * (height - top - bottom);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" ` +
    `height="${height}" role="img" aria-label="${escapeHtml(title)}">`);
  parts.push(`<text x="${left}" y="18" class="title">${escapeHtml(title)}</text>`);
  for (const t of yTicks) {
    const y = sy(t).toFixed(1);
    parts.push(`<line x1="${left}" x2="${width - right}" y1="${y}" y2="${y}" class="grid"/>`);
    parts.push(`<text x="${left - 6}" y="${y}" class="ytick">${formatTick(t)}</text>`);
  }
  for (const t of xTicks) {
    const x = sx(t).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${height - bottom}" class="grid"/>`);
    parts.push(`<text x="${x}" y="${height - bottom + 16}" class="xtick">${formatTick(t)}</text>`);
  }
  parts.push(`<rect x="${left}" y="${top}" width="${width - left - right}" height="${height - top - bottom}" class="frame"/>`);
  parts.push(`<text x="${(left + width - right) / 2}" y="${height - 6}" class="xlabel">${escapeHtml(xLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = downsample(s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
    if (pts.length === 0) return;
    const d = pts.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.5}" ` +
      `stroke-opacity="${s.opacity ?? 1}"><title>${escapeHtml(s.name)}</title></path>`);
    if (series.length > 1) {
      const lx = width - right - 150;
      const ly = top + 14 + 16 * i;
      parts.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"/>`);
      parts.push(`<text x="${lx + 24}" y="${ly}" class="legend">${escapeHtml(s.name)}</text>`);
    }
  });
  parts.push('</svg>');
  return parts.join('\n');
}

// Exponential moving average with bias correction (as TensorBoard smooths), for the loss.
export function smooth(values: number[], weight = 0.95): number[] {
  const out: number[] = [];
  let ema = 0;
  let debias = 0;
  for (const v of values) {
    if (!Number.isFinite(v)) {
      out.push(Number.NaN);
      continue;
    }
    ema = weight * ema + (1 - weight) * v;
    debias = weight * debias + (1 - weight);
    out.push(ema / debias);
  }
  return out;
}

async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

function table(rows: [string, string][]): string {
  return `<table>${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>`;
}

function flatten(prefix: string, value: unknown, out: [string, string][]): void {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(prefix ? `${prefix}.${k}` : k, v, out);
  } else {
    out.push([prefix, Array.isArray(value) ? `[${value.join(', ')}]` : String(value)]);
  }
}

interface EvalFile {
  step?: number;
  sha256?: string;
  centerCrop?: number;
  dataset?: { train: string; test: string };
  results?: Record<string, { linear?: { top1: number; top5: number; epochs?: number }; knn?: { top1: number; top5: number; k?: number };
    linearAugmented?: { top1: number; top5: number; epochs?: number }; online?: { top1: number; top5: number } }>;
}

function evalTable(evalResults: EvalFile): string {
  const pct = (x: number | undefined) => (x === undefined ? '—' : `${(100 * x).toFixed(2)}%`);
  const names: Record<string, string> = { byol: 'BYOL encoder', random: 'random-init encoder', pixels: 'raw pixels' };
  const augmented = Object.values(evalResults.results ?? {}).some((r) => r.linearAugmented);
  const rows = Object.entries(evalResults.results ?? {}).map(([name, r]) =>
    `<tr><th>${escapeHtml(names[name] ?? name)}</th><td>${pct(r.linear?.top1)}</td><td>${pct(r.linear?.top5)}</td>` +
    `<td>${pct(r.knn?.top1)}</td><td>${pct(r.knn?.top5)}</td>` +
    `${augmented ? `<td>${pct(r.linearAugmented?.top1)}</td><td>${pct(r.linearAugmented?.top5)}</td>` : ''}</tr>`);
  const caption = evalResults.dataset
    ? `fit on ${escapeHtml(evalResults.dataset.train)}, tested on ${escapeHtml(evalResults.dataset.test)}` +
      (evalResults.step !== undefined ? `, weights of step ${evalResults.step}` : '') +
      (evalResults.centerCrop !== undefined && evalResults.centerCrop !== 1
        ? `; features of the central ${evalResults.centerCrop} of each image` : '')
    : '';
  const online = evalResults.results?.byol?.online;
  const onlineLine = online
    ? `<p>Online classifier (trained during BYOL on stop-gradient features): top-1 ${pct(online.top1)}, ` +
      `top-5 ${pct(online.top5)}.</p>`
    : '';
  return `<table class="results"><caption>${caption}</caption><tr><th></th><th>linear top-1</th><th>linear top-5</th>` +
    `<th>kNN top-1</th><th>kNN top-5</th>` +
    `${augmented ? '<th>augmented linear top-1</th><th>augmented linear top-5</th>' : ''}</tr>${rows.join('')}</table>${onlineLine}`;
}

interface OpTimesRecord {
  event: 'op-times';
  firstStep: number;
  step: number;
  device: string;
  msPerStep: number;
  rows: { phase: string; op: string; calls: number; ms: number; flops?: number; bytes?: number }[];
}

function isOpTimes(r: unknown): r is OpTimesRecord {
  const o = r as Partial<OpTimesRecord>;
  return o.event === 'op-times' && Array.isArray(o.rows) && typeof o.msPerStep === 'number';
}

// Every (phase, op) of the record, longest first, with a bar for its share.
function opTimesTable(rec: OpTimesRecord): string {
  const rows = [...rec.rows].sort((a, b) => b.ms - a.ms);
  const total = rec.msPerStep > 0 ? rec.msPerStep : 1;
  const body = rows.map((r) => {
    const share = (100 * r.ms) / total;
    return `<tr><th>${escapeHtml(r.phase)}</th><th>${escapeHtml(r.op)}</th><td>${r.calls.toFixed(1)}</td>` +
      `<td>${r.ms.toFixed(3)}</td><td>${share.toFixed(1)}%</td><td>${escapeHtml(opRate({ flops: r.flops ?? 0, bytes: r.bytes ?? 0, ms: r.ms }))}</td>` +
      `<td><svg width="120" height="10" role="img"><rect width="${(1.2 * share).toFixed(1)}" height="10" fill="#9467bd"/></svg></td></tr>`;
  });
  const clock = rec.device === 'cpu' ? 'wall time of each op' : 'device time';
  return `<table class="results"><caption>steps ${rec.firstStep}..${rec.step} on ${escapeHtml(rec.device)}: ` +
    `${rec.msPerStep.toFixed(3)} ms per step in ops (${clock})</caption><tr><th>phase</th><th>op</th>` +
    `<th>calls/step</th><th>ms/step</th><th>share</th><th>rate</th><th></th></tr>${body.join('')}</table>`;
}

// The report's HTML for a run directory.
export async function renderReport(runDir: string): Promise<string> {
  const logFile = path.join(runDir, LOG_FILE);
  const records = await readLog(logFile);
  const steps = records.filter(isStepRecord) as StepRecord[];
  if (steps.length === 0) throw new Error(`${logFile}: no step records (is this a byol run directory?)`);
  const state = await readJson<RunState>(path.join(runDir, STATE_FILE));
  const evalResults = await readJson<EvalFile>(path.join(runDir, 'eval.json'));
  const loss = steps.map((s) => Number(s.loss));
  const smoothLoss = smooth(loss);
  const at = (f: (s: StepRecord, i: number) => number) => steps.map((s, i) => [s.step, f(s, i)] as [number, number]);
  const charts = [
    lineChart('BYOL loss', [
      { name: 'loss', color: '#1f77b4', points: at((_s, i) => loss[i]), width: 1, opacity: 0.35 },
      { name: 'smoothed (EMA 0.95)', color: '#1f77b4', points: at((_s, i) => smoothLoss[i]), width: 2 },
    ]),
    lineChart('learning rate', [{ name: 'lr', color: '#d62728', points: at((s) => s.lr) }]),
    lineChart('EMA tau', [{ name: 'tau', color: '#2ca02c', points: at((s) => s.tau) }]),
    lineChart('throughput (images/s)', [{ name: 'images/s', color: '#9467bd', points: at((s) => s.imagesPerSec) }]),
  ];
  // Runs with the online classifier: its top-1 on the training batches (view 1, before each update).
  const classified = steps.filter((s) => typeof s.top1 === 'number');
  if (classified.length > 0) {
    const top1 = smooth(classified.map((s) => 100 * s.top1!));
    charts.push(lineChart('online classifier top-1 (%)', [
      { name: 'batch top-1', color: '#ff7f0e', points: classified.map((s) => [s.step, 100 * s.top1!] as [number, number]),
        width: 1, opacity: 0.35 },
      { name: 'smoothed (EMA 0.95)', color: '#ff7f0e', points: classified.map((s, i) => [s.step, top1[i]] as [number, number]),
        width: 2 },
    ]));
  }
  // The kNN monitor's checks (knnMonitor), when the run had them.
  const knn = (records as unknown[]).filter((r): r is { event: string; step: number; top1: number } =>
    (r as { event?: string }).event === 'knn-monitor' && typeof (r as { top1?: unknown }).top1 === 'number');
  if (knn.length > 0) {
    charts.push(lineChart('kNN monitor top-1 (%)', [
      { name: 'test top-1', color: '#8c564b', points: knn.map((r) => [r.step, 100 * r.top1] as [number, number]), width: 2 },
    ]));
  }
  const last = steps[steps.length - 1];
  const opTimes = (records as unknown[]).filter(isOpTimes).pop();
  const events = records.filter((r) => !isStepRecord(r)) as { event: string; step: number }[];
  const summary: [string, string][] = [
    ['run directory', path.resolve(runDir)],
    ['steps logged', `${steps.length} (last step ${last.step}${state ? ` of ${state.plan.totalSteps}` : ''})`],
    ['last loss', Number(last.loss).toFixed(4)],
    ['training time', `${Number(last.elapsed).toFixed(1)} s`],
    ['status', state ? state.status : 'unknown (no state.json)'],
    ['events', events.map((e) => `${e.event}@${e.step}`).slice(-12).join(', ')],
  ];
  const config: [string, string][] = [];
  if (state) {
    flatten('', state.config, config);
    flatten('plan', state.plan, config);
  }
  const title = `byol run ${path.basename(path.resolve(runDir))}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1340px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
svg { background: #fff; border: 1px solid #ddd; }
svg .grid { stroke: #eee; } svg .frame { fill: none; stroke: #999; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
svg .title { font-size: 13px; font-weight: 600; fill: #222; }
svg .ytick { text-anchor: end; dominant-baseline: middle; } svg .xtick, svg .xlabel { text-anchor: middle; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f6f6f6; font-weight: 600; } caption { text-align: left; color: #666; padding: 4px 0; }
.results td { text-align: right; font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${table(summary)}
<h2>Training curves</h2>
<div class="charts">
${charts.join('\n')}
</div>
${opTimes ? `<h2>Where a step's time goes</h2>\n${opTimesTable(opTimes)}` : ''}
${evalResults?.results ? `<h2>Evaluation</h2>\n${evalTable(evalResults)}` : ''}
${config.length ? `<h2>Configuration</h2>\n${table(config)}` : ''}
</body>
</html>
`;
}

// Writes the report (default run-dir/report.html) and returns its path.
export async function writeReport(runDir: string, out = path.join(runDir, REPORT_FILE)): Promise<string> {
  const html = await renderReport(runDir);
  await fs.writeFile(out, html);
  return out;
}
