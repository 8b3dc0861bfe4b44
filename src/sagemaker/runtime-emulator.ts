// A local stand-in for the SageMaker Runtime HTTP API (InvokeEndpoint, InvokeEndpointAsync) in
// front of one inference container, so `@aws-sdk/client-sagemaker-runtime` works unchanged with
// only `endpoint` overridden. Wire shapes follow the SDK's restJson1 model: async answers 202 with
// `{"InferenceId"}` in the body and the locations in X-Amzn-SageMaker-{Output,Failure}Location;
// errors carry `x-amzn-errortype` and the error shape's members in the body.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyReply } from 'fastify';
import { parseS3Uri, type ObjectStore } from '../storage/s3.ts';

/** SageMaker's real-time limits: 6 MB each way, 60 s for the container to answer. */
export const REALTIME_MAX_BYTES = 6 * 1024 * 1024;
const REALTIME_TIMEOUT_MS = 60_000;
/** Async: payloads up to 1 GB; InvocationTimeoutSeconds defaults to 15 min, at most 1 h. */
const ASYNC_MAX_BYTES = 1024 * 1024 * 1024;
const ASYNC_DEFAULT_TIMEOUT_S = 900;
const ASYNC_MAX_TIMEOUT_S = 3600;
const VARIANT = 'AllTraffic';

export interface RuntimeEmulatorOptions {
  /** Base URL of the inference container, e.g. http://127.0.0.1:8080 */
  containerUrl: string;
  store: ObjectStore;
  /** AsyncInferenceConfig.OutputConfig.S3OutputPath, e.g. s3://bucket/async/out */
  outputPath: string;
  /** AsyncInferenceConfig.OutputConfig.S3FailurePath */
  failurePath: string;
  port?: number;
  host?: string;
}

export interface RuntimeEmulator {
  url: string;
  close(): Promise<void>;
}

// Node's Buffers are typed as possibly shared memory, which fetch's types refuse; ours never are.
const asBody = (b: Uint8Array | undefined) => b as Uint8Array<ArrayBuffer> | undefined;

type Headers = Record<string, string | string[] | undefined>;
const one = (h: Headers, name: string) => (Array.isArray(h[name]) ? h[name][0] : h[name]);

function awsError(reply: FastifyReply, status: number, type: string, message: string, extra: Record<string, unknown> = {}) {
  return reply.code(status).header('x-amzn-errortype', type).type('application/json').send({ Message: message, ...extra });
}

export async function startRuntimeEmulator(o: RuntimeEmulatorOptions): Promise<RuntimeEmulator> {
  // Fail at start, not on the first async request, when a path is not an S3 URI.
  parseS3Uri(`${o.outputPath.replace(/\/+$/, '')}/x`, 'outputPath');
  parseS3Uri(`${o.failurePath.replace(/\/+$/, '')}/x`, 'failurePath');
  const invocationsUrl = new URL('/invocations', o.containerUrl).toString();
  const pending = new Set<Promise<void>>();
  const app = Fastify({ logger: false, bodyLimit: REALTIME_MAX_BYTES, genReqId: () => randomUUID() });
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-amzn-requestid', req.id); // the SDK reports it as $metadata.requestId
  });
  // Bodies are opaque to SageMaker: forward the bytes whatever the content type.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err, _req, reply) => {
    const e = err as { code?: string; statusCode?: number; message: string };
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return awsError(reply, 413, 'ValidationError', `Request payload exceeds the real-time limit of ${REALTIME_MAX_BYTES} bytes; use InvokeEndpointAsync`);
    if (e.statusCode && e.statusCode < 500) return awsError(reply, 400, 'ValidationError', e.message);
    return awsError(reply, 500, 'InternalFailure', e.message);
  });

  app.post<{ Params: { name: string } }>('/endpoints/:name/invocations', async (req, reply) => {
    const h = req.headers as Headers;
    // The container logs under this id (its requestIdHeader): the one the SDK reports.
    const forward: Record<string, string> = { 'x-amzn-requestid': req.id };
    for (const name of ['content-type', 'accept', 'x-amzn-sagemaker-custom-attributes']) {
      const v = one(h, name);
      if (v !== undefined) forward[name] = v;
    }
    let res: Response;
    try {
      res = await fetch(invocationsUrl, { method: 'POST', headers: forward, body: asBody(req.body as Buffer | undefined), signal: AbortSignal.timeout(REALTIME_TIMEOUT_MS) });
    } catch (e) {
      if ((e as Error).name === 'TimeoutError') return awsError(reply, 424, 'ModelError', `Your invocation timed out while waiting for a response from container primary (${REALTIME_TIMEOUT_MS / 1000} s).`, { OriginalStatusCode: 0 });
      return awsError(reply, 503, 'ServiceUnavailable', `the container at ${o.containerUrl} is unreachable (${(e as Error).message})`);
    }
    const body = Buffer.from(await res.arrayBuffer());
    if (!res.ok) {
      // SageMaker wraps a container's error in ModelError (424) and keeps the original body.
      return awsError(reply, 424, 'ModelError', `Received ${res.status < 500 ? 'client' : 'server'} error (${res.status}) from primary with message "${body.toString('utf8').slice(0, 1000)}".`, {
        OriginalStatusCode: res.status,
        OriginalMessage: body.toString('utf8'),
      });
    }
    if (body.length > REALTIME_MAX_BYTES) return awsError(reply, 424, 'ModelError', `the container's response (${body.length} bytes) exceeds the real-time limit of ${REALTIME_MAX_BYTES} bytes`, { OriginalStatusCode: res.status });
    reply.code(res.status).header('x-amzn-invoked-production-variant', VARIANT);
    const attributes = res.headers.get('x-amzn-sagemaker-custom-attributes');
    if (attributes !== null) reply.header('x-amzn-sagemaker-custom-attributes', attributes);
    return reply.type(res.headers.get('content-type') ?? 'application/octet-stream').send(body);
  });

  app.post<{ Params: { name: string } }>('/endpoints/:name/async-invocations', async (req, reply) => {
    const h = req.headers as Headers;
    const input = one(h, 'x-amzn-sagemaker-inputlocation');
    if (!input) return awsError(reply, 400, 'ValidationError', 'InputLocation (header X-Amzn-SageMaker-InputLocation) is required');
    let inputLoc;
    try {
      inputLoc = parseS3Uri(input, 'InputLocation');
    } catch (e) {
      return awsError(reply, 400, 'ValidationError', (e as Error).message);
    }
    const id = one(h, 'x-amzn-sagemaker-inference-id') ?? randomUUID();
    if (!/^[\w.-]{1,64}$/.test(id)) return awsError(reply, 400, 'ValidationError', 'InferenceId must be 1-64 letters, digits, ".", "_" or "-"');
    const timeoutS = Math.min(Number(one(h, 'x-amzn-sagemaker-invocationtimeoutseconds') ?? ASYNC_DEFAULT_TIMEOUT_S), ASYNC_MAX_TIMEOUT_S);
    const outputUri = `${o.outputPath.replace(/\/+$/, '')}/${id}.out`;
    const failureUri = `${o.failurePath.replace(/\/+$/, '')}/${id}-error.out`;
    const headers: Record<string, string> = { 'x-amzn-requestid': id, 'content-type': one(h, 'x-amzn-sagemaker-content-type') ?? 'application/octet-stream' };
    const accept = one(h, 'x-amzn-sagemaker-accept');
    if (accept) headers.accept = accept;
    const attributes = one(h, 'x-amzn-sagemaker-custom-attributes');
    if (attributes) headers['x-amzn-sagemaker-custom-attributes'] = attributes;

    // SageMaker queues the request and answers at once; the work happens after the 202.
    const job = (async () => {
      const fail = (text: string) => o.store.put(parseS3Uri(failureUri), new TextEncoder().encode(text), 'async failure');
      try {
        const { bytes } = await o.store.get(inputLoc, ASYNC_MAX_BYTES, 'async input');
        const res = await fetch(invocationsUrl, { method: 'POST', headers, body: asBody(bytes), signal: AbortSignal.timeout(timeoutS * 1000) });
        const body = new Uint8Array(await res.arrayBuffer());
        if (res.ok) await o.store.put(parseS3Uri(outputUri), body, 'async output');
        else await fail(new TextDecoder().decode(body) || `container answered ${res.status}`);
      } catch (e) {
        await fail(JSON.stringify({ error: 'internal', message: `async invocation ${id} failed: ${(e as Error).message}` })).catch(() => {});
      }
    })();
    pending.add(job);
    void job.finally(() => pending.delete(job));
    return reply.code(202).header('x-amzn-sagemaker-outputlocation', outputUri).header('x-amzn-sagemaker-failurelocation', failureUri).send({ InferenceId: id });
  });

  app.setNotFoundHandler((req, reply) => awsError(reply, 404, 'UnknownOperationException', `no operation for ${req.method} ${req.url.slice(0, 100)}`));

  const address = await app.listen({ port: o.port ?? 0, host: o.host ?? '127.0.0.1' });
  return {
    url: address,
    async close() {
      await app.close();
      await Promise.allSettled([...pending]);
    },
  };
}
