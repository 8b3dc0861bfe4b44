// The web demo's server: serves the page (out/web, built by scripts/build-web.ts), the model's
// client part, and a small proxy for browsers, which cannot easily sign S3 requests:
//
//   GET  /model/client.json     the client part (parameters, layout, scaling, labels; no weights)
//   GET  /api/samples           example records to prefill the form
//   GET  /api/keys/:id          {uploaded}: whether evaluation keys with this content id are in S3
//   PUT  /api/keys/:id          evaluation keys (wire format, kind 2), stored in S3 once
//   POST /api/predict?keys=ID   an encrypted query (wire format, kind 1) -> the encrypted result
//   GET  /api/demos             {digit}: whether the draw-a-digit page is served
//
// With `digits` (an MNIST image model and the inference server that serves it), the same routes
// for that model are under /digit/, with the draw-a-digit page (digit.html, digit.js and its Web
// Worker digit-worker.js) at /digit/.
//
// It writes the objects to S3 and calls the inference server's POST /invocations exactly as
// `sealed predict` does (src/client/predict.ts). It is not part of the SageMaker server: it
// only ever holds wire-format objects, never a secret key or a plaintext record.
import { createHash, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { invokeHttp } from '../client/invoke.ts';
import { ensureKeysUploaded } from '../client/keys-upload.ts';
import type { S3Route } from '../client/route.ts';
import { sha256Hex } from '../util/sha256.ts';
import { SealedError, safeText } from '../errors.ts';
import { errorHandler, notFoundHandler } from '../server/http-errors.ts';
import { paramsKey } from '../fhe/params.ts';
import { readClientPart } from '../model/bundle.ts';
import type { ClientPart } from '../model/client-part.ts';
import { formatS3Uri, type ObjectStore } from '../storage/s3.ts';
import { decodeWire, type KeysHeader, type QueryHeader } from '../wire/format.ts';

/**
 * Where scripts/build-web.ts writes the pages: index.html, style.css, app.js, seal_throws.wasm,
 * and the draw-a-digit page: digit.html, digit.js, digit-worker.js.
 */
export const WEB_ASSETS_DIR = fileURLToPath(new URL('../../out/web/', import.meta.url));

export interface Sample {
  /** Shown in the sample picker, e.g. "record 3 (malignant)". */
  name: string;
  values: number[];
  label?: string;
}

export interface WebServerOptions {
  /** The model bundle; only its client part is read and served. */
  modelDir: string;
  /** Base URL of the inference server (POST /invocations). */
  endpoint: string;
  /** The S3 (or S3-compatible) store the inference server reads from, and the bucket to use. */
  store: ObjectStore;
  bucket: string;
  prefix?: string;
  /** The built page (default: out/web). */
  assetsDir?: string;
  samples?: Sample[];
  /**
   * The draw-a-digit page: an MNIST image model (28x28 pixels, e.g. `sealed train` on IDX
   * images) and the base URL of the inference server that serves it, under /digit/.
   */
  digits?: { modelDir: string; endpoint: string };
  port?: number;
  host?: string;
  logger?: FastifyServerOptions['logger'];
  maxKeyBytes?: number;
  maxQueryBytes?: number;
}

const ASSETS: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/style.css': 'style.css',
  '/app.js': 'app.js',
  '/app.js.map': 'app.js.map',
  '/seal_throws.wasm': 'seal_throws.wasm',
};
/** The draw-a-digit page's files, served when `digits` is given. */
const DIGIT_ASSETS: Record<string, string> = {
  '/digit/': 'digit.html',
  '/digit/index.html': 'digit.html',
  '/digit/digit.js': 'digit.js',
  '/digit/digit.js.map': 'digit.js.map',
  '/digit/digit-worker.js': 'digit-worker.js',
  '/digit/digit-worker.js.map': 'digit-worker.js.map',
};
const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  map: 'application/json',
  wasm: 'application/wasm',
};
// The page may talk to its own origin only, and compile WebAssembly (SEAL) but no other code.
const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const WIRE_MAGIC = 'SEALED';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const isWire = (b: Uint8Array) => b.length >= 8 && new TextDecoder().decode(b.subarray(0, 6)) === WIRE_MAGIC;

export async function buildWebApp(o: WebServerOptions): Promise<FastifyInstance> {
  const main = await readClientPart(o.modelDir);
  const digits = o.digits && { ...(await readClientPart(o.digits.modelDir)), endpoint: o.digits.endpoint };
  if (digits && (digits.client.features.length !== 28 * 28 || !digits.client.image)) {
    throw new SealedError(
      'bad-bundle',
      `the draw-a-digit page needs a 28x28 image model; ${o.digits!.modelDir} takes ${digits.client.features.length} features`,
      'train one on MNIST IDX images (`sealed train`) or use .cache/models from `npm run bench -- mnist`',
    );
  }
  const assetsDir = o.assetsDir ?? WEB_ASSETS_DIR;
  const routes = { ...ASSETS, ...(digits ? DIGIT_ASSETS : {}) };
  const assets = new Map<string, Buffer>();
  for (const file of new Set(Object.values(routes))) {
    try {
      assets.set(file, await readFile(join(assetsDir, file)));
    } catch {
      if (!file.endsWith('.map'))
        throw new SealedError('bad-request', `the web page is not built: ${join(assetsDir, file)} is missing`, 'run `npm run build:web` first');
    }
  }
  const maxKeyBytes = o.maxKeyBytes ?? 256 * 1024 * 1024;
  const maxQueryBytes = o.maxQueryBytes ?? 64 * 1024 * 1024;

  const app = Fastify({ logger: o.logger ?? false, bodyLimit: 64 * 1024, genReqId: () => randomUUID() });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setErrorHandler(
    errorHandler({
      validation: 'send the wire-format object as application/octet-stream',
      body: 'send the wire-format object as application/octet-stream',
      internal: 'retry; if it persists, look at the server log',
    }),
  );

  app.addHook('onSend', async (_req, reply) => {
    reply.header('content-security-policy', CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('cache-control', 'no-store');
  });

  for (const [route, file] of Object.entries(routes)) {
    const bytes = assets.get(file);
    if (!bytes) continue;
    app.get(route, async (_req, reply) => reply.type(TYPES[file.split('.').pop()!]).send(bytes));
  }
  app.get('/api/samples', async () => o.samples ?? []);
  app.get('/api/demos', async () => ({ digit: Boolean(digits) }));

  const limits = { maxKeyBytes, maxQueryBytes };
  modelRoutes(app, '', { ...main, endpoint: o.endpoint }, o, limits);
  if (digits) {
    app.get('/digit', async (_req, reply) => reply.redirect('/digit/'));
    modelRoutes(app, '/digit', digits, o, limits);
  }

  app.setNotFoundHandler(notFoundHandler('open / for the demo page'));
  return app;
}

/**
 * One model's routes under `at` ('' or '/digit'): its client part, the evaluation keys, the
 * encrypted prediction through the inference server at `m.endpoint`.
 */
function modelRoutes(
  app: FastifyInstance,
  at: string,
  m: { modelId: string; client: ClientPart; endpoint: string },
  o: WebServerOptions,
  limits: { maxKeyBytes: number; maxQueryBytes: number },
): void {
  const { modelId, client } = m;
  const { maxKeyBytes, maxQueryBytes } = limits;
  const clientJson = JSON.stringify(client);
  const t: S3Route = { store: o.store, bucket: o.bucket, prefix: o.prefix ?? 'sealed/', endpoint: m.endpoint };

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
    if (msg.header.params !== paramsKey(client.params))
      throw new SealedError(
        'bad-keys',
        `the evaluation keys are for parameters ${String(msg.header.params)}, the model uses ${paramsKey(client.params)}`,
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

export interface RunningWebServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

export async function startWebServer(o: WebServerOptions): Promise<RunningWebServer> {
  const app = await buildWebApp(o);
  const address = await app.listen({ port: o.port ?? 0, host: o.host ?? '127.0.0.1' });
  return { app, url: address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1'), close: () => app.close() };
}
