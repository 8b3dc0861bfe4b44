// The whole client path against an endpoint: encrypt, upload, invoke, download, decrypt.
import { randomUUID } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { postprocess, type Prediction } from '../model/postprocess.ts';
import { formatS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { writeWireStream } from '../wire/stream.ts';
import type { ClientSession, Keys, Layout } from './session.ts';
import type { EncryptPool } from './encrypt-pool.ts';

export interface Transport {
  store: ObjectStore;
  bucket: string;
  prefix?: string;
  /** Base URL of the inference server (direct HTTP), e.g. http://127.0.0.1:8080 */
  endpoint: string;
  /** Another way to call /invocations (SageMaker real-time or async); default: direct HTTP. */
  invoke?: (body: Record<string, unknown>) => Promise<Record<string, unknown>>;
}

export interface PredictStats {
  layout: Layout;
  records: number;
  query_bytes: number;
  keys_bytes: number;
  keys_uploaded: boolean;
  result_bytes: number;
  ms: { encrypt: number; upload: number; invoke: number; download: number; decrypt: number; total: number };
  server: unknown;
}

/** Uploads the evaluation keys under their content id unless already there; returns their location. */
// Key objects this process has seen in place, per store: later requests skip the HEAD.
const present = new WeakMap<ObjectStore, Set<string>>();

export async function ensureKeysUploaded(t: Transport, keys: Keys): Promise<{ loc: S3Location; uploaded: boolean }> {
  const loc = { bucket: t.bucket, key: `${t.prefix ?? 'sealed/'}keys/${keys.evaluationKeysId}.keys` };
  const seen = present.get(t.store) ?? new Set<string>();
  present.set(t.store, seen);
  const uri = formatS3Uri(loc);
  if (seen.has(uri)) return { loc, uploaded: false };
  const head = await t.store.head(loc);
  const uploaded = !(head && head.size === keys.evaluationKeys.length);
  if (uploaded) await t.store.put(loc, keys.evaluationKeys, 'evaluation keys');
  seen.add(uri);
  return { loc, uploaded };
}

export async function invokeHttp(endpoint: string, body: unknown): Promise<Record<string, unknown>> {
  let res: Response;
  try {
    res = await fetch(new URL('/invocations', endpoint), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  } catch (e) {
    throw new SealedError('storage', `cannot reach the inference server at ${endpoint} (${(e as Error).message})`, 'start it with `sealed serve`, or pass --endpoint');
  }
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const code = typeof json.error === 'string' ? json.error : 'internal';
    throw new SealedError(code as never, `the server refused the request (${res.status}): ${String(json.message ?? res.statusText)}`, typeof json.hint === 'string' ? json.hint : undefined);
  }
  return json;
}

/**
 * `layout`: single (records packed per ciphertext, evaluation keys) or batch (record per slot,
 * no keys); by default the one the model's measured crossover picks for this many records.
 */
export async function predict(session: ClientSession, keys: Keys, rows: ArrayLike<number>[], t: Transport, o: { layout?: Layout; encryptPool?: EncryptPool } = {}): Promise<{ predictions: Prediction[]; scores: number[][]; stats: PredictStats }> {
  const layout = o.layout ?? session.layoutFor(rows.length);
  const t0 = performance.now();
  const id = randomUUID();
  const prefix = t.prefix ?? 'sealed/';
  const queryLoc = { bucket: t.bucket, key: `${prefix}queries/${id}.query` };
  const outLoc = { bucket: t.bucket, key: `${prefix}results/${id}.result` };
  let queryBytes: number;
  let keysUploaded = false;
  let t1: number;
  let request: Record<string, string>;
  if (layout === 'batch') {
    // Encryption and upload overlap: ciphertexts are made as the multipart upload takes them.
    if (o.encryptPool) {
      // On every core: encryption time is not separable from the upload's; both count as encrypt.
      const q = session.encryptBatchWith(rows, o.encryptPool);
      queryBytes = (await t.store.putStream(queryLoc, writeWireStream('query', q.header, q.count, q.sections), 'encrypted query')).bytes;
      t1 = performance.now();
    } else {
      const q = session.encryptBatch(rows);
      let encryptMs = 0;
      const timed = function* () {
        for (;;) {
          const s = performance.now();
          const next = q.sections.next();
          encryptMs += performance.now() - s;
          if (next.done) return;
          yield next.value;
        }
      };
      queryBytes = (await t.store.putStream(queryLoc, writeWireStream('query', q.header, q.count, toAsync(timed())), 'encrypted query')).bytes;
      t1 = t0 + encryptMs;
    }
    request = { encrypted_query_uri: formatS3Uri(queryLoc), output_uri: formatS3Uri(outLoc) };
  } else {
    const query = session.encrypt(rows);
    queryBytes = query.length;
    t1 = performance.now();
    const [k] = await Promise.all([ensureKeysUploaded(t, keys), t.store.put(queryLoc, query, 'encrypted query')]);
    keysUploaded = k.uploaded;
    request = { encrypted_query_uri: formatS3Uri(queryLoc), evaluation_keys_uri: formatS3Uri(k.loc), output_uri: formatS3Uri(outLoc) };
  }
  const t2 = performance.now();
  const server = await (t.invoke ?? ((b) => invokeHttp(t.endpoint, b)))(request);
  const t3 = performance.now();
  const { bytes: result } = await t.store.get(outLoc, 2 ** 31, 'encrypted result');
  const t4 = performance.now();
  const scores = session.decryptScores(result);
  const predictions = scores.map((sc) => postprocess(session.part, sc));
  const t5 = performance.now();
  const r = (v: number) => Math.round(v * 100) / 100;
  return {
    predictions,
    scores,
    stats: {
      layout,
      records: rows.length,
      query_bytes: queryBytes,
      keys_bytes: layout === 'batch' ? 0 : keys.evaluationKeys.length,
      keys_uploaded: keysUploaded,
      result_bytes: result.length,
      // Batch mode: upload is the wall time of encryption and upload together, minus encryption.
      ms: { encrypt: r(t1 - t0), upload: r(t2 - t1), invoke: r(t3 - t2), download: r(t4 - t3), decrypt: r(t5 - t4), total: r(t5 - t0) },
      server,
    },
  };
}

/**
 * Many records: split into requests of at most `perRequest` ciphertexts, `concurrency` in
 * flight, so a large input never becomes one huge object; results come back in order.
 */
export async function predictBatches(
  session: ClientSession,
  keys: Keys,
  rows: ArrayLike<number>[],
  t: Transport,
  o: { perRequest?: number; concurrency?: number; onProgress?: (done: number) => void; layout?: Layout; encryptPool?: EncryptPool } = {},
): Promise<{ predictions: Prediction[]; scores: number[][]; stats: PredictStats[] }> {
  const layout = o.layout ?? session.layoutFor(rows.length);
  // Batch mode: a request per batch, so encrypting the next overlaps evaluating this one.
  const size = layout === 'batch' ? session.part.batch!.records_per_batch * (o.perRequest ?? 1) : session.part.input.recordsPerCiphertext * (o.perRequest ?? 16);
  const chunks: ArrayLike<number>[][] = [];
  for (let i = 0; i < rows.length; i += size) chunks.push(rows.slice(i, i + size));
  const results: Awaited<ReturnType<typeof predict>>[] = new Array(chunks.length);
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: Math.min(o.concurrency ?? 2, chunks.length) }, async () => {
      for (let i = next++; i < chunks.length; i = next++) {
        results[i] = await predict(session, keys, chunks[i], t, { layout, encryptPool: o.encryptPool });
        done += chunks[i].length;
        o.onProgress?.(done);
      }
    }),
  );
  return { predictions: results.flatMap((r) => r.predictions), scores: results.flatMap((r) => r.scores), stats: results.map((r) => r.stats) };
}

async function* toAsync<T>(it: Iterable<T>): AsyncGenerator<T> {
  for (const v of it) {
    yield v;
    // Let the upload's sockets run between two encryptions.
    await new Promise((r) => setImmediate(r));
  }
}
