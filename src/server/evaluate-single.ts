// A single-layout query through the pool: sections stream in a window at a time, each
// ciphertext is evaluated by a worker's ModelServer, results stream out in order.
import { reviveError, SealedError } from '../errors.ts';
import { ciphertextBytesBound } from '../fhe/params.ts';
import { inputCiphertexts } from '../fhe/program.ts';
import { STREAM_PART_SIZE, STREAM_QUEUE_SIZE } from '../storage/s3.ts';
import { encodeWire, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import { writeWireStream } from '../wire/stream.ts';
import { invocationResponse, type InvocationContext, type InvocationResponse, type ResultSink } from './invocation-context.ts';
import type { KeyStore } from './key-store.ts';
import { checkSingleQuery } from './query-checks.ts';
import { deadlinePassed, NeedsDigest, type QueryDigest } from './query-digest.ts';
import type { EvaluateResult } from './worker-protocol.ts';

export interface SingleQuery {
  header: QueryHeader;
  count: number;
  sections: AsyncGenerator<Uint8Array>;
  digest: QueryDigest;
  /** The query's SHA-256 when known before it is read (declared, or hashed in a first pass). */
  expected: string | undefined;
  keys: ReturnType<KeyStore['get']> | undefined;
  /** performance.now() when the request started. */
  t0: number;
}

/**
 * Memory a single-layout query of `count` sections holds: the window's sections and results (a
 * copy each in flight), plus the result's buffers. A section is the input's ciphertext and the
 * client's rotated copies of it; a result, one ciphertext.
 */
export function singleMemory(c: InvocationContext, count: number): { window: number; streamed: boolean; held: number } {
  const window = Math.min(count, c.pool.size * 2);
  const streamed = count > window;
  const bound = ciphertextBytesBound(c.model.program.params, 2);
  const section = inputCiphertexts(c.model.program) * bound;
  return { window, streamed, held: window * (2 * section + bound) + (streamed ? (STREAM_QUEUE_SIZE + 2) * STREAM_PART_SIZE : count * bound) };
}

export async function evaluateSingle(q: SingleQuery, out: ResultSink, c: InvocationContext, signal?: AbortSignal): Promise<InvocationResponse> {
  const { header: h, count, digest, expected, t0 } = q;
  checkSingleQuery(c.model, h, count);
  if (!q.keys)
    throw new SealedError(
      'bad-request',
      'evaluation_keys_uri is missing: the single layout needs evaluation keys',
      'upload the keys written by `sealed keygen` and name them in the request',
    );
  const records = h.records;
  const { window, streamed, held } = singleMemory(c, count);
  if (streamed && expected === undefined) throw new NeedsDigest();
  const reservation = c.budget?.reserve(held, `a query of ${count} ciphertexts`);
  const inflight: Promise<EvaluateResult>[] = [];
  try {
    const keys = await q.keys;
    const tDownload = performance.now();
    const sum = { deserialize: 0, evaluate: 0, serialize: 0 };
    // Reading the query streams with the evaluation: the reads it waited for, with nothing in
    // the pool, count as download; the pool's wall time runs from the first task handed to it.
    let waited = 0;
    let tFirstTask: number | undefined;
    let tEvalEnd = tDownload;
    // When the read that finds the query's end comes after the last result (one ciphertext per
    // window), it is download time, and the upload starts after it.
    let tReadEnd = tDownload;
    let querySha: string | undefined;
    async function* evaluated(): AsyncGenerator<Uint8Array> {
      const it = q.sections[Symbol.asyncIterator]();
      let more = true;
      for (;;) {
        while (more && inflight.length < window) {
          if (signal?.aborted) throw deadlinePassed();
          const tRead = performance.now();
          const next = await it.next();
          if (inflight.length === 0) waited += performance.now() - tRead;
          if (next.done) {
            tReadEnd = performance.now();
            more = false;
            // The whole query has been read (to its end): its hash is known and checked before
            // the results still in flight are handed out, so a mismatch publishes nothing.
            querySha = digest.settle(expected);
            break;
          }
          tFirstTask ??= performance.now();
          const task = c.pool.run({ ciphertext: next.value, keys: keys.set }, signal);
          task.catch(() => undefined); // awaited in order below
          inflight.push(task);
        }
        const first = inflight[0];
        if (!first) return;
        const r = await first;
        inflight.shift();
        if (r.error) throw reviveError(r.error);
        sum.deserialize += r.ms.deserialize + r.ms.keys;
        sum.evaluate += r.ms.evaluate;
        sum.serialize += r.ms.serialize;
        tEvalEnd = performance.now();
        // Past the deadline the caller has been answered already: write nothing it does not expect.
        if (signal?.aborted) throw deadlinePassed();
        yield r.result!;
      }
    }
    const resultHeader = (sha: string): ResultHeader => ({ model_id: c.model.modelId, params: h.params, records, query_sha256: sha });
    if (streamed) {
      // expected is set (NeedsDigest above otherwise) and checked against the query at its end.
      await out.putStream(writeWireStream<ResultHeader>('result', resultHeader(expected!), count, evaluated()));
    } else {
      const results: Uint8Array[] = [];
      for await (const r of evaluated()) results.push(r);
      await out.put(encodeWire<ResultHeader>('result', resultHeader(querySha ?? digest.settle(expected)), results));
    }
    const tEnd = performance.now();
    return invocationResponse(
      c,
      out,
      { query_sha256: querySha ?? digest.settle(expected), layout: 'single', records, ciphertexts: count, keys_cached: keys.cached },
      {
        download: tDownload - t0 + waited,
        deserialize: sum.deserialize,
        evaluate: sum.evaluate,
        serialize: sum.serialize,
        upload: tEnd - Math.max(tEvalEnd, tReadEnd),
        pool_wall: tEvalEnd - (tFirstTask ?? tEvalEnd),
        total: tEnd - t0,
      },
    );
  } finally {
    // Evaluations already handed to the pool finish (or are dropped from its queue) first.
    await Promise.allSettled(inflight);
    reservation?.release();
  }
}
