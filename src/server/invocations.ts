// One invocation: fetch the encrypted query and the evaluation keys from S3, evaluate every
// ciphertext in the pool (in parallel across workers), write the encrypted result to S3.
import { SealedError, type ErrorCode } from '../errors.ts';
import { paramsKey } from '../fhe/params.ts';
import type { Program } from '../fhe/program.ts';
import { formatS3Uri, parseS3Uri, type ObjectStore } from '../storage/s3.ts';
import { decodeWire, encodeWire, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import type { KeyStore } from './key-store.ts';
import type { EvaluationPool } from './pool.ts';

export interface InvocationRequest {
  encrypted_query_uri: string;
  evaluation_keys_uri: string;
  output_uri: string;
}

export interface InvocationResponse {
  output_uri: string;
  model_id: string;
  records: number;
  ciphertexts: number;
  keys_cached: boolean;
  timings_ms: { download: number; deserialize: number; evaluate: number; serialize: number; upload: number; pool_wall: number; total: number };
}

export interface ServingModel {
  modelId: string;
  program: Program;
  recordsPerCiphertext: number;
}

export interface InvocationContext {
  model: ServingModel;
  store: ObjectStore;
  keys: KeyStore;
  pool: EvaluationPool;
  maxQueryBytes: number;
  /** s3://bucket/prefix locations the server may read (query, keys) and write (results); empty: any. */
  allowRead: string[];
  allowWrite: string[];
}

function allowed(uri: string, list: string[], field: string, verb: string): void {
  if (list.length && !list.some((p) => uri.startsWith(p))) {
    throw new SealedError('forbidden', `${field} is outside the locations this endpoint may ${verb}`, `use a location under ${list.join(' or ')}`);
  }
}

/** What a caller sent, made safe to repeat in a message: short, printable identifier characters. */
const safe = (v: unknown) => String(v).replace(/[^0-9A-Za-z_.-]/g, '?').slice(0, 64);

export async function invoke(req: InvocationRequest, c: InvocationContext, signal?: AbortSignal): Promise<InvocationResponse> {
  const t0 = performance.now();
  const queryLoc = parseS3Uri(req.encrypted_query_uri, 'encrypted_query_uri');
  const keysLoc = parseS3Uri(req.evaluation_keys_uri, 'evaluation_keys_uri');
  const outLoc = parseS3Uri(req.output_uri, 'output_uri');
  allowed(formatS3Uri(queryLoc), c.allowRead, 'encrypted_query_uri', 'read');
  allowed(formatS3Uri(keysLoc), c.allowRead, 'evaluation_keys_uri', 'read');
  allowed(formatS3Uri(outLoc), c.allowWrite, 'output_uri', 'write');

  const [query, keys] = await Promise.all([c.store.get(queryLoc, c.maxQueryBytes, 'encrypted query'), c.keys.get(keysLoc)]);
  const tDownload = performance.now();

  const msg = decodeWire<QueryHeader>('query', query.bytes, 'the encrypted query');
  const h = msg.header;
  if (h.model_id !== c.model.modelId) {
    throw new SealedError('wrong-model', `the query was encrypted for model ${safe(h.model_id)}, this endpoint serves ${c.model.modelId}`, "fetch this endpoint's client part and encrypt again");
  }
  if (h.params !== paramsKey(c.model.program.params)) throw new SealedError('bad-query', 'the query declares other encryption parameters than the model uses');
  const records = h.records;
  if (!Number.isInteger(records) || records < 1 || Math.ceil(records / c.model.recordsPerCiphertext) !== msg.sections.length) {
    throw new SealedError('bad-query', `the query declares ${safe(records)} records in ${msg.sections.length} ciphertexts, which does not match the model's ${c.model.recordsPerCiphertext} records per ciphertext`);
  }

  const tEval = performance.now();
  // slice(): a section is a view of the whole query; posting the view would copy the whole
  // buffer to the worker once per ciphertext.
  const results = await Promise.all(msg.sections.map((section) => c.pool.run({ ciphertext: section.slice(), keys: keys.set }, signal)));
  const tEvalEnd = performance.now();
  const failed = results.find((r) => r.error);
  if (failed?.error) throw new SealedError(failed.error.code as ErrorCode, failed.error.message, failed.error.hint);

  // Past the deadline the caller has been answered already: write nothing it does not expect.
  if (signal?.aborted) throw new SealedError('deadline', 'the request passed its deadline');
  const body = encodeWire<ResultHeader>('result', { model_id: c.model.modelId, params: h.params, records }, results.map((r) => r.result!));
  await c.store.put(outLoc, body, 'encrypted result');
  const tEnd = performance.now();
  const sum = (k: 'deserialize' | 'evaluate' | 'serialize') => round(results.reduce((a, r) => a + r.ms[k] + (k === 'deserialize' ? r.ms.keys : 0), 0));
  return {
    output_uri: formatS3Uri(outLoc),
    model_id: c.model.modelId,
    records,
    ciphertexts: msg.sections.length,
    keys_cached: keys.cached,
    timings_ms: {
      download: round(tDownload - t0),
      deserialize: sum('deserialize'),
      evaluate: sum('evaluate'),
      serialize: sum('serialize'),
      upload: round(tEnd - tEvalEnd),
      pool_wall: round(tEvalEnd - tEval),
      total: round(tEnd - t0),
    },
  };
}

const round = (v: number) => Math.round(v * 100) / 100;
