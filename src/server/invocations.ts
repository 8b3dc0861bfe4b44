// One invocation in the JSON form: fetch the encrypted query and the evaluation keys from S3,
// evaluate every ciphertext in the pool (in parallel across workers, each through its
// ModelServer), write the encrypted result to S3. The query is hashed as it streams in; the
// result names that hash. The body form (invoke-body.ts) shares everything after the download.
import { formatS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
import type { QueryHeader } from '../wire/format.ts';
import { readWireStream } from '../wire/stream.ts';
import { checkRequest, type InvocationRequest } from './access.ts';
import { evaluateSingle } from './evaluate-single.ts';
import type { InvocationContext, InvocationResponse, ResultSink } from './invocation-context.ts';
import { invokeBatch } from './invoke-batch.ts';
import { invokeTreesS3 } from './invoke-trees.ts';
import type { KeyStore } from './key-store.ts';
import { checkQueryHeader, sectionLimits } from './query-checks.ts';
import { digestObject, NeedsDigest, QueryDigest } from './query-digest.ts';

/** An S3 object as the place a result goes. */
export function s3Sink(store: ObjectStore, loc: S3Location): ResultSink {
  return {
    uri: formatS3Uri(loc),
    put: async (bytes) => {
      await store.put(loc, bytes, 'encrypted result');
    },
    putStream: async (stream) => {
      await store.putStream(loc, stream, 'encrypted result');
    },
  };
}

export async function invoke(req: InvocationRequest, c: InvocationContext, signal?: AbortSignal): Promise<InvocationResponse> {
  const t0 = performance.now();
  const { queryLoc, keysLoc, outLoc, declared } = checkRequest(req, c);
  // A tree ensemble's queries are read whole, not streamed (invoke-trees.ts).
  if (c.model.trees) return invokeTreesS3(queryLoc, keysLoc, declared, s3Sink(c.store, outLoc), c, signal);

  // The keys download starts at once (single layout); the query streams in.
  const keysPromise = keysLoc ? c.keys.get(keysLoc) : undefined;
  keysPromise?.catch(() => undefined);
  try {
    let expected = declared;
    for (;;) {
      const query = await c.store.getStream(queryLoc, c.maxQueryBytes, 'encrypted query');
      // At the deadline the download stops: the stream then throws and the evaluation unwinds.
      const stop = () => query.cancel();
      signal?.addEventListener('abort', stop, { once: true });
      try {
        const digest = new QueryDigest(query.size);
        return await evaluateQuery(digest.wrap(query.stream), digest, expected, keysPromise, s3Sink(c.store, outLoc), c, t0, signal);
      } catch (e) {
        if (!(e instanceof NeedsDigest)) throw e;
      } finally {
        signal?.removeEventListener('abort', stop);
        // A refused or failed query is not read to its end: release the S3 connection.
        query.cancel();
      }
      // The request named no hash and the result streams out, header first: hash the query in a
      // first pass, then evaluate it (the second read is checked against this hash as well).
      expected = await digestObject(c, queryLoc, signal);
    }
  } finally {
    // The request's work has stopped only when its keys download has too.
    await keysPromise?.catch(() => undefined);
  }
}

/** A query streaming in (either form): its header checked, then the layout's path through the pool. */
export async function evaluateQuery(
  stream: AsyncIterable<Uint8Array>,
  digest: QueryDigest,
  expected: string | undefined,
  keys: ReturnType<KeyStore['get']> | undefined,
  out: ResultSink,
  c: InvocationContext,
  t0: number,
  signal?: AbortSignal,
): Promise<InvocationResponse> {
  const msg = await readWireStream<QueryHeader>('query', stream, 'the encrypted query', (h) => sectionLimits(c.model, c.maxQueryBytes, h));
  const q = { header: msg.header, count: msg.count, sections: msg.sections, into: msg.into, digest, expected, t0 };
  if (checkQueryHeader(c.model, msg.header) === 'batch') return invokeBatch(q, out, c, signal);
  return evaluateSingle({ ...q, keys }, out, c, signal);
}
