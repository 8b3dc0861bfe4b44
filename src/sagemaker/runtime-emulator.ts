// A local stand-in for the SageMaker Runtime HTTP API (InvokeEndpoint, InvokeEndpointAsync) in
// front of one inference container, so `@aws-sdk/client-sagemaker-runtime` works unchanged with
// only `endpoint` overridden. Wire shapes follow the SDK's restJson1 model: async answers 202 with
// `{"InferenceId"}` in the body and the locations in X-Amzn-SageMaker-{Output,Failure}Location;
// errors carry `x-amzn-errortype` and the error shape's members in the body. Requests SageMaker
// refuses are refused here too, with its error: another endpoint name, a variant the endpoint
// lacks, a body over 6 MB, timeouts out of range; a client tested here meets no surprise there.
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyReply } from 'fastify';
import { parseS3Uri, type ObjectStore } from '../storage/s3.ts';

/** SageMaker's real-time limits: 6 MB each way, 60 s for the container to answer. */
export const REALTIME_MAX_BYTES = 6 * 1024 * 1024;
const REALTIME_TIMEOUT_MS = 60_000;
/** Async: payloads up to 1 GB. Ranges (and defaults) of the API's model, in seconds. */
const ASYNC_MAX_BYTES = 1024 * 1024 * 1024;
const ASYNC_TIMEOUT_S = { min: 1, max: 3600, default: 900 };
const ASYNC_TTL_S = { min: 60, max: 21_600, default: 21_600 };
const VARIANT = 'AllTraffic';
/** The name `sealed sagemaker-emulator` serves, as its start-up line tells `sealed predict`. */
export const DEFAULT_ENDPOINT_NAME = 'local';
/** The account of the emulated endpoint, in its error messages and ARNs (AWS's documentation placeholder). */
const ACCOUNT = '123456789012';
/**
 * A body over the real-time limit is still read to its end, discarding it, up to this many
 * bytes: answering and closing while the client is still sending makes its next write fail
 * (EPIPE) and it never reads the 413. Beyond this the connection is closed.
 */
const DISCARD_MAX_BYTES = ASYNC_MAX_BYTES;

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
  /** The endpoint's name: InvokeEndpoint(Async) for any other is "not found", as on SageMaker. Default "local". */
  endpointName?: string;
  /** Region of the endpoint's ARNs (ModelError's LogStreamArn). Default $AWS_REGION, else us-east-1. */
  region?: string;
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
  return reply
    .code(status)
    .header('x-amzn-errortype', type)
    .type('application/json')
    .send({ Message: message, ...extra });
}

class PayloadTooLarge extends Error {
  readonly statusCode = 413;
}

const tooLarge = (bytes: number, atLeast: boolean) =>
  new PayloadTooLarge(
    `The request body is ${atLeast ? 'over ' : ''}${bytes} bytes, over the real-time limit of ${REALTIME_MAX_BYTES} bytes (6 MB). Send less per InvokeEndpoint request, or use InvokeEndpointAsync (input in S3, up to 1 GB).`,
  );

/**
 * Reads a request body up to the real-time limit. A larger one is read to its end and discarded
 * (see DISCARD_MAX_BYTES) before the 413, so that the client has sent it all and reads the answer.
 */
function readBody(payload: NodeJS.ReadableStream, declared: number, done: (err: Error | null, body?: Buffer) => void): void {
  if (declared > DISCARD_MAX_BYTES) return done(tooLarge(declared, false));
  const chunks: Buffer[] = [];
  let size = 0;
  const onData = (c: Buffer) => {
    size += c.length;
    if (size <= REALTIME_MAX_BYTES) chunks.push(c);
    else chunks.length = 0;
    if (size > DISCARD_MAX_BYTES) {
      stop();
      done(tooLarge(size, true));
    }
  };
  const onEnd = () => {
    stop();
    done(size > REALTIME_MAX_BYTES ? tooLarge(size, false) : null, Buffer.concat(chunks, size));
  };
  const onError = (e: Error) => {
    stop();
    done(Object.assign(e, { statusCode: 400 }));
  };
  const stop = () => {
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', onError);
  };
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onError);
  payload.resume();
}

/**
 * An optional integer header within [min, max]; the message is SageMaker's for a constraint
 * violation, plus what to send instead.
 */
function intHeader(h: Headers, header: string, member: string, range: { min: number; max: number; default: number }): number | string {
  const raw = one(h, header);
  if (raw === undefined) return range.default;
  const v = Number(raw);
  const fix = `give ${member} from ${range.min} to ${range.max} seconds, or leave it out for the default of ${range.default}`;
  const value = `Value '${raw.slice(0, 20)}' at '${member[0].toLowerCase()}${member.slice(1)}' failed to satisfy constraint`;
  if (!/^-?\d+$/.test(raw.trim())) return `1 validation error detected: ${value}: Member must be an integer (${fix})`;
  if (v < range.min) return `1 validation error detected: ${value}: Member must have value greater than or equal to ${range.min} (${fix})`;
  if (v > range.max) return `1 validation error detected: ${value}: Member must have value less than or equal to ${range.max} (${fix})`;
  return v;
}

export async function startRuntimeEmulator(o: RuntimeEmulatorOptions): Promise<RuntimeEmulator> {
  // Fail at start, not on the first async request, when a path is not an S3 URI.
  parseS3Uri(`${o.outputPath.replace(/\/+$/, '')}/x`, 'outputPath');
  parseS3Uri(`${o.failurePath.replace(/\/+$/, '')}/x`, 'failurePath');
  const invocationsUrl = new URL('/invocations', o.containerUrl).toString();
  const endpointName = o.endpointName ?? DEFAULT_ENDPOINT_NAME;
  const region = o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
  const logGroup = `/aws/sagemaker/Endpoints/${endpointName}`;
  // SageMaker's ModelError names the endpoint's CloudWatch log stream; locally the container's
  // log is its own output, but a client reading the field finds one of the same form.
  const logStreamArn = `arn:aws:logs:${region}:${ACCOUNT}:log-group:${logGroup}:log-stream:${VARIANT}/local`;
  const modelError = (reply: FastifyReply, message: string, extra: Record<string, unknown>) =>
    awsError(reply, 424, 'ModelError', message, { ...extra, LogStreamArn: logStreamArn });
  const pending = new Set<Promise<void>>();
  const app = Fastify({ logger: false, genReqId: () => randomUUID() });
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-amzn-requestid', req.id); // the SDK reports it as $metadata.requestId
  });
  // Bodies are opaque to SageMaker: forward the bytes whatever the content type.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (req, payload, done) => readBody(payload, Number(req.headers['content-length'] ?? 0), done));

  app.setErrorHandler((err, _req, reply) => {
    const e = err as { statusCode?: number; message: string };
    if (err instanceof PayloadTooLarge) return awsError(reply, 413, 'ValidationError', e.message);
    if (e.statusCode && e.statusCode < 500) return awsError(reply, 400, 'ValidationError', e.message);
    return awsError(reply, 500, 'InternalFailure', e.message);
  });

  /** SageMaker's answer for a name this emulator does not serve, else undefined. */
  const unknownEndpoint = (reply: FastifyReply, name: string) =>
    name === endpointName
      ? undefined
      : awsError(
          reply,
          400,
          'ValidationError',
          `Endpoint ${name} of account ${ACCOUNT} not found. This emulator serves one endpoint, ${endpointName}: invoke that name.`,
        );

  app.post<{ Params: { name: string } }>('/endpoints/:name/invocations', async (req, reply) => {
    const h = req.headers as Headers;
    const name = req.params.name;
    const notFound = unknownEndpoint(reply, name);
    if (notFound) return notFound;
    const variant = one(h, 'x-amzn-sagemaker-target-variant');
    if (variant !== undefined && variant !== VARIANT)
      return awsError(
        reply,
        400,
        'ValidationError',
        `Variant ${variant} not found for endpoint ${name}: its one production variant is ${VARIANT}. Leave TargetVariant out, or set it to ${VARIANT}.`,
      );
    if (one(h, 'x-amzn-sagemaker-target-model') !== undefined)
      return awsError(
        reply,
        400,
        'ValidationError',
        `Endpoint ${name} is not a multi-model endpoint and does not support target model header. Leave TargetModel out.`,
      );
    // The container logs under this id (its requestIdHeader): the one the SDK reports.
    const forward: Record<string, string> = { 'x-amzn-requestid': req.id };
    for (const name of ['content-type', 'accept', 'x-amzn-sagemaker-custom-attributes']) {
      const v = one(h, name);
      if (v !== undefined) forward[name] = v;
    }
    let res: Response;
    try {
      res = await fetch(invocationsUrl, {
        method: 'POST',
        headers: forward,
        body: asBody(req.body as Buffer | undefined),
        signal: AbortSignal.timeout(REALTIME_TIMEOUT_MS),
      });
    } catch (e) {
      if ((e as Error).name === 'TimeoutError')
        return modelError(reply, `Your invocation timed out while waiting for a response from container primary (${REALTIME_TIMEOUT_MS / 1000} s).`, {
          OriginalStatusCode: 0,
        });
      return awsError(reply, 503, 'ServiceUnavailable', `the container at ${o.containerUrl} is unreachable (${(e as Error).message})`);
    }
    const body = Buffer.from(await res.arrayBuffer());
    if (!res.ok) {
      // SageMaker wraps a container's error in ModelError (424) and keeps the original body.
      return modelError(
        reply,
        `Received ${res.status < 500 ? 'client' : 'server'} error (${res.status}) from primary with message "${body.toString('utf8').slice(0, 1000)}". See the container's log (log group ${logGroup} on SageMaker) for more information.`,
        {
          OriginalStatusCode: res.status,
          OriginalMessage: body.toString('utf8'),
        },
      );
    }
    if (body.length > REALTIME_MAX_BYTES)
      return modelError(reply, `the container's response (${body.length} bytes) exceeds the real-time limit of ${REALTIME_MAX_BYTES} bytes`, {
        OriginalStatusCode: res.status,
      });
    reply.code(res.status).header('x-amzn-invoked-production-variant', VARIANT);
    const attributes = res.headers.get('x-amzn-sagemaker-custom-attributes');
    if (attributes !== null) reply.header('x-amzn-sagemaker-custom-attributes', attributes);
    return reply.type(res.headers.get('content-type') ?? 'application/octet-stream').send(body);
  });

  app.post<{ Params: { name: string } }>('/endpoints/:name/async-invocations', async (req, reply) => {
    const h = req.headers as Headers;
    const timeoutS = intHeader(h, 'x-amzn-sagemaker-invocationtimeoutseconds', 'InvocationTimeoutSeconds', ASYNC_TIMEOUT_S);
    if (typeof timeoutS === 'string') return awsError(reply, 400, 'ValidationError', timeoutS);
    // Validated only: the emulator queues nothing, so no request waits long enough to expire.
    const ttlS = intHeader(h, 'x-amzn-sagemaker-requestttlseconds', 'RequestTTLSeconds', ASYNC_TTL_S);
    if (typeof ttlS === 'string') return awsError(reply, 400, 'ValidationError', ttlS);
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
    const notFound = unknownEndpoint(reply, req.params.name);
    if (notFound) return notFound;
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
    return reply
      .code(202)
      .header('x-amzn-sagemaker-outputlocation', outputUri)
      .header('x-amzn-sagemaker-failurelocation', failureUri)
      .send({ InferenceId: id });
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
