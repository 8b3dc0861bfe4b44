// A single-record tree query (layout 'slots', src/model/trees/single-server.ts) through the
// pool: its gather cut in a part per thread (the first part also makes the flood's masks, but
// those of finishers with time to spare; the parts share a copy exchange, so each copy's seed is
// expanded by one of them), then
// finish tasks add them and complete the results (the products, the leaf sums, the flood): one
// task for one result ciphertext; a model with several shares them out over the threads, each
// redoing the two products (~0.1 s) to run its results' leaf sums (~0.1 s each) beside the others'. The query is
// already read whole and admitted (invoke-trees.ts); the parts read its sections in place, in
// shared memory: a task given views of an ordinary buffer gets a clone of all of it (for 29 MB,
// ~100 ms on the main thread before each part could start, measured on the AMD VM).
import { reviveError, safeText, SealedError } from '../errors.ts';
import { allocateCopyExchange } from '../fhe/copy-exchange.ts';
import { ciphertextBytesBound, paramsKey } from '../fhe/params.ts';
import { encodeWire, type QueryHeader, type ResultHeader, type WireMessage } from '../wire/format.ts';
import { invocationResponse, type InvocationContext, type InvocationResponse, type ResultSink } from './invocation-context.ts';
import type { KeyStore } from './key-store.ts';
import { deadlinePassed } from './query-digest.ts';
import type { TreeRecordKeys, TreeResult } from './worker-protocol.ts';

const ENCRYPT_HINT = "encrypt the record with this endpoint's tree-model client part (`sealed predict` with one record)";
const KEYS_HINT = "name the single-record evaluation keys (made by the tree model's client part for one record) in evaluation_keys_uri";

/** The query's header and sections against the model's single-record form, with no SEAL. */
export function checkTreeRecordQuery(c: InvocationContext, msg: WireMessage<QueryHeader>): { header: QueryHeader; sections: Uint8Array[] } {
  const { header: h, sections } = msg;
  if (h.model_id !== c.model.modelId)
    throw new SealedError(
      'wrong-model',
      `the query was encrypted for model ${safeText(h.model_id)}, this endpoint serves ${c.model.modelId}`,
      "fetch this endpoint's client part and encrypt again",
    );
  const single = c.model.trees?.single;
  if (!single) throw new SealedError('bad-query', 'this tree model has no single-record form', 'send the record in a batch query (layout batch)');
  if (h.params !== paramsKey(single.params))
    throw new SealedError('bad-query', 'the query declares other encryption parameters than the single-record form uses', ENCRYPT_HINT);
  if (h.records !== 1 || sections.length !== single.copies)
    throw new SealedError(
      'bad-query',
      `the query declares ${safeText(h.records)} record${h.records === 1 ? '' : 's'} in ${sections.length} ciphertexts; a single-record query holds 1 record in ${single.copies}`,
      ENCRYPT_HINT,
    );
  return { header: h, sections };
}

/** `msg`: the query (`query`, its bytes) as decodeWire read it; `sha`: its SHA-256 (hex). */
export async function evaluateTreeRecord(
  query: Uint8Array,
  msg: WireMessage<QueryHeader>,
  keys: ReturnType<KeyStore['get']>,
  expected: string | undefined,
  out: ResultSink,
  c: InvocationContext,
  t0: number,
  download: number,
  signal: AbortSignal | undefined,
  sha: string,
): Promise<InvocationResponse> {
  const { header: h } = checkTreeRecordQuery(c, msg);
  const single = c.model.trees!.single!;
  const inShared = query.buffer instanceof SharedArrayBuffer;
  if (expected !== undefined && sha !== expected)
    throw new SealedError(
      'bad-query',
      `the encrypted query's SHA-256 is ${sha}, not the query_sha256 the request names (${expected})`,
      'name the SHA-256 of the query object exactly as uploaded (or leave query_sha256 out)',
    );
  const parts = Math.max(1, Math.min(c.pool.size, 2));
  const results = single.results;
  // The query's copy in shared memory (the body form), the parts' gathers (size 2, top level),
  // the flood's masks and the results. The parts' loaded copies are SEAL memory (singleWorkerBytes).
  // With several parts, the copies they share, each loaded once (src/fhe/copy-exchange.ts).
  const stride = ciphertextBytesBound(single.params, 2);
  const reservation = c.budget?.reserve(
    (inShared ? 0 : query.length) + (parts + 2 * results) * stride + (parts > 1 ? single.copies * stride : 0),
    'the parts and result of a single-record tree query',
  );
  try {
    // The S3 form downloads into shared memory; a query in the request body is copied there once.
    const shared = inShared ? query : new Uint8Array(new SharedArrayBuffer(query.length));
    if (!inShared) shared.set(query);
    const sections = msg.sections.map((s) => shared.subarray(s.byteOffset - query.byteOffset, s.byteOffset - query.byteOffset + s.length));
    const { set, cached } = await keys;
    if (set.params !== paramsKey(single.params) || !set.relin)
      throw new SealedError('bad-keys', "the evaluation keys were not made for this model's single-record form", KEYS_HINT);
    const k: TreeRecordKeys = { id: set.id, galois: set.galois, relin: set.relin, publicKey: set.publicKey };
    const t1 = performance.now();
    const exchange = parts > 1 ? allocateCopyExchange(single.copies, stride) : undefined;
    // Result c goes to finisher c mod finishers. A finisher with fewer results than the first
    // has a leaf sum's time (~70 ms for digits) to spare: it makes its results' flood masks
    // (~22-40 ms each) instead of part 0, whose gather is then the shorter for it.
    const finishers = Math.min(parts, results);
    const shares = Array.from({ length: finishers }, (_, f) => Array.from({ length: results }, (_, c) => c).filter((c) => c % finishers === f));
    const ownMasks = shares.map((share) => share.length < shares[0].length);
    const given = shares.reduce((n, share, f) => n + (ownMasks[f] ? 0 : share.length), 0);
    const done = await settle(
      Array.from({ length: parts }, (_, part) => c.pool.runTrees({ treeRecord: 'part', part, parts, sections, masks: given, keys: k, exchange }, signal)),
    );
    if (signal?.aborted) throw deadlinePassed();
    const masks = done[0].masks ?? [];
    const partials = done.map((r) => r.partial![0] as Uint8Array);
    let dealt = 0;
    const finished = await settle(
      shares.map((share, f) =>
        c.pool.runTrees(
          {
            treeRecord: 'finish',
            partials,
            masks: ownMasks[f] ? 'own' : masks.length ? masks.slice(dealt, (dealt += share.length)) : [],
            results: share,
            keys: k,
          },
          signal,
        ),
      ),
    );
    if (signal?.aborted) throw deadlinePassed();
    const ciphertexts = Array.from({ length: results }, (_, c) => finished[c % finishers].results![Math.floor(c / finishers)] as Uint8Array);
    const header: ResultHeader = { model_id: h.model_id, params: h.params, records: 1, layout: 'slots', query_sha256: sha };
    const bytes = encodeWire('result', header, ciphertexts);
    const t2 = performance.now();
    await out.put(bytes);
    const t3 = performance.now();
    const ms = [...done, ...finished].reduce((a, r) => a + r.ms, 0);
    return invocationResponse(
      c,
      out,
      { query_sha256: sha, layout: 'slots', records: 1, ciphertexts: sections.length, keys_cached: cached, threads: parts },
      { download, deserialize: 0, evaluate: ms, serialize: 0, upload: t3 - t2, pool_wall: t2 - t1, total: t3 - t0 },
    );
  } finally {
    reservation?.release();
  }
}

/** Every task's result, or the first failure (after all have settled: no task outlives the request's memory). */
export async function settle(tasks: Promise<TreeResult>[]): Promise<TreeResult[]> {
  const settled = await Promise.allSettled(tasks);
  for (const s of settled) {
    if (s.status === 'rejected') throw s.reason;
    if (s.value.error) throw reviveError(s.value.error);
  }
  return settled.map((s) => (s as PromiseFulfilledResult<TreeResult>).value);
}
