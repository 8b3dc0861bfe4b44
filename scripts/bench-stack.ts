// The stack the MNIST benchmarks run against: the embedded S3 in a temporary directory, the
// inference server with `workers` workers, a store and a bucket on it.
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
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
  const running = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers, s3Endpoint: s3.endpoint, allowAny: true, maxKeyBytes });
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
