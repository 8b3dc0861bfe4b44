// A local stand-in for SageMaker Batch Transform, in front of N inference containers (its
// instances: `sealed serve` processes). It does what the service does with a CreateTransformJob
// of SplitType None: lists the S3Prefix input, gives each instance its share of the objects, asks
// each container GET /execution-parameters for what the request leaves out (concurrency, batch
// strategy, payload size; SageMaker's defaults when the container has no such route), POSTs each
// object's bytes whole to /invocations with the job's ContentType, retries a failed invocation up
// to InvocationsMaxRetries, and writes the answer to `<S3OutputPath>/<key relative to the
// prefix>.out`. Beyond the service it writes a manifest (MANIFEST_NAME in the output prefix): the
// split across instances, each container's parameters, and each object's attempts and sizes.
// transform-control-plane.ts serves it through SageMaker's API.
import type { CreateTransformJobCommandInput } from '@aws-sdk/client-sagemaker';
import { formatS3Uri, parseS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { listPrefix, type ListedObject } from './s3-list.ts';
import { TRANSFORM_CONTENT_TYPE, TRANSFORM_LIMITS } from './transform-job.ts';

export const MANIFEST_NAME = 'sealed-transform-manifest.json';
const MB = 1024 * 1024;
/** What SageMaker uses when neither the request nor the container says (CreateTransformJob reference). */
const SERVICE_DEFAULTS = { MaxConcurrentTransforms: 1, MaxPayloadInMB: TRANSFORM_LIMITS.defaultPayloadMb, BatchStrategy: 'MultiRecord' } as const;

export interface ExecutionParameters {
  MaxConcurrentTransforms: number;
  BatchStrategy: string;
  MaxPayloadInMB: number;
}

/** GET /execution-parameters of one container, or undefined when it has none (any failure). */
export async function fetchExecutionParameters(containerUrl: string): Promise<Partial<ExecutionParameters> | undefined> {
  try {
    const r = await fetch(new URL('/execution-parameters', containerUrl), { signal: AbortSignal.timeout(10_000) });
    if (!r.ok) return undefined;
    const j = (await r.json()) as Record<string, unknown>;
    const out: Partial<ExecutionParameters> = {};
    if (Number.isInteger(j.MaxConcurrentTransforms) && (j.MaxConcurrentTransforms as number) > 0)
      out.MaxConcurrentTransforms = j.MaxConcurrentTransforms as number;
    if (Number.isInteger(j.MaxPayloadInMB) && (j.MaxPayloadInMB as number) > 0) out.MaxPayloadInMB = j.MaxPayloadInMB as number;
    if (j.BatchStrategy === 'SingleRecord' || j.BatchStrategy === 'MultiRecord') out.BatchStrategy = j.BatchStrategy;
    return out;
  } catch {
    return undefined;
  }
}

export interface ObjectRecord {
  input: string;
  output: string;
  instance: number;
  bytesIn: number;
  bytesOut?: number;
  attempts: number;
  ms: number;
  error?: string;
}

export interface TransformManifest {
  jobName: string;
  status: 'Completed' | 'Failed' | 'Stopped';
  failureReason?: string;
  input: string;
  output: string;
  seconds: number;
  /** The job's Environment: SageMaker starts its containers with it; the emulator's instances are already running. */
  environmentNotApplied?: Record<string, string>;
  instances: {
    index: number;
    url: string;
    container?: Partial<ExecutionParameters>;
    used: ExecutionParameters;
    objects: number;
    bytesIn: number;
    seconds: number;
  }[];
  objects: ObjectRecord[];
}

/** Objects split across instances as S3 shards are: contiguous runs in key order, sizes differing by at most one. */
export function shard<T>(items: T[], n: number): T[][] {
  const base = Math.floor(items.length / n);
  const extra = items.length % n;
  const out: T[][] = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const size = base + (i < extra ? 1 : 0);
    out.push(items.slice(at, at + size));
    at += size;
  }
  return out;
}

const prefixOf = (uri: string, field: string): S3Location => {
  const slashed = uri.endsWith('/') ? uri : `${uri}/`;
  const loc = parseS3Uri(`${slashed}x`, field);
  return { bucket: loc.bucket, key: loc.key.slice(0, -1) };
};
/** SageMaker's output name: the input key relative to the input prefix, plus ".out", under S3OutputPath. */
export const outputKey = (inputKey: string, inputPrefix: string, outputPrefix: string) => `${outputPrefix}${inputKey.slice(inputPrefix.length)}.out`;

export interface RunOptions {
  store: ObjectStore;
  /** Base URLs of the instances' containers; the request's InstanceCount first ones are used. */
  instances: string[];
  request: CreateTransformJobCommandInput;
  signal?: AbortSignal;
  /** Pause before retry n (1-based); default 200 ms x n. */
  retryDelayMs?: (attempt: number) => number;
}

/** Runs one transform job to its end and writes its manifest; never throws for a failed object (the job fails). */
export async function runTransformJob(o: RunOptions): Promise<TransformManifest> {
  const started = Date.now();
  const r = o.request;
  const jobName = r.TransformJobName ?? 'job';
  const inputUri = r.TransformInput?.DataSource?.S3DataSource?.S3Uri ?? '';
  const outputUri = r.TransformOutput?.S3OutputPath ?? '';
  const input = prefixOf(inputUri, 'TransformInput.DataSource.S3DataSource.S3Uri');
  const output = prefixOf(outputUri, 'TransformOutput.S3OutputPath');
  const count = r.TransformResources?.InstanceCount ?? 1;
  const urls = o.instances.slice(0, count);
  const timeoutMs = (r.ModelClientConfig?.InvocationsTimeoutInSeconds ?? TRANSFORM_LIMITS.timeoutSeconds.default) * 1000;
  const retries = r.ModelClientConfig?.InvocationsMaxRetries ?? TRANSFORM_LIMITS.retries.default;
  const headers: Record<string, string> = {
    'content-type': r.TransformInput?.ContentType ?? TRANSFORM_CONTENT_TYPE,
    accept: r.TransformOutput?.Accept ?? TRANSFORM_CONTENT_TYPE,
  };
  const delay = o.retryDelayMs ?? ((n: number) => 200 * n);

  const objects = await listPrefix(o.store, input);
  const shares = shard(objects, urls.length);
  const records: ObjectRecord[] = [];
  const failures: string[] = [];
  const instances = await Promise.all(
    urls.map(async (url, index) => {
      const t0 = Date.now();
      const container = await fetchExecutionParameters(url);
      // The request's values win; the container's fill what it leaves out; then the service's defaults.
      const used: ExecutionParameters = {
        MaxConcurrentTransforms: r.MaxConcurrentTransforms || container?.MaxConcurrentTransforms || SERVICE_DEFAULTS.MaxConcurrentTransforms,
        MaxPayloadInMB: r.MaxPayloadInMB ?? container?.MaxPayloadInMB ?? SERVICE_DEFAULTS.MaxPayloadInMB,
        BatchStrategy: r.BatchStrategy ?? container?.BatchStrategy ?? SERVICE_DEFAULTS.BatchStrategy,
      };
      const mine = shares[index];
      let next = 0;
      const one = async (obj: ListedObject) => {
        const rec: ObjectRecord = {
          input: formatS3Uri({ bucket: input.bucket, key: obj.key }),
          output: formatS3Uri({ bucket: output.bucket, key: outputKey(obj.key, input.key, output.key) }),
          instance: index,
          bytesIn: obj.size,
          attempts: 0,
          ms: 0,
        };
        records.push(rec);
        const t = Date.now();
        try {
          if (obj.size > used.MaxPayloadInMB * MB) throw new Error(`the object is ${obj.size} bytes, over MaxPayloadInMB (${used.MaxPayloadInMB} MB)`);
          const { bytes } = await o.store.get({ bucket: input.bucket, key: obj.key }, used.MaxPayloadInMB * MB, 'transform input');
          for (;;) {
            rec.attempts++;
            let retryable: boolean;
            let why: string;
            try {
              const res = await fetch(new URL('/invocations', url), {
                method: 'POST',
                headers,
                body: bytes as Uint8Array<ArrayBuffer>,
                signal: AbortSignal.timeout(timeoutMs),
              });
              const body = new Uint8Array(await res.arrayBuffer());
              if (res.ok) {
                await o.store.put(parseS3Uri(rec.output, 'output'), body, 'transform output');
                rec.bytesOut = body.length;
                break;
              }
              retryable = res.status >= 500 || res.status === 429;
              why = `the container answered ${res.status}: ${new TextDecoder().decode(body.subarray(0, 300))}`;
            } catch (e) {
              retryable = true;
              why =
                (e as Error).name === 'TimeoutError'
                  ? `no answer within InvocationsTimeoutInSeconds (${timeoutMs / 1000} s)`
                  : `the container is unreachable (${(e as Error).message})`;
            }
            if (!retryable || rec.attempts > retries || o.signal?.aborted) throw new Error(why);
            await new Promise((res) => setTimeout(res, delay(rec.attempts)));
          }
        } catch (e) {
          rec.error = (e as Error).message;
          failures.push(`${rec.input}: ${rec.error}`);
        } finally {
          rec.ms = Date.now() - t;
        }
      };
      const worker = async () => {
        while (next < mine.length && !o.signal?.aborted) await one(mine[next++]);
      };
      await Promise.all(Array.from({ length: Math.min(used.MaxConcurrentTransforms, Math.max(1, mine.length)) }, worker));
      return { index, url, container, used, objects: mine.length, bytesIn: mine.reduce((s, x) => s + x.size, 0), seconds: (Date.now() - t0) / 1000 };
    }),
  );
  const badLimits = instances.find((i) => i.used.MaxConcurrentTransforms * i.used.MaxPayloadInMB > TRANSFORM_LIMITS.maxPayloadMb);
  const status = o.signal?.aborted ? 'Stopped' : failures.length ? 'Failed' : 'Completed';
  const manifest: TransformManifest = {
    jobName,
    status,
    ...(failures.length ? { failureReason: `ClientError: ${failures.length} of ${objects.length} objects failed; first: ${failures[0]}` } : {}),
    input: formatS3Uri(input),
    output: formatS3Uri(output),
    seconds: (Date.now() - started) / 1000,
    ...(r.Environment && Object.keys(r.Environment).length ? { environmentNotApplied: r.Environment } : {}),
    instances,
    objects: records.sort((a, b) => (a.input < b.input ? -1 : a.input > b.input ? 1 : 0)),
  };
  if (badLimits)
    manifest.failureReason = `${manifest.failureReason ? manifest.failureReason + '; ' : ''}note: MaxConcurrentTransforms x MaxPayloadInMB on instance ${badLimits.index} exceeds SageMaker's ${TRANSFORM_LIMITS.maxPayloadMb} MB`;
  await o.store.put(
    { bucket: output.bucket, key: `${output.key}${MANIFEST_NAME}` },
    new TextEncoder().encode(JSON.stringify(manifest, null, 1)),
    'transform manifest',
  );
  return manifest;
}
