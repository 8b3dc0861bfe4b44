// The valid side of the load tests: real encrypted queries whose results are downloaded,
// decrypted with the client's secret key and checked, record by record, against the model's
// plaintext scores (the bundle's server part run in plaintext: src/model/simulate.ts) or, when
// only the client part is at hand, against a reference decryption made before any load.
import { createHash, randomUUID } from 'node:crypto';
import type { ClientSession } from '../src/client/session.ts';
import type { ServerPart } from '../src/model/bundle.ts';
import type { ClientPart } from '../src/model/client-part.ts';
import { packRecords, unpackOutputs } from '../src/model/layout.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { simulate } from '../src/model/simulate.ts';
import { seededRandom } from '../src/train/augment.ts';
import { formatS3Uri } from '../src/storage/s3.ts';
import type { Outcome, Target } from './load-targets.ts';

/** Largest |decrypted - expected| accepted per score (CKKS here is good to a few 1e-6). */
export const TOLERANCE = 1e-3;

export interface ValidQuery {
  name: string;
  uri: string;
  /** SHA-256 (hex) of the query object: named in the request, checked in the result's header. */
  sha256: string;
  records: number;
  expected: number[][];
}

export interface ValidSet {
  keysUri: string;
  queries: ValidQuery[];
  /** How `expected` was obtained. */
  check: 'plaintext' | 'reference';
}

export type Verdict = 'ok' | 'wrong' | 'failed' | 'admission';

export interface ValidResult {
  outcome: Outcome;
  verdict: Verdict;
  /** Largest score difference when the result was decrypted. */
  worst?: number;
  detail?: string;
}

/** Plausible records for any model: features around the training mean (images: pixels). */
export function syntheticRows(part: ClientPart, n: number, seed: number): number[][] {
  const rand = seededRandom(seed);
  const f = part.features.length;
  if (part.image) return Array.from({ length: n }, () => Array.from({ length: f }, () => Math.floor(rand() * 256)));
  return Array.from({ length: n }, () => Array.from({ length: f }, (_, j) => part.preprocess.mean[j] + part.preprocess.std[j] * (rand() * 4 - 2)));
}

/** The scores the server computes, in plaintext: the same program and masks on Float64Arrays. */
export function plaintextScores(part: ClientPart, server: ServerPart, rows: number[][]): number[][] {
  const vectors = packRecords(
    part.input,
    rows.map((r) => preprocessRecord(r, part)),
  );
  return unpackOutputs(
    part.output,
    part.input.recordsPerCiphertext,
    vectors.map((v) => simulate(server.program, server.masks, v)),
    rows.length,
  );
}

export function worstDifference(got: number[][], want: number[][]): number {
  if (got.length !== want.length || got.some((g, i) => g.length !== want[i].length)) return Infinity;
  let worst = 0;
  got.forEach((g, i) => g.forEach((v, o) => (worst = Math.max(worst, Number.isFinite(v) ? Math.abs(v - want[i][o]) : Infinity))));
  return worst;
}

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Where evaluation keys go: named by their SHA-256, as servers with allow-lists require. */
export const keysKey = (prefix: string, keys: Uint8Array) => `${prefix}keys/${sha256(keys)}.keys`;

export const invocationBody = (queryUri: string, keysUri: string, outputUri: string, querySha256?: string) =>
  JSON.stringify({ encrypted_query_uri: queryUri, evaluation_keys_uri: keysUri, output_uri: outputUri, ...(querySha256 ? { query_sha256: querySha256 } : {}) });

/** One valid request: send, download the result, decrypt, compare. Never throws. */
export async function runValid(target: Target, session: ClientSession, set: ValidSet, q: ValidQuery, timeoutMs: number): Promise<ValidResult> {
  const out = { bucket: target.bucket, key: `${target.prefix}out/valid/${randomUUID()}.result` };
  const outcome = await target.send({ body: invocationBody(q.uri, set.keysUri, formatS3Uri(out), q.sha256), contentType: 'application/json' }, timeoutMs);
  if (outcome.status !== 200) return { outcome, verdict: outcome.admission ? 'admission' : 'failed' };
  try {
    if (outcome.json && outcome.json.records !== q.records)
      return { outcome, verdict: 'wrong', detail: `answer says ${String(outcome.json.records)} records, the query has ${q.records}` };
    const { bytes } = await target.store.get(out, 256 * 1024 * 1024, 'result');
    // The result's header must name this query: a result of another one is wrong, not close.
    const worst = worstDifference(session.decryptScores(bytes, { querySha256: q.sha256 }), q.expected);
    return worst <= TOLERANCE ? { outcome, verdict: 'ok', worst } : { outcome, verdict: 'wrong', worst, detail: `|decrypted - expected| up to ${worst}` };
  } catch (e) {
    // A 200 whose result cannot be read or decrypted is a wrong answer, not a refusal.
    return { outcome, verdict: 'wrong', detail: `result unreadable: ${(e as Error).message.slice(0, 200)}` };
  } finally {
    void target.remove(out);
  }
}

/**
 * Uploads the evaluation keys and one query per size; expected scores come from the server part
 * when given, else from one reference run of each query now (retried through admission 503s).
 */
export async function prepareValid(o: {
  target: Target;
  session: ClientSession;
  part: ClientPart;
  server?: ServerPart;
  evaluationKeys: Uint8Array;
  sizes: number[];
  seed: number;
  timeoutMs: number;
}): Promise<ValidSet> {
  const { target, session } = o;
  const keysLoc = { bucket: target.bucket, key: keysKey(target.prefix, o.evaluationKeys) };
  await target.store.put(keysLoc, o.evaluationKeys, 'keys');
  const queries: ValidQuery[] = [];
  for (const [i, n] of o.sizes.entries()) {
    const rows = syntheticRows(o.part, n, o.seed + i);
    const loc = { bucket: target.bucket, key: `${target.prefix}queries/valid-${n}-${randomUUID()}.query` };
    const bytes = session.encrypt(rows);
    await target.store.put(loc, bytes, 'query');
    queries.push({
      name: `valid-${n}`,
      uri: formatS3Uri(loc),
      sha256: sha256(bytes),
      records: n,
      expected: o.server ? plaintextScores(o.part, o.server, rows) : [],
    });
  }
  const set: ValidSet = { keysUri: formatS3Uri(keysLoc), queries, check: o.server ? 'plaintext' : 'reference' };
  if (o.server) return set;
  for (const q of queries) {
    for (let attempt = 0; ; attempt++) {
      const out = { bucket: target.bucket, key: `${target.prefix}out/reference/${randomUUID()}.result` };
      const r = await target.send({ body: invocationBody(q.uri, set.keysUri, formatS3Uri(out), q.sha256), contentType: 'application/json' }, o.timeoutMs);
      if (r.status === 200) {
        q.expected = session.decryptScores((await target.store.get(out, 256 * 1024 * 1024, 'result')).bytes, { querySha256: q.sha256 });
        void target.remove(out);
        break;
      }
      if (!r.admission || attempt >= 20) throw new Error(`reference run of ${q.name} failed: ${r.status} ${r.error ?? ''} ${r.message ?? ''}`);
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
  return set;
}
