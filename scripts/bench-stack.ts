// The stack the MNIST benchmarks run against: the embedded S3 in a temporary directory, the
// inference server with `workers` workers, a store and a bucket on it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startServer, type RunningServer } from '../src/server/serve.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { ObjectStore } from '../src/storage/s3.ts';

export const BENCH_BUCKET = 'sealed-bench';

export interface BenchStack {
  running: RunningServer;
  store: ObjectStore;
  workers: number;
  /** Stops the server, the store and the S3 server; removes the directory. */
  close(): Promise<void>;
}

/** `maxKeyBytes`: the server's limit on one key set (serve's default 128 MiB when absent). */
export async function startBenchStack(modelDir: string, workers = availableParallelism(), maxKeyBytes?: number): Promise<BenchStack> {
  const work = await mkdtemp(join(tmpdir(), 'sealed-bench-'));
  const s3 = await startLocalS3({ directory: join(work, 's3') });
  // SEALED_DEADLINE_MS as `sealed serve` reads it: a batch longer than SageMaker's real-time 60 s
  // (LeNet's at ring 32768 on 2 cores) is measured with it raised, as an async endpoint would be.
  const deadlineMs = process.env.SEALED_DEADLINE_MS ? Number(process.env.SEALED_DEADLINE_MS) : undefined;
  const running = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers, s3Endpoint: s3.endpoint, allowAny: true, maxKeyBytes, deadlineMs });
  const store = new ObjectStore({ endpoint: s3.endpoint });
  await store.ensureBucket(BENCH_BUCKET);
  return {
    running,
    store,
    workers,
    async close() {
      store.close();
      await running.close();
      await s3.close();
      await rm(work, { recursive: true, force: true });
    },
  };
}

/** startBenchStack's, in a child process: `pid` is that process's, whose CPU cpuMeter can add. */
export interface BenchStackProcess extends Omit<BenchStack, 'running'> {
  running: { url: string };
  pid: number;
}

/**
 * The stack as sealed is deployed: the server (and the embedded S3, standing in for S3) in a
 * process of their own, the benchmark's process left to the client. In one process, V8 collects
 * the client's heap whenever the server's or the S3 server's buffers have grown. Split, the
 * collections move with the buffers and the total stayed the same within this VM's drift
 * (docs/bring-your-own-model.md, sessions 53-54: what the collections cost); this form says
 * which process pays.
 */
export async function startBenchStackProcess(modelDir: string, workers = availableParallelism(), maxKeyBytes?: number): Promise<BenchStackProcess> {
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('./bench-stack-child.ts', import.meta.url)), modelDir, String(workers), String(maxKeyBytes ?? '')],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const exited = once(child, 'exit');
  const [line] = (await Promise.race([
    once(createInterface({ input: child.stdout! }), 'line'),
    exited.then(([code]) => Promise.reject(new Error(`the stack's process exited (${code}) before it was ready`))),
  ])) as [string];
  const { url, endpoint } = JSON.parse(line) as { url: string; endpoint: string };
  const store = new ObjectStore({ endpoint });
  return {
    running: { url },
    store,
    workers,
    pid: child.pid!,
    async close() {
      store.close();
      child.kill('SIGTERM');
      await exited;
    },
  };
}
