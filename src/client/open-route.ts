// Node: an endpoint transport from options, as `sealed predict` and the SDK's `endpoint` take
// them. Resolves S3 (the same defaults everywhere: $SEALED_S3_ENDPOINT, AWS if configured, else
// the embedded local S3), picks the channel (direct HTTP or SageMaker's runtime, real-time or
// async) and the form (`auto`, `body`, `s3`).
import { SealedError } from '../errors.ts';
import { LOCAL_BUCKET, resolveS3 } from '../storage/resolve.ts';
import { ObjectStore } from '../storage/s3.ts';
import { bodyAvailable, type S3Route } from './route.ts';
import { bodyRouteTransport } from './transport-body.ts';
import { s3RouteTransport } from './transport-s3.ts';
import { sizeSwitch, type Transport, type TransportMode } from './transport.ts';

export interface SageMakerTarget {
  /** The endpoint's name (InvokeEndpoint / InvokeEndpointAsync). */
  endpointName: string;
  /** SageMaker Runtime URL override, e.g. the local emulator (default $SEALED_SAGEMAKER_URL, else AWS). */
  url?: string;
  /** InvokeEndpointAsync: the request in S3, the answer polled from S3. Queries always go through S3. */
  async?: boolean;
  /** Async: give up after this long (default 15 min). */
  timeoutMs?: number;
  /** Async: an SQS queue subscribed to the endpoint's SNS topics, waited on instead of polling S3. */
  notificationQueue?: string;
}

export interface RouteOptions {
  /** Base URL of the inference server (direct HTTP); ignored with `sagemaker`. */
  endpoint?: string;
  sagemaker?: SageMakerTarget;
  s3Endpoint?: string;
  /** Default: the local bucket (required with AWS S3). */
  bucket?: string;
  prefix?: string;
}

export interface OpenRoute {
  route: S3Route;
  close(): Promise<void>;
}

export async function openRoute(o: RouteOptions): Promise<OpenRoute> {
  if (!o.sagemaker && o.endpoint === undefined)
    throw new SealedError('bad-request', 'no server to send queries to', 'pass an endpoint URL or a SageMaker endpoint name');
  const where = await resolveS3({ endpoint: o.s3Endpoint });
  const bucket = o.bucket ?? (where.mode === 'aws' ? undefined : LOCAL_BUCKET);
  if (!bucket) {
    await where.local?.close();
    throw new SealedError('bad-request', 'no S3 bucket given', 'pass a bucket (--bucket) the endpoint can read and write');
  }
  const store = new ObjectStore({ endpoint: where.endpoint });
  const route: S3Route = { store, bucket, prefix: o.prefix, endpoint: o.endpoint ?? '' };
  const clients: { destroy(): void }[] = [];
  try {
    if (where.mode !== 'aws') await store.ensureBucket(bucket);
    const sm = o.sagemaker;
    if (sm) {
      const [rc, body] = await Promise.all([import('../sagemaker/runtime-client.ts'), import('./invoke-sagemaker.ts')]);
      const client = rc.runtimeClient({ endpoint: sm.url ?? process.env.SEALED_SAGEMAKER_URL });
      clients.push(client);
      let notifications;
      if (sm.async && sm.notificationQueue) {
        const { SQSClient } = await import('@aws-sdk/client-sqs');
        const sqs = new SQSClient({ region: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1' });
        clients.push(sqs);
        notifications = { sqs, queueUrl: sm.notificationQueue };
      }
      route.invoke = rc.sagemakerInvoke({
        client,
        endpointName: sm.endpointName,
        async: sm.async ? { store, bucket, prefix: o.prefix, timeoutMs: sm.timeoutMs, notifications } : undefined,
      });
      if (!sm.async) route.invokeBody = body.sagemakerBody(client, sm.endpointName);
    }
  } catch (e) {
    store.close();
    await where.local?.close();
    throw e;
  }
  return {
    route,
    async close() {
      for (const c of clients) c.destroy();
      store.close();
      await where.local?.close();
    },
  };
}

/** The transport of a form over a route: `auto` sends queries up to `limit` bytes as bodies. */
export function routeTransport(route: S3Route, mode: TransportMode, o: { limit?: number } = {}): Transport {
  if (mode === 's3') return s3RouteTransport(route);
  if (mode === 'body') return bodyRouteTransport(route, o);
  return sizeSwitch(bodyAvailable(route) ? bodyRouteTransport(route, o) : undefined, s3RouteTransport(route), o);
}
