// eval.ts (cli): `byol eval RUN_DIR` (linear probe and/or kNN on frozen features, optional
// baselines; results merged into RUN_DIR/eval.json) and `byol embed RUN_DIR --out FILE`
// (representations of a split to .npy or .safetensors).
// Contract: flags are checked before any work (exit 2 on a bad one); printed accuracies are
// the ones written to eval.json.
import * as path from 'node:path';

import { type DatasetLike, openImageFolder } from '../data';
import { setNumThreads } from '../device';
import { type AugmentedLinearOptions } from '../eval/augmented';
import { embedDataset, evalView, loadRunModel, writeNpy, writeSafetensors } from '../eval/embed';
import { type KnnOptions } from '../eval/knn';
import { type LinearProbeOptions } from '../eval/linear';
import { type EvalReport, evaluateRun } from '../eval/run';
import { writeFileAtomic } from '../train/checkpoint';
import { loadDatasetSpec, probeSpec } from '../train/data';
import { type DataOptions } from '../train/options';
import { ByolOptionError, integer, number, oneOf } from '../validate';
import { type FlagSpec, UsageError, formatFlags, parseArgs } from './args';

const EVAL_FLAGS: FlagSpec[] = [
  { flag: '--linear', type: 'boolean', help: 'linear probe (default: linear and kNN)' },
  { flag: '--knn', type: 'boolean', help: 'weighted kNN (default: linear and kNN)' },
  { flag: '--augmented', type: 'boolean', help: 'linear probe on crop + flip views re-embedded every epoch (BYOL.md protocol)' },
  { flag: '--augmented-epochs', type: 'int', metavar: 'N', help: 'its epochs (80)' },
  { flag: '--baseline', type: 'boolean', help: 'also raw pixels and a random-init encoder, same probes' },
  { flag: '--center-crop', type: 'number', metavar: 'F', help: 'embed the central F of each image (0.875: 224 of 256; default 1)' },
  { flag: '--device', type: 'string', metavar: 'DEV', help: "embedding device (the run's)" },
  { flag: '--batch-size', type: 'int', metavar: 'N', help: 'embedding batch size (256)' },
  { flag: '--epochs', type: 'int', metavar: 'N', help: 'linear probe epochs (100)' },
  { flag: '--lr', type: 'number', metavar: 'LR', help: 'linear probe peak learning rate (0.1)' },
  { flag: '--k', type: 'int', metavar: 'K', help: 'kNN neighbours (200)' },
  { flag: '--temperature', type: 'number', metavar: 'T', help: 'kNN temperature (0.1)' },
  { flag: '--threads', type: 'int', metavar: 'N', help: 'CPU threads for embedding, the kNN and the linear probe (all cores)' },
  { flag: '--json', type: 'boolean', help: 'print eval.json on stdout' },
  { flag: '--help', type: 'boolean', help: 'show this help' },
];

const EMBED_FLAGS: FlagSpec[] = [
  { flag: '--out', type: 'string', metavar: 'FILE', help: 'output .npy or .safetensors (required)' },
  { flag: '--format', type: 'string', metavar: 'FMT', help: 'npy | safetensors (default: from --out)' },
  { flag: '--split', type: 'string', metavar: 'SPLIT', help: 'train | test (test)' },
  { flag: '--images', type: 'string', metavar: 'DIR', help: 'a folder of images instead (DIR/<image> or DIR/<class>/<image>)' },
  { flag: '--random', type: 'boolean', help: 'a random-init encoder of the run\'s architecture instead' },
  { flag: '--device', type: 'string', metavar: 'DEV', help: "device (the run's)" },
  { flag: '--batch-size', type: 'int', metavar: 'N', help: 'batch size (256)' },
  { flag: '--help', type: 'boolean', help: 'show this help' },
];

export const EVAL_HELP = `Usage: byol eval RUN_DIR [--linear] [--knn] [--augmented] [--baseline] [options]

Evaluates the encoder of a run on frozen features (BatchNorm in eval mode): a linear probe
(multinomial logistic regression, SGD Nesterov 0.9, cosine LR, standardized features) and a
weighted kNN (k 200, T 0.1, cosine). Features are cached in RUN_DIR/features-*.bin, keyed by
the weights checksum; results are merged into RUN_DIR/eval.json.

--augmented adds the BYOL authors' protocol: the same linear probe trained on views with a
random resized crop (the run's training crop) and a horizontal flip, drawn anew and embedded
again every epoch, scored on the test split's unaugmented features. It embeds the whole
training split once per epoch, so it takes about --augmented-epochs times one embedding pass.

--center-crop 0.875 is the test-time preprocessing of the paper's evaluation: the central
87.5% of each image, resized to the training size, for every unaugmented feature (the frozen
probes' train and test features, and the augmented probe's test features).

Options:
${formatFlags(EVAL_FLAGS)}`;

export const EMBED_HELP = `Usage: byol embed RUN_DIR --out FILE [--split SPLIT | --images DIR] [options]

Writes the encoder output y of every image of a split of the run's data, or of a folder of
images (--images: decoded with sharp into the run's channels, resized to cover the run's image
size and center-cropped, then preprocessed as evaluation does): .npy (float32 [n, dim]; labels
go to FILE.labels.npy) or .safetensors (tensors "features" and "labels"). Labels exist for
splits and for folders with class subfolders; with --images the image files, one per row in
order, go to FILE.files.txt.

Options:
${formatFlags(EMBED_FLAGS)}`;

function runDirArg(positionals: string[], command: string): string {
  if (positionals.length !== 1) {
    throw new UsageError(`byol ${command} takes one run directory (received ${positionals.length ? positionals.join(' ') : 'none'})`);
  }
  return positionals[0];
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

export async function evalCommand(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream }): Promise<number> {
  const parsed = parseArgs(argv, EVAL_FLAGS, 'eval');
  if (parsed.flags.has('--help')) {
    io.out.write(`${EVAL_HELP}\n`);
    return 0;
  }
  const runDir = runDirArg(parsed.positionals, 'eval');
  const f = parsed.flags;
  const both = !f.has('--linear') && !f.has('--knn') && !f.has('--augmented');
  const linear: LinearProbeOptions = {};
  if (f.has('--epochs')) linear.epochs = integer('--epochs', f.get('--epochs'), 1, 100000);
  if (f.has('--lr')) linear.lr = number('--lr', f.get('--lr'), 0, 1e4);
  if (f.has('--augmented-epochs') && !f.has('--augmented')) throw new UsageError('--augmented-epochs needs --augmented');
  const augmented: AugmentedLinearOptions = {};
  if (f.has('--augmented-epochs')) augmented.epochs = integer('--augmented-epochs', f.get('--augmented-epochs'), 1, 100000);
  if (f.has('--lr')) augmented.lr = linear.lr;
  const knn: KnnOptions = {};
  if (f.has('--k')) knn.k = integer('--k', f.get('--k'), 1, 1 << 20);
  if (f.has('--temperature')) knn.temperature = number('--temperature', f.get('--temperature'), 1e-4, 1e4);
  if (f.has('--threads')) setNumThreads(integer('--threads', f.get('--threads'), 1, 4096));
  const batchSize = f.has('--batch-size') ? integer('--batch-size', f.get('--batch-size'), 1, 1 << 16) : undefined;
  const report: EvalReport = await evaluateRun(runDir, {
    linear: both || f.has('--linear') ? linear : false,
    linearAugmented: f.has('--augmented') ? augmented : false,
    knn: both || f.has('--knn') ? knn : false,
    baselines: f.has('--baseline'),
    device: f.get('--device') as string | undefined,
    batchSize,
    ...(f.has('--center-crop') ? { centerCrop: number('--center-crop', f.get('--center-crop'), 0.01, 1) } : {}),
    onMessage: (text) => io.err.write(`byol eval: ${text}\n`),
  });
  if (f.has('--json')) {
    io.out.write(`${JSON.stringify(report, null, 2)}\n`);
    return 0;
  }
  const withAugmented = Object.values(report.results).some((r) => r.linearAugmented);
  io.out.write(`${'features'.padEnd(12)}${'linear top-1'.padStart(14)}${'top-5'.padStart(9)}` +
    `${'kNN top-1'.padStart(12)}${'top-5'.padStart(9)}` +
    `${withAugmented ? `${'aug. linear top-1'.padStart(19)}${'top-5'.padStart(9)}` : ''}\n`);
  for (const [name, r] of Object.entries(report.results)) {
    io.out.write(`${name.padEnd(12)}${(r.linear ? pct(r.linear.top1) : '-').padStart(14)}` +
      `${(r.linear ? pct(r.linear.top5) : '-').padStart(9)}${(r.knn ? pct(r.knn.top1) : '-').padStart(12)}` +
      `${(r.knn ? pct(r.knn.top5) : '-').padStart(9)}` +
      `${withAugmented ? `${(r.linearAugmented ? pct(r.linearAugmented.top1) : '-').padStart(19)}` +
        `${(r.linearAugmented ? pct(r.linearAugmented.top5) : '-').padStart(9)}` : ''}\n`);
  }
  const online = report.results.byol?.online;
  if (online) io.out.write(`online classifier (trained during BYOL): top-1 ${pct(online.top1)}  top-5 ${pct(online.top5)}\n`);
  if (report.centerCrop !== 1) io.out.write(`features of the central ${report.centerCrop} of each image\n`);
  io.out.write(`results in ${path.join(runDir, 'eval.json')}\n`);
  return 0;
}

export async function embedCommand(argv: string[], io: { out: NodeJS.WritableStream; err: NodeJS.WritableStream }): Promise<number> {
  const parsed = parseArgs(argv, EMBED_FLAGS, 'embed');
  if (parsed.flags.has('--help')) {
    io.out.write(`${EMBED_HELP}\n`);
    return 0;
  }
  const runDir = runDirArg(parsed.positionals, 'embed');
  const f = parsed.flags;
  const out = f.get('--out') as string | undefined;
  if (!out) throw new UsageError('byol embed needs --out FILE (.npy or .safetensors)');
  const format = f.has('--format')
    ? oneOf('--format', f.get('--format'), ['npy', 'safetensors'] as const)
    : out.endsWith('.safetensors') ? 'safetensors' : out.endsWith('.npy') ? 'npy' : null;
  if (!format) throw new ByolOptionError(`Cannot tell the format of --out ${out}: name it .npy or .safetensors, or give --format`);
  const split = f.has('--split') ? oneOf('--split', f.get('--split'), ['train', 'test'] as const) : 'test';
  const images = f.get('--images') as string | undefined;
  if (images !== undefined && f.has('--split')) throw new UsageError('byol embed takes --split or --images, not both');
  const batchSize = f.has('--batch-size') ? integer('--batch-size', f.get('--batch-size'), 1, 1 << 16) : undefined;
  const run = await loadRunModel(runDir, { device: f.get('--device') as string | undefined, random: f.has('--random') });
  try {
    let dataset: DatasetLike;
    if (images !== undefined) {
      const { imageSize, inChannels } = run.state.plan;
      // Streamed: any number of images, decoded batch by batch.
      dataset = await openImageFolder(images, { size: imageSize, channels: inChannels as 1 | 3 });
    } else {
      if (run.state.config.data.kind === 'memory') {
        throw new ByolOptionError(`The run in ${runDir} trained on an in-memory dataset; use embedDataset() from the library`);
      }
      dataset = await loadDatasetSpec(probeSpec(run.state.config.data as DataOptions), split);
    }
    io.err.write(`byol: embedding ${dataset.name} (${dataset.n} images)\n`);
    const embeddings = await embedDataset(run.model, dataset, { view: evalView(run.state.config, dataset), batchSize });
    const shape = [embeddings.n, embeddings.dim];
    if (format === 'npy') {
      await writeNpy(out, embeddings.features, shape);
      if (embeddings.labels) await writeNpy(out.replace(/(\.npy)?$/, '.labels.npy'), embeddings.labels, [embeddings.n]);
    } else {
      const tensors: Record<string, { data: Float32Array | Int32Array; shape: number[] }> = {
        features: { data: embeddings.features, shape },
      };
      if (embeddings.labels) tensors.labels = { data: embeddings.labels, shape: [embeddings.n] };
      await writeSafetensors(out, tensors, { dataset: dataset.name, weights: run.key, step: String(run.state.step) });
    }
    if (dataset.files) {
      const list = out.replace(/(\.npy|\.safetensors)?$/, '.files.txt');
      await writeFileAtomic(list, `${dataset.files.join('\n')}\n`);
      io.out.write(`wrote the ${dataset.n} image files, in row order, to ${list}\n`);
    }
    io.out.write(`wrote ${embeddings.n} x ${embeddings.dim} features to ${out}\n`);
    return 0;
  } finally {
    run.model.dispose();
  }
}
