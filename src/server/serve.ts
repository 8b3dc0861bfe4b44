// Starting the server for a model directory: checks the bundle, warms the worker pool, listens.
import { availableParallelism } from 'node:os';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { readClientPart, readServerPart } from '../model/bundle.ts';
import { ObjectStore } from '../storage/s3.ts';
import { buildApp } from './app.ts';
import { MemoryBudget, MiB, splitBudget, type BudgetSplit } from './budget.ts';
import { KeyStore } from './key-store.ts';
import { EvaluationPool } from './pool.ts';

export interface ServeOptions {
  modelDir: string;
  port?: number;
  host?: string;
  workers?: number;
  s3Endpoint?: string;
  logger?: FastifyServerOptions['logger'];
  maxQueryBytes?: number;
  maxKeyBytes?: number;
  keyCacheBytes?: number;
  maxInFlight?: number;
  /** Batch-mode requests evaluated at once (each holds two batches, ~400 MB for MNIST); beyond, 503. */
  maxBatchInFlight?: number;
  deadlineMs?: number;
  allowRead?: string[];
  allowWrite?: string[];
  /** The server's whole memory budget in bytes (default: derived from the container's memory). */
  memoryBudget?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
}

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  pool: EvaluationPool;
  /** How the memory budget is split, and the request budget in use. */
  memory: BudgetSplit & { budgetInUse: MemoryBudget };
  close(): Promise<void>;
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const part = await readServerPart(o.modelDir); // fails fast on a bad bundle, before any worker
  const { client } = await readClientPart(o.modelDir);
  const workers = o.workers ?? availableParallelism();
  const split = splitBudget({ workers, budget: o.memoryBudget, keyCache: o.keyCacheBytes });
  const requests = new MemoryBudget(split.requests);
  const store = new ObjectStore({ endpoint: o.s3Endpoint });
  const pool = new EvaluationPool({ modelDir: o.modelDir, workers, keyCacheBytes: split.workerKeyCache });
  await pool.ready();
  const keys = new KeyStore({ store, program: part.program, maxBytes: split.keyCache, maxObjectBytes: o.maxKeyBytes ?? 128 * MiB, budget: requests });
  const app = buildApp({
    logger: o.logger,
    maxInFlight: o.maxInFlight ?? pool.size * 4,
    deadlineMs: o.deadlineMs ?? 55_000,
    headersTimeoutMs: o.headersTimeoutMs,
    requestTimeoutMs: o.requestTimeoutMs,
    healthy: typeof (pool as { probe?: unknown }).probe === 'function' ? () => (pool as unknown as { probe(): Promise<boolean> }).probe() : undefined,
    context: {
      allowRead: o.allowRead ?? [],
      allowWrite: o.allowWrite ?? [],
      model: { modelId: part.modelId, program: part.program, recordsPerCiphertext: client.input.recordsPerCiphertext, batch: part.batch },
      store,
      keys,
      pool,
      maxQueryBytes: o.maxQueryBytes ?? 1024 * MiB,
      batchSlots: { max: o.maxBatchInFlight ?? 2, used: 0 },
      budget: requests,
    },
  });
  const address = await app.listen({ port: o.port ?? 8080, host: o.host ?? '0.0.0.0' });
  return {
    app,
    url: address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1'),
    pool,
    memory: { ...split, budgetInUse: requests },
    async close() {
      // Stop accepting; in-flight invocations finish; then sockets still open (a request whose
      // body is still trickling in, a keep-alive connection) are closed rather than waited for.
      const closing = app.close();
      await app.sealed.drained();
      await new Promise((r) => setTimeout(r, 50)); // let the last answers flush
      app.server.closeAllConnections();
      await closing;
      await pool.close();
      store.close();
    },
  };
}
