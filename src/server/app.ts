// The SageMaker hosting contract over Fastify: GET /ping and POST /invocations.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { isSealedError, SealedError } from '../errors.ts';
import { invoke, type InvocationContext, type InvocationRequest } from './invocations.ts';

const s3Uri = { type: 'string', minLength: 6, maxLength: 2048 } as const;
const invocationSchema = {
  body: {
    type: 'object',
    required: ['encrypted_query_uri', 'output_uri'],
    additionalProperties: false,
    properties: { encrypted_query_uri: s3Uri, evaluation_keys_uri: s3Uri, output_uri: s3Uri },
  },
} as const;

export interface AppOptions {
  context: InvocationContext;
  logger?: FastifyServerOptions['logger'];
  /** Requests admitted at once; beyond, 503 with Retry-After (SageMaker and clients retry). */
  maxInFlight: number;
  /** Per-request deadline; SageMaker real-time invocations time out at 60 s. */
  deadlineMs: number;
}

export function buildApp(o: AppOptions): FastifyInstance {
  const app = Fastify({
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
        hint: 'send JSON {"encrypted_query_uri": "s3://…", "evaluation_keys_uri": "s3://…" (not needed in batch mode), "output_uri": "s3://…"} and nothing else',
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

  app.get('/ping', async () => ({ status: 'ok', model_id: o.context.model.modelId }));

  let inFlight = 0;
  app.post<{ Body: InvocationRequest }>('/invocations', { schema: invocationSchema }, async (req) => {
    if (inFlight >= o.maxInFlight) {
      throw new SealedError('overloaded', `the server is at capacity (${o.maxInFlight} requests in flight)`, 'retry after the number of seconds in Retry-After');
    }
    inFlight++;
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new SealedError('deadline', `the request did not finish within ${o.deadlineMs} ms`, 'send fewer records per request, or use an asynchronous endpoint'));
      }, o.deadlineMs);
    });
    try {
      const res = await Promise.race([invoke(req.body, o.context, abort.signal), deadline]);
      req.log.info({ records: res.records, ciphertexts: res.ciphertexts, keys_cached: res.keys_cached, timings_ms: res.timings_ms }, 'invocation done');
      return res;
    } finally {
      clearTimeout(timer);
      inFlight--;
    }
  });

  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send({ error: 'not-found', message: `no route ${req.method} ${req.url.slice(0, 100)}`, hint: 'the server answers GET /ping and POST /invocations' });
  });
  return app;
}

export { SealedError };
