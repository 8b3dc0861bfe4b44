// The local emulator's SageMaker control plane for Batch Transform: CreateTransformJob,
// DescribeTransformJob and StopTransformJob in SageMaker's own protocol (awsJson1_1: POST / with
// X-Amz-Target), so @aws-sdk/client-sagemaker drives it unchanged with only `endpoint`
// overridden, as runtime-emulator.ts does for the runtime API. Jobs run in transform-emulator.ts.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyReply } from 'fastify';
import type { CreateTransformJobCommandInput } from '@aws-sdk/client-sagemaker';
import type { ObjectStore } from '../storage/s3.ts';
import { runTransformJob, type TransformManifest } from './transform-emulator.ts';

interface Job {
  request: CreateTransformJobCommandInput;
  arn: string;
  created: number;
  status: 'InProgress' | 'Stopping' | 'Completed' | 'Failed' | 'Stopped';
  ended?: number;
  failureReason?: string;
  abort: AbortController;
  done: Promise<void>;
}

export interface ControlPlane {
  url: string;
  /** The manifest of a finished job (for tests and reports). */
  manifest(jobName: string): TransformManifest | undefined;
  close(): Promise<void>;
}

export async function startTransformControlPlane(o: {
  store: ObjectStore;
  instances: string[];
  port?: number;
  host?: string;
  region?: string;
}): Promise<ControlPlane> {
  const jobs = new Map<string, Job>();
  const manifests = new Map<string, TransformManifest>();
  const region = o.region ?? process.env.AWS_REGION ?? 'us-east-1';
  const app = Fastify({ logger: false });
  app.addContentTypeParser('application/x-amz-json-1.1', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, JSON.parse((body as string) || '{}'));
    } catch (e) {
      done(e as Error);
    }
  });
  const fail = (reply: FastifyReply, type: string, message: string) =>
    reply.code(400).header('x-amzn-errortype', type).type('application/x-amz-json-1.1').send({ __type: type, message });
  const describe = (name: string, j: Job) => ({
    TransformJobName: name,
    TransformJobArn: j.arn,
    TransformJobStatus: j.status,
    ...(j.failureReason ? { FailureReason: j.failureReason } : {}),
    ModelName: j.request.ModelName,
    MaxConcurrentTransforms: j.request.MaxConcurrentTransforms,
    MaxPayloadInMB: j.request.MaxPayloadInMB,
    BatchStrategy: j.request.BatchStrategy,
    ModelClientConfig: j.request.ModelClientConfig,
    Environment: j.request.Environment,
    TransformInput: j.request.TransformInput,
    TransformOutput: j.request.TransformOutput,
    TransformResources: j.request.TransformResources,
    CreationTime: j.created / 1000,
    TransformStartTime: j.created / 1000,
    ...(j.ended ? { TransformEndTime: j.ended / 1000 } : {}),
  });

  app.post('/', async (req, reply) => {
    const target = String(req.headers['x-amz-target'] ?? '');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const name = String(body.TransformJobName ?? '');
    reply.header('x-amzn-requestid', randomUUID()).type('application/x-amz-json-1.1');
    switch (target) {
      case 'SageMaker.CreateTransformJob': {
        const request = body as unknown as CreateTransformJobCommandInput;
        if (!/^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/.test(name))
          return fail(reply, 'ValidationException', `TransformJobName must be 1-63 letters, digits and hyphens`);
        if (jobs.has(name))
          return fail(reply, 'ResourceInUse', `Job name must be unique within an AWS account and region, and a job with this name already exists (${name})`);
        const count = request.TransformResources?.InstanceCount ?? 1;
        if (count > o.instances.length)
          return fail(
            reply,
            'ResourceLimitExceeded',
            `InstanceCount ${count} is more than the ${o.instances.length} local instances of this emulator: start it with more`,
          );
        if (request.TransformInput?.SplitType && request.TransformInput.SplitType !== 'None')
          return fail(reply, 'ValidationException', `this emulator runs SplitType None only (one object per request), not ${request.TransformInput.SplitType}`);
        const abort = new AbortController();
        const job: Job = {
          request,
          arn: `arn:aws:sagemaker:${region}:123456789012:transform-job/${name}`,
          created: Date.now(),
          status: 'InProgress',
          abort,
          done: Promise.resolve(),
        };
        job.done = runTransformJob({ store: o.store, instances: o.instances, request, signal: abort.signal })
          .then((m) => {
            manifests.set(name, m);
            job.status = m.status;
            job.failureReason = m.failureReason;
          })
          .catch((e: unknown) => {
            job.status = 'Failed';
            job.failureReason = `ClientError: ${(e as Error).message}`;
          })
          .finally(() => (job.ended = Date.now()));
        jobs.set(name, job);
        return { TransformJobArn: job.arn };
      }
      case 'SageMaker.DescribeTransformJob': {
        const j = jobs.get(name);
        if (!j) return fail(reply, 'ValidationException', `Could not find requested job with name ${name}`);
        return describe(name, j);
      }
      case 'SageMaker.StopTransformJob': {
        const j = jobs.get(name);
        if (!j) return fail(reply, 'ValidationException', `Could not find requested job with name ${name}`);
        if (j.status === 'InProgress') {
          j.status = 'Stopping';
          j.abort.abort();
        }
        return {};
      }
      default:
        return fail(
          reply,
          'UnknownOperationException',
          `this emulator serves CreateTransformJob, DescribeTransformJob and StopTransformJob, not ${target.slice(0, 60) || '(no X-Amz-Target)'}`,
        );
    }
  });
  const url = await app.listen({ port: o.port ?? 0, host: o.host ?? '127.0.0.1' });
  return {
    url,
    manifest: (n) => manifests.get(n),
    async close() {
      for (const j of jobs.values()) j.abort.abort();
      await Promise.allSettled([...jobs.values()].map((j) => j.done));
      await app.close();
    },
  };
}
