// The SDK's transports to an inference server's /invocations (`sealed serve`, a SageMaker
// endpoint). Browser-safe as a module: the Node-only parts (S3, the AWS SDK) load on the first
// query, through nodeOnly, so bundlers leave them out.
import { nodeOnly } from './node-only.ts';
import type { OpenRoute, RouteOptions } from './open-route.ts';
import type { Transport, TransportMode } from './transport.ts';

export type { SageMakerTarget } from './open-route.ts';

export interface S3TransportOptions {
  /** Base URL of the inference server (POST /invocations). */
  endpoint: string;
  /** S3-compatible endpoint; default as `sealed predict`: $SEALED_S3_ENDPOINT, AWS if configured, else the embedded local S3. */
  s3Endpoint?: string;
  /** Default: the local bucket (required with AWS S3). */
  bucket?: string;
  /** Key prefix of the objects [sealed/]. */
  prefix?: string;
}

export interface EndpointTransportOptions extends Omit<S3TransportOptions, 'endpoint'>, Pick<RouteOptions, 'sagemaker'> {
  /** Base URL of the inference server; or name a SageMaker endpoint with `sagemaker`. */
  endpoint?: string;
  /** How queries travel (transport.ts TransportMode) [auto]. */
  transport?: TransportMode;
  /** auto and body: the largest query sent as a body [BODY_LIMIT, 6 MB]. */
  bodyLimit?: number;
}

/**
 * Node only: queries to an inference server's /invocations, over direct HTTP or SageMaker's
 * runtime. `auto` (default) sends a query up to `bodyLimit` as the request body, larger ones
 * (and all through an async endpoint) as S3 objects. The keys are uploaded to S3 once either way.
 */
export function endpointTransport(o: EndpointTransportOptions): Transport {
  type Ready = { open: OpenRoute; t: Transport };
  let ready: Promise<Ready> | undefined;
  const init = async (): Promise<Ready> => {
    const m = await nodeOnly<typeof import('./open-route.ts')>('./open-route.ts', 'an endpoint transport');
    const open = await m.openRoute(o);
    return { open, t: m.routeTransport(open.route, o.transport ?? 'auto', { limit: o.bodyLimit }) };
  };
  return {
    async evaluate(query, keys, info) {
      const { t } = await (ready ??= init());
      return t.evaluate(query, keys, info);
    },
    // Every form takes batch-mode queries (the body form only up to its limit).
    batch: true,
    async close() {
      if (!ready) return;
      const r = await ready.catch(() => undefined);
      ready = undefined;
      await r?.t.close?.();
      await r?.open.close();
    },
  };
}

/** Node only: the S3 form (the SageMaker path of `sealed predict --transport s3`). */
export function s3Transport(o: S3TransportOptions): Transport {
  return endpointTransport({ ...o, transport: 's3' });
}

/** Node only: the body form; queries over `bodyLimit` are refused before any traffic. */
export function bodyTransport(o: EndpointTransportOptions): Transport {
  return endpointTransport({ ...o, transport: 'body' });
}
