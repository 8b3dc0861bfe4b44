// Starting the server for a model directory: checks the bundle, warms the worker pool, listens.
import { availableParallelism } from 'node:os';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { ObjectStore } from '../storage/s3.ts';
import { SealedError } from '../errors.ts';
import { buildApp } from './app.ts';
import { parseS3Prefix, type AccessPolicy } from './access.ts';
import { BatchBuffers } from './batch-buffers.ts';
import { batchMemory, batchQueryBytes } from './batch-memory.ts';
import { MemoryBudget, MiB, splitBudget, type BudgetSplit } from './budget.ts';
import { checkBodyRequest, payloadLimit } from './invoke-body.ts';
import type { ExecutionParameters } from './plugins/execution-parameters.ts';
import { KeyStore } from './key-store.ts';
import { EvaluationPool } from './pool.ts';
import { readServedModel } from './served-model.ts';
import type { Retirement } from './worker-protocol.ts';

export interface ServeOptions {
  modelDir: string;
  port?: number;
  host?: string;
  workers?: number;
  s3Endpoint?: string;
  logger?: FastifyServerOptions['logger'];
  /** The largest query accepted (default 1 GiB, or one batch of the model's where that is more: batchQueryBytes). */
  maxQueryBytes?: number;
  maxKeyBytes?: number;
  keyCacheBytes?: number;
  maxInFlight?: number;
  /** Batch-mode requests evaluated at once (each holds two batches, ~400 MB for MNIST); beyond, 503. */
  maxBatchInFlight?: number;
  deadlineMs?: number;
  /**
   * s3://bucket/prefix/ locations the server may read (queries, keys) and write (results),
   * matched on whole '/'-separated segments. Required (both, or a tenant root) unless allowAny.
   */
  allowRead?: string[];
  allowWrite?: string[];
  /**
   * Let callers name any S3 location (CLI --allow-any, env SEALED_ALLOW_ANY=1): only for one
   * trusted user (tests, the demo, a local stack). Lists given anyway still apply.
   */
  allowAny?: boolean;
  /**
   * s3://bucket/prefix/ whose next segment names a tenant (CLI --tenant-prefix, env
   * SEALED_TENANT_ROOT): the query, keys and output of a request must share one tenant's prefix.
   * Alone, it is also the read and write allow-list.
   */
  tenantRoot?: string;
  /** The server's whole memory budget in bytes (default: derived from the container's memory). */
  memoryBudget?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  /**
   * Largest query taken in a request body (application/octet-stream), in bytes: SageMaker
   * real-time's 6 MB by default, up to Batch Transform's 100 MB (CLI --max-payload-mb, env
   * SEALED_MAX_PAYLOAD_MB). The server does not start when one such request would not fit its
   * request memory.
   */
  maxPayloadBytes?: number;
  /** Evaluation keys for body-form requests whose header names none (env SEALED_EVALUATION_KEYS_URI). */
  defaultKeysUri?: string;
}

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  pool: EvaluationPool;
  /** How the memory budget is split, and the request budget in use. */
  memory: BudgetSplit & { budgetInUse: MemoryBudget };
  close(): Promise<void>;
}

/** The value of SEALED_ALLOW_ANY: 1/true/yes or 0/false/no/empty; anything else is refused. */
export function parseAllowAny(v: string | undefined): boolean {
  const s = (v ?? '').trim().toLowerCase();
  if (['', '0', 'false', 'no'].includes(s)) return false;
  if (['1', 'true', 'yes'].includes(s)) return true;
  throw new SealedError(
    'bad-request',
    `SEALED_ALLOW_ANY=${(v ?? '').slice(0, 20)} is not 1 or 0`,
    'set SEALED_ALLOW_ANY=1 to let callers name any S3 location, or unset it',
  );
}

/**
 * Where callers may point this server. Without allow-lists (or a tenant root) the server does
 * not start unless told allowAny: an endpoint open to any S3 location lets one client make it
 * read or overwrite another's objects with the endpoint role's permissions.
 */
export function accessPolicy(o: Pick<ServeOptions, 'allowRead' | 'allowWrite' | 'allowAny' | 'tenantRoot'>): AccessPolicy {
  const list = (v: string[] | undefined, what: string) => (v?.length ? v.map((u) => parseS3Prefix(u, what)) : undefined);
  const tenantRoot = o.tenantRoot ? parseS3Prefix(o.tenantRoot, 'the tenant prefix (--tenant-prefix, SEALED_TENANT_ROOT)') : undefined;
  const read = list(o.allowRead, 'the read allow-list (--allow-read, SEALED_ALLOW_READ)') ?? (tenantRoot && [tenantRoot]);
  const write = list(o.allowWrite, 'the write allow-list (--allow-write, SEALED_ALLOW_WRITE)') ?? (tenantRoot && [tenantRoot]);
  if (!o.allowAny && (!read || !write)) {
    const missing = [!read && '--allow-read (SEALED_ALLOW_READ)', !write && '--allow-write (SEALED_ALLOW_WRITE)'].filter(Boolean).join(' and ');
    throw new SealedError(
      'bad-request',
      `refusing to start without S3 allow-lists: ${missing} ${!read && !write ? 'are' : 'is'} not set, so callers could make the server read or overwrite any object its role reaches`,
      'set --allow-read s3://bucket/prefix/ (queries and keys) and --allow-write s3://bucket/prefix/ (results), or env SEALED_ALLOW_READ and SEALED_ALLOW_WRITE (comma-separated); for several clients, --tenant-prefix s3://bucket/tenants/ (env SEALED_TENANT_ROOT); or, for a single trusted user only, --allow-any (env SEALED_ALLOW_ANY=1)',
    );
  }
  return { read, write, tenantRoot, hashNamedKeys: !o.allowAny };
}

/**
 * GET /execution-parameters for Batch Transform: as many concurrent requests as there are workers
 * (each query already spreads over every worker), no more than admission, batch slots and the
 * request memory allow for requests of the largest payload; one query per request (SINGLE_RECORD:
 * a sealed query is binary and can be neither split nor joined); the payload limit in whole MB.
 */
export function executionParameters(o: {
  workers: number;
  maxInFlight: number;
  requests: number;
  maxPayloadBytes: number;
  batch?: { memory: number; slots: number };
}): ExecutionParameters {
  const perRequest = 4 * o.maxPayloadBytes + (o.batch?.memory ?? 0);
  const byMemory = Math.floor(o.requests / perRequest);
  const n = Math.min(o.workers, o.maxInFlight, o.batch?.slots ?? Infinity, byMemory);
  return { MaxConcurrentTransforms: Math.max(1, n), BatchStrategy: 'SINGLE_RECORD', MaxPayloadInMB: Math.max(1, Math.floor(o.maxPayloadBytes / MiB)) };
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  // Before anything is loaded or listens: a server that would be open to any S3 location does not start.
  const access = accessPolicy(o);
  const served = await readServedModel(o.modelDir); // fails fast on a bad bundle, before any worker
  const workers = o.workers ?? availableParallelism();
  const split = splitBudget({
    workers,
    budget: o.memoryBudget,
    keyCache: o.keyCacheBytes,
    workerModel: served.workerModelBytes,
    sharedModel: served.sharedModelBytes,
  });
  const requests = new MemoryBudget(split.requests);
  // Refused before anything is started (a pool's threads, an S3 client).
  const maxPayloadBytes = payloadLimit(o.maxPayloadBytes, split.requests);
  if (o.defaultKeysUri) checkBodyRequest(undefined, o.defaultKeysUri, { access }); // refused at start, not on each request
  const store = new ObjectStore({ endpoint: o.s3Endpoint });
  // Retirements are logged once the app (and its logger) exists; none can happen before warm-up.
  const retired: { log?: (r: Retirement) => void } = {};
  const pool = new EvaluationPool({
    modelDir: o.modelDir,
    workers,
    keyCacheBytes: split.workerKeyCache,
    singleMasks: served.singleMasks,
    onRetire: (r) => retired.log?.(r),
  });
  await pool.ready();
  const keys = new KeyStore({
    store,
    kinds: { program: served.model.program, galoisSection: served.galoisSection, single: served.model.trees?.single?.program },
    maxBytes: split.keyCache,
    // 128 MiB, or what the model's own keys may take (a tree model's single-record form).
    maxObjectBytes: o.maxKeyBytes ?? Math.max(128 * MiB, served.keysBytesBound ?? 0),
    budget: requests,
  });
  const maxInFlight = o.maxInFlight ?? pool.size * 4;
  const batchSlots = { max: o.maxBatchInFlight ?? 2, used: 0 };
  const app = buildApp({
    logger: o.logger,
    maxInFlight,
    maxPayloadBytes,
    defaultKeysUri: o.defaultKeysUri,
    executionParameters: executionParameters({
      workers: pool.size,
      maxInFlight,
      requests: split.requests,
      maxPayloadBytes,
      batch: served.batch && { memory: batchMemory(served.batch), slots: batchSlots.max },
    }),
    deadlineMs: o.deadlineMs ?? 55_000,
    headersTimeoutMs: o.headersTimeoutMs,
    requestTimeoutMs: o.requestTimeoutMs,
    healthy: () => pool.probe(),
    workersReplaced: () => pool.workersReplaced,
    context: {
      access,
      model: served.model,
      store,
      keys,
      pool,
      // At least one batch of the model's, whatever its ring (batch-memory.ts).
      maxQueryBytes: o.maxQueryBytes ?? Math.max(1024 * MiB, served.batch ? batchQueryBytes(served.batch) : 0),
      batchSlots,
      budget: requests,
      // The buffers of as many batch requests as may run at once.
      batchBuffers: served.batch && new BatchBuffers(batchSlots.max * batchMemory(served.batch), requests),
    },
  });
  // Results of a model without circuit privacy are deterministic functions of what the client
  // sent: a client can solve them for the weights (docs/threat-model.md). The owner chose it.
  const exposed = served.exposed;
  if (exposed.length)
    app.log.warn(
      { model_id: served.model.modelId, layouts: exposed },
      'this model has no circuit privacy (privacy: none): its results let a client recover its weights; recompile it with privacy flood (the default) to protect them',
    );
  retired.log = (r) => app.log.warn({ thread: r.threadId, reason: r.reason, workers_replaced: pool.workersReplaced }, 'worker retired and replaced');
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
