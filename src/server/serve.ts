// Starting the server for a model directory: checks the bundle, warms the worker pool, listens.
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { readClientPart, readServerPart } from '../model/bundle.ts';
import { ObjectStore } from '../storage/s3.ts';
import { buildApp } from './app.ts';
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
}

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  pool: EvaluationPool;
  close(): Promise<void>;
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const part = await readServerPart(o.modelDir); // fails fast on a bad bundle, before any worker
  const { client } = await readClientPart(o.modelDir);
  const store = new ObjectStore({ endpoint: o.s3Endpoint });
  const pool = new EvaluationPool({ modelDir: o.modelDir, workers: o.workers, keyCacheBytes: o.keyCacheBytes });
  await pool.ready();
  const keys = new KeyStore({ store, program: part.program, maxBytes: o.keyCacheBytes ?? 1024 * 1024 * 1024, maxObjectBytes: o.maxKeyBytes ?? 512 * 1024 * 1024 });
  const app = buildApp({
    logger: o.logger,
    maxInFlight: o.maxInFlight ?? pool.size * 4,
    deadlineMs: o.deadlineMs ?? 55_000,
    context: {
      allowRead: o.allowRead ?? [],
      allowWrite: o.allowWrite ?? [],
      model: { modelId: part.modelId, program: part.program, recordsPerCiphertext: client.input.recordsPerCiphertext, batch: part.batch },
      store,
      keys,
      pool,
      maxQueryBytes: o.maxQueryBytes ?? 1024 * 1024 * 1024,
      batchSlots: { max: o.maxBatchInFlight ?? 2, used: 0 },
    },
  });
  const address = await app.listen({ port: o.port ?? 8080, host: o.host ?? '0.0.0.0' });
  return {
    app,
    url: address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1'),
    pool,
    async close() {
      await app.close(); // stops accepting; in-flight requests finish first
      await pool.close();
      store.close();
    },
  };
}
