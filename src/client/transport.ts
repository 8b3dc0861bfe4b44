// The one Transport idea: something that carries an encrypted query to a server and brings the
// encrypted result back. Implementations: proxyTransport (transport-proxy.ts, the web demo's
// server), and in Node the endpoint transports (transport-s3.ts: objects in S3 and a JSON
// /invocations; transport-body.ts: the query and the result as the request and response bodies),
// over direct HTTP or SageMaker's runtime (route.ts). `sizeSwitch` here picks between the last
// two per query. Browser-safe: no Node-only imports.
import { SealedError } from '../errors.ts';

/** What a transport receives of the keys: the public evaluation keys, never the secret key. */
export interface EvaluationKeys {
  /** SHA-256 (hex) of `bytes`: names the uploaded object, so it is uploaded once. */
  id: string;
  /** Wire format, kind 2. */
  bytes: Uint8Array;
}

/** The answer of a transport to one encrypted query. */
export interface Evaluation {
  /** The encrypted result (wire format, kind 3); only the client's secret key opens it. */
  result: Uint8Array;
  /** Whether the evaluation keys were uploaded by this call (they are uploaded once). */
  keysUploaded: boolean;
  /** Milliseconds of the transport's own steps (upload, invoke, download, round trip...). */
  ms: Record<string, number>;
  /** What the server said about the evaluation (timings_ms, records, keys_cached...). */
  server?: unknown;
  /** How the query travelled ('s3', 'body', 'proxy'), when the transport says. */
  via?: string;
}

/** Carries an encrypted query to a server and the encrypted result back. */
export interface Transport {
  /**
   * `keys` is undefined for a batch-mode query (batch mode uses no evaluation keys).
   * `info.querySha256`: the SHA-256 (hex) of `query`, for the request (the client checks the
   * result's header against it whatever the transport does).
   */
  evaluate(query: Uint8Array, keys: EvaluationKeys | undefined, info?: { querySha256: string }): Promise<Evaluation>;
  /** Whether this transport can send batch-mode queries (the S3 path can; the page proxy cannot). */
  batch?: boolean;
  close?(): Promise<void> | void;
}

/**
 * How an endpoint transport carries the query. `s3`: the query, keys and result are S3 objects,
 * the request names them (any size; async endpoints). `body`: the query is the request's body and
 * the result the response's (keys, when needed, still in S3, named by a header). `auto`: body up
 * to the body limit, S3 above it and for async endpoints.
 */
export type TransportMode = 'auto' | 'body' | 's3';
export const TRANSPORT_MODES: readonly TransportMode[] = ['auto', 'body', 's3'];

/**
 * SageMaker real-time endpoints take request bodies up to 6 MB (InvokeEndpoint's Body: at most
 * 6,291,456 bytes) and answer up to as much; auto sends larger queries through S3.
 */
export const BODY_LIMIT = 6 * 1024 * 1024;

/** The media type of a query or result in the body (docs/wire-format.md). */
export const OCTETS = 'application/octet-stream';

/** Which way one query goes: the pure rule behind `auto`. */
export function choosePayload(o: { mode: TransportMode; queryBytes: number; limit?: number; bodyAvailable: boolean }): 'body' | 's3' {
  const limit = o.limit ?? BODY_LIMIT;
  if (o.mode === 's3') return 's3';
  if (o.mode === 'body') {
    if (!o.bodyAvailable)
      throw new SealedError(
        'bad-request',
        'this endpoint takes queries through S3 only (an async endpoint, or a custom invoke without a body form)',
        'use transport s3 or auto',
      );
    if (o.queryBytes > limit)
      throw new SealedError(
        'bad-request',
        `the encrypted query is ${o.queryBytes} bytes, more than the request body limit of ${limit}`,
        'use transport auto or s3 (S3 takes any size), or send fewer records per request',
      );
    return 'body';
  }
  return o.bodyAvailable && o.queryBytes <= limit ? 'body' : 's3';
}

/**
 * The server would not take the query as a body: 415 (a server that predates direct payloads,
 * or a proxy that rewrote the media type) or 413 (more than its body limit).
 */
export class PayloadRefused extends SealedError {
  readonly httpStatus: 413 | 415;
  constructor(httpStatus: 413 | 415, message: string) {
    const hint =
      httpStatus === 415
        ? 'the server does not take queries as request bodies: update it, or use transport s3'
        : 'send fewer records per request, or use transport auto or s3';
    super('bad-request', message, hint);
    this.httpStatus = httpStatus;
  }
}

/**
 * `auto` over two transports to the same server: a query up to `limit` bytes goes as a body,
 * larger ones (and batch-mode queries that do not fit) through S3. A server that answers 415 to
 * a body does not take bodies: from then on this transport uses S3. A 413 (the server's limit is
 * lower than ours) sends that query through S3.
 */
export function sizeSwitch(body: Transport | undefined, s3: Transport, o: { limit?: number } = {}): Transport {
  let bodyOk = body !== undefined;
  return {
    async evaluate(query, keys, info) {
      if (choosePayload({ mode: 'auto', queryBytes: query.length, limit: o.limit, bodyAvailable: bodyOk }) === 'body') {
        try {
          return await body!.evaluate(query, keys, info);
        } catch (e) {
          if (!(e instanceof PayloadRefused)) throw e;
          if (e.httpStatus === 415) bodyOk = false;
        }
      }
      return s3.evaluate(query, keys, info);
    },
    batch: s3.batch,
    async close() {
      await body?.close?.();
      await s3.close?.();
    },
  };
}
