// pool.ts: runs evaluation arithmetic (linear probe, kNN blocks) in worker threads so that the
// event loop stays free. Contract: one worker per call, terminated when the call settles; a
// failure inside the worker rejects with its message and stack; arrays are copied to the
// worker unless they live in a SharedArrayBuffer (kNN shares the training features that way).
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

export type WorkerTask =
  | { task: 'linear'; data: unknown; classes: number; options: unknown }
  | { task: 'knn'; train: unknown; test: unknown; dim: number; classes: number; options: unknown; start: number; end: number };

export function runInWorker<T>(message: WorkerTask): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const worker = new Worker(path.join(__dirname, 'worker.js'));
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
      void worker.terminate();
    };
    worker.once('message', (reply: { ok: true; result: T } | { ok: false; name: string; message: string; stack?: string }) => {
      settle(() => {
        if (reply.ok) {
          resolve(reply.result);
        } else {
          const error = new Error(reply.message);
          error.name = reply.name;
          if (reply.stack) error.stack = reply.stack;
          reject(error);
        }
      });
    });
    worker.once('error', (error) => settle(() => reject(error)));
    worker.once('exit', (code) => settle(() => reject(new Error(`evaluation worker exited with code ${code}`))));
    worker.postMessage(message);
  });
}
