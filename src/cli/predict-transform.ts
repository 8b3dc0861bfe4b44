// `sealed predict --transform s3://bucket/prefix/`: a large input scored by SageMaker Batch
// Transform. The records are encrypted in batch mode (no evaluation keys), one or more batches
// per S3 object, the job is started (or followed: the job name is derived from the model and the
// input, so a rerun finds it), and the `.out` results are decrypted in order.
//
// Resumable on the client too: each part's predictions are written to a state directory (mode
// 0700: they are plaintext) as soon as they are decrypted, with the part plan and each query's
// SHA-256; a rerun skips the parts already there and checks each new result against the hash of
// the query it answers.
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Presets, SingleBar } from 'cli-progress';
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { SealedError } from '../errors.ts';
import { EncryptPool } from '../client/encrypt-pool.ts';
import type { ClientSession } from '../client/session.ts';
import type { Prediction } from '../model/postprocess.ts';
import { awsClientConfig } from '../sagemaker/runtime-client.ts';
import { TRANSFORM_CONTENT_TYPE, TRANSFORM_LIMITS, describeTransformJob } from '../sagemaker/transform-job.ts';
import { splitRecords, transformPredict, type TransformTransport } from '../sagemaker/transform.ts';
import { parseS3Uri } from '../storage/s3-uri.ts';
import type { ObjectStore, S3Location } from '../storage/s3.ts';
import { sha256Hex } from '../util/sha256.ts';
import { writeWireStream } from '../wire/stream.ts';

const MB = 1024 * 1024;

export interface TransformCliOptions {
  /** s3://bucket/prefix/ under which transform-in/<job>/ and transform-out/<job>/ are written. */
  transform: string;
  modelName?: string;
  jobName?: string;
  instanceCount?: number;
  instanceType?: string;
  /** MaxPayloadInMB of the job: parts are cut to fit it (body transport). */
  maxPayloadMb?: number;
  /** body | s3 | auto (body when one batch fits the payload limit). */
  transport: 'auto' | 'body' | 's3';
  sagemakerApiUrl?: string;
  region?: string;
  state?: string;
  json?: boolean;
}

/** What a run decided, kept so that a rerun cuts the same parts and reads the same kind of `.out`. */
export interface Plan {
  job: string;
  transport: TransformTransport;
  parts: { start: number; end: number }[];
  records: number;
}

/** A transform job name (1-63 letters, digits, hyphens) naming this model and this input. */
/**
 * Parts of whole batches of `S` records: as many batches per part as fit `limit` bytes (body; a
 * batch's query is `perBatch` bytes whatever its record count), or one batch per part (s3: no
 * size limit, and parts spread over the instances).
 */
export function cutParts(records: number, S: number, transport: TransformTransport, perBatch: number, limit: number): { start: number; end: number }[] {
  // The size steps with whole batches, so the largest count that fits is a whole number of them.
  if (transport === 'body') return splitRecords(records, (n) => Math.ceil(n / S) * perBatch, limit);
  return Array.from({ length: Math.ceil(records / S) }, (_, i) => ({ start: i * S, end: Math.min(records, (i + 1) * S) }));
}

/** A plan read back (local state or S3) must cut exactly these records, in order. */
export function checkPlan(plan: Plan, records: number): void {
  let at = 0;
  for (const p of plan.parts) {
    if (!Number.isSafeInteger(p?.start) || !Number.isSafeInteger(p?.end) || p.start !== at || p.end <= p.start) break;
    at = p.end;
  }
  if (at !== records || plan.parts.length === 0 || (plan.transport !== 'body' && plan.transport !== 's3'))
    throw new SealedError(
      'bad-data',
      `the part plan of transform job ${String(plan.job).slice(0, 64)} does not cut ${records} records in order`,
      'give another --job-name (and --state directory) to start afresh',
    );
}

export function transformJobName(modelId: string, rows: ArrayLike<number>[]): string {
  const h = createHash('sha256').update(modelId);
  for (const r of rows) h.update(Float64Array.from(r as ArrayLike<number>));
  return `sealed-${h.digest('hex').slice(0, 24)}`;
}

function sagemakerClient(o: TransformCliOptions): SageMakerClient {
  return new SageMakerClient(awsClientConfig({ endpoint: o.sagemakerApiUrl ?? process.env.SEALED_SAGEMAKER_API_URL, region: o.region }));
}

/** Part i's file in the state directory: its predictions (.json) or its query's SHA-256 (.sha256). */
const partFile = (dir: string, i: number, ext: 'json' | 'sha256' = 'json') => join(dir, `part-${String(i).padStart(6, '0')}.${ext}`);

async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function readRemotePlan(store: ObjectStore, loc: S3Location): Promise<Plan | undefined> {
  try {
    return JSON.parse(new TextDecoder().decode((await store.get(loc, 1 << 20, 'transform plan')).bytes)) as Plan;
  } catch (e) {
    if ((e as { code?: string }).code === 'not-found') return undefined;
    throw e;
  }
}

/** Written whole or not at all (a rerun after a crash never reads half a part). */
async function writeAtomic(file: string, text: string): Promise<void> {
  await writeFile(`${file}.tmp`, text, { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

export async function predictTransform(
  session: ClientSession,
  rows: ArrayLike<number>[],
  store: ObjectStore,
  o: TransformCliOptions,
): Promise<{ predictions: Prediction[]; summary: Record<string, unknown> }> {
  const batch = session.part.batch;
  if (!batch)
    throw new SealedError(
      'bad-request',
      'this model has no batch mode, which --transform needs (batch mode needs no evaluation keys)',
      'retrain with batch mode (sealed train writes it for the MNIST CNN and tabular models), or predict without --transform',
    );
  const where = parseS3Uri(o.transform.endsWith('/') ? o.transform : `${o.transform}/`, '--transform');
  const limitMb = o.maxPayloadMb ?? TRANSFORM_LIMITS.maxPayloadMb;
  const jobName = o.jobName ?? transformJobName(session.modelId, rows);
  const stateDir = o.state ?? join(process.env.SEALED_HOME ?? join(homedir(), '.sealed'), 'transform', jobName);
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const sagemaker = sagemakerClient(o);
  const S = batch.records_per_batch;
  const queries = new Map<number, Uint8Array>();
  // Batch mode makes one ciphertext per feature per batch: encrypt them on every core.
  const pool = new EncryptPool();
  const encrypt = async (part: ArrayLike<number>[]) => {
    const q = session.encryptBatchWith(part, pool);
    const chunks: Uint8Array[] = [];
    for await (const c of writeWireStream('query', q.header, q.count, q.sections)) chunks.push(c);
    return Buffer.concat(chunks);
  };
  try {
    // The plan is kept locally and beside the job's prefixes in S3 (it holds only part boundaries),
    // so a run that lost its state follows the job without encrypting anything again.
    const planLoc = { bucket: where.bucket, key: `${where.key}transform-plan/${jobName}.json` };
    let plan = (await readJson<Plan>(join(stateDir, 'plan.json'))) ?? (await readRemotePlan(store, planLoc));
    if (plan && (plan.job !== jobName || plan.records !== rows.length))
      throw new SealedError(
        'bad-request',
        `the state directory ${stateDir} belongs to another run (job ${String(plan.job).slice(0, 64)}, ${plan.records} records)`,
        'give another --state directory, or remove this one',
      );
    if (!plan) {
      // Cut the parts: whole batches, as many per part as fit the payload (body), or one batch per
      // part (s3: no size limit, and parts spread over the instances). An existing job (a state
      // directory lost) fixes the transport by its content type.
      const existing = await describeTransformJob({ sagemaker }, jobName);
      const first = await encrypt(rows.slice(0, Math.min(S, rows.length)));
      queries.set(0, first);
      const fitsBody = first.length <= limitMb * MB;
      const transport: TransformTransport = existing
        ? existing.TransformInput?.ContentType === TRANSFORM_CONTENT_TYPE
          ? 'body'
          : 's3'
        : o.transport === 'auto'
          ? fitsBody
            ? 'body'
            : 's3'
          : o.transport;
      if (transport === 'body' && !fitsBody)
        throw new SealedError(
          'bad-request',
          `one batch of ${S} records encrypts to ${(first.length / MB).toFixed(1)} MB, over the payload limit of ${limitMb} MB`,
          '--transport s3 (or auto): each input object then names its query in S3, of any size',
        );
      plan = { job: jobName, transport, parts: cutParts(rows.length, S, transport, first.length, limitMb * MB), records: rows.length };
      // The first batch's query is part 0 only when part 0 is that one batch.
      if (plan.parts[0].end !== Math.min(S, rows.length)) queries.delete(0);
      await store.put(planLoc, new TextEncoder().encode(JSON.stringify(plan)), 'transform plan');
    }
    checkPlan(plan, rows.length);
    await writeAtomic(join(stateDir, 'plan.json'), JSON.stringify(plan));
    const P = plan;
    const bar =
      process.stderr.isTTY && !o.json
        ? new SingleBar({ format: 'transform {phase} [{bar}] {value}/{total} parts', stream: process.stderr }, Presets.shades_classic)
        : undefined;
    let phase = '';
    const show = (name: string, value: number) => {
      if (!bar) return;
      if (name !== phase) {
        if (phase) bar.stop();
        phase = name;
        bar.start(P.parts.length, value, { phase: name.padEnd(9) });
      } else bar.update(value);
    };
    let encrypted = 0;
    const predictions: Prediction[] = new Array(rows.length);
    const summary = await transformPredict({
      sagemaker,
      store,
      bucket: where.bucket,
      prefix: where.key,
      jobName,
      modelName: o.modelName,
      count: P.parts.length,
      transport: P.transport,
      job: {
        instanceCount: o.instanceCount ?? 1,
        ...(o.instanceType ? { instanceType: o.instanceType } : {}),
        ...(P.transport === 'body'
          ? { maxPayloadInMB: limitMb, maxConcurrentTransforms: Math.max(1, Math.floor(TRANSFORM_LIMITS.maxPayloadMb / limitMb)) }
          : {}),
      },
      query: async (i) => {
        const q = queries.get(i) ?? (await encrypt(rows.slice(P.parts[i].start, P.parts[i].end)));
        queries.delete(i);
        await writeFile(partFile(stateDir, i, 'sha256'), sha256Hex(q), { mode: 0o600 });
        show('upload', ++encrypted);
        return q;
      },
      have: async (i) => {
        const got = await readJson<Prediction[]>(partFile(stateDir, i));
        if (!got || got.length !== P.parts[i].end - P.parts[i].start) return false;
        got.forEach((p, k) => (predictions[P.parts[i].start + k] = p));
        return true;
      },
      onResult: async (i, bytes) => {
        const sha = await readFile(partFile(stateDir, i, 'sha256'), 'utf8').catch(() => undefined);
        const got = session.decrypt(bytes, sha ? { querySha256: sha.trim() } : {});
        if (got.length !== P.parts[i].end - P.parts[i].start)
          throw new SealedError('bad-data', `transform result ${i} holds ${got.length} records, its part ${P.parts[i].end - P.parts[i].start}`);
        got.forEach((p, k) => (predictions[P.parts[i].start + k] = p));
        await writeAtomic(partFile(stateDir, i), JSON.stringify(got));
        show('decrypt', i + 1);
      },
      onProgress: (p) => show(p.status === 'InProgress' ? 'job' : p.status.toLowerCase(), p.done),
      wait: { pollMs: { first: 1000, max: 10_000 }, timeoutMs: 24 * 3600_000 },
    });
    bar?.stop();
    return {
      predictions,
      summary: {
        transform_job: jobName,
        transport: P.transport,
        parts: P.parts.length,
        records_per_part: Math.max(...P.parts.map((p) => p.end - p.start)),
        job_started: summary.started,
        parts_uploaded: summary.uploaded,
        parts_decrypted: summary.fetched,
        parts_from_state: summary.skipped,
        state: stateDir,
      },
    };
  } finally {
    sagemaker.destroy();
    await pool.close();
  }
}
