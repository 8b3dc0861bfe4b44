// The whole client path against an endpoint: encrypt, upload, invoke, download, decrypt.
//
// Integrity between clients: the request names the SHA-256 of the query uploaded, and the result
// is decrypted only if its header names that same hash (another client's result written over
// ours is refused); the evaluation keys live under their SHA-256 and an object already there is
// reused only if its content hashes to that name, not because its size matches.
import { createHash, randomUUID } from 'node:crypto';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { isSealedError, safeText, SealedError } from '../errors.ts';
import { postprocess, type Prediction } from '../model/postprocess.ts';
import { describeS3Location, formatS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
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

/** SHA-256 of `bytes`, lowercase hex (node:crypto: this module runs in Node only). */
export const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

// Key objects this process has seen in place, per store: later requests skip the check.
const present = new WeakMap<ObjectStore, Set<string>>();

/**
 * Uploads the evaluation keys under their content id unless the object there already holds them;
 * returns their location. `recheck`: forget that this process saw them in place (the server
 * could not use them: the object was replaced or deleted since).
 */
export async function ensureKeysUploaded(t: Transport, keys: Keys, o: { recheck?: boolean } = {}): Promise<{ loc: S3Location; uploaded: boolean }> {
  const loc = { bucket: t.bucket, key: `${t.prefix ?? 'sealed/'}keys/${keys.evaluationKeysId}.keys` };
  const seen = present.get(t.store) ?? new Set<string>();
  present.set(t.store, seen);
  const uri = formatS3Uri(loc);
  if (o.recheck) seen.delete(uri);
  if (seen.has(uri)) return { loc, uploaded: false };
  const inPlace = await keysInPlace(t.store, loc, keys.evaluationKeys, keys.evaluationKeysId);
  if (!inPlace) await putKeys(t.store, loc, keys.evaluationKeys, keys.evaluationKeysId);
  seen.add(uri);
  return { loc, uploaded: !inPlace };
}

/**
 * Whether the object at `loc` holds exactly `bytes` (whose SHA-256 is `id`). A matching size
 * proves nothing (another client's result can have any size, and anyone who can write the
 * object can make it any size); user metadata can be set to anything by whoever writes the
 * object. So: S3's own full-object SHA-256 checksum when the store keeps one (Amazon S3 does
 * for objects written by putKeys, computing and checking it itself), else download and hash
 * (the embedded S3 server keeps no checksums). Either way only content decides.
 */
export async function keysInPlace(store: ObjectStore, loc: S3Location, bytes: Uint8Array, id: string): Promise<boolean> {
  const head = await headWithChecksum(store, loc);
  if (!head || head.size !== bytes.length) return false;
  if (head.sha256 !== undefined) return head.sha256 === id;
  try {
    const got = await store.get(loc, bytes.length, 'evaluation keys');
    return sha256(got.bytes) === id;
  } catch (e) {
    // Replaced or deleted between the HEAD and the GET: not our keys either way.
    if (isSealedError(e) && (e.code === 'not-found' || e.code === 'bad-request')) return false;
    throw e;
  }
}

async function headWithChecksum(store: ObjectStore, loc: S3Location): Promise<{ size: number; sha256?: string } | undefined> {
  try {
    const r = await store.client.send(new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key, ChecksumMode: 'ENABLED' }));
    // Only a full-object checksum says what the bytes are (a multipart upload's is a hash of the
    // parts' hashes, "...-N").
    const c = r.ChecksumSHA256;
    const full = c && !c.includes('-') && r.ChecksumType !== 'COMPOSITE' ? Buffer.from(c, 'base64').toString('hex') : undefined;
    return { size: r.ContentLength ?? 0, sha256: full };
  } catch (e) {
    const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (err.name === 'NotFound' || err.name === 'NoSuchKey' || err.$metadata?.httpStatusCode === 404) return undefined;
    if (err.$metadata?.httpStatusCode === 403) throw new SealedError('storage', `access denied to ${describeS3Location(loc)}`, 'give your identity read and list access to your keys prefix (npm run deploy -- policies prints the client policy)', { cause: e });
    throw new SealedError('storage', `checking the evaluation keys at ${describeS3Location(loc)} failed (${safeText(err.name ?? 'error', 40)})`, 'check the S3 endpoint and that the service is reachable; then retry', { cause: e });
  }
}

/** PutObject with S3's SHA-256 checksum: S3 checks the bytes against it and keeps it for keysInPlace. */
async function putKeys(store: ObjectStore, loc: S3Location, bytes: Uint8Array, id: string): Promise<void> {
  try {
    await store.client.send(
      new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: bytes, ContentType: 'application/octet-stream', ServerSideEncryption: 'AES256', ChecksumAlgorithm: 'SHA256', ChecksumSHA256: Buffer.from(id, 'hex').toString('base64') }),
    );
  } catch (e) {
    const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (err.$metadata?.httpStatusCode === 403) throw new SealedError('storage', `access denied to ${describeS3Location(loc)}`, 'give your identity write access to your keys prefix (npm run deploy -- policies prints the client policy)', { cause: e });
    throw new SealedError('storage', `uploading the evaluation keys to ${describeS3Location(loc)} failed (${safeText(err.name ?? 'error', 40)})`, 'check the S3 endpoint and that the service is reachable; then retry', { cause: e });
  }
}

/**
 * Invokes the endpoint. When the server could not use the evaluation keys (the object was
 * replaced, or deleted, after this process last saw it in place), checks them again, uploads
 * them if they are not there as they should be, and tries once more.
 */
export async function invokeWithKeys(t: Transport, request: Record<string, string>, keys: Keys | undefined): Promise<{ server: Record<string, unknown>; keysUploaded: boolean }> {
  const call = () => (t.invoke ?? ((b) => invokeHttp(t.endpoint, b)))(request);
  try {
    return { server: await call(), keysUploaded: false };
  } catch (e) {
    if (!keys || !isSealedError(e) || (e.code !== 'bad-keys' && e.code !== 'not-found')) throw e;
    const again = await ensureKeysUploaded(t, keys, { recheck: true });
    if (!again.uploaded) throw e;
    return { server: await call(), keysUploaded: true };
  }
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
  let querySha: string;
  let keysUploaded = false;
  let t1: number;
  let request: Record<string, string>;
  if (layout === 'batch') {
    // Encryption and upload overlap: ciphertexts are made as the multipart upload takes them.
    if (o.encryptPool) {
      // On every core: encryption time is not separable from the upload's; both count as encrypt.
      const q = session.encryptBatchWith(rows, o.encryptPool);
      const h = hashing(writeWireStream('query', q.header, q.count, q.sections));
      queryBytes = (await t.store.putStream(queryLoc, h.stream, 'encrypted query')).bytes;
      querySha = h.hex();
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
      const h = hashing(writeWireStream('query', q.header, q.count, toAsync(timed())));
      queryBytes = (await t.store.putStream(queryLoc, h.stream, 'encrypted query')).bytes;
      querySha = h.hex();
      t1 = t0 + encryptMs;
    }
    request = { encrypted_query_uri: formatS3Uri(queryLoc), output_uri: formatS3Uri(outLoc), query_sha256: querySha };
  } else {
    const query = session.encrypt(rows);
    queryBytes = query.length;
    querySha = sha256(query);
    t1 = performance.now();
    const [k] = await Promise.all([ensureKeysUploaded(t, keys), t.store.put(queryLoc, query, 'encrypted query')]);
    keysUploaded = k.uploaded;
    request = { encrypted_query_uri: formatS3Uri(queryLoc), evaluation_keys_uri: formatS3Uri(k.loc), output_uri: formatS3Uri(outLoc), query_sha256: querySha };
  }
  const t2 = performance.now();
  const invoked = await invokeWithKeys(t, request, layout === 'single' ? keys : undefined);
  const server = invoked.server;
  keysUploaded ||= invoked.keysUploaded;
  const t3 = performance.now();
  const { bytes: result } = await t.store.get(outLoc, 2 ** 31, 'encrypted result');
  const t4 = performance.now();
  // Refused unless the result names this query: a result written over ours is never decrypted.
  const scores = session.decryptScores(result, { querySha256: querySha });
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

/** The bytes of `source` as they pass, and their SHA-256 once all have passed. */
function hashing(source: AsyncIterable<Uint8Array>): { stream: AsyncGenerator<Uint8Array>; hex(): string } {
  const hash = createHash('sha256');
  let done = false;
  return {
    stream: (async function* () {
      for await (const chunk of source) {
        hash.update(chunk);
        yield chunk;
      }
      done = true;
    })(),
    hex() {
      if (!done) throw new SealedError('internal', 'the query was not uploaded to its end');
      return hash.digest('hex');
    },
  };
}

async function* toAsync<T>(it: Iterable<T>): AsyncGenerator<T> {
  for (const v of it) {
    yield v;
    // Let the upload's sockets run between two encryptions.
    await new Promise((r) => setImmediate(r));
  }
}
