// One invocation: fetch the encrypted query and the evaluation keys from S3, evaluate every
// ciphertext in the pool (in parallel across workers), write the encrypted result to S3.
//
// Who may name what: every S3 location of a request must lie under the endpoint's allow-lists
// (whole '/'-separated segments), and with a tenant root the query, keys and output of one
// request must sit under the same tenant's prefix, so a caller can neither read another
// tenant's objects through the server nor make it write over them. The result names the SHA-256
// of the query it answers, so a client refuses a result made from another query.
import { createHash } from 'node:crypto';
import { reviveError, safeText, SealedError } from '../errors.ts';
import { ciphertextBytesBound, paramsKey } from '../fhe/params.ts';
import type { Program } from '../fhe/program.ts';
import { bucketProblem, formatS3Uri, keyProblem, parseS3Uri, STREAM_PART_SIZE, STREAM_QUEUE_SIZE, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { encodeWire, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import { readWireStream, writeWireStream, type StreamLimits } from '../wire/stream.ts';
import type { BatchPlan } from '../fhe/batch-plan.ts';
import { outputsOf, resultSize } from '../fhe/batch-plan.ts';
import { rerandKeyBytes } from '../fhe/privacy.ts';
import { batchCount, batchMemory, evaluateBatches, type BatchTimings } from './batch.ts';
import type { MemoryBudget, Reservation } from './budget.ts';
import { keysNameHash, type KeyStore } from './key-store.ts';
import type { EvaluationPool } from './pool.ts';
import type { EvaluateResult } from './worker.ts';

export interface InvocationRequest {
  encrypted_query_uri: string;
  /** Needed by the single layout; batch mode uses no evaluation keys. */
  evaluation_keys_uri?: string;
  output_uri: string;
  /**
   * SHA-256 (64 lowercase hex digits) of the query object as uploaded. Optional: the server
   * hashes the query as it reads it either way and publishes no result if the two differ. Naming
   * it lets the server write the result's header (which carries it) before it has read the whole
   * query; without it, a query whose result is streamed is read twice (once to hash it).
   */
  query_sha256?: string;
}

export interface InvocationResponse {
  output_uri: string;
  model_id: string;
  /** SHA-256 of the query object evaluated; the result's header names it too. */
  query_sha256: string;
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

/**
 * An S3 prefix of an allow-list or of the tenant root: `key` without trailing '/' ('' is the
 * whole bucket). It covers the object named `key` and every object under `key/`, never
 * `key-x/...`: matching is on whole '/'-separated segments.
 */
export interface S3Prefix {
  bucket: string;
  key: string;
}

/** Where callers may point the server. */
export interface AccessPolicy {
  /** Prefixes the server may read (query, keys) and write (results); undefined: anywhere (--allow-any). */
  read?: S3Prefix[];
  write?: S3Prefix[];
  /**
   * The segment after this prefix names a tenant (s3://bucket/tenants/<tenant>/...): the query,
   * the keys and the output of one request must all sit under the same tenant's prefix.
   */
  tenantRoot?: S3Prefix;
  /**
   * Refuse evaluation keys whose object name is not their SHA-256. Keys named by their hash are
   * verified against it in every deployment; a name that does not commit to the content could be
   * replaced by anyone who can write there, and the server could not tell, so a deployment with
   * allow-lists (several clients) takes only hash-named keys. --allow-any (one trusted user:
   * tests, the demo, a local stack) also takes hand-named keys, unverified.
   */
  hashNamedKeys: boolean;
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
  access: AccessPolicy;
}

/**
 * Parses an allow-list entry or tenant root given by the operator: s3://bucket or
 * s3://bucket/prefix, trailing slashes ignored (s3://b/res and s3://b/res/ mean the same).
 */
export function parseS3Prefix(uri: string, what: string): S3Prefix {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/s.exec(uri.trim());
  const hint = 'give locations as s3://bucket/prefix/, comma-separated';
  if (!m) throw new SealedError('bad-request', `${what}: ${safeText(uri)} is not an s3://bucket/prefix location`, hint);
  const bad = bucketProblem(m[1]);
  if (bad) throw new SealedError('bad-request', `${what}: ${safeText(uri)} names an invalid bucket: ${bad}`, hint);
  const key = (m[2] ?? '').replace(/\/+$/, '');
  const badKey = key === '' ? undefined : keyProblem(key);
  if (badKey) throw new SealedError('bad-request', `${what}: ${safeText(uri)} has an invalid prefix: ${badKey}`, hint);
  return { bucket: m[1], key };
}

export const formatS3Prefix = (p: S3Prefix) => `s3://${p.bucket}/${p.key}${p.key ? '/' : ''}`;

/** Whether `loc` is the object `p` names or lies under it, on whole segments. */
export function isUnder(loc: S3Location, p: S3Prefix): boolean {
  return loc.bucket === p.bucket && (p.key === '' || loc.key === p.key || loc.key.startsWith(`${p.key}/`));
}

/** The tenant whose prefix holds `loc` (the non-empty segment after the root, followed by more key), or undefined. */
export function tenantOf(loc: S3Location, root: S3Prefix): string | undefined {
  if (!isUnder(loc, root) || loc.key === root.key) return undefined;
  const rest = root.key === '' ? loc.key : loc.key.slice(root.key.length + 1);
  const end = rest.indexOf('/');
  return end > 0 ? rest.slice(0, end) : undefined;
}

const safe = (v: unknown) => safeText(v, 64);

interface Named {
  field: string;
  loc: S3Location;
  verb: 'read' | 'write';
}

/** 403 for the first field outside the allow-lists, or outside the tenant of the request. */
export function checkAccess(a: AccessPolicy, fields: Named[]): void {
  for (const f of fields) {
    const list = f.verb === 'read' ? a.read : a.write;
    if (list && !list.some((p) => isUnder(f.loc, p))) {
      throw new SealedError('forbidden', `${f.field} is outside the locations this endpoint may ${f.verb}`, `use a location under ${list.map(formatS3Prefix).join(' or ')}`);
    }
  }
  const root = a.tenantRoot;
  if (!root) return;
  let first: { field: string; tenant: string } | undefined;
  for (const f of fields) {
    const tenant = tenantOf(f.loc, root);
    if (tenant === undefined) throw new SealedError('forbidden', `${f.field} is not inside a tenant's prefix`, `use locations under ${formatS3Prefix(root)}<tenant>/`);
    if (!first) first = { field: f.field, tenant };
    else if (tenant !== first.tenant) {
      throw new SealedError('forbidden', `${f.field} is in tenant ${safe(tenant)}'s prefix, ${first.field} in tenant ${safe(first.tenant)}'s: a request reads and writes within one tenant`, `put the query, the keys and the output under the same ${formatS3Prefix(root)}<tenant>/`);
    }
  }
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * The SHA-256 of the query's bytes as they stream past (Content-Length is known up front, and
 * the S3 stream throws if more or fewer bytes arrive, so the digest is final once `size` bytes
 * went through).
 */
class QueryDigest {
  private readonly hash = createHash('sha256');
  private seen = 0;
  private hex: string | undefined;
  private readonly size: number;

  constructor(size: number) {
    this.size = size;
  }

  async *wrap(stream: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of stream) {
      this.hash.update(chunk);
      this.seen += chunk.byteLength;
      yield chunk;
    }
  }

  /**
   * Once the whole query was read: its SHA-256, checked against the one the request named.
   * Called before the last of the result is handed to S3, so a mismatch publishes nothing.
   */
  settle(expected: string | undefined): string {
    if (this.seen !== this.size) throw new SealedError('internal', `the query was read to byte ${this.seen} of ${this.size} only`);
    this.hex ??= this.hash.digest('hex');
    if (expected !== undefined && this.hex !== expected) {
      throw new SealedError(
        'bad-query',
        `the encrypted query's SHA-256 is ${this.hex}, not the query_sha256 the request names (${expected})`,
        'name the SHA-256 of the query object exactly as uploaded (or leave query_sha256 out); if it was right, the object was replaced after it was uploaded: upload it again',
      );
    }
    return this.hex;
  }
}

/** Thrown (and caught in invoke) when a streamed result needs the query's hash before the query is read. */
class NeedsDigest extends Error {}

/** SHA-256 of a whole S3 object, read as a stream. */
async function digestObject(c: InvocationContext, loc: S3Location, signal?: AbortSignal): Promise<string> {
  const obj = await c.store.getStream(loc, c.maxQueryBytes, 'encrypted query');
  const stop = () => obj.cancel();
  signal?.addEventListener('abort', stop, { once: true });
  try {
    const hash = createHash('sha256');
    for await (const chunk of obj.stream) {
      if (signal?.aborted) throw deadlinePassed();
      hash.update(chunk);
    }
    return hash.digest('hex');
  } finally {
    signal?.removeEventListener('abort', stop);
    obj.cancel();
  }
}

/** A request's locations and fields, checked without any I/O. */
interface CheckedRequest {
  queryLoc: S3Location;
  keysLoc: S3Location | undefined;
  outLoc: S3Location;
  declared: string | undefined;
}

/**
 * Checks what a request names (S3 rules, allow-lists, tenants, key naming, the query hash)
 * without any I/O. The app runs it before admission, so a request that can never succeed gets
 * its 4xx at once rather than a 503 that clients retry.
 */
export function checkRequest(req: InvocationRequest, c: Pick<InvocationContext, 'access'>): CheckedRequest {
  const queryLoc = parseS3Uri(req.encrypted_query_uri, 'encrypted_query_uri');
  const keysLoc = req.evaluation_keys_uri === undefined ? undefined : parseS3Uri(req.evaluation_keys_uri, 'evaluation_keys_uri');
  const outLoc = parseS3Uri(req.output_uri, 'output_uri');
  checkAccess(c.access, [
    { field: 'encrypted_query_uri', loc: queryLoc, verb: 'read' },
    ...(keysLoc ? [{ field: 'evaluation_keys_uri', loc: keysLoc, verb: 'read' as const }] : []),
    { field: 'output_uri', loc: outLoc, verb: 'write' },
  ]);
  if (keysLoc && c.access.hashNamedKeys && !keysNameHash(keysLoc.key)) {
    throw new SealedError('bad-uri', 'evaluation_keys_uri does not name the keys by their SHA-256: this endpoint takes evaluation keys only as .../<64 hex digits of the SHA-256 of their bytes>[.keys]', 'upload the keys under their SHA-256, as `sealed predict` does (<prefix>keys/<sha256>.keys)');
  }
  const declared = req.query_sha256;
  if (declared !== undefined && (typeof declared !== 'string' || !SHA256_HEX.test(declared))) {
    throw new SealedError('bad-request', 'query_sha256 is not 64 lowercase hex digits', 'give the SHA-256 of the query object in hex, or leave it out');
  }
  return { queryLoc, keysLoc, outLoc, declared };
}

export async function invoke(req: InvocationRequest, c: InvocationContext, signal?: AbortSignal): Promise<InvocationResponse> {
  const t0 = performance.now();
  const { queryLoc, keysLoc, outLoc, declared } = checkRequest(req, c);

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
        return await evaluateQuery(digest.wrap(query.stream), digest, expected, keysPromise, outLoc, c, t0, signal);
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

const deadlinePassed = () => new SealedError('deadline', 'the request passed its deadline');

/** Section bounds of the model's layouts, known once the query's header is read. */
function sectionLimits(c: InvocationContext, h: QueryHeader): StreamLimits {
  const plan = h.layout === 'batch' ? c.model.batch : undefined;
  const params = plan ? plan.params : c.model.program.params;
  // A SEAL object is at least its 16-byte serialization header plus a ciphertext's fields; a
  // batch query's re-randomization key holds a result's polynomials as 32-bit residues.
  const rerandKey = plan ? rerandKeyBytes(plan.params.coeffModulusBits.length - 1, plan.params.polyModulusDegree, resultSize(plan)) : 0;
  return { minSection: 64, maxSection: Math.max(ciphertextBytesBound(params, 2), rerandKey), maxSections: Math.floor(c.maxQueryBytes / 68) };
}

async function evaluateQuery(stream: AsyncIterable<Uint8Array>, digest: QueryDigest, expected: string | undefined, keysPromise: ReturnType<KeyStore['get']> | undefined, outLoc: S3Location, c: InvocationContext, t0: number, signal?: AbortSignal): Promise<InvocationResponse> {
  const msg = await readWireStream<QueryHeader>('query', stream, 'the encrypted query', (h) => sectionLimits(c, h));
  const h = msg.header;
  if (h.model_id !== c.model.modelId) {
    throw new SealedError('wrong-model', `the query was encrypted for model ${safe(h.model_id)}, this endpoint serves ${c.model.modelId}`, "fetch this endpoint's client part and encrypt again");
  }
  const records = h.records;
  if (!Number.isInteger(records) || records < 1) throw new SealedError('bad-query', `the query declares ${safe(records)} records`);
  if (h.layout === 'batch') return invokeBatch(h, msg.count, msg.sections, digest, expected, outLoc, c, t0, signal);
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
  if (streamed && expected === undefined) throw new NeedsDigest();
  const bound = ciphertextBytesBound(c.model.program.params, 2);
  const held = window * 3 * bound + (streamed ? (STREAM_QUEUE_SIZE + 2) * STREAM_PART_SIZE : count * bound);
  const reservation = c.budget?.reserve(held, `a query of ${count} ciphertexts`);
  const inflight: Promise<EvaluateResult>[] = [];
  try {
    const keys = await keysPromise;
    const tDownload = performance.now();
    const sum = { deserialize: 0, evaluate: 0, serialize: 0 };
    let tEvalEnd = tDownload;
    let querySha: string | undefined;
    async function* evaluated(): AsyncGenerator<Uint8Array> {
      const it = msg.sections[Symbol.asyncIterator]();
      let more = true;
      for (;;) {
        while (more && inflight.length < window) {
          if (signal?.aborted) throw deadlinePassed();
          const next = await it.next();
          if (next.done) {
            more = false;
            // The whole query has been read (to its end): its hash is known and checked before
            // the results still in flight are handed out, so a mismatch publishes nothing.
            querySha = digest.settle(expected);
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
    const header = (sha: string): ResultHeader => ({ model_id: c.model.modelId, params: h.params, records, query_sha256: sha });
    if (streamed) {
      // expected is set (NeedsDigest above otherwise) and checked against the query at its end.
      await c.store.putStream(outLoc, writeWireStream<ResultHeader>('result', header(expected!), count, evaluated()), 'encrypted result');
    } else {
      const results: Uint8Array[] = [];
      for await (const r of evaluated()) results.push(r);
      await c.store.put(outLoc, encodeWire<ResultHeader>('result', header(querySha ?? digest.settle(expected)), results), 'encrypted result');
    }
    const tEnd = performance.now();
    return {
      output_uri: formatS3Uri(outLoc),
      model_id: c.model.modelId,
      query_sha256: querySha ?? digest.settle(expected),
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
async function invokeBatch(h: QueryHeader, count: number, sections: AsyncGenerator<Uint8Array>, digest: QueryDigest, expected: string | undefined, outLoc: S3Location, c: InvocationContext, t0: number, signal?: AbortSignal): Promise<InvocationResponse> {
  const plan = c.model.batch;
  if (!plan) throw new SealedError('bad-query', 'the query uses batch mode, which this model does not offer', 'encrypt with the single layout (`sealed predict --layout single`)');
  if (h.params !== paramsKey(plan.params)) throw new SealedError('bad-query', 'the query declares other encryption parameters than the model uses in batch mode');
  const batches = batchCount(plan, h.records);
  const keySections = h.rerand_key === true ? 1 : 0;
  if (h.rerand_key !== undefined && typeof h.rerand_key !== 'boolean') throw new SealedError('bad-query', 'the query header\'s rerand_key is not a boolean');
  if (plan.privacy === 'flood' && !keySections) {
    throw new SealedError('bad-query', 'the query carries no re-randomization key: this model re-randomizes its batch results (circuit privacy)', 'encrypt with a current `sealed predict` (or SDK), which sends it');
  }
  if (count !== keySections + batches * plan.inputs) {
    throw new SealedError('bad-query', `the query declares ${h.records} records in ${count - keySections} ciphertexts; batch mode needs ${plan.inputs} per batch of ${plan.params.polyModulusDegree / 2} records (${batches * plan.inputs})`);
  }
  const slots = c.batchSlots;
  if (slots && slots.used >= slots.max) {
    throw new SealedError('overloaded', `the server is evaluating ${slots.max} batch-mode requests already`, 'retry after the number of seconds in Retry-After');
  }
  // The result always streams out, header (with the query's hash) first. (After the check above:
  // a request refused for capacity costs no first pass over its query.)
  if (expected === undefined) throw new NeedsDigest();
  const reservation: Reservation | undefined = c.budget?.reserve(batchMemory(plan) + (STREAM_QUEUE_SIZE + 2) * STREAM_PART_SIZE, `a batch-mode query of ${batches} batches`);
  if (slots) slots.used++;
  try {
    return await runBatch(h, count, sections, digest, expected, outLoc, c, plan, t0, signal);
  } finally {
    if (slots) slots.used--;
    reservation?.release();
  }
}

async function runBatch(h: QueryHeader, count: number, sections: AsyncGenerator<Uint8Array>, digest: QueryDigest, expected: string, outLoc: S3Location, c: InvocationContext, plan: BatchPlan, t0: number, signal?: AbortSignal): Promise<InvocationResponse> {
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
  const results = evaluateBatches(plan, h.records, sections, c.pool, timings, signal, plan.privacy === 'flood' ? rerandKey : undefined);
  async function* guarded(): AsyncGenerator<Uint8Array> {
    for await (const r of results) {
      // Past the deadline the caller has been answered already: finish nothing it does not expect.
      if (signal?.aborted) throw new SealedError('deadline', 'the request passed its deadline');
      yield r;
    }
    // evaluateBatches has read the query to its end: check its hash before the upload completes.
    digest.settle(expected);
  }
  const tEval = performance.now();
  const header: ResultHeader = { model_id: c.model.modelId, params: h.params, records: h.records, layout: 'batch', query_sha256: expected };
  await c.store.putStream(outLoc, writeWireStream<ResultHeader>('result', header, outs, guarded()), 'encrypted result');
  const tEnd = performance.now();
  return {
    output_uri: formatS3Uri(outLoc),
    model_id: c.model.modelId,
    query_sha256: expected,
    layout: 'batch',
    records: h.records,
    ciphertexts: count - (h.rerand_key === true ? 1 : 0),
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
