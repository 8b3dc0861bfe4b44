// The client's side of Batch Transform: many encrypted queries (wire format, already encrypted
// by the client; nothing here sees a key or a plaintext) written as one S3 object each under the
// tenant's transform-in/<job>/, one transform job over them (started, or followed when it
// exists), then the `.out` results fetched in order. Resumable: a rerun with the same job name
// uploads no part already in place, starts no second job, and fetches no result the caller
// says it already has (`have`), so an interrupted download of 40,000 images resumes where it
// stopped.
import type { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { SealedError } from '../errors.ts';
import { describeS3Location, formatS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { sha256Hex } from '../util/sha256.ts';
import { listPrefix } from './s3-list.ts';
import {
  describeTransformJob,
  startTransformJob,
  TRANSFORM_CONTENT_TYPE,
  TRANSFORM_LIMITS,
  waitForTransformJob,
  type TransformJobOptions,
  type TransformProgress,
} from './transform-job.ts';
import type { Waiting } from './wait.ts';

const MB = 1024 * 1024;
/** A result object is never larger than this (a result is smaller than its query). */
const MAX_RESULT_BYTES = TRANSFORM_LIMITS.maxPayloadMb * MB * 4;

/**
 * How the queries travel: `body`, each input object is a query and each `.out` its result (up to
 * MaxPayloadInMB, at most 100 MB); `s3`, each input object is the server's JSON request naming a
 * query under queries/transform/<job>/ and a result under results/transform/<job>/ (any size:
 * a 4,096-image MNIST batch query with circuit privacy is ~147 MB).
 */
export type TransformTransport = 'body' | 's3';

/** Where a job's parts and results live under the tenant's prefix (the client's --prefix). */
export function transformLayout(bucket: string, prefix: string, jobName: string, transport: TransformTransport = 'body') {
  const p = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
  const name = (i: number) => `part-${String(i).padStart(6, '0')}`;
  const part = (i: number) => `${name(i)}.${transport === 'body' ? 'query' : 'json'}`;
  const input = `${p}transform-in/${jobName}/`;
  const output = `${p}transform-out/${jobName}/`;
  return {
    input: { bucket, key: input },
    output: { bucket, key: output },
    part: (i: number): S3Location => ({ bucket, key: `${input}${part(i)}` }),
    // SageMaker's name for the answer to an object: its key relative to the input prefix + ".out".
    out: (i: number): S3Location => ({ bucket, key: `${output}${part(i)}.out` }),
    // s3 transport: where the query and the result themselves are.
    query: (i: number): S3Location => ({ bucket, key: `${p}queries/transform/${jobName}/${name(i)}.query` }),
    result: (i: number): S3Location => ({ bucket, key: `${p}results/transform/${jobName}/${name(i)}.result` }),
  };
}

/**
 * Splits `total` records into consecutive parts whose encrypted size (`bytesFor(records)`, which
 * must grow with the count) fits `maxBytes`, as few parts as possible.
 */
export function splitRecords(total: number, bytesFor: (records: number) => number, maxBytes: number): { start: number; end: number }[] {
  if (total <= 0) return [];
  if (bytesFor(1) > maxBytes)
    throw new SealedError(
      'bad-request',
      `one record encrypts to ${bytesFor(1)} bytes, over the payload limit of ${maxBytes}`,
      'raise MaxPayloadInMB (at most 100 MB), or use a smaller model layout',
    );
  // The largest count that fits, by bisection.
  let lo = 1;
  let hi = total;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (bytesFor(mid) <= maxBytes) lo = mid;
    else hi = mid - 1;
  }
  const parts: { start: number; end: number }[] = [];
  for (let start = 0; start < total; start += lo) parts.push({ start, end: Math.min(total, start + lo) });
  return parts;
}

export interface TransformPredictOptions {
  sagemaker: SageMakerClient;
  store: ObjectStore;
  bucket: string;
  /** The tenant's prefix (as `sealed predict --prefix`), e.g. sealed/tenants/acme/ */
  prefix: string;
  /** The same name on a rerun follows the same job: derive it from the input (e.g. its hash). */
  jobName: string;
  /** How many parts (queries). */
  count: number;
  /** Part i's encrypted query (wire format); asked only for parts not yet uploaded. */
  query: (i: number) => Uint8Array | Promise<Uint8Array>;
  /** Default `body`; `s3` for queries over the payload limit (see TransformTransport). */
  transport?: TransformTransport;
  /** s3 transport, single layout: the uploaded evaluation keys (batch mode needs none). */
  evaluationKeysUri?: string;
  /** Needed to start the job; without it only an existing job is followed. */
  modelName?: string;
  /** Job settings (instances, concurrency, payload, timeout) when this call starts it. */
  job?: Omit<TransformJobOptions, 'jobName' | 'modelName' | 'input' | 'output'>;
  /** Parts whose result the caller already has from an earlier run: not fetched again. */
  have?: (i: number) => boolean | Promise<boolean>;
  /** Receives each result, in part order. */
  onResult: (i: number, bytes: Uint8Array) => void | Promise<void>;
  wait?: Waiting;
  onProgress?: (p: TransformProgress & { status: string }) => void;
}

export interface TransformSummary {
  jobName: string;
  started: boolean;
  uploaded: number;
  fetched: number;
  skipped: number;
}

export async function transformPredict(o: TransformPredictOptions): Promise<TransformSummary> {
  const transport = o.transport ?? 'body';
  const L = transformLayout(o.bucket, o.prefix, o.jobName, transport);
  const inputUri = formatS3Uri(L.input);
  const outputUri = formatS3Uri(L.output);
  const c = { sagemaker: o.sagemaker };
  const existing = await describeTransformJob(c, o.jobName);
  let uploaded = 0;
  if (existing) {
    const ran = existing.TransformInput?.DataSource?.S3DataSource?.S3Uri;
    if (ran !== inputUri)
      throw new SealedError(
        'bad-request',
        `transform job ${o.jobName} exists but reads ${ran ?? 'another input'}, not ${inputUri}`,
        'give another job name (job names are unique per account and region)',
      );
  } else {
    // Only our parts may be under the job's input prefix: SageMaker transforms every object there.
    const wanted = new Set(Array.from({ length: o.count }, (_, i) => L.part(i).key));
    const present = new Map((await listPrefix(o.store, L.input)).map((x) => [x.key, x.size]));
    const stray = [...present.keys()].find((k) => !wanted.has(k));
    if (stray)
      throw new SealedError(
        'bad-request',
        `${describeS3Location(L.input)} holds an object that is not a part of this job (${describeS3Location({ bucket: o.bucket, key: stray })})`,
        'use a new job name, or remove what an earlier, different run left there',
      );
    const limit = (o.job?.maxPayloadInMB ?? TRANSFORM_LIMITS.defaultPayloadMb) * MB;
    for (let i = 0; i < o.count; i++) {
      if (present.has(L.part(i).key)) continue; // a PUT is whole or absent: present is complete
      const bytes = await o.query(i);
      if (transport === 's3') {
        // The query first: a request object present means its query is in place too.
        await o.store.put(L.query(i), bytes, `transform query ${i}`);
        const request = {
          encrypted_query_uri: formatS3Uri(L.query(i)),
          output_uri: formatS3Uri(L.result(i)),
          query_sha256: sha256Hex(bytes),
          ...(o.evaluationKeysUri ? { evaluation_keys_uri: o.evaluationKeysUri } : {}),
        };
        await o.store.put(L.part(i), new TextEncoder().encode(JSON.stringify(request)), `transform request ${i}`);
      } else {
        if (bytes.length > limit)
          throw new SealedError(
            'bad-request',
            `part ${i} is ${bytes.length} bytes, over the transform payload limit of ${limit} bytes (MaxPayloadInMB)`,
            "put fewer records in each part (splitRecords), raise MaxPayloadInMB (at most 100), or use transport 's3'",
          );
        await o.store.put(L.part(i), bytes, `transform part ${i}`);
      }
      uploaded++;
    }
    if (!o.modelName)
      throw new SealedError(
        'not-found',
        `there is no transform job ${o.jobName} to follow`,
        `the parts are uploaded to ${inputUri}: start it (npm run deploy -- transform --model-name MODEL --input ${inputUri} --output ${outputUri} --job-name ${o.jobName}), or give the model name to start it here`,
      );
    await startTransformJob(c, {
      ...o.job,
      jobName: o.jobName,
      modelName: o.modelName,
      input: inputUri,
      output: outputUri,
      contentType: transport === 's3' ? 'application/json' : TRANSFORM_CONTENT_TYPE,
    });
  }
  const started = !existing;
  if (!existing || existing.TransformJobStatus !== 'Completed') {
    await waitForTransformJob(c, o.jobName, {
      ...o.wait,
      ...(o.onProgress
        ? { progress: async () => ({ done: (await listPrefix(o.store, L.output, { suffix: '.out' })).length, total: o.count }), onProgress: o.onProgress }
        : {}),
    });
  }
  let fetched = 0;
  let skipped = 0;
  for (let i = 0; i < o.count; i++) {
    if (o.have && (await o.have(i))) {
      skipped++;
      continue;
    }
    let bytes: Uint8Array;
    try {
      ({ bytes } = await o.store.get(L.out(i), MAX_RESULT_BYTES, `transform result ${i}`));
    } catch (e) {
      if ((e as { code?: string }).code === 'not-found')
        throw new SealedError(
          'internal',
          `transform job ${o.jobName} completed without a result for part ${i} (${describeS3Location(L.out(i))})`,
          'run again with a new job name',
          { cause: e },
        );
      throw e;
    }
    // s3 transport: the .out is the server's JSON answer; the result is where the request said.
    if (transport === 's3') ({ bytes } = await o.store.get(L.result(i), MAX_RESULT_BYTES, `transform result ${i}`));
    await o.onResult(i, bytes);
    fetched++;
  }
  return { jobName: o.jobName, started, uploaded, fetched, skipped };
}
