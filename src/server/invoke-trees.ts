// A tree-ensemble query (src/model/trees, docs/trees.md) through the pool. The circuit reads every
// input of a batch at once, so the query is not streamed: it is admitted against the request
// memory with its whole size before a byte of it is read, read whole, checked, and evaluated by
// the workers' TreeServers (the main thread runs no SEAL): a task per batch, or, with fewer
// batches than threads (a lone record, or up to 8,192), each batch cut into parts for the threads
// and combined in one more task. The result is written whole.
// Queries are large (hundreds of MB per 8,192-record batch), so the JSON (S3) form is the usual
// one; the body form works the same way for queries within the payload limit.
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { ciphertextBytesBound, paramsKey } from '../fhe/params.ts';
import { describeS3Location, type S3Location } from '../storage/s3.ts';
import { partInputs, treeParts, usedInputs } from '../fhe/tree-circuit.ts';
import { decodeWire, encodeWire, type QueryHeader, type ResultHeader, type WireMessage } from '../wire/format.ts';
import type { TreeKeys } from './worker-protocol.ts';
import { evaluateTreeRecord, settle } from './invoke-tree-record.ts';
import { MiB } from './budget.ts';
import { invocationResponse, type InvocationContext, type InvocationResponse, type ResultSink } from './invocation-context.ts';
import type { KeyStore } from './key-store.ts';
import { checkQueryHeader, type ServingModel, type TreeServing } from './query-checks.ts';
import { deadlinePassed } from './query-digest.ts';

const ENCRYPT_HINT = "encrypt the query with this endpoint's tree-model client part (`sealed predict`)";
export const TREE_KEYS_HINT =
  "name the evaluation keys (relinearization and public key, made by the tree model's client part) in evaluation_keys_uri; `sealed predict` uploads them";

function treesOf(model: ServingModel): TreeServing {
  if (!model.trees) throw new SealedError('internal', 'a tree query reached a server of another model');
  return model.trees;
}

/** The query's header and ciphertext count against the tree model, with no SEAL: its batches. */
export function checkTreeQuery(
  model: ServingModel,
  msg: WireMessage<QueryHeader>,
): { header: QueryHeader; sections: Uint8Array[]; count: number; batches: number } {
  const trees = treesOf(model);
  const { header: h, sections } = msg;
  checkQueryHeader(model, h);
  if (h.layout !== 'batch')
    throw new SealedError(
      'bad-query',
      'this endpoint serves a tree ensemble, whose queries hold a record per slot (layout batch), or one record (layout slots)',
      ENCRYPT_HINT,
    );
  if (h.params !== paramsKey(trees.params))
    throw new SealedError('bad-query', 'the query declares other encryption parameters than the model uses', ENCRYPT_HINT);
  const batches = Math.ceil(h.records / trees.recordsPerBatch);
  if (sections.length !== batches * trees.inputs) {
    throw new SealedError(
      'bad-query',
      `the query declares ${h.records} records in ${sections.length} ciphertexts; this model reads ${trees.inputs} per batch of ${trees.recordsPerBatch} records (${batches * trees.inputs})`,
      ENCRYPT_HINT,
    );
  }
  return { header: h, sections, count: sections.length, batches };
}

/** The JSON form: the query object's whole size reserved (or 400/503), then the object read. */
export async function invokeTreesS3(
  queryLoc: S3Location,
  keysLoc: S3Location | undefined,
  declared: string | undefined,
  out: ResultSink,
  c: InvocationContext,
  signal?: AbortSignal,
): Promise<InvocationResponse> {
  const t0 = performance.now();
  if (!keysLoc) throw new SealedError('bad-request', 'a tree-ensemble query needs evaluation keys, and the request names none', TREE_KEYS_HINT);
  const head = await c.store.head(queryLoc);
  if (!head)
    throw new SealedError('not-found', `the encrypted query was not found at ${describeS3Location(queryLoc)}`, 'upload it first (`sealed predict` does)');
  if (head.size > c.maxQueryBytes)
    throw new SealedError(
      'bad-request',
      `the encrypted query is ${head.size} bytes, over this server's limit of ${c.maxQueryBytes}`,
      'send fewer records per request',
    );
  const reservation = c.budget?.reserve(head.size, `a tree-ensemble query of ${Math.ceil(head.size / MiB)} MiB`);
  const keys = c.keys.get(keysLoc);
  keys.catch(() => undefined);
  try {
    // Into shared memory: a single-record query's parts read its sections in place (invoke-tree-record.ts).
    const { bytes, sha256 } = await c.store.getShared(queryLoc, head.size, 'encrypted query');
    if (signal?.aborted) throw deadlinePassed();
    return await evaluateTrees(bytes, keys, declared, out, c, t0, performance.now() - t0, signal, sha256);
  } finally {
    await keys.catch(() => undefined);
    reservation?.release();
  }
}

/**
 * A tree query on the pool: a task per batch (each given only the inputs the circuit reads,
 * copied out of the query and transferred), or each batch cut into parts (treeParts) combined
 * in one more task. The copies and the partial results are reserved from the request memory.
 * `sha`: the query's SHA-256 (hex), when its download already hashed it.
 */
export async function evaluateTrees(
  query: Uint8Array,
  keys: ReturnType<KeyStore['get']>,
  expected: string | undefined,
  out: ResultSink,
  c: InvocationContext,
  t0: number,
  download: number,
  signal?: AbortSignal,
  sha = createHash('sha256').update(query).digest('hex'),
): Promise<InvocationResponse> {
  const msg = decodeWire<QueryHeader>('query', query, 'the encrypted query');
  if (msg.header.layout === 'slots') return evaluateTreeRecord(query, msg, keys, expected, out, c, t0, download, signal, sha);
  const { header: h, sections, count, batches } = checkTreeQuery(c.model, msg);
  const trees = treesOf(c.model);
  if (expected !== undefined && sha !== expected) {
    throw new SealedError(
      'bad-query',
      `the encrypted query's SHA-256 is ${sha}, not the query_sha256 the request names (${expected})`,
      'name the SHA-256 of the query object exactly as uploaded (or leave query_sha256 out)',
    );
  }
  // Fewer batches than threads: each batch is cut into threads / batches parts (treeParts), so
  // one query's latency also falls with the threads; otherwise a task per batch.
  const per = Math.floor(c.pool.size / batches);
  const parts = per > 1 ? treeParts(trees.circuit, per) : [];
  const split = parts.length > 1;
  const used = usedInputs(trees.circuit);
  const partInputsOf = parts.map((p) => partInputs(trees.circuit, p));
  const inputs = Array.from({ length: batches }, (_, b) =>
    split ? partInputsOf.map((list) => list.map((i) => sections[b * trees.inputs + i])) : [used.map((i) => sections[b * trees.inputs + i])],
  );
  // Parts are copied all at once (one round of tasks); batches as their task starts, one per thread.
  const lanes = split ? batches * parts.length : Math.min(batches, c.pool.size);
  const sizes = inputs.map((b) => b.flat().reduce((n, x) => n + x.byteLength, 0));
  const copies = split ? sizes.reduce((a, b) => a + b, 0) : lanes * Math.max(...sizes);
  const K = trees.outputs;
  const partials = split ? batches * (parts.length * ciphertextBytesBound(trees.params, 3) + ciphertextBytesBound(trees.params, 2)) * K : 0;
  const result = batches * K * ciphertextBytesBound(trees.params, 2);
  const reservation = c.budget?.reserve(copies + partials + result, 'the inputs and result of a tree-ensemble query');
  try {
    const { set, cached } = await keys;
    if (set.params !== paramsKey(trees.params))
      throw new SealedError('bad-keys', "the evaluation keys were made for the model's single-record form, and the query is a batch", TREE_KEYS_HINT);
    if (!set.relin) throw new SealedError('bad-keys', 'the evaluation keys lack relinearization keys, which this model needs', TREE_KEYS_HINT);
    const k = { id: set.id, relin: set.relin, publicKey: set.publicKey };
    const t1 = performance.now();
    const r = split
      ? await batchesInParts(c, inputs, per, k, signal)
      : await inBatches(
          c,
          inputs.map((b) => b[0]),
          lanes,
          k,
          signal,
        );
    if (signal?.aborted) throw deadlinePassed();
    const header: ResultHeader = { model_id: h.model_id, params: paramsKey(trees.params), records: h.records, layout: 'batch', query_sha256: sha };
    const bytes = encodeWire('result', header, r.results);
    const t2 = performance.now();
    await out.put(bytes);
    const t3 = performance.now();
    return invocationResponse(
      c,
      out,
      {
        query_sha256: sha,
        layout: 'batch',
        records: h.records,
        ciphertexts: count,
        keys_cached: cached,
        threads: Math.min(lanes, c.pool.size),
      },
      { download, deserialize: 0, evaluate: r.ms, serialize: 0, upload: t3 - t2, pool_wall: t2 - t1, total: t3 - t0 },
    );
  } finally {
    reservation?.release();
  }
}

/** Copies of `cts` in buffers of their own, to transfer to a worker. */
function copied(cts: Uint8Array[]): { copies: Uint8Array[]; transfer: ArrayBuffer[] } {
  const copies = cts.map((b) => b.slice());
  return { copies, transfer: copies.map((b) => b.buffer as ArrayBuffer) };
}

/**
 * A task per batch, `lanes` at a time, each batch's inputs copied as its task starts; after a
 * failure no further batch starts, and the first failure is thrown once the running ones are
 * done. `ms`: the workers' time, summed.
 */
async function inBatches(
  c: InvocationContext,
  inputs: Uint8Array[][],
  lanes: number,
  keys: TreeKeys,
  signal?: AbortSignal,
): Promise<{ results: Uint8Array[]; ms: number }> {
  const results: Uint8Array[][] = new Array<Uint8Array[]>(inputs.length);
  let next = 0;
  let ms = 0;
  let failed = false;
  const lane = async () => {
    while (next < inputs.length && !failed && !signal?.aborted) {
      const b = next++;
      const { copies, transfer } = copied(inputs[b]);
      try {
        const [r] = await settle([c.pool.runTrees({ treeBatch: true, inputs: copies, keys }, signal, transfer)]);
        results[b] = r.results!;
        ms += r.ms;
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  await settle(Array.from({ length: lanes }, () => lane().then(() => ({ ms: 0 }))));
  if (signal?.aborted) throw deadlinePassed();
  return { results: results.flat(), ms };
}

/**
 * Every batch's parts at once (inParts each); the first failure is thrown once all are done.
 * `cut`: the count treeParts was asked for (the workers cut the circuit the same way).
 */
async function batchesInParts(
  c: InvocationContext,
  inputs: Uint8Array[][][],
  cut: number,
  keys: TreeKeys,
  signal?: AbortSignal,
): Promise<{ results: Uint8Array[]; ms: number }> {
  const all = await Promise.allSettled(inputs.map((b) => inParts(c, b, cut, keys, signal)));
  for (const a of all) if (a.status === 'rejected') throw a.reason;
  const done = all.map((a) => (a as PromiseFulfilledResult<{ results: Uint8Array[]; ms: number }>).value);
  return { results: done.flatMap((x) => x.results), ms: done.reduce((a, x) => a + x.ms, 0) };
}

/**
 * One batch's parts on the pool's threads at once, then their sums added, relinearized and
 * flooded in one more task; `ms`: the workers' time, summed.
 */
async function inParts(
  c: InvocationContext,
  inputs: Uint8Array[][],
  cut: number,
  keys: TreeKeys,
  signal?: AbortSignal,
): Promise<{ results: Uint8Array[]; ms: number }> {
  const done = await settle(
    inputs.map((cts, index) => {
      const { copies, transfer } = copied(cts);
      // The first part (dealt the least work: splitFactored) also makes the flood masks.
      return c.pool.runTrees({ treePart: true, index, parts: cut, inputs: copies, masks: index === 0, keys }, signal, transfer);
    }),
  );
  if (signal?.aborted) throw deadlinePassed();
  const masks = done.find((r) => r.masks)?.masks;
  const [combined] = await settle([c.pool.runTrees({ treeCombine: true, partials: done.map((r) => r.partial!), masks, keys }, signal)]);
  return { results: combined.results!, ms: done.reduce((a, r) => a + r.ms, 0) + combined.ms };
}
