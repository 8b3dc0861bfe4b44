// The evaluation pool: piscina worker threads, one SEAL instance each; as many as CPUs.
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { BatchResult, BatchTask, EvaluateResult, EvaluateTask } from './worker.ts';

export interface PoolOptions {
  modelDir: string;
  workers?: number;
  keyCacheBytes?: number;
}

export class EvaluationPool {
  private readonly piscina: Piscina;
  readonly size: number;

  constructor(o: PoolOptions) {
    this.size = o.workers ?? availableParallelism();
    this.piscina = new Piscina({
      filename: new URL('./worker.ts', import.meta.url).href,
      minThreads: this.size,
      maxThreads: this.size,
      idleTimeout: Infinity,
      workerData: { modelDir: o.modelDir, keyCacheBytes: o.keyCacheBytes ?? 512 * 1024 * 1024 },
    });
  }

  /** An aborted signal drops the task if it is still queued (a running evaluation finishes). */
  run(task: EvaluateTask, signal?: AbortSignal): Promise<EvaluateResult> {
    return this.piscina.run(task, { signal }) as Promise<EvaluateResult>;
  }

  /** `transfer`: buffers handed to the worker instead of copied (the caller gives them up). */
  runBatch(task: BatchTask, signal?: AbortSignal, transfer?: ArrayBuffer[]): Promise<BatchResult> {
    return this.piscina.run(task, { signal, transferList: transfer as never }) as Promise<BatchResult>;
  }

  get queued(): number {
    return this.piscina.queueSize;
  }

  /** The worker threads (piscina replaces one that dies). */
  get threads(): readonly import('node:worker_threads').Worker[] {
    return this.piscina.threads;
  }

  /** Waits until every worker has loaded SEAL and the model (a worker answers only then). */
  async ready(): Promise<void> {
    await Promise.all(Array.from({ length: this.size }, () => this.piscina.run({ warmup: true })));
  }

  close(): Promise<void> {
    return this.piscina.destroy();
  }
}
