// The web server's routes for one model (src/web/server.ts mounts them at / and /digit/): its
// client part, and the proxy that takes the page's wire-format objects to S3 and the inference
// server. The proxy checks what it can without a key (magic, model id, keys' parameters and
// content id) so a page gets a clear 4xx before anything is stored.
import { createHash, randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { invokeHttp } from '../client/invoke.ts';
import { ensureKeysUploaded } from '../client/keys-upload.ts';
import { loadAnyClientPart } from '../client/model-source.ts';
import type { S3Route } from '../client/route.ts';
import { SealedError, safeText } from '../errors.ts';
import { paramsKey } from '../fhe/params.ts';
import { formatS3Uri, type ObjectStore } from '../storage/s3.ts';
import { sha256Hex } from '../util/sha256.ts';
import { decodeWire, type KeysHeader, type QueryHeader } from '../wire/format.ts';

const WIRE_MAGIC = 'SEALED';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const isWire = (b: Uint8Array) => b.length >= 8 && new TextDecoder().decode(b.subarray(0, 6)) === WIRE_MAGIC;

/** A served model: its id, its client part as sent to the page, and the parameters its evaluation keys may be made for. */
export interface ServedModel {
  modelId: string;
  clientJson: string;
  /** paramsKey of each parameter set: a tree ensemble's batch circuit and single-record form have their own. */
  params: string[];
}

export async function readServedModel(dir: string): Promise<ServedModel & { features: number; image: boolean }> {
  const any = await loadAnyClientPart(dir);
  if (any.kind === 'trees') {
    const p = any.part;
    return {
      modelId: p.model_id,
      clientJson: JSON.stringify(p),
      params: [p.params, ...(p.single ? [p.single.params] : [])].map(paramsKey),
      features: p.features.length,
      image: false,
    };
  }
  const { modelId, client } = any;
  return { modelId, clientJson: JSON.stringify(client), params: [paramsKey(client.params)], features: client.features.length, image: Boolean(client.image) };
}

/**
 * One model's routes under `at` ('' or '/digit'): its client part, the evaluation keys, the
 * encrypted prediction through the inference server at `m.endpoint`.
 */
export function modelRoutes(
  app: FastifyInstance,
  at: string,
  m: ServedModel & { endpoint: string },
  s3: { store: ObjectStore; bucket: string; prefix?: string },
  limits: { maxKeyBytes: number; maxQueryBytes: number },
): void {
  const { modelId, clientJson } = m;
  const { maxKeyBytes, maxQueryBytes } = limits;
  const t: S3Route = { store: s3.store, bucket: s3.bucket, prefix: s3.prefix ?? 'sealed/', endpoint: m.endpoint };

  app.get(`${at}/model/client.json`, async (_req, reply) => reply.type('application/json').send(clientJson));

  const keysId = (id: string) => {
    if (!/^[0-9a-f]{64}$/.test(id))
      throw new SealedError('bad-request', 'the keys id is not 64 hex digits', 'name the evaluation keys by the SHA-256 of their bytes');
    return id;
  };
  const keysLoc = (id: string) => ({ bucket: t.bucket, key: `${t.prefix}keys/${keysId(id)}.keys` });

  // Uploaded means: the object under the id holds bytes that hash to the id (the page then skips
  // the upload); an object of another content there (replaced by someone else) is not uploaded.
  app.get<{ Params: { id: string } }>(`${at}/api/keys/:id`, async (req) => {
    const loc = keysLoc(req.params.id);
    const head = await t.store.head(loc);
    if (!head || head.size > maxKeyBytes) return { id: req.params.id, uploaded: false };
    const { bytes } = await t.store.get(loc, maxKeyBytes, 'evaluation keys');
    return sha256Hex(bytes) === req.params.id ? { id: req.params.id, uploaded: true, bytes: head.size } : { id: req.params.id, uploaded: false };
  });

  app.put<{ Params: { id: string }; Body: Buffer }>(`${at}/api/keys/:id`, { bodyLimit: maxKeyBytes }, async (req, reply) => {
    const id = keysId(req.params.id);
    const body = req.body;
    if (!(body instanceof Uint8Array) || !isWire(body))
      throw new SealedError(
        'bad-keys',
        'the body is not a sealed wire-format object',
        'PUT the evaluation keys (wire format, kind 2) as application/octet-stream',
      );
    const msg = decodeWire<KeysHeader>('keys', body, 'the evaluation keys');
    if (!m.params.includes(String(msg.header.params)))
      throw new SealedError(
        'bad-keys',
        `the evaluation keys are for parameters ${safeText(msg.header.params)}, the model uses ${m.params.join(' or ')}`,
        'make keys for this model',
      );
    if (sha256Hex(body) !== id)
      throw new SealedError('bad-keys', 'the evaluation keys do not hash to the id in the URL', `PUT them to ${at}/api/keys/<SHA-256 of the bytes, hex>`);
    const r = await ensureKeysUploaded(t, { evaluationKeys: body, evaluationKeysId: id });
    req.log.info({ keys_id: id, bytes: body.length, uploaded: r.uploaded }, 'evaluation keys');
    return reply.status(r.uploaded ? 201 : 200).send({ id, bytes: body.length, uploaded: r.uploaded });
  });

  app.post<{ Querystring: { keys?: string }; Body: Buffer }>(`${at}/api/predict`, { bodyLimit: maxQueryBytes }, async (req, reply) => {
    const t0 = performance.now();
    const kLoc = keysLoc(String(req.query.keys ?? ''));
    const body = req.body;
    if (!(body instanceof Uint8Array) || !isWire(body))
      throw new SealedError(
        'bad-query',
        'the body is not a sealed wire-format object',
        'POST the encrypted query (wire format, kind 1) as application/octet-stream',
      );
    const msg = decodeWire<QueryHeader>('query', body, 'the encrypted query');
    if (msg.header.model_id !== modelId)
      throw new SealedError(
        'wrong-model',
        `the query is for model ${safeText(msg.header.model_id)}, this server serves ${modelId}${at ? ` under ${at}/` : ''}`,
        'reload the page to get this model',
      );
    if (!(await t.store.head(kLoc)))
      throw new SealedError(
        'not-found',
        'the evaluation keys named by ?keys= are not uploaded',
        `PUT them to ${at}/api/keys/${safeText(req.query.keys)} first`,
      );
    const id = randomUUID();
    const queryLoc = { bucket: t.bucket, key: `${t.prefix}queries/${id}.query` };
    const outLoc = { bucket: t.bucket, key: `${t.prefix}results/${id}.result` };
    await t.store.put(queryLoc, body, 'encrypted query');
    const t1 = performance.now();
    // The page checks the result's header against the query it sent; the server checks this hash
    // against the query it reads.
    const server = await invokeHttp(t.endpoint, {
      encrypted_query_uri: formatS3Uri(queryLoc),
      evaluation_keys_uri: formatS3Uri(kLoc),
      output_uri: formatS3Uri(outLoc),
      query_sha256: sha256(body),
    });
    const t2 = performance.now();
    const { bytes } = await t.store.get(outLoc, 2 ** 31, 'encrypted result');
    const t3 = performance.now();
    const r = (v: number) => Math.round(v * 100) / 100;
    const info = {
      model_id: server.model_id,
      records: server.records,
      ciphertexts: server.ciphertexts,
      keys_cached: server.keys_cached,
      threads: server.threads,
      timings_ms: server.timings_ms,
      proxy_ms: { put_query: r(t1 - t0), invoke: r(t2 - t1), get_result: r(t3 - t2) },
    };
    req.log.info(
      { model: at || '/', records: msg.header.records, query_bytes: body.length, result_bytes: bytes.length, proxy_ms: info.proxy_ms },
      'prediction',
    );
    return reply
      .type('application/octet-stream')
      .header('x-sealed-server', JSON.stringify(info))
      .send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  });
}
