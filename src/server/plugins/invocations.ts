// POST /invocations in its two forms:
//   application/json          {encrypted_query_uri, evaluation_keys_uri, output_uri, query_sha256}:
//                             query and result are S3 objects; the answer is JSON (invocations.ts)
//   application/octet-stream  the query itself; the answer is the result itself; the keys are
//                             named by X-Amzn-SageMaker-Custom-Attributes: keys=<s3 uri>
//                             (invoke-body.ts)
// Both check what they name with no I/O before admission, so a request that can never succeed
// gets its 4xx at once rather than a 503 that clients retry.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { Reservation } from '../budget.ts';
import { checkRequest, type InvocationRequest } from '../access.ts';
import { errorSchema } from '../http-errors.ts';
import type { InvocationContext } from '../invocation-context.ts';
import { invoke } from '../invocations.ts';
import { checkBodyRequest, CUSTOM_ATTRIBUTES, invokeBody } from '../invoke-body.ts';

export interface InvocationsOptions {
  context: InvocationContext;
  /** Largest query taken in the body (bytes). */
  maxPayloadBytes: number;
  /** Keys for body-form requests that name none (SEALED_EVALUATION_KEYS_URI). */
  defaultKeysUri?: string;
}

const s3Uri = { type: 'string', minLength: 6, maxLength: 2048 } as const;
const jsonRequest = {
  type: 'object',
  required: ['encrypted_query_uri', 'output_uri'],
  additionalProperties: false,
  // query_sha256: the client's hash of the query object; the server checks it against the bytes it reads.
  properties: { encrypted_query_uri: s3Uri, evaluation_keys_uri: s3Uri, output_uri: s3Uri, query_sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
} as const;
const ms = { type: 'number' } as const;
const jsonAnswer = {
  type: 'object',
  required: ['output_uri', 'model_id', 'query_sha256', 'layout', 'records', 'ciphertexts', 'keys_cached', 'timings_ms'],
  additionalProperties: false,
  properties: {
    output_uri: { type: 'string' },
    model_id: { type: 'string' },
    query_sha256: { type: 'string' },
    layout: { type: 'string', enum: ['single', 'batch', 'slots'] },
    records: { type: 'integer' },
    ciphertexts: { type: 'integer' },
    keys_cached: { type: 'boolean' },
    threads: { type: 'integer' },
    timings_ms: {
      type: 'object',
      required: ['download', 'deserialize', 'evaluate', 'serialize', 'upload', 'pool_wall', 'total'],
      additionalProperties: false,
      properties: { download: ms, deserialize: ms, evaluate: ms, serialize: ms, upload: ms, pool_wall: ms, total: ms },
    },
  },
} as const;

export const invocationSchema = {
  // SageMaker passes custom attributes of up to 1,024 characters.
  headers: { type: 'object', properties: { [CUSTOM_ATTRIBUTES]: { type: 'string', maxLength: 1024 } } },
  body: {
    content: {
      'application/json': { schema: jsonRequest },
      // The wire format checks itself (invoke-body.ts): length-prefixed, every length bounded.
      'application/octet-stream': { schema: {} },
    },
  },
  response: {
    200: {
      content: {
        'application/json': { schema: jsonAnswer },
        'application/octet-stream': { schema: { type: 'string', contentEncoding: 'binary', description: 'the encrypted result (docs/wire-format.md)' } },
      },
    },
    '4xx': errorSchema,
    '5xx': errorSchema,
  },
} as const;

const invocations: FastifyPluginAsync<InvocationsOptions> = async (app, o) => {
  const c = o.context;
  // Only here (this plugin's context): the only route that takes bytes, with its own limit; JSON keeps the app's 64 KiB.
  // Fastify parses text/plain by default; here a query is JSON or bytes, anything else is a 415.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: o.maxPayloadBytes }, (_req, body, done) => done(null, body));

  // A body is read before the handler can refuse anything: its bytes are reserved from the
  // request memory as it starts to arrive (the declared length, or the limit when chunked), so
  // slow or many uploads get 503 before they are read, not an out-of-memory process. The bytes
  // are held until the answer is sent (or the caller is gone).
  const bodies = new WeakMap<object, Reservation>();
  const release = async (req: FastifyRequest) => {
    bodies.get(req)?.release();
  };
  app.addHook('preParsing', async (req, _reply, payload) => {
    if (!c.budget || !String(req.headers['content-type'] ?? '').startsWith('application/octet-stream')) return payload;
    const declared = Number(req.headers['content-length']);
    const bytes = Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, o.maxPayloadBytes) : o.maxPayloadBytes;
    bodies.set(req, c.budget.reserve(bytes, 'a query in the request body'));
    return payload;
  });
  app.addHook('onResponse', release);
  app.addHook('onRequestAbort', release);

  app.post<{ Body: InvocationRequest | Buffer }>('/invocations', { schema: invocationSchema }, async (req, reply) => {
    const body = req.body;
    if (Buffer.isBuffer(body)) {
      const header = req.headers[CUSTOM_ATTRIBUTES];
      const keysLoc = checkBodyRequest(typeof header === 'string' ? header : undefined, o.defaultKeysUri, c);
      const { result, response: res } = await app.admit((signal) => invokeBody(body, keysLoc, c, signal));
      req.log.info(
        {
          form: 'body',
          records: res.records,
          ciphertexts: res.ciphertexts,
          keys_cached: res.keys_cached,
          query_bytes: body.length,
          result_bytes: result.length,
          timings_ms: res.timings_ms,
        },
        'invocation done',
      );
      return reply.type('application/octet-stream').send(Buffer.from(result.buffer, result.byteOffset, result.byteLength));
    }
    checkRequest(body, c);
    const res = await app.admit((signal) => invoke(body, c, signal));
    req.log.info({ records: res.records, ciphertexts: res.ciphertexts, keys_cached: res.keys_cached, timings_ms: res.timings_ms }, 'invocation done');
    return res;
  });
};

export default invocations;
