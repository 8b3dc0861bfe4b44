// A batch-mode query through the pool: checked, admitted to a batch slot and its memory, then
// streamed through evaluateBatches (batch.ts) a batch at a time, the result streamed back out.
import { SealedError } from '../errors.ts';
import { outputsOf, recordsPerBatch, type BatchPlan } from '../fhe/batch-plan.ts';
import { STREAM_PART_SIZE, STREAM_QUEUE_SIZE } from '../storage/s3.ts';
import type { QueryHeader, ResultHeader } from '../wire/format.ts';
import { writeWireStream } from '../wire/stream.ts';
import { evaluateBatches, type BatchTimings } from './batch.ts';
import { batchMemory } from './batch-memory.ts';
import type { Reservation } from './budget.ts';
import { invocationResponse, type InvocationContext, type InvocationResponse, type ResultSink } from './invocation-context.ts';
import { batchCount, checkBatchQuery } from './query-checks.ts';
import { deadlinePassed, NeedsDigest, type QueryDigest } from './query-digest.ts';

export interface BatchQuery {
  header: QueryHeader;
  count: number;
  sections: AsyncGenerator<Uint8Array>;
  /** Where the next section goes (WireStream.into). */
  into?: (dst: Uint8Array) => void;
  digest: QueryDigest;
  expected: string | undefined;
  t0: number;
}

export async function invokeBatch(q: BatchQuery, out: ResultSink, c: InvocationContext, signal?: AbortSignal): Promise<InvocationResponse> {
  const { plan, batches } = checkBatchQuery(c.model, q.header, q.count);
  const slots = c.batchSlots;
  if (slots && slots.used >= slots.max) {
    throw new SealedError(
      'overloaded',
      `the server is evaluating ${slots.max} batch-mode requests already`,
      'retry after the number of seconds in Retry-After',
    );
  }
  // The result always streams out, header (with the query's hash) first. (After the check above:
  // a request refused for capacity costs no first pass over its query.)
  if (q.expected === undefined) throw new NeedsDigest();
  // Fewer records cannot help a query of one batch: a batch costs the same however full.
  const reservation: Reservation | undefined = c.budget?.reserve(
    batchMemory(plan, batches) + (STREAM_QUEUE_SIZE + 2) * STREAM_PART_SIZE,
    `a batch-mode query of ${batches} batches`,
    batches > 1
      ? `send fewer records per request (one batch is ${recordsPerBatch(plan)} records), or run the server with more memory`
      : 'one batch needs more than this server has for a request, however few its records: run the server with more memory (sealed serve --memory-budget-mb, SEALED_MEMORY_BUDGET_MB), or send records in the single layout (sealed predict --layout single)',
  );
  if (slots) slots.used++;
  try {
    return await runBatch(q, q.expected, out, c, plan, signal);
  } finally {
    if (slots) slots.used--;
    reservation?.release();
  }
}

async function runBatch(
  q: BatchQuery,
  expected: string,
  out: ResultSink,
  c: InvocationContext,
  plan: BatchPlan,
  signal?: AbortSignal,
): Promise<InvocationResponse> {
  const { header: h, count, sections, digest, t0 } = q;
  const batches = batchCount(plan, h.records);
  const tHeader = performance.now();
  const timings: BatchTimings = { load: 0, evaluate: 0, save: 0, evaluate_wall: 0, batches: 0 };
  const outs = batches * outputsOf(plan);
  // The re-randomization key (first section) goes to the workers in shared memory; a model
  // without circuit privacy ignores it.
  let rerandKey: SharedArrayBuffer | undefined;
  if (h.rerand_key === true) {
    const first = await sections.next();
    if (first.done) throw new SealedError('bad-query', 'the query ends before its re-randomization key');
    rerandKey = new SharedArrayBuffer(first.value.length);
    new Uint8Array(rerandKey).set(first.value);
  }
  const results = evaluateBatches(plan, h.records, sections, c.pool, timings, {
    signal,
    rerandKey: plan.privacy === 'flood' ? rerandKey : undefined,
    buffers: c.batchBuffers,
    into: q.into,
    // Sections in SEAL's own forms (older clients) are loaded whole: more than batchMemory.
    reserve: c.budget && ((bytes) => c.budget!.reserve(bytes, `a batch-mode query of ${batches} batches in SEAL's ciphertext form`)),
  });
  async function* guarded(): AsyncGenerator<Uint8Array> {
    for await (const r of results) {
      // Past the deadline the caller has been answered already: finish nothing it does not expect.
      if (signal?.aborted) throw deadlinePassed();
      yield r;
    }
    // evaluateBatches has read the query to its end: check its hash before the upload completes.
    digest.settle(expected);
  }
  const tEval = performance.now();
  const header: ResultHeader = { model_id: c.model.modelId, params: h.params, records: h.records, layout: 'batch', query_sha256: expected };
  await out.putStream(writeWireStream<ResultHeader>('result', header, outs, guarded()));
  const tEnd = performance.now();
  return invocationResponse(
    c,
    out,
    { query_sha256: expected, layout: 'batch', records: h.records, ciphertexts: count - (h.rerand_key === true ? 1 : 0), keys_cached: false },
    {
      download: tHeader - t0,
      deserialize: timings.load,
      evaluate: timings.evaluate,
      serialize: timings.save,
      upload: 0,
      pool_wall: timings.evaluate_wall,
      total: tEnd - tEval + (tEval - t0),
    },
  );
}
