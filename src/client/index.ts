// The sealed SDK: encrypted predictions from a program, in Node or in a browser page.
//
//   const client = await createClient({ model: 'out/model', endpoint: 'http://127.0.0.1:8080' });
//   const [p] = await client.predict([record]); // record: the model's feature values
//   console.log(p.label, p.probabilities);
//   await client.close();
//
// The secret key is made and kept inside the client (this process or this page); transports
// receive only wire-format objects (docs/wire-format.md): the encrypted query and the evaluation
// keys. This module and what it imports statically are free of Node-only modules, so a bundler
// can put it in a web page; the Node-only pieces (model directories, key files, S3) load on first
// use, and only in Node. See docs/sdk.md.
import { SealedError } from '../errors.ts';
import { loadSeal } from '../fhe/seal.ts';
import { parseClientPart, type ClientPart } from '../model/client-part.ts';
import { postprocess, type Prediction } from '../model/postprocess.ts';
import { ClientSession, keysId, type Keys, type Layout, type ResultExpectation } from './session.ts';
import { sha256Hex } from '../util/sha256.ts';

export type { ClientPart, Keys, Prediction, ResultExpectation };
export { SealedError, keysId, sha256Hex };

/** What a transport receives of the keys: the public evaluation keys, never the secret key. */
export interface EvaluationKeys {
  /** SHA-256 (hex) of `bytes`: names the uploaded object, so it is uploaded once. */
  id: string;
  /** Wire format, kind 2. */
  bytes: Uint8Array;
}

/** The answer of a transport to one encrypted query. */
export interface Evaluation {
  /** The encrypted result (wire format, kind 3); only the client's secret key opens it. */
  result: Uint8Array;
  /** Whether the evaluation keys were uploaded by this call (they are uploaded once). */
  keysUploaded: boolean;
  /** Milliseconds of the transport's own steps (upload, invoke, download, round trip...). */
  ms: Record<string, number>;
  /** What the server said about the evaluation (timings_ms, records, keys_cached...). */
  server?: unknown;
}

/** Carries an encrypted query to a server and the encrypted result back. */
export interface Transport {
  /**
   * `keys` is undefined for a batch-mode query (batch mode uses no evaluation keys).
   * `info.querySha256`: the SHA-256 (hex) of `query`, for the request (the client checks the
   * result's header against it whatever the transport does).
   */
  evaluate(query: Uint8Array, keys: EvaluationKeys | undefined, info?: { querySha256: string }): Promise<Evaluation>;
  /** Whether this transport can send batch-mode queries (the S3 path can; the page proxy cannot). */
  batch?: boolean;
  close?(): Promise<void> | void;
}

/** A record: the feature values in the model's order, or an object keyed by feature name. */
export type RecordInput = ArrayLike<number> | Readonly<Record<string, number>>;

export interface ClientOptions {
  /**
   * The model's client part (encryption parameters, layout, scaling, labels; no weights): the
   * parsed object, its JSON text, or a URL to fetch it from; in Node also a model bundle
   * directory (or a directory holding client/model.json or model.json), or the model.tar.gz
   * SageMaker training writes (a local file or an s3:// URI; only the client part is read).
   */
  model: ClientPart | string | URL;
  /** Where queries are evaluated. Default: from `endpoint` (Node) or `proxy`. */
  transport?: Transport;
  /**
   * Node: base URL of an inference server (`sealed serve`, POST /invocations). Queries, keys and
   * results travel through S3: `s3Endpoint`, `bucket` and `prefix` say where, with the same
   * defaults as `sealed predict` (the embedded local S3 unless AWS is configured).
   */
  endpoint?: string;
  s3Endpoint?: string;
  bucket?: string;
  prefix?: string;
  /** Base URL of a sealed web server (`sealed demo --web`): works from Node and from browsers. */
  proxy?: string | URL;
  /** Browser: URL of node-seal's seal_throws.wasm (default: next to the bundled script). */
  wasmUrl?: string;
  /** Keys made earlier (e.g. by `generateKeys` of another client for the same model). */
  keys?: Pick<Keys, 'secretKey' | 'evaluationKeys'>;
  /**
   * Node: load the key set from this directory, or make and save one there (secret key mode
   * 0600). `true`: the directory `sealed keygen` uses (~/.sealed/keys/<model id>).
   */
  keysDir?: string | true;
}

export interface PredictStats {
  /** single (records packed per ciphertext, evaluation keys) or batch (record per slot, no keys). */
  layout: Layout;
  records: number;
  /** Bytes of the encrypted query, the evaluation keys and the encrypted result. */
  query_bytes: number;
  keys_bytes: number;
  result_bytes: number;
  keys_uploaded: boolean;
  /**
   * Milliseconds: keygen (0 when the client already had keys), encrypt, evaluate (upload,
   * server evaluation and download: the transport's round trip), decrypt, total.
   */
  ms: { keygen: number; encrypt: number; evaluate: number; decrypt: number; total: number };
  /** The transport's breakdown of `evaluate`. */
  transport_ms: Record<string, number>;
  server?: unknown;
}

export interface PredictOutcome {
  predictions: Prediction[];
  /** Decrypted raw scores per record, before the sigmoid/softmax/scaling. */
  scores: number[][];
  stats: PredictStats;
}

const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';
const now = () => performance.now();
const round = (v: number) => Math.round(v * 100) / 100;

/**
 * Loads a Node-only module of this package on first use. The specifier is not a literal on
 * purpose: bundlers for the browser leave it out, so no Node-only module reaches a web page.
 */
function nodeOnly<M>(specifier: string, what: string): Promise<M> {
  if (!isNode) return Promise.reject(new SealedError('bad-request', `${what} is available in Node only`, 'in a browser, pass `model` as a URL or object and use `proxy` or `transport`'));
  return import(/* @vite-ignore */ specifier) as Promise<M>;
}

/** An encrypting client for one model. Make it with `createClient`. */
export class SealedClient {
  /** The model's id (32 hex digits); the server refuses queries for another model. */
  readonly modelId: string;
  readonly model: ClientPart;
  private readonly session: ClientSession;
  private transport: Transport | undefined;
  private readonly ownsTransport: boolean;
  private keySet: Keys | undefined;

  /** @internal use createClient */
  constructor(session: ClientSession, transport: Transport | undefined, ownsTransport: boolean) {
    this.session = session;
    this.modelId = session.modelId;
    this.model = session.part;
    this.transport = transport;
    this.ownsTransport = ownsTransport;
  }

  /** Names of the features a record holds, in order. */
  get features(): string[] {
    return this.model.features;
  }

  /** Class names (classification models), in the order of `probabilities`. */
  get labels(): string[] | undefined {
    return this.model.labels;
  }

  /** The current keys, if any; `secretKey` must stay with the caller. */
  get keys(): Keys | undefined {
    return this.keySet;
  }

  /** Makes a fresh key set (secret key and evaluation keys) and uses it from now on. */
  generateKeys(): Keys {
    this.keySet = this.session.generateKeys();
    return this.keySet;
  }

  /** Uses keys made earlier for this model. */
  useKeys(keys: Pick<Keys, 'secretKey' | 'evaluationKeys' | 'batchSecretKey'>): void {
    this.session.useSecretKey(keys.secretKey);
    const batchSecretKey = keys.batchSecretKey ?? this.session.generateBatchKey();
    if (keys.batchSecretKey) this.session.useBatchSecretKey(keys.batchSecretKey);
    // Keys saved before circuit privacy get their public key added (the id changes with it).
    const evaluationKeys = this.session.withPublicKey(keys.evaluationKeys, keys.secretKey);
    this.keySet = { secretKey: keys.secretKey, evaluationKeys, evaluationKeysId: keysId(evaluationKeys), batchSecretKey };
  }

  /**
   * The layout for this many records: batch mode (no evaluation keys, record per slot) from the
   * model's crossover on, when the model and the transport support it; else single.
   */
  layoutFor(records: number): Layout {
    return this.transport && !this.transport.batch ? 'single' : this.session.layoutFor(records);
  }

  /** Records -> encrypted query (wire format, kind 1). Makes keys first if there are none. */
  encrypt(records: readonly RecordInput[], layout: Layout = 'single'): Uint8Array {
    if (!this.keySet) this.generateKeys();
    return this.session.encrypt(records.map((r, i) => this.row(r, i)), layout);
  }

  /**
   * Encrypted result (wire format, kind 3) -> one prediction per record. `expect.querySha256`
   * (the SHA-256 of the query sent, e.g. `sha256Hex(query)`): refuse a result for another query.
   */
  decrypt(result: Uint8Array, expect?: ResultExpectation): Prediction[] {
    return this.session.decrypt(result, expect);
  }

  /** Encrypted result -> raw scores per record (before the sigmoid, softmax or scaling). */
  decryptScores(result: Uint8Array, expect?: ResultExpectation): number[][] {
    return this.session.decryptScores(result, expect);
  }

  /** Encrypts the records, has the server evaluate them, decrypts: one prediction per record. */
  async predict(records: readonly RecordInput[]): Promise<Prediction[]> {
    return (await this.predictWithStats(records)).predictions;
  }

  /** As `predict`, with the sizes and the time of each stage. */
  async predictWithStats(records: readonly RecordInput[]): Promise<PredictOutcome> {
    const transport = this.transport;
    if (!transport) throw new SealedError('bad-request', 'this client has no server to send queries to', 'pass `endpoint` (Node), `proxy` or `transport` to createClient');
    const t0 = now();
    const makesKeys = !this.keySet;
    if (makesKeys) this.generateKeys();
    const keys = this.keySet!;
    const t1 = now();
    const layout = this.layoutFor(records.length);
    const query = this.encrypt(records, layout);
    const querySha256 = sha256Hex(query);
    const t2 = now();
    const ev = await transport.evaluate(query, layout === 'batch' ? undefined : { id: keys.evaluationKeysId, bytes: keys.evaluationKeys }, { querySha256 });
    const t3 = now();
    // Whatever carried it, the result must answer this query (its header names the query's hash).
    const scores = this.session.decryptScores(ev.result, { querySha256 });
    const predictions = scores.map((sc) => postprocess(this.model, sc));
    const t4 = now();
    return {
      predictions,
      scores,
      stats: {
        layout,
        records: records.length,
        query_bytes: query.length,
        keys_bytes: layout === 'batch' ? 0 : keys.evaluationKeys.length,
        result_bytes: ev.result.length,
        keys_uploaded: ev.keysUploaded,
        ms: { keygen: makesKeys ? round(t1 - t0) : 0, encrypt: round(t2 - t1), evaluate: round(t3 - t2), decrypt: round(t4 - t3), total: round(t4 - t0) },
        transport_ms: ev.ms,
        server: ev.server,
      },
    };
  }

  /** Frees the WASM memory holding the keys; closes the transport this client made. */
  async close(): Promise<void> {
    this.session.close();
    this.keySet = undefined;
    const t = this.transport;
    this.transport = undefined;
    if (t && this.ownsTransport) await t.close?.();
  }

  private row(r: RecordInput, i: number): ArrayLike<number> {
    if (typeof (r as ArrayLike<number>).length === 'number') return r as ArrayLike<number>;
    const o = r as Readonly<Record<string, number>>;
    return this.features.map((f) => {
      const v = o[f];
      if (typeof v !== 'number') throw new SealedError('bad-data', `record ${i + 1} has no number for feature "${f}"`, `give all ${this.features.length} features: ${this.features.slice(0, 4).join(', ')}…`);
      return v;
    });
  }
}

/** Opens a client for a model: loads SEAL (WASM) and the model's client part. */
export async function createClient(o: ClientOptions): Promise<SealedClient> {
  const part = await loadClientPart(o.model, { s3Endpoint: o.s3Endpoint });
  await loadSeal(o.wasmUrl ? () => o.wasmUrl! : undefined);
  const session = await ClientSession.open(part.model_id, part);
  let transport = o.transport;
  let owns = false;
  if (!transport && o.proxy !== undefined) [transport, owns] = [proxyTransport(o.proxy), true];
  if (!transport && o.endpoint !== undefined) [transport, owns] = [s3Transport({ endpoint: o.endpoint, s3Endpoint: o.s3Endpoint, bucket: o.bucket, prefix: o.prefix }), true];
  const client = new SealedClient(session, transport, owns);
  try {
    if (o.keys) client.useKeys(o.keys);
    else if (o.keysDir !== undefined) {
      const kf = await nodeOnly<typeof import('./key-files.ts')>('./key-files.ts', 'keysDir');
      const { keys } = await kf.loadOrCreateKeys(o.keysDir === true ? kf.defaultKeysDir(session.modelId) : o.keysDir, session);
      client.useKeys(keys);
    }
  } catch (e) {
    await client.close();
    throw e;
  }
  return client;
}

/**
 * The client part from an object, JSON text, a URL, or (Node) a model directory or a
 * model.tar.gz (a file or an s3:// URI; `s3Endpoint` as for createClient).
 */
export async function loadClientPart(model: ClientPart | string | URL, o: { s3Endpoint?: string } = {}): Promise<ClientPart & { model_id: string }> {
  if (typeof model === 'object' && !(model instanceof URL)) return parseClientPart(JSON.stringify(model), 'the given model');
  const s = String(model);
  if (s.trimStart().startsWith('{')) return parseClientPart(s, 'the given model JSON');
  if (model instanceof URL || /^(https?|blob|data):/i.test(s) || !isNode) {
    const url = new URL(s, isNode ? undefined : globalThis.location?.href);
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new SealedError('storage', `cannot fetch the model's client part from ${url.href} (${(e as Error).message})`, 'check the URL and that the server is running');
    }
    if (!res.ok) throw new SealedError('not-found', `fetching the model's client part from ${url.href} answered ${res.status}`, 'check the URL');
    return parseClientPart(await res.text(), url.href);
  }
  const source = await nodeOnly<typeof import('./model-source.ts')>('./model-source.ts', 'reading a model directory or archive');
  const { client } = await source.loadClientPart(s, { endpoint: o.s3Endpoint });
  return client as ClientPart & { model_id: string };
}

/** Makes a fresh key set for the client (same as client.generateKeys()). */
export function generateKeys(client: SealedClient): Keys {
  return client.generateKeys();
}

/** Records -> encrypted query (same as client.encrypt()). */
export function encrypt(client: SealedClient, records: readonly RecordInput[]): Uint8Array {
  return client.encrypt(records);
}

/** Encrypted result -> predictions (same as client.decrypt()). */
export function decrypt(client: SealedClient, result: Uint8Array): Prediction[] {
  return client.decrypt(result);
}

/** Encrypt, evaluate on the server, decrypt (same as client.predict()). */
export function predict(client: SealedClient, records: readonly RecordInput[]): Promise<Prediction[]> {
  return client.predict(records);
}

async function errorFrom(res: Response, what: string): Promise<SealedError> {
  const json = (await res.json().catch(() => ({}))) as { error?: unknown; message?: unknown; hint?: unknown };
  const code = typeof json.error === 'string' ? json.error : res.status === 404 ? 'not-found' : 'internal';
  return new SealedError(code as never, `${what}: the server answered ${res.status}: ${String(json.message ?? res.statusText)}`, typeof json.hint === 'string' ? json.hint : undefined);
}

/**
 * Transport to a sealed web server (src/web/server.ts): `GET`/`PUT /api/keys/<id>` uploads the
 * evaluation keys once, `POST /api/predict?keys=<id>` sends the encrypted query and answers the
 * encrypted result. Uses fetch only: works in browsers and in Node.
 */
export function proxyTransport(base: string | URL): Transport {
  const root = new URL(String(base).endsWith('/') ? String(base) : `${String(base)}/`, isNode ? undefined : globalThis.location?.href);
  const uploaded = new Set<string>();
  const send = async (path: string, init: RequestInit): Promise<Response> => {
    try {
      return await fetch(new URL(path, root), init);
    } catch (e) {
      throw new SealedError('storage', `cannot reach the sealed web server at ${root.href} (${(e as Error).message})`, 'check that it is running (`sealed demo --web`) and the URL');
    }
  };
  const octets = { 'content-type': 'application/octet-stream' };
  return {
    async evaluate(query, keys) {
      if (!keys) throw new SealedError('bad-request', 'the page proxy takes single-layout queries only', 'send fewer records than the model\'s batch crossover, or use the S3 transport');
      const ms: Record<string, number> = {};
      let keysUploaded = false;
      if (!uploaded.has(keys.id)) {
        const t0 = now();
        const head = await send(`api/keys/${keys.id}`, { method: 'GET' });
        if (!head.ok) throw await errorFrom(head, 'checking the evaluation keys');
        if (!((await head.json()) as { uploaded?: boolean }).uploaded) {
          const put = await send(`api/keys/${keys.id}`, { method: 'PUT', headers: octets, body: keys.bytes as Uint8Array<ArrayBuffer> });
          if (!put.ok) throw await errorFrom(put, 'uploading the evaluation keys');
          keysUploaded = true;
        }
        uploaded.add(keys.id);
        ms.keys_upload = round(now() - t0);
      }
      const t1 = now();
      const res = await send(`api/predict?keys=${encodeURIComponent(keys.id)}`, { method: 'POST', headers: octets, body: query as Uint8Array<ArrayBuffer> });
      if (!res.ok) {
        // Keys gone or replaced in S3: ask (and upload) again next time.
        if (res.status === 404 || res.status === 422) uploaded.delete(keys.id);
        throw await errorFrom(res, 'the encrypted prediction');
      }
      const result = new Uint8Array(await res.arrayBuffer());
      ms.round_trip = round(now() - t1);
      let server: unknown;
      try {
        server = JSON.parse(res.headers.get('x-sealed-server') ?? 'null');
      } catch {
        server = undefined;
      }
      return { result, keysUploaded, ms, server };
    },
  };
}

export interface S3TransportOptions {
  /** Base URL of the inference server (POST /invocations). */
  endpoint: string;
  /** S3-compatible endpoint; default as `sealed predict`: $SEALED_S3_ENDPOINT, AWS if configured, else the embedded local S3. */
  s3Endpoint?: string;
  /** Default: the local bucket (required with AWS S3). */
  bucket?: string;
  /** Key prefix of the objects [sealed/]. */
  prefix?: string;
}

/**
 * Node only: the SageMaker path. Uploads the evaluation keys (once, under their content id) and
 * the query to S3, invokes the server's /invocations, downloads the result.
 */
export function s3Transport(o: S3TransportOptions): Transport {
  type Ready = {
    p: typeof import('./predict.ts');
    s3: typeof import('../storage/s3.ts');
    t: import('./predict.ts').Transport;
    local?: { close(): Promise<void> };
  };
  let ready: Promise<Ready> | undefined;
  const init = async (): Promise<Ready> => {
    const [p, s3, res] = await Promise.all([
      nodeOnly<typeof import('./predict.ts')>('./predict.ts', 's3Transport'),
      nodeOnly<typeof import('../storage/s3.ts')>('../storage/s3.ts', 's3Transport'),
      nodeOnly<typeof import('../storage/resolve.ts')>('../storage/resolve.ts', 's3Transport'),
    ]);
    const where = await res.resolveS3({ endpoint: o.s3Endpoint });
    const bucket = o.bucket ?? (where.mode === 'aws' ? undefined : res.LOCAL_BUCKET);
    if (!bucket) throw new SealedError('bad-request', 'no S3 bucket given', 'pass `bucket` with a bucket the server can read and write');
    const store = new s3.ObjectStore({ endpoint: where.endpoint });
    if (where.mode !== 'aws') await store.ensureBucket(bucket);
    return { p, s3, t: { store, bucket, prefix: o.prefix, endpoint: o.endpoint }, local: where.local };
  };
  return {
    async evaluate(query, keys, info) {
      const { p, s3, t } = await (ready ??= init());
      const id = globalThis.crypto.randomUUID();
      const prefix = t.prefix ?? 'sealed/';
      const queryLoc = { bucket: t.bucket, key: `${prefix}queries/${id}.query` };
      const outLoc = { bucket: t.bucket, key: `${prefix}results/${id}.result` };
      const t0 = now();
      // ensureKeysUploaded reads only the public part; the secret key is not given to transports.
      const publicKeys = keys && { secretKey: new Uint8Array(0), evaluationKeys: keys.bytes, evaluationKeysId: keys.id };
      const [k] = await Promise.all([publicKeys && p.ensureKeysUploaded(t, publicKeys), t.store.put(queryLoc, query, 'encrypted query')]);
      const t1 = now();
      const request: Record<string, string> = { encrypted_query_uri: s3.formatS3Uri(queryLoc), output_uri: s3.formatS3Uri(outLoc), query_sha256: info?.querySha256 ?? p.sha256(query) };
      if (k) request.evaluation_keys_uri = s3.formatS3Uri(k.loc);
      const invoked = await p.invokeWithKeys(t, request, publicKeys);
      const t2 = now();
      const { bytes: result } = await t.store.get(outLoc, 2 ** 31, 'encrypted result');
      const t3 = now();
      return { result, keysUploaded: (k?.uploaded ?? false) || invoked.keysUploaded, ms: { upload: round(t1 - t0), invoke: round(t2 - t1), download: round(t3 - t2) }, server: invoked.server };
    },
    batch: true,
    async close() {
      if (!ready) return;
      const r = await ready.catch(() => undefined);
      ready = undefined;
      r?.t.store.close();
      await r?.local?.close();
    },
  };
}
