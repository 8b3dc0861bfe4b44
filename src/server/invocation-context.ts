// What an invocation runs with and what it answers: the types every piece of the request path
// shares (a module of its own, so the pieces do not import one another in a circle).
import type { ObjectStore } from '../storage/s3.ts';
import type { AccessPolicy } from './access.ts';
import type { BatchBuffers } from './batch-buffers.ts';
import type { MemoryBudget } from './budget.ts';
import type { KeyStore } from './key-store.ts';
import type { EvaluationPool } from './pool.ts';
import type { ServingModel } from './query-checks.ts';

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
  /** Batch-mode buffers kept between requests (batch-buffers.ts). */
  batchBuffers?: BatchBuffers;
  access: AccessPolicy;
}

/** Where a result goes: an S3 object (the JSON form) or the HTTP response's body (the body form). */
export interface ResultSink {
  /** A result known whole. */
  put(bytes: Uint8Array): Promise<void>;
  /** A result streamed out, header first, as it is computed. */
  putStream(stream: AsyncIterable<Uint8Array>): Promise<void>;
  /** What goes back to the caller as output_uri ('' for a result in the body). */
  readonly uri: string;
}

export interface InvocationResponse {
  output_uri: string;
  model_id: string;
  /** SHA-256 of the query object evaluated; the result's header names it too. */
  query_sha256: string;
  /** slots: one tree-ensemble record (src/model/trees/single-server.ts). */
  layout: 'single' | 'batch' | 'slots';
  records: number;
  ciphertexts: number;
  keys_cached: boolean;
  /** Worker threads that evaluated the query together (a one-batch tree query is cut in parts). */
  threads?: number;
  timings_ms: InvocationTimings;
}

/** Milliseconds of each step of an invocation (a step a path does not have is 0). */
export interface InvocationTimings {
  download: number;
  deserialize: number;
  evaluate: number;
  serialize: number;
  upload: number;
  pool_wall: number;
  total: number;
}

const round = (v: number) => Math.round(v * 100) / 100;

/**
 * The answer of every path (single, batch, trees): where the result went and for which model,
 * what was evaluated as the path says, and its timings to a hundredth of a millisecond.
 */
export function invocationResponse(
  c: InvocationContext,
  out: ResultSink,
  what: Pick<InvocationResponse, 'query_sha256' | 'layout' | 'records' | 'ciphertexts' | 'keys_cached' | 'threads'>,
  ms: InvocationTimings,
): InvocationResponse {
  const timings_ms: InvocationTimings = {
    download: round(ms.download),
    deserialize: round(ms.deserialize),
    evaluate: round(ms.evaluate),
    serialize: round(ms.serialize),
    upload: round(ms.upload),
    pool_wall: round(ms.pool_wall),
    total: round(ms.total),
  };
  return { output_uri: out.uri, model_id: c.model.modelId, ...what, timings_ms };
}
