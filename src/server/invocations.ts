// One invocation: fetch the encrypted query and the evaluation keys from S3, evaluate every
// ciphertext in the pool (in parallel across workers), write the encrypted result to S3.
import { safeText, SealedError, type ErrorCode } from '../errors.ts';
import { ciphertextBytesBound, paramsKey } from '../fhe/params.ts';
import type { Program } from '../fhe/program.ts';
import { formatS3Uri, parseS3Uri, STREAM_PART_SIZE, STREAM_QUEUE_SIZE, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { encodeWire, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import { readWireStream, writeWireStream, type StreamLimits } from '../wire/stream.ts';
import type { BatchPlan } from '../fhe/batch-plan.ts';
import { outputsOf } from '../fhe/batch-plan.ts';
import { batchCount, batchMemory, evaluateBatches, type BatchTimings } from './batch.ts';
import type { MemoryBudget, Reservation } from './budget.ts';
import type { KeyStore } from './key-store.ts';
import type { EvaluationPool } from './pool.ts';
import type { EvaluateResult } from './worker.ts';

export interface InvocationRequest {
  encrypted_query_uri: string;
  /** Needed by the single layout; batch mode uses no evaluation keys. */
  evaluation_keys_uri?: string;
  output_uri: string;
}

export interface InvocationResponse {
  output_uri: string;
  model_id: string;
  layout: 'single' | 'batch';
  records: number;
  ciphertexts: number;
  keys_cached: boolean;
  timings_ms: { download: number; deserialize: number; evaluate: number; serialize: number; upload: number; pool_wall: number; total: number };
}

export interface ServingModel {
  modelId: string;
  program: Program;
  recordsPerCiphertext: number;
  batch?: BatchPlan;
}

export interface InvocationContext {
  model: ServingModel;
  store: ObjectStore;
  keys: KeyStore;
  pool: EvaluationPool;
  maxQueryBytes: number;
  /** Batch-mode requests in evaluation now, and how many may be (each holds two batches in memory). */
  batchSlots?: { max: number; used: number };
  /** Memory for requests: each reserves the bytes it will hold before it reads them. */
  budget?: MemoryBudget;
  /** s3://bucket/prefix locations the server may read (query, keys) and write (results); empty: any. */
  allowRead: string[];
  allowWrite: string[];
}

function allowed(uri: string, list: string[], field: string, verb: string): void {
  if (list.length && !list.some((p) => uri.startsWith(p))) {
    throw new SealedError('forbidden', `${field} is outside the locations this endpoint may ${verb}`, `use a location under ${list.join(' or ')}`);
  }
}

const safe = (v: unknown) => safeText(v, 64);

export async function invoke(req: InvocationRequest, c: InvocationContext, signal?: AbortSignal): Promise<InvocationResponse> {
  const t0 = performance.now();
  const queryLoc = parseS3Uri(req.encrypted_query_uri, 'encrypted_query_uri');
  const keysLoc = req.evaluation_keys_uri === undefined ? undefined : parseS3Uri(req.evaluation_keys_uri, 'evaluation_keys_uri');
  const outLoc = parseS3Uri(req.output_uri, 'output_uri');
  allowed(formatS3Uri(queryLoc), c.allowRead, 'encrypted_query_uri', 'read');
  if (keysLoc) allowed(formatS3Uri(keysLoc), c.allowRead, 'evaluation_keys_uri', 'read');
  allowed(formatS3Uri(outLoc), c.allowWrite, 'output_uri', 'write');

  // The keys download starts at once (single layout); the query streams in.
  const keysPromise = keysLoc ? c.keys.get(keysLoc) : undefined;
  keysPromise?.catch(() => undefined);
  try {
    const query = await c.store.getStream(queryLoc, c.maxQueryBytes, 'encrypted query');
    // At the deadline the download stops: the stream then throws and the evaluation unwinds.
    const stop = () => query.cancel();
    signal?.addEventListener('abort', stop, { once: true });
    try {
      return await evaluateQuery(query.stream, keysPromise, outLoc, c, t0, signal);
    } finally {
      signal?.removeEventListener('abort', stop);
      // A refused or failed query is not read to its end: release the S3 connection.
      query.cancel();
    }
  } finally {
    // The request's work has stopped only when its keys download has too.
    await keysPromise?.catch(() => undefined);
  }
}

const deadlinePassed = () => new SealedError('deadline', 'the request passed its deadline');

/** Section bounds of the model's layouts, known once the query's header is read. */
function sectionLimits(c: InvocationContext, h: QueryHeader): StreamLimits {
  const params = h.layout === 'batch' && c.model.batch ? c.model.batch.params : c.model.program.params;
  // A SEAL object is at least its 16-byte serialization header plus a ciphertext's fields.
  return { minSection: 64, maxSection: ciphertextBytesBound(params, 2), maxSections: Math.floor(c.maxQueryBytes / 68) };
}

async function evaluateQuery(stream: AsyncIterable<Uint8Array>, keysPromise: ReturnType<KeyStore['get']> | undefined, outLoc: S3Location, c: InvocationContext, t0: number, signal?: AbortSignal): Promise<InvocationResponse> {
  const msg = await readWireStream<QueryHeader>('query', stream, 'the encrypted query', (h) => sectionLimits(c, h));
  const h = msg.header;
  if (h.model_id !== c.model.modelId) {
    throw new SealedError('wrong-model', `the query was encrypted for model ${safe(h.model_id)}, this endpoint serves ${c.model.modelId}`, "fetch this endpoint's client part and encrypt again");
  }
  const records = h.records;
  if (!Number.isInteger(records) || records < 1) throw new SealedError('bad-query', `the query declares ${safe(records)} records`);
  if (h.layout === 'batch') return invokeBatch(h, msg.count, msg.sections, outLoc, c, t0, signal);
  if (h.layout !== undefined && h.layout !== 'single') throw new SealedError('bad-query', `the query's layout ${safe(h.layout)} is not one of single, batch`);

  if (h.params !== paramsKey(c.model.program.params)) throw new SealedError('bad-query', 'the query declares other encryption parameters than the model uses');
  if (Math.ceil(records / c.model.recordsPerCiphertext) !== msg.count) {
    throw new SealedError('bad-query', `the query declares ${records} records in ${msg.count} ciphertexts, which does not match the model's ${c.model.recordsPerCiphertext} records per ciphertext`);
  }
  if (!keysPromise) throw new SealedError('bad-request', 'evaluation_keys_uri is missing: the single layout needs evaluation keys', 'upload the keys written by `sealed keygen` and name them in the request');
  const count = msg.count;
  // Sections stream into the pool, a window at a time; results stream out in order. Memory:
  // the window's queries and results (a copy each in flight), plus the upload's buffers.
  const window = Math.min(count, c.pool.size * 2);
  const streamed = count > window;
  const bound = ciphertextBytesBound(c.model.program.params, 2);
  const held = window * 3 * bound + (streamed ? (STREAM_QUEUE_SIZE + 2) * STREAM_PART_SIZE : count * bound);
  const reservation = c.budget?.reserve(held, `a query of ${count} ciphertexts`);
  const inflight: Promise<EvaluateResult>[] = [];
  try {
    const keys = await keysPromise;
    const tDownload = performance.now();
    const sum = { deserialize: 0, evaluate: 0, serialize: 0 };
    let tEvalEnd = tDownload;
    async function* evaluated(): AsyncGenerator<Uint8Array> {
      const it = msg.sections[Symbol.asyncIterator]();
      let more = true;
      for (;;) {
        while (more && inflight.length < window) {
          if (signal?.aborted) throw deadlinePassed();
          const next = await it.next();
          if (next.done) {
            more = false;
            break;
          }
          const task = c.pool.run({ ciphertext: next.value, keys: keys.set }, signal);
          task.catch(() => undefined); // awaited in order below
          inflight.push(task);
        }
        const first = inflight[0];
        if (!first) return;
        const r = await first;
        inflight.shift();
        if (r.error) throw new SealedError(r.error.code as ErrorCode, r.error.message, r.error.hint);
        sum.deserialize += r.ms.deserialize + r.ms.keys;
        sum.evaluate += r.ms.evaluate;
        sum.serialize += r.ms.serialize;
        tEvalEnd = performance.now();
        // Past the deadline the caller has been answered already: write nothing it does not expect.
        if (signal?.aborted) throw deadlinePassed();
        yield r.result!;
      }
    }
    const header: ResultHeader = { model_id: c.model.modelId, params: h.params, records };
    if (streamed) {
      await c.store.putStream(outLoc, writeWireStream<ResultHeader>('result', header, count, evaluated()), 'encrypted result');
    } else {
      const results: Uint8Array[] = [];
      for await (const r of evaluated()) results.push(r);
      await c.store.put(outLoc, encodeWire<ResultHeader>('result', header, results), 'encrypted result');
    }
    const tEnd = performance.now();
    return {
      output_uri: formatS3Uri(outLoc),
      model_id: c.model.modelId,
      layout: 'single',
      records,
      ciphertexts: count,
      keys_cached: keys.cached,
      timings_ms: {
        download: round(tDownload - t0),
        deserialize: round(sum.deserialize),
        evaluate: round(sum.evaluate),
        serialize: round(sum.serialize),
        upload: round(tEnd - tEvalEnd),
        pool_wall: round(tEvalEnd - tDownload),
        total: round(tEnd - t0),
      },
    };
  } finally {
    // Evaluations already handed to the pool finish (or are dropped from its queue) first.
    await Promise.allSettled(inflight);
    reservation?.release();
  }
}

/** Batch mode: streams the query through the pool a batch at a time and the result back out. */
async function invokeBatch(h: QueryHeader, count: number, sections: AsyncGenerator<Uint8Array>, outLoc: S3Location, c: InvocationContext, t0: number, signal?: AbortSignal): Promise<InvocationResponse> {
  const plan = c.model.batch;
  if (!plan) throw new SealedError('bad-query', 'the query uses batch mode, which this model does not offer', 'encrypt with the single layout (`sealed predict --layout single`)');
  if (h.params !== paramsKey(plan.params)) throw new SealedError('bad-query', 'the query declares other encryption parameters than the model uses in batch mode');
  const batches = batchCount(plan, h.records);
  if (count !== batches * plan.inputs) {
    throw new SealedError('bad-query', `the query declares ${h.records} records in ${count} ciphertexts; batch mode needs ${plan.inputs} per batch of ${plan.params.polyModulusDegree / 2} records (${batches * plan.inputs})`);
  }
  const slots = c.batchSlots;
  if (slots && slots.used >= slots.max) {
    throw new SealedError('overloaded', `the server is evaluating ${slots.max} batch-mode requests already`, 'retry after the number of seconds in Retry-After');
  }
  const reservation: Reservation | undefined = c.budget?.reserve(batchMemory(plan) + (STREAM_QUEUE_SIZE + 2) * STREAM_PART_SIZE, `a batch-mode query of ${batches} batches`);
  if (slots) slots.used++;
  try {
    return await runBatch(h, count, sections, outLoc, c, plan, t0, signal);
  } finally {
    if (slots) slots.used--;
    reservation?.release();
  }
}

async function runBatch(h: QueryHeader, count: number, sections: AsyncGenerator<Uint8Array>, outLoc: S3Location, c: InvocationContext, plan: BatchPlan, t0: number, signal?: AbortSignal): Promise<InvocationResponse> {
  const batches = batchCount(plan, h.records);
  const tHeader = performance.now();
  const timings: BatchTimings = { load: 0, evaluate: 0, save: 0, evaluate_wall: 0, batches: 0 };
  const outs = batches * outputsOf(plan);
  const results = evaluateBatches(plan, h.records, sections, c.pool, timings, signal);
  async function* guarded(): AsyncGenerator<Uint8Array> {
    for await (const r of results) {
      // Past the deadline the caller has been answered already: finish nothing it does not expect.
      if (signal?.aborted) throw new SealedError('deadline', 'the request passed its deadline');
      yield r;
    }
  }
  const tEval = performance.now();
  await c.store.putStream(outLoc, writeWireStream<ResultHeader>('result', { model_id: c.model.modelId, params: h.params, records: h.records, layout: 'batch' }, outs, guarded()), 'encrypted result');
  const tEnd = performance.now();
  return {
    output_uri: formatS3Uri(outLoc),
    model_id: c.model.modelId,
    layout: 'batch',
    records: h.records,
    ciphertexts: count,
    keys_cached: false,
    timings_ms: {
      download: round(tHeader - t0),
      deserialize: round(timings.load),
      evaluate: round(timings.evaluate),
      serialize: round(timings.save),
      upload: 0,
      pool_wall: round(timings.evaluate_wall),
      total: round(tEnd - tEval + (tEval - t0)),
    },
  };
}

const round = (v: number) => Math.round(v * 100) / 100;
