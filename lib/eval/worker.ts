// worker.ts: the worker-thread side of pool.ts: receives one task (linear probe or a kNN
// block), runs the synchronous computation and posts { ok, result } or the error back.
// Contract: handles exactly one message, then waits to be terminated.
import { parentPort } from 'node:worker_threads';

import { knnBlock, type KnnBlockResult, type ResolvedKnnOptions } from './knn';
import { type LinearProbeResult, type ProbeData, type ResolvedLinearOptions, trainLinearProbe } from './linear';
import type { WorkerTask } from './pool';

parentPort?.once('message', (message: WorkerTask) => {
  try {
    let result: LinearProbeResult | KnnBlockResult;
    if (message.task === 'linear') {
      result = trainLinearProbe(message.data as ProbeData, message.classes, message.options as ResolvedLinearOptions);
    } else {
      const { train, test } = message as { train: { features: Float32Array; labels: Int32Array };
        test: { features: Float32Array; labels: Int32Array } };
      result = knnBlock(train, test, message.dim, message.classes, message.options as ResolvedKnnOptions,
        message.start, message.end);
    }
    parentPort!.postMessage({ ok: true, result });
  } catch (error) {
    const e = error instanceof Error ? error : new Error(String(error));
    parentPort!.postMessage({ ok: false, name: e.name, message: e.message, stack: e.stack });
  }
});
