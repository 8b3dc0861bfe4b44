// The CLI's path (`sealed predict`, `sealed demo`) from a ClientSession: encrypt, send, decrypt,
// many requests in order. Single-layout queries go through a Transport (transport-s3.ts or
// transport-body.ts, by `transport`); batch-mode queries are streamed into S3 as they are
// encrypted (on every core with an EncryptPool), so a large one never sits whole in memory.
//
// Integrity between clients: the request names the SHA-256 of the query uploaded, and the result
// is decrypted only if its header names that same hash (another client's result written over
// ours is refused); the evaluation keys live under their SHA-256 and an object already there is
// reused only if its content hashes to that name, not because its size matches.
import { SealedError } from '../errors.ts';
import { postprocess, type Prediction } from '../model/postprocess.ts';
import { formatS3Uri } from '../storage/s3.ts';
import type { EncryptPool } from './encrypt-pool.ts';
import { invokeWithKeys } from './invoke.ts';
import { putQueryStream, toAsync } from './query-upload.ts';
import { routeTransport } from './open-route.ts';
import { requestLocations, sha256, type S3Route } from './route.ts';
import { decryptOrRetry } from './result-range.ts';
import type { ClientSession, Keys, Layout } from './session.ts';
import type { Transport as QueryTransport, TransportMode } from './transport.ts';

export { ensureKeysUploaded, keysInPlace } from './keys-upload.ts';
export { invokeHttp, invokeWithKeys } from './invoke.ts';
export { sha256, type S3Route } from './route.ts';
/** @deprecated the S3 route of predict(): use S3Route (docs/sdk.md documents this old name; nothing here uses it). */
export type Transport = S3Route;

export interface PredictStats {
  layout: Layout;
  records: number;
  query_bytes: number;
  keys_bytes: number;
  keys_uploaded: boolean;
  result_bytes: number;
  /** How the query travelled: `s3` (objects) or `body` (the request and response bodies). */
  transport: 's3' | 'body';
  /** Body form: upload is the keys' check (and first upload), download 0 (the result came with the answer). */
  ms: { encrypt: number; upload: number; invoke: number; download: number; decrypt: number; total: number };
  server: unknown;
  /** Batch mode: set when a corrupt result was refused and the query evaluated once more (predict). */
  retries?: number;
}

export interface PredictOptions {
  layout?: Layout;
  encryptPool?: EncryptPool;
  /**
   * How single-layout queries travel [s3]: a mode, or a transport made once by routeTransport
   * (predictBatches does, so `auto` remembers a server that refused bodies). Batch-mode queries
   * always go through S3 (streamed); `body` refuses them.
   */
  transport?: TransportMode | QueryTransport;
  /** auto and body: the largest query sent as a body [6 MB]. */
  bodyLimit?: number;
}

/**
 * `layout`: single (records packed per ciphertext, evaluation keys) or batch (record per slot,
 * no keys); by default the one the model's measured crossover picks for this many records.
 */
export async function predict(
  session: ClientSession,
  keys: Keys,
  rows: ArrayLike<number>[],
  t: S3Route,
  o: PredictOptions = {},
): Promise<{ predictions: Prediction[]; scores: number[][]; stats: PredictStats }> {
  const layout = o.layout ?? session.layoutFor(rows.length);
  const t0 = performance.now();
  const sent = layout === 'batch' ? await sendBatch(session, rows, t, o) : await sendSingle(session, keys, rows, t, o);
  const t4 = performance.now();
  // Refused unless the result names this query: a result written over ours is never decrypted.
  // Batch mode: a corrupt result ciphertext has the query, still in S3, evaluated once more.
  const again =
    sent.again &&
    (async (): Promise<Sent> => {
      const a = await sent.again!();
      return {
        ...sent,
        result: a.result,
        server: a.server,
        ms: { ...sent.ms, invoke: sent.ms.invoke + a.ms.invoke, download: sent.ms.download + a.ms.download },
      };
    });
  // Batch-mode results on the encryption pool's threads when there is one.
  const decrypt = (x: Sent) =>
    o.encryptPool && layout === 'batch'
      ? session.decryptScoresWith(x.result, o.encryptPool, { querySha256: x.querySha })
      : session.decryptScores(x.result, { querySha256: x.querySha });
  const { scores, result: r, retries, retryMs } = await decryptOrRetry(sent, decrypt, again);
  const predictions = scores.map((sc) => postprocess(session.part, sc));
  const t5 = performance.now();
  const ms = (v: number) => Math.round(v * 100) / 100;
  const m = r.ms;
  return {
    predictions,
    scores,
    stats: {
      layout,
      records: rows.length,
      query_bytes: r.queryBytes,
      keys_bytes: layout === 'batch' ? 0 : keys.evaluationKeys.length,
      keys_uploaded: r.keysUploaded,
      result_bytes: r.result.length,
      transport: r.via,
      // Batch mode: upload is the wall time of encryption and upload together, minus encryption.
      ms: { encrypt: ms(m.encrypt), upload: ms(m.upload), invoke: ms(m.invoke), download: ms(m.download), decrypt: ms(t5 - t4 - retryMs), total: ms(t5 - t0) },
      server: r.server,
      ...(retries ? { retries } : {}),
    },
  };
}

interface Sent {
  result: Uint8Array;
  querySha: string;
  queryBytes: number;
  keysUploaded: boolean;
  via: 's3' | 'body';
  ms: { encrypt: number; upload: number; invoke: number; download: number };
  server: unknown;
  /** Batch mode: the query (kept in S3) evaluated and its result fetched once more. */
  again?: () => Promise<{ result: Uint8Array; server: unknown; ms: { invoke: number; download: number } }>;
}

/** One single-layout query through the chosen transport (S3 objects or the request body). */
async function sendSingle(session: ClientSession, keys: Keys, rows: ArrayLike<number>[], t: S3Route, o: PredictOptions): Promise<Sent> {
  const t0 = performance.now();
  const query = session.encrypt(rows);
  const querySha = sha256(query);
  const t1 = performance.now();
  const via = typeof o.transport === 'object' ? o.transport : routeTransport(t, o.transport ?? 's3', { limit: o.bodyLimit });
  const ev = await via.evaluate(query, { id: keys.evaluationKeysId, bytes: keys.evaluationKeys }, { querySha256: querySha });
  const body = ev.via === 'body';
  const ms = { encrypt: t1 - t0, upload: ev.ms.upload ?? ev.ms.keys ?? 0, invoke: ev.ms.invoke ?? 0, download: ev.ms.download ?? 0 };
  return { result: ev.result, querySha, queryBytes: query.length, keysUploaded: ev.keysUploaded, via: body ? 'body' : 's3', ms, server: ev.server };
}

/** One batch-mode query, streamed into S3 while it is encrypted (and hashed). */
async function sendBatch(session: ClientSession, rows: ArrayLike<number>[], t: S3Route, o: PredictOptions): Promise<Sent> {
  if (o.transport === 'body')
    throw new SealedError(
      'bad-request',
      'batch-mode queries go through S3 (they are streamed as they are encrypted, and are larger than a request body)',
      'use transport auto or s3, or --layout single',
    );
  const loc = requestLocations(t);
  const t0 = performance.now();
  let queryBytes: number;
  let querySha: string;
  let t1: number;
  // Encryption and upload overlap: ciphertexts are made as the multipart upload takes them.
  if (o.encryptPool) {
    // On every core: encryption time is not separable from the upload's; both count as encrypt.
    // The upload copies each section into its part before it asks for the next: recycled buffers.
    const q = session.encryptBatchWith(rows, o.encryptPool, true);
    ({ bytes: queryBytes, sha256: querySha } = await putQueryStream(t, loc.query, q.header, q.count, q.sections));
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
    ({ bytes: queryBytes, sha256: querySha } = await putQueryStream(t, loc.query, q.header, q.count, toAsync(timed())));
    t1 = t0 + encryptMs;
  }
  const t2 = performance.now();
  const evaluate = async () => {
    const started = performance.now();
    const invoked = await invokeWithKeys(
      t,
      { encrypted_query_uri: formatS3Uri(loc.query), output_uri: formatS3Uri(loc.result), query_sha256: querySha },
      undefined,
    );
    const t3 = performance.now();
    // Into shared memory: the encryption pool's threads decrypt views of it, with no copy.
    const { bytes: result } = await t.store.readShared(loc.result, 2 ** 31, 'encrypted result');
    return { result, server: invoked.server, ms: { invoke: t3 - started, download: performance.now() - t3 } };
  };
  const first = await evaluate();
  return {
    result: first.result,
    querySha,
    queryBytes,
    keysUploaded: false,
    via: 's3',
    ms: { encrypt: t1 - t0, upload: t2 - t1, ...first.ms },
    server: first.server,
    again: evaluate,
  };
}

/** Requests predictBatches keeps in flight unless told otherwise: encrypting the next overlaps evaluating this one. */
export const REQUESTS_IN_FLIGHT = 2;

/**
 * Many records: split into requests of at most `perRequest` ciphertexts, `concurrency` in
 * flight, so a large input never becomes one huge object; results come back in order.
 */
export async function predictBatches(
  session: ClientSession,
  keys: Keys,
  rows: ArrayLike<number>[],
  t: S3Route,
  o: PredictOptions & { perRequest?: number; concurrency?: number; onProgress?: (done: number) => void } = {},
): Promise<{ predictions: Prediction[]; scores: number[][]; stats: PredictStats[] }> {
  const layout = o.layout ?? session.layoutFor(rows.length);
  // One transport for every request, so `auto` remembers a server that refused bodies.
  const transport = typeof o.transport === 'string' && layout === 'single' ? routeTransport(t, o.transport, { limit: o.bodyLimit }) : o.transport;
  // Batch mode: a request per batch, so encrypting the next overlaps evaluating this one.
  const size =
    layout === 'batch' ? session.part.batch!.records_per_batch * (o.perRequest ?? 1) : session.part.input.recordsPerCiphertext * (o.perRequest ?? 16);
  const chunks: ArrayLike<number>[][] = [];
  for (let i = 0; i < rows.length; i += size) chunks.push(rows.slice(i, i + size));
  const results: Awaited<ReturnType<typeof predict>>[] = new Array(chunks.length);
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: Math.min(o.concurrency ?? REQUESTS_IN_FLIGHT, chunks.length) }, async () => {
      for (let i = next++; i < chunks.length; i = next++) {
        results[i] = await predict(session, keys, chunks[i], t, { layout, encryptPool: o.encryptPool, transport, bodyLimit: o.bodyLimit });
        done += chunks[i].length;
        o.onProgress?.(done);
      }
    }),
  );
  return { predictions: results.flatMap((r) => r.predictions), scores: results.flatMap((r) => r.scores), stats: results.map((r) => r.stats) };
}
