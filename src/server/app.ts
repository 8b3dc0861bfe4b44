// The SageMaker hosting contract over Fastify: GET /ping and POST /invocations.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { isSealedError, safeText, SealedError } from '../errors.ts';
import { checkRequest, type InvocationRequest } from './access.ts';
import type { InvocationContext } from './invocation-context.ts';
import { invoke } from './invocations.ts';

const s3Uri = { type: 'string', minLength: 6, maxLength: 2048 } as const;
const invocationSchema = {
  body: {
    type: 'object',
    required: ['encrypted_query_uri', 'output_uri'],
    additionalProperties: false,
    // query_sha256: the client's hash of the query object; the server checks it against the bytes it reads.
    properties: { encrypted_query_uri: s3Uri, evaluation_keys_uri: s3Uri, output_uri: s3Uri, query_sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
  },
} as const;

export interface AppOptions {
  context: InvocationContext;
  logger?: FastifyServerOptions['logger'];
  /** Requests admitted at once; beyond, 503 with Retry-After (SageMaker and clients retry). */
  maxInFlight: number;
  /** Per-request deadline; SageMaker real-time invocations time out at 60 s. */
  deadlineMs: number;
  /** Health of the evaluation pool for GET /ping (a cached known-answer probe); absent: healthy. */
  healthy?: () => Promise<boolean>;
  /** Worker threads replaced since start (poisoned or failed ones), shown by GET /ping. */
  workersReplaced?: () => number;
  /** Time allowed for a request's headers, and for its whole body, before the socket is closed. */
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
}

/** What the app exposes for a graceful stop. */
export interface AppState {
  /** Invocations whose work has not stopped yet (answered or not). */
  readonly inFlight: number;
  /** Resolves when no invocation is working. */
  drained(): Promise<void>;
  /** Stops every invocation at once (as at its deadline): for a stop that cannot wait longer. */
  abortAll(): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    sealed: AppState;
  }
}

export function buildApp(o: AppOptions): FastifyInstance {
  const requestTimeout = o.requestTimeoutMs ?? 20_000;
  const headersTimeout = Math.min(o.headersTimeoutMs ?? 10_000, requestTimeout); // Node requires <=
  const app = Fastify({
    // Node checks these timeouts every connectionsCheckingInterval (30 s by default): check each
    // second, so a slow-body socket is closed close to its timeout, not up to 30 s later.
    http: { headersTimeout, requestTimeout, connectionsCheckingInterval: 1000 },
    requestTimeout, // Fastify sets it on the server again (0, none, by default)
    logger: o.logger ?? false,
    bodyLimit: 64 * 1024,
    requestIdHeader: 'x-amzn-requestid',
    genReqId: () => randomUUID(),
    // Reject what the schema does not allow instead of silently stripping or coercing it.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
  });

  app.setErrorHandler((err, req, reply) => {
    if (isSealedError(err)) {
      const e = err as SealedError;
      req.log.warn({ err: { code: e.code, message: e.message } }, 'request refused');
      if (e.code === 'overloaded') reply.header('retry-after', '1');
      return reply.status(e.status).send(e.toJSON());
    }
    const fe = err as { validation?: unknown; statusCode?: number; message: string; code?: string };
    if (fe.validation) {
      return reply.status(400).send({
        error: 'bad-request',
        message: `invalid request: ${fe.message}`,
        hint: 'send JSON {"encrypted_query_uri": "s3://…", "evaluation_keys_uri": "s3://…" (not needed in batch mode), "output_uri": "s3://…", "query_sha256": "<64 hex>" (optional)} and nothing else',
      });
    }
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.status(fe.statusCode).send({ error: 'bad-request', message: fe.message, hint: 'POST a JSON body with Content-Type: application/json' });
    }
    req.log.error({ err: { name: (err as Error).name, message: (err as Error).message } }, 'internal error');
    return reply.status(500).send({ error: 'internal', message: 'internal error; the request was not processed', hint: 'retry; if it persists, report it with the request id' });
  });

  // Once closing, in-flight answers carry Connection: close: otherwise their keep-alive sockets
  // hold close() open for keepAliveTimeout (72 s), past SageMaker's 30 s before SIGKILL.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_req, reply) => {
    if (closing) reply.header('connection', 'close');
  });

  // /ping answers at once while evaluations run (the pool is other threads); unhealthy (a pool
  // that cannot evaluate a known answer) is a 503, so SageMaker replaces the container.
  app.get('/ping', async (_req, reply) => {
    const workers_replaced = o.workersReplaced?.() ?? 0;
    if (o.healthy && !(await o.healthy())) {
      return reply.status(503).send({ status: 'unhealthy', model_id: o.context.model.modelId, workers_replaced });
    }
    return { status: 'ok', model_id: o.context.model.modelId, workers_replaced };
  });

  // An invocation holds its admission slot until its work has stopped, not until its caller was
  // answered: a 504 at the deadline does not free capacity that the abandoned work still uses.
  let inFlight = 0;
  let idle: (() => void)[] = [];
  const aborts = new Set<AbortController>();
  const settle = () => {
    inFlight--;
    if (inFlight === 0) {
      for (const f of idle) f();
      idle = [];
    }
  };
  app.decorate('sealed', {
    get inFlight() {
      return inFlight;
    },
    drained: () => (inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => idle.push(r))),
    abortAll: () => {
      for (const a of aborts) a.abort();
    },
  } satisfies AppState);

  app.post<{ Body: InvocationRequest }>('/invocations', { schema: invocationSchema }, async (req) => {
    checkRequest(req.body, o.context); // a request that can never succeed: its 4xx, not a 503
    if (inFlight >= o.maxInFlight) {
      throw new SealedError('overloaded', `the server is at capacity (${o.maxInFlight} requests in flight)`, 'retry after the number of seconds in Retry-After');
    }
    inFlight++;
    const abort = new AbortController();
    aborts.add(abort);
    const work = invoke(req.body, o.context, abort.signal);
    const done = () => {
      aborts.delete(abort);
      settle();
    };
    work.then(done, done);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new SealedError('deadline', `the request did not finish within ${o.deadlineMs} ms`, 'send fewer records per request, or use an asynchronous endpoint'));
        abort.abort();
      }, o.deadlineMs);
      // abortAll (a stop that cannot wait): answered now; a promise settles once, so after the
      // deadline's reject this one is a no-op.
      abort.signal.addEventListener('abort', () => reject(new SealedError('overloaded', 'the server is stopping; the request was not completed', 'retry (another instance will take it)')), { once: true });
    });
    try {
      const res = await Promise.race([work, deadline]);
      req.log.info({ records: res.records, ciphertexts: res.ciphertexts, keys_cached: res.keys_cached, timings_ms: res.timings_ms }, 'invocation done');
      return res;
    } finally {
      clearTimeout(timer);
    }
  });

  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send({ error: 'not-found', message: `no route ${safeText(req.method, 10)} ${safeText(req.url, 100)}`, hint: 'the server answers GET /ping and POST /invocations' });
  });
  return app;
}

export { SealedError };
