// A tree-ensemble query (src/model/trees, docs/trees.md) through the pool. The circuit reads every
// input of a batch at once, so the query is not streamed: it is admitted against the request
// memory with its whole size before a byte of it is read, read whole, checked, and evaluated by
// the workers' TreeServers (the main thread runs no SEAL): a query of several batches in one task,
// a lone batch (one record, or up to 8,192) cut into a part per thread and combined in one more
// task. The result is written whole.
// Queries are large (hundreds of MB per 8,192-record batch), so the JSON (S3) form is the usual
// one; the body form works the same way for queries within the payload limit.
import { createHash } from 'node:crypto';
import { reviveError, SealedError } from '../errors.ts';
import { ciphertextBytesBound, paramsKey } from '../fhe/params.ts';
import { describeS3Location, type S3Location } from '../storage/s3.ts';
import { factoredInputs } from '../fhe/tree-factored.ts';
import { treeParts } from '../fhe/tree-circuit.ts';
import { decodeWire, encodeWire, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import type { TreeTask } from './worker-protocol.ts';
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
export function checkTreeQuery(model: ServingModel, query: Uint8Array): { header: QueryHeader; sections: Uint8Array[]; count: number; batches: number } {
  const trees = treesOf(model);
  const { header: h, sections } = decodeWire<QueryHeader>('query', query, 'the encrypted query');
  checkQueryHeader(model, h);
  if (h.layout !== 'batch')
    throw new SealedError('bad-query', 'this endpoint serves a tree ensemble, whose queries hold a record per slot (layout batch)', ENCRYPT_HINT);
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
    const { bytes } = await c.store.get(queryLoc, head.size, 'encrypted query');
    if (signal?.aborted) throw deadlinePassed();
    // transformToByteArray's array owns its buffer: it is handed to the worker, not copied.
    return await evaluateTrees(bytes, true, keys, declared, out, c, t0, performance.now() - t0, signal);
  } finally {
    await keys.catch(() => undefined);
    reservation?.release();
  }
}

/**
 * A whole tree query in one worker. `transferable`: the query's buffer may be handed to the
 * worker (the caller gives it up); otherwise it is copied, and the copy is reserved too.
 */
export async function evaluateTrees(
  query: Uint8Array,
  transferable: boolean,
  keys: ReturnType<KeyStore['get']>,
  expected: string | undefined,
  out: ResultSink,
  c: InvocationContext,
  t0: number,
  download: number,
  signal?: AbortSignal,
): Promise<InvocationResponse> {
  const { header: h, sections, count, batches } = checkTreeQuery(c.model, query);
  const trees = treesOf(c.model);
  const sha = createHash('sha256').update(query).digest('hex');
  if (expected !== undefined && sha !== expected) {
    throw new SealedError(
      'bad-query',
      `the encrypted query's SHA-256 is ${sha}, not the query_sha256 the request names (${expected})`,
      'name the SHA-256 of the query object exactly as uploaded (or leave query_sha256 out)',
    );
  }
  // A lone batch is cut into parts for every thread (the factored form's trie, split): one
  // query's latency then falls with the threads, at the cost of a combining task.
  const parts = batches === 1 && c.pool.size > 1 && trees.circuit ? treeParts(trees.circuit, c.pool.size) : [];
  const inputs = parts.map((p) => factoredInputs(p).map((i) => sections[i]));
  const copies = inputs.flat().reduce((n, b) => n + b.byteLength, 0);
  const owned =
    parts.length < 2 && transferable && query.byteOffset === 0 && query.byteLength === query.buffer.byteLength && query.buffer instanceof ArrayBuffer;
  const result = (batches + parts.length) * trees.outputs * ciphertextBytesBound(trees.params, 2);
  const reservation = c.budget?.reserve(result + (parts.length > 1 ? copies : owned ? 0 : query.byteLength), 'the result of a tree-ensemble query');
  try {
    const { set, cached } = await keys;
    if (!set.relin) throw new SealedError('bad-keys', 'the evaluation keys lack relinearization keys, which this model needs', TREE_KEYS_HINT);
    const k = { id: set.id, relin: set.relin, publicKey: set.publicKey };
    const t1 = performance.now();
    let r: { result: Uint8Array; ms: number };
    if (parts.length > 1) {
      const cts = await inParts(c, inputs, k, signal);
      const header: ResultHeader = { model_id: h.model_id, params: paramsKey(trees.params), records: h.records, layout: 'batch', query_sha256: sha };
      r = { result: encodeWire('result', header, cts.results), ms: cts.ms };
    } else {
      const sent = owned ? query : query.slice();
      const whole = await c.pool.runTrees({ trees: true, query: sent, keys: k }, signal, [sent.buffer as ArrayBuffer]);
      if (whole.error) throw reviveError(whole.error);
      r = { result: whole.result!, ms: whole.ms };
    }
    if (signal?.aborted) throw deadlinePassed();
    const t2 = performance.now();
    await out.put(r.result);
    const t3 = performance.now();
    return invocationResponse(
      c,
      out,
      { query_sha256: sha, layout: 'batch', records: h.records, ciphertexts: count, keys_cached: cached, threads: Math.max(1, parts.length) },
      { download, deserialize: 0, evaluate: r.ms, serialize: 0, upload: t3 - t2, pool_wall: t2 - t1, total: t3 - t0 },
    );
  } finally {
    reservation?.release();
  }
}

/**
 * One batch's parts on the pool's threads at once (each part's inputs copied and transferred),
 * then their sums added and flooded in one more task. `ms`: the threads' evaluation time, the
 * longest part's plus the combining.
 */
async function inParts(
  c: InvocationContext,
  inputs: Uint8Array[][],
  keys: TreeTask['keys'],
  signal?: AbortSignal,
): Promise<{ results: Uint8Array[]; ms: number }> {
  const settled = await Promise.allSettled(
    inputs.map((cts, index) => {
      const copies = cts.map((b) => b.slice());
      // The first part (dealt the least work: splitFactored) also makes the flood masks.
      const task = { treePart: true as const, index, parts: inputs.length, inputs: copies, masks: index === 0, keys };
      return c.pool.runTrees(
        task,
        signal,
        copies.map((b) => b.buffer as ArrayBuffer),
      );
    }),
  );
  const partials: (Uint8Array | number)[][] = [];
  let masks: Uint8Array[] | undefined;
  let ms = 0;
  for (const s of settled) {
    if (s.status === 'rejected') throw s.reason;
    if (s.value.error) throw reviveError(s.value.error);
    partials.push(s.value.partial!);
    masks ??= s.value.masks;
    ms = Math.max(ms, s.value.ms);
  }
  if (signal?.aborted) throw deadlinePassed();
  const combined = await c.pool.runTrees({ treeCombine: true, partials, masks, keys }, signal);
  if (combined.error) throw reviveError(combined.error);
  return { results: combined.results!, ms: ms + combined.ms };
}
