// The SageMaker hosting contract over Fastify, as small plugins: GET /ping (ping.ts),
// POST /invocations in its JSON and body forms (invocations.ts), GET /execution-parameters for
// Batch Transform (execution-parameters.ts), and admission with its deadline (admission.ts).
// One error handler (http-errors.ts) answers every refusal as JSON {error, message, hint}.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { errorHandler, notFoundHandler } from './http-errors.ts';
import type { InvocationContext } from './invocation-context.ts';
import admission from './plugins/admission.ts';
import executionParameters, { type ExecutionParameters } from './plugins/execution-parameters.ts';
import invocations from './plugins/invocations.ts';
import ping from './plugins/ping.ts';
import { REALTIME_PAYLOAD_BYTES } from './invoke-body.ts';

export type { AppState } from './plugins/admission.ts';

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
  /** Largest query taken in the request body (default: SageMaker real-time's 6 MB). */
  maxPayloadBytes?: number;
  /** Keys for body-form requests that name none (SEALED_EVALUATION_KEYS_URI). */
  defaultKeysUri?: string;
  /** GET /execution-parameters' answer (Batch Transform); absent: the route is not served. */
  executionParameters?: ExecutionParameters;
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
    bodyLimit: 64 * 1024, // JSON; the body form has its own limit (plugins/invocations.ts)
    requestIdHeader: 'x-amzn-requestid',
    genReqId: () => randomUUID(),
    // Reject what the schema does not allow instead of silently stripping or coercing it.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false } },
  });
  const maxPayloadBytes = o.maxPayloadBytes ?? REALTIME_PAYLOAD_BYTES;
  app.setErrorHandler(
    errorHandler({
      validation:
        'send JSON {"encrypted_query_uri": "s3://…", "evaluation_keys_uri": "s3://…" (not needed in batch mode), "output_uri": "s3://…", "query_sha256": "<64 hex>" (optional)} and nothing else',
      body: 'POST a JSON body with Content-Type: application/json, or the encrypted query itself with Content-Type: application/octet-stream',
      tooLarge: `JSON requests take up to 64 KiB; a query in the body (application/octet-stream) up to ${Math.floor(maxPayloadBytes / (1024 * 1024))} MiB: send a larger query through S3 (JSON naming encrypted_query_uri)`,
      internal: 'retry; if it persists, report it with the request id',
    }),
  );
  app.setNotFoundHandler(notFoundHandler('the server answers GET /ping, POST /invocations and GET /execution-parameters'));
  void app.register(admission, { maxInFlight: o.maxInFlight, deadlineMs: o.deadlineMs });
  void app.register(ping, { modelId: o.context.model.modelId, healthy: o.healthy, workersReplaced: o.workersReplaced });
  void app.register(invocations, { context: o.context, maxPayloadBytes, defaultKeysUri: o.defaultKeysUri });
  if (o.executionParameters) void app.register(executionParameters, { parameters: o.executionParameters });
  return app;
}
