// The client's way to a SageMaker endpoint: InvokeEndpoint (real-time) and InvokeEndpointAsync
// (request in S3, response polled from S3) with @aws-sdk/client-sagemaker-runtime. The same code
// talks to AWS and to the local emulator (src/sagemaker/runtime-emulator.ts); only `endpoint`
// differs. The body is the server's small JSON request; ciphertexts travel through S3 either way.
import { randomUUID } from 'node:crypto';
import {
  InvokeEndpointAsyncCommand,
  InvokeEndpointCommand,
  SageMakerRuntimeClient,
  type SageMakerRuntimeClientConfig,
} from '@aws-sdk/client-sagemaker-runtime';
import { SealedError, safeText, serverError } from '../errors.ts';
import { waitForNotification, type NotificationQueue } from './async-notifications.ts';
import { formatS3Uri, parseS3Uri, type ObjectStore } from '../storage/s3.ts';

export type InvocationBody = Record<string, unknown>;
/** Sends one /invocations request body and returns the server's JSON answer. */
export type Invoke = (body: InvocationBody) => Promise<Record<string, unknown>>;

/**
 * An AWS SDK client's region, endpoint and credentials: the environment's, except that a local
 * emulator's URL (which ignores signatures) needs no AWS credentials. Shared by the runtime
 * client here and the control-plane client of `predict --transform`.
 */
export function awsClientConfig(o: { endpoint?: string; region?: string }): {
  region: string;
  endpoint?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
} {
  const cfg: ReturnType<typeof awsClientConfig> = { region: o.region || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1' };
  if (o.endpoint) {
    cfg.endpoint = o.endpoint;
    if (!process.env.AWS_ACCESS_KEY_ID && !process.env.AWS_PROFILE) cfg.credentials = { accessKeyId: 'LOCAL', secretAccessKey: 'LOCAL' };
  }
  return cfg;
}

export function runtimeClient(o: { endpoint?: string; region?: string } = {}): SageMakerRuntimeClient {
  const cfg: SageMakerRuntimeClientConfig = awsClientConfig(o);
  return new SageMakerRuntimeClient(cfg);
}

/**
 * An error of the SageMaker runtime SDK as the SealedError a caller acts on: the container's own
 * answer (ModelError carries its status and body) becomes the server's error, as over direct
 * HTTP; SageMaker's refusals and unreachable endpoints say what to check. Shared by every
 * InvokeEndpoint call (the JSON forms here, the body form in src/client/invoke-sagemaker.ts).
 */
export function sdkError(e: unknown, endpointName: string): unknown {
  if (e instanceof SealedError) return e;
  const err = e as { name?: string; message?: string; OriginalStatusCode?: number; OriginalMessage?: string };
  if (err.name === 'ModelError' && err.OriginalMessage !== undefined) return serverError(err.OriginalStatusCode ?? 424, err.OriginalMessage);
  if (err.name === 'ValidationError')
    return new SealedError(
      'bad-request',
      `SageMaker refused the request to endpoint ${endpointName}: ${err.message}`,
      'check the endpoint name, region and request size',
    );
  const hint = 'check the endpoint name, region and credentials (or the --sagemaker-url of a local emulator), and that the endpoint is InService';
  return new SealedError('storage', `cannot invoke SageMaker endpoint ${endpointName} (${err.name ?? 'error'}: ${err.message ?? String(e)})`, hint, {
    cause: e,
  });
}

function parseAnswer(bytes: Uint8Array, what: string): Record<string, unknown> {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  } catch {
    throw new SealedError('internal', `the ${what} is not JSON`, 'check that the endpoint runs the sealed inference image');
  }
}

export async function invokeRealtime(client: SageMakerRuntimeClient, endpointName: string, body: InvocationBody): Promise<Record<string, unknown>> {
  try {
    const r = await client.send(
      new InvokeEndpointCommand({
        EndpointName: endpointName,
        ContentType: 'application/json',
        Accept: 'application/json',
        Body: new TextEncoder().encode(JSON.stringify(body)),
      }),
    );
    return parseAnswer(r.Body ?? new Uint8Array(), 'endpoint response');
  } catch (e) {
    throw sdkError(e, endpointName);
  }
}

export interface AsyncOptions {
  store: ObjectStore;
  /** Where the request body is uploaded (InputLocation), e.g. s3://bucket/sealed/async-in/ID.json */
  inputUri: string;
  /** Give up after this long (default 15 min, SageMaker's default InvocationTimeoutSeconds). */
  timeoutMs?: number;
  /** First and largest wait between polls of the output and failure locations. */
  pollMs?: { first: number; max: number };
  /** Wait on the endpoint's SNS notifications through this SQS queue instead of polling S3. */
  notifications?: NotificationQueue;
}

export async function invokeAsync(
  client: SageMakerRuntimeClient,
  endpointName: string,
  body: InvocationBody,
  o: AsyncOptions,
): Promise<Record<string, unknown>> {
  const inputLoc = parseS3Uri(o.inputUri, 'inputUri');
  await o.store.put(inputLoc, new TextEncoder().encode(JSON.stringify(body)), 'async request');
  let out: { output: string; failure: string | undefined; id: string };
  try {
    const r = await client.send(
      new InvokeEndpointAsyncCommand({
        EndpointName: endpointName,
        InputLocation: formatS3Uri(inputLoc),
        ContentType: 'application/json',
        Accept: 'application/json',
      }),
    );
    if (!r.OutputLocation)
      throw new SealedError('internal', `endpoint ${endpointName} returned no OutputLocation`, 'check that the endpoint has an AsyncInferenceConfig');
    out = { output: r.OutputLocation, failure: r.FailureLocation, id: r.InferenceId ?? '?' };
  } catch (e) {
    throw sdkError(e, endpointName);
  }
  const outputLoc = parseS3Uri(out.output, 'OutputLocation');
  const failureLoc = out.failure ? parseS3Uri(out.failure, 'FailureLocation') : undefined;
  const timeoutMs = o.timeoutMs ?? 15 * 60_000;
  const { first, max } = o.pollMs ?? { first: 100, max: 5000 };
  const deadline = Date.now() + timeoutMs;
  const late = () =>
    new SealedError(
      'overloaded',
      `async inference ${out.id} did not finish within ${Math.round(timeoutMs / 1000)} s (output expected at ${out.output})`,
      'the request may still complete: look for the output object later, or raise the timeout (and check that your identity may read and list the async output and failure paths)',
    );
  if (o.notifications) {
    const n = await waitForNotification(o.notifications, out.id, deadline);
    if (!n) throw late();
    if (n.invocationStatus === 'Completed')
      return parseAnswer(
        (await o.store.get(n.outputLocation ? parseS3Uri(n.outputLocation, 'outputLocation') : outputLoc, 64 * 1024 * 1024, 'async response')).bytes,
        'async response',
      );
    const failedAt = n.failureLocation ? parseS3Uri(n.failureLocation, 'failureLocation') : failureLoc;
    if (failedAt && (await o.store.head(failedAt, { deniedAsUnknown: true })))
      throw serverError(`async ${out.id}`, new TextDecoder().decode((await o.store.get(failedAt, 64 * 1024 * 1024, 'async failure')).bytes));
    throw new SealedError(
      'internal',
      `async inference ${out.id} failed: ${safeText(n.failureReason, 200)}`,
      'read the endpoint’s log in CloudWatch Logs (/aws/sagemaker/Endpoints/NAME)',
    );
  }
  // The queue may hold the request for minutes (or start an instance from zero): back off.
  for (let wait = first; ; wait = Math.min(wait * 2, max)) {
    // Not there yet may read as 403 to a client without an unconditioned ListBucket: keep polling.
    if (await o.store.head(outputLoc, { deniedAsUnknown: true }))
      return parseAnswer((await o.store.get(outputLoc, 64 * 1024 * 1024, 'async response')).bytes, 'async response');
    if (failureLoc && (await o.store.head(failureLoc, { deniedAsUnknown: true }))) {
      const { bytes } = await o.store.get(failureLoc, 64 * 1024 * 1024, 'async failure');
      throw serverError(`async ${out.id}`, new TextDecoder().decode(bytes));
    }
    if (Date.now() + wait > deadline) throw late();
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** An Invoke for predict(): real-time, or async with request objects under `<prefix>async-in/`. */
export function sagemakerInvoke(o: {
  client: SageMakerRuntimeClient;
  endpointName: string;
  async?: Omit<AsyncOptions, 'inputUri'> & { bucket: string; prefix?: string };
}): Invoke {
  const a = o.async;
  if (!a) return (body) => invokeRealtime(o.client, o.endpointName, body);
  return (body) =>
    invokeAsync(o.client, o.endpointName, body, {
      ...a,
      inputUri: formatS3Uri({ bucket: a.bucket, key: `${a.prefix ?? 'sealed/'}async-in/${randomUUID()}.json` }),
    });
}
