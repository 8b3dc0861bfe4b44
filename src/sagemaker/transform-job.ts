// Batch Transform: CreateTransformJob for an S3 prefix of encrypted queries (one wire query per
// object, never split: SplitType None), the wait for it with progress, and the limits SageMaker
// enforces, checked here first so a refused job says what to change before anything is sent.
//
// Concurrency, batch strategy and payload size: a value given here goes into the request; one
// left out is absent from it, and SageMaker then asks the container (GET /execution-parameters),
// as the local emulator does too (transform-emulator.ts).
import {
  CreateTransformJobCommand,
  DescribeTransformJobCommand,
  StopTransformJobCommand,
  type BatchStrategy,
  type CreateTransformJobCommandInput,
  type DescribeTransformJobCommandOutput,
  type TransformInstanceType,
} from '@aws-sdk/client-sagemaker';
import { SealedError } from '../errors.ts';
import { awsError, isNotFound, send, type Clients } from './aws.ts';
import { poll, type Waiting } from './wait.ts';

/** SageMaker's limits for a transform job (CreateTransformJob, ModelClientConfig). */
export const TRANSFORM_LIMITS = {
  /** MaxPayloadInMB, and MaxConcurrentTransforms x MaxPayloadInMB, are at most 100 MB. */
  maxPayloadMb: 100,
  defaultPayloadMb: 6,
  /** ModelClientConfig.InvocationsTimeoutInSeconds: 1-3600, default 600. */
  timeoutSeconds: { min: 1, max: 3600, default: 600 },
  /** ModelClientConfig.InvocationsMaxRetries: 0-3, default 3. */
  retries: { min: 0, max: 3, default: 3 },
} as const;
export const TRANSFORM_CONTENT_TYPE = 'application/octet-stream';
export const DEFAULT_TRANSFORM_INSTANCE = 'ml.c6i.xlarge';

export interface TransformJobOptions {
  jobName: string;
  /** A SageMaker model (CreateModel) of the sealed inference image. */
  modelName: string;
  /** S3 prefix of the input objects, e.g. s3://bucket/sealed/tenants/acme/transform-in/job/ */
  input: string;
  /** S3 prefix SageMaker writes `<input key relative to the prefix>.out` under. */
  output: string;
  instanceType?: string;
  instanceCount?: number;
  maxConcurrentTransforms?: number;
  maxPayloadInMB?: number;
  batchStrategy?: BatchStrategy;
  invocationsTimeoutSeconds?: number;
  invocationsMaxRetries?: number;
  kmsKeyId?: string;
  /**
   * What each input object is: the encrypted query itself (application/octet-stream, the body
   * transport), or the server's JSON request naming the query's and the result's S3 locations
   * (application/json): the way for queries over MaxPayloadInMB's 100 MB.
   */
  contentType?: typeof TRANSFORM_CONTENT_TYPE | 'application/json';
}

const whole = (v: number | undefined, name: string, min: number, max: number, fix: string) => {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max))
    throw new SealedError('bad-request', `${name} ${v} is not a whole number from ${min} to ${max}`, fix);
};

/** The server's deadline inside a transform job: a little under the invocation timeout. */
export const transformDeadlineMs = (timeoutSeconds: number) => Math.max(1000, timeoutSeconds * 1000 - Math.min(10_000, timeoutSeconds * 100));

export function transformJobRequest(o: TransformJobOptions): CreateTransformJobCommandInput {
  const L = TRANSFORM_LIMITS;
  whole(o.maxPayloadInMB, 'MaxPayloadInMB', 1, L.maxPayloadMb, `give --max-payload-mb from 1 to ${L.maxPayloadMb}, or leave it out to take the container's`);
  whole(o.maxConcurrentTransforms, 'MaxConcurrentTransforms', 1, 1000, "give --max-concurrent of at least 1, or leave it out to take the container's");
  whole(o.instanceCount, 'InstanceCount', 1, 1000, 'give --instance-count of at least 1');
  whole(
    o.invocationsTimeoutSeconds,
    'InvocationsTimeoutInSeconds',
    L.timeoutSeconds.min,
    L.timeoutSeconds.max,
    `give --timeout from ${L.timeoutSeconds.min} to ${L.timeoutSeconds.max} seconds`,
  );
  whole(o.invocationsMaxRetries, 'InvocationsMaxRetries', L.retries.min, L.retries.max, `give --retries from ${L.retries.min} to ${L.retries.max}`);
  if (o.maxConcurrentTransforms !== undefined && o.maxPayloadInMB !== undefined && o.maxConcurrentTransforms * o.maxPayloadInMB > L.maxPayloadMb) {
    throw new SealedError(
      'bad-request',
      `MaxConcurrentTransforms x MaxPayloadInMB is ${o.maxConcurrentTransforms * o.maxPayloadInMB} MB, over SageMaker's ${L.maxPayloadMb} MB`,
      'lower --max-concurrent or --max-payload-mb',
    );
  }
  for (const [name, uri] of [
    ['input', o.input],
    ['output', o.output],
  ]) {
    if (!/^s3:\/\/[^/]+\//.test(uri))
      throw new SealedError('bad-uri', `transform ${name} ${uri.slice(0, 100)} is not an S3 prefix`, `give s3://bucket/prefix/ for --${name}`);
  }
  const timeout = o.invocationsTimeoutSeconds ?? L.timeoutSeconds.default;
  return {
    TransformJobName: o.jobName,
    ModelName: o.modelName,
    ...(o.maxConcurrentTransforms !== undefined ? { MaxConcurrentTransforms: o.maxConcurrentTransforms } : {}),
    ...(o.maxPayloadInMB !== undefined ? { MaxPayloadInMB: o.maxPayloadInMB } : {}),
    ...(o.batchStrategy !== undefined ? { BatchStrategy: o.batchStrategy } : {}),
    ModelClientConfig: { InvocationsTimeoutInSeconds: timeout, InvocationsMaxRetries: o.invocationsMaxRetries ?? L.retries.default },
    // The server's per-request deadline from the job's timeout (it reads SEALED_DEADLINE_MS), and,
    // when the job names its payload size, the body size its containers take: they default to
    // real-time's 6 MB and would answer 413 to every larger object SageMaker sends.
    Environment: {
      SEALED_DEADLINE_MS: String(transformDeadlineMs(timeout)),
      ...(o.maxPayloadInMB !== undefined ? { SEALED_MAX_PAYLOAD_MB: String(o.maxPayloadInMB) } : {}),
    },
    // One object is one wire query: never split, sent whole as the body of one /invocations.
    TransformInput: {
      DataSource: { S3DataSource: { S3DataType: 'S3Prefix', S3Uri: o.input } },
      ContentType: o.contentType ?? TRANSFORM_CONTENT_TYPE,
      SplitType: 'None',
      CompressionType: 'None',
    },
    TransformOutput: {
      S3OutputPath: o.output,
      Accept: o.contentType ?? TRANSFORM_CONTENT_TYPE,
      AssembleWith: 'None',
      ...(o.kmsKeyId ? { KmsKeyId: o.kmsKeyId } : {}),
    },
    TransformResources: { InstanceType: (o.instanceType ?? DEFAULT_TRANSFORM_INSTANCE) as TransformInstanceType, InstanceCount: o.instanceCount ?? 1 },
  };
}

export async function startTransformJob(c: Pick<Clients, 'sagemaker'>, o: TransformJobOptions): Promise<string> {
  const r = await send(
    `start transform job ${o.jobName}`,
    () => c.sagemaker.send(new CreateTransformJobCommand(transformJobRequest(o))),
    'check --model-name (a model made by npm run deploy), the S3 prefixes and --instance-type (an ml.* type Batch Transform offers in this region)',
  );
  return r.TransformJobArn ?? o.jobName;
}

/** The job's description, or undefined when there is no job of that name. */
export async function describeTransformJob(c: Pick<Clients, 'sagemaker'>, jobName: string): Promise<DescribeTransformJobCommandOutput | undefined> {
  try {
    return await c.sagemaker.send(new DescribeTransformJobCommand({ TransformJobName: jobName }));
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw awsError(e, `describe transform job ${jobName}`);
  }
}

export async function stopTransformJob(c: Pick<Clients, 'sagemaker'>, jobName: string): Promise<void> {
  await send(`stop transform job ${jobName}`, () => c.sagemaker.send(new StopTransformJobCommand({ TransformJobName: jobName })));
}

export interface TransformProgress {
  done: number;
  total: number;
}

/**
 * Waits until the job ends; `progress` (e.g. counting the `.out` objects written so far) is
 * asked at each poll and reported with the status, since DescribeTransformJob tells no counts.
 */
export async function waitForTransformJob(
  c: Pick<Clients, 'sagemaker'>,
  jobName: string,
  w: Waiting & { progress?: () => Promise<TransformProgress>; onProgress?: (p: TransformProgress & { status: string }) => void } = {},
): Promise<DescribeTransformJobCommandOutput> {
  const d = await poll(
    async () => {
      const d = await describeTransformJob(c, jobName);
      if (!d) throw new SealedError('not-found', `there is no transform job ${jobName}`, 'check the job name and --region');
      if (w.progress) w.onProgress?.({ ...(await w.progress()), status: d.TransformJobStatus ?? 'Unknown' });
      return d;
    },
    (d) => d.TransformJobStatus ?? 'Unknown',
    (d) => d.TransformJobStatus !== 'InProgress' && d.TransformJobStatus !== 'Stopping',
    { pollMs: { first: 5_000, max: 30_000 }, ...w },
    `transform job ${jobName}`,
    'it keeps running: follow it again later with the same job name (objects already fetched are skipped)',
  );
  if (d.TransformJobStatus !== 'Completed') {
    throw new SealedError(
      'bad-data',
      `transform job ${jobName} ended ${d.TransformJobStatus}: ${d.FailureReason ?? 'no reason given'}`,
      `read its log in CloudWatch Logs (/aws/sagemaker/TransformJobs, streams ${jobName}/...); the .out objects written so far stay in the output prefix`,
    );
  }
  return d;
}
