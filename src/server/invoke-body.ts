// One invocation in the body form (SageMaker's direct payload): the request body is the query
// (wire format, Content-Type: application/octet-stream) and the response body is the result.
// No S3 round trip for the query or the result; the evaluation keys, when the layout needs them,
// are still an S3 object (too large for a request, and cached across requests), named by the
// header X-Amzn-SageMaker-Custom-Attributes: keys=s3://bucket/.../<sha256>.keys or by the
// endpoint's SEALED_EVALUATION_KEYS_URI, under the same access policy, tenants, hash-named rule
// and KeyStore cache as the JSON form. Batch Transform calls this form with each input object.
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { outputsOf, resultSize } from '../fhe/batch-plan.ts';
import { ciphertextBytesBound } from '../fhe/params.ts';
import { parseS3Uri, type S3Location } from '../storage/s3.ts';
import { checkPrefix, decodeWire, type QueryHeader } from '../wire/format.ts';
import { checkAccess, checkKeysName } from './access.ts';
import type { InvocationContext, InvocationResponse, ResultSink } from './invocation-context.ts';
import { evaluateQuery } from './invocations.ts';
import { evaluateTrees, TREE_KEYS_HINT } from './invoke-trees.ts';
import { batchCount, checkBatchQuery, checkQueryHeader, type ServingModel } from './query-checks.ts';
import { QueryDigest } from './query-digest.ts';
import { MiB } from './budget.ts';

/** SageMaker passes this request header to the container unchanged (up to 1,024 visible ASCII characters). */
export const CUSTOM_ATTRIBUTES = 'x-amzn-sagemaker-custom-attributes';
/** SageMaker real-time endpoints take request and response bodies of up to 6 MB. */
export const REALTIME_PAYLOAD_BYTES = 6 * MiB;
/** Batch Transform's MaxPayloadInMB is at most 100. */
export const MAX_PAYLOAD_BYTES = 100 * MiB;

const KEYS_HINT =
  'name the evaluation keys with the header X-Amzn-SageMaker-Custom-Attributes: keys=s3://bucket/prefix/keys/<sha256>.keys (`sealed predict` uploads them there), or set SEALED_EVALUATION_KEYS_URI on the endpoint';

/** The `keys=` attribute of a custom-attributes header (`;`-separated name=value pairs), or undefined. */
export function keysAttribute(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const values = header
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p.startsWith('keys='))
    .map((p) => p.slice('keys='.length).trim());
  if (values.length > 1) throw new SealedError('bad-request', 'X-Amzn-SageMaker-Custom-Attributes names keys= more than once', KEYS_HINT);
  return values[0];
}

/**
 * Where the keys of a body-form request are (the header's keys=, else the endpoint's default),
 * checked like the JSON form's evaluation_keys_uri, with no I/O; undefined when none is named.
 */
export function checkBodyRequest(
  attributes: string | undefined,
  defaultKeysUri: string | undefined,
  c: Pick<InvocationContext, 'access'>,
): S3Location | undefined {
  const named = keysAttribute(attributes);
  const uri = named ?? defaultKeysUri;
  if (uri === undefined || uri === '') return undefined;
  const field = named !== undefined ? 'the keys attribute (X-Amzn-SageMaker-Custom-Attributes: keys=)' : 'SEALED_EVALUATION_KEYS_URI';
  const loc = parseS3Uri(uri, field);
  checkAccess(c.access, [{ field, loc, verb: 'read' }]);
  checkKeysName(c.access, loc, field);
  return loc;
}

/** Bytes of the result of a query whose header and count were checked: an upper bound. */
function resultBound(model: ServingModel, h: QueryHeader, count: number): number {
  if (h.layout !== 'batch') return count * ciphertextBytesBound(model.program.params, 2);
  const { plan } = checkBatchQuery(model, h, count);
  return batchCount(plan, h.records) * outputsOf(plan) * ciphertextBytesBound(plan.params, resultSize(plan));
}

/** The response body as the place a result goes. */
function bodySink(): ResultSink & { bytes(): Uint8Array } {
  let chunks: Uint8Array[] = [];
  return {
    uri: '',
    put: async (b) => {
      chunks = [b];
    },
    putStream: async (stream) => {
      for await (const c of stream) chunks.push(c);
    },
    bytes: () => (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)),
  };
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  // A plain Uint8Array view, not the Buffer Fastify parsed: the stream reader copies each section
  // out with slice(), which on a Buffer is a view, and the pool transfers section buffers to the
  // workers (a view of the body would transfer, and detach, the whole body).
  yield new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

export async function invokeBody(
  body: Uint8Array,
  keysLoc: S3Location | undefined,
  c: InvocationContext,
  signal?: AbortSignal,
): Promise<{ result: Uint8Array; response: InvocationResponse }> {
  const t0 = performance.now();
  // Not a sealed query at all (random bytes, JSON sent as octet-stream...): the request is wrong, 400.
  checkPrefix(
    'query',
    body,
    (why) =>
      new SealedError(
        'bad-request',
        `the request body ${why}: with Content-Type: application/octet-stream it must be an encrypted query (docs/wire-format.md)`,
        'send the file `sealed predict` writes (or the SDK encrypts), unchanged; or send JSON naming S3 locations (Content-Type: application/json)',
      ),
  );
  if (c.model.trees) return invokeTreesBody(body, keysLoc, c, t0, signal);
  const msg = decodeWire<QueryHeader>('query', body, 'the encrypted query');
  const layout = checkQueryHeader(c.model, msg.header);
  if (layout === 'single' && !keysLoc)
    throw new SealedError('bad-request', 'the query uses the single layout, which needs evaluation keys, and the request names none', KEYS_HINT);
  // The sections read out of the body and the result, held until the answer is sent (the body
  // itself was reserved as it arrived: plugins/invocations.ts).
  const reservation = c.budget?.reserve(body.length + resultBound(c.model, msg.header, msg.sections.length), 'a query in the request body');
  const keys = layout === 'single' && keysLoc ? c.keys.get(keysLoc) : undefined;
  keys?.catch(() => undefined);
  try {
    const digest = new QueryDigest(body.length);
    const sha = createHash('sha256').update(body).digest('hex');
    const out = bodySink();
    const response = await evaluateQuery(digest.wrap(once(body)), digest, sha, keys, out, c, t0, signal);
    return { result: out.bytes(), response };
  } finally {
    await keys?.catch(() => undefined);
    reservation?.release();
  }
}

/** A tree-ensemble query in the body: evaluated whole (invoke-trees.ts), a copy of the body sent to the worker. */
async function invokeTreesBody(
  body: Uint8Array,
  keysLoc: S3Location | undefined,
  c: InvocationContext,
  t0: number,
  signal?: AbortSignal,
): Promise<{ result: Uint8Array; response: InvocationResponse }> {
  if (!keysLoc)
    throw new SealedError('bad-request', 'a tree-ensemble query needs evaluation keys, and the request names none', `${KEYS_HINT}; ${TREE_KEYS_HINT}`);
  const keys = c.keys.get(keysLoc);
  keys.catch(() => undefined);
  try {
    const out = bodySink();
    const response = await evaluateTrees(body, keys, undefined, out, c, t0, 0, signal);
    return { result: out.bytes(), response };
  } finally {
    await keys.catch(() => undefined);
  }
}

/**
 * The body limit a server can honour: `requested` (default: SageMaker's real-time 6 MB), at most
 * Batch Transform's 100 MB, and refused at start when one such request could not fit the
 * request memory (the body is read before the request can be refused for memory).
 */
export function payloadLimit(requested: number | undefined, requestBudget: number): number {
  const limit = requested ?? REALTIME_PAYLOAD_BYTES;
  if (!(Number.isInteger(limit) && limit >= 1 * MiB && limit <= MAX_PAYLOAD_BYTES)) {
    throw new SealedError(
      'bad-request',
      `a payload limit of ${limit} bytes is not between 1 MB and 100 MB`,
      'set --max-payload-mb (SEALED_MAX_PAYLOAD_MB) to a whole number from 1 to 100',
    );
  }
  // A body request holds its body, the sections read out of it and its result (~ the body again).
  if (4 * limit > requestBudget) {
    throw new SealedError(
      'bad-request',
      `a payload limit of ${Math.round(limit / MiB)} MB needs ${Math.round((4 * limit) / MiB)} MB of request memory; this server has ${Math.round(requestBudget / MiB)} MB`,
      'lower --max-payload-mb (SEALED_MAX_PAYLOAD_MB), or give the server more memory',
    );
  }
  return limit;
}
