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

/**
 * `maxKeyBytes`: the server's limit on one key set (serve's default 128 MiB when absent).
 * `s3Endpoint`: an S3 server already running (startBenchStackProcess's own); else the embedded
 * one is started here.
 */
export async function startBenchStack(modelDir: string, workers = availableParallelism(), maxKeyBytes?: number, s3Endpoint?: string): Promise<BenchStack> {
  const work = await mkdtemp(join(tmpdir(), 'sealed-bench-'));
  const s3 = s3Endpoint ? { endpoint: s3Endpoint, close: async () => {} } : await startLocalS3({ directory: join(work, 's3') });
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

/** startBenchStack's, in processes of their own: `pids` are theirs, whose CPU cpuMeter adds. */
export interface BenchStackProcess extends Omit<BenchStack, 'running'> {
  running: { url: string };
  pids: number[];
}

/**
 * The stack as sealed is deployed: the server in a process of its own, the benchmark's process
 * left to the client, and S3 (the embedded one standing in) in a third, as Amazon S3 runs on
 * neither side's cores (`s3Process` false: with the server, as `sealed serve` embeds it when no
 * endpoint is configured). In one process, V8 collects the client's heap whenever the server's
 * or the S3 server's buffers have grown, and the server's for the S3 server's: split, each
 * collects for its own (docs/bring-your-own-model.md, what the collections cost).
 */
export async function startBenchStackProcess(
  modelDir: string,
  workers = availableParallelism(),
  maxKeyBytes?: number,
  o: { s3Process?: boolean } = {},
): Promise<BenchStackProcess> {
  const children: { pid: number; stop(): Promise<void> }[] = [];
  const stopAll = async () => {
    for (const c of children.reverse()) await c.stop();
  };
  try {
    let s3Endpoint = '';
    if (o.s3Process ?? true) {
      // The stand-in for Amazon S3 streams ~3 GB per LeNet batch through 64 KiB socket buffers:
      // V8 ran a full collection every ~20 MB of them (140 for 1.5 GB up and down, ~4 s of its
      // GC threads). Counting them in the heap's global limit instead: 41, its CPU per batch
      // 11.3-12.9 -> 10.3-10.4 s, peak RSS 202 -> 274 MB (session 62). Its memory is no
      // server's budget: S3's own in a deployment, which spends none of our cores.
      const s3 = await child(['--s3'], ['--external-memory-accounted-in-global-limit']);
      children.push(s3);
      s3Endpoint = s3.ready.endpoint;
    }
    const server = await child([modelDir, String(workers), String(maxKeyBytes ?? ''), s3Endpoint]);
    children.push(server);
    const store = new ObjectStore({ endpoint: server.ready.endpoint });
    return {
      running: { url: server.ready.url! },
      store,
      workers,
      // The server's first (cpuMeter's order).
      pids: [server.pid, ...children.filter((c) => c !== server).map((c) => c.pid)],
      async close() {
        store.close();
        await stopAll();
      },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** bench-stack-child.ts with `args`, once it has said where it listens. */
async function child(args: string[], flags: string[] = []): Promise<{ pid: number; ready: { url?: string; endpoint: string }; stop(): Promise<void> }> {
  const c = spawn(process.execPath, [...flags, fileURLToPath(new URL('./bench-stack-child.ts', import.meta.url)), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(c, 'exit');
  const stop = async () => {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await exited;
  };
  try {
    const [line] = (await Promise.race([
      once(createInterface({ input: c.stdout! }), 'line'),
      exited.then(([code]) => Promise.reject(new Error(`the stack's process exited (${code}) before it was ready`))),
    ])) as [string];
    return { pid: c.pid!, ready: JSON.parse(line) as { url?: string; endpoint: string }, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
