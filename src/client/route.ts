// Node: where an endpoint transport's objects go and how it calls the server. An S3Route names
// the store, bucket and prefix (keys, queries and results live under it) and the channel to
// /invocations: direct HTTP to `endpoint`, or a replacement (SageMaker's runtime).
import { createHash, randomUUID } from 'node:crypto';
import type { ObjectStore, S3Location } from '../storage/s3.ts';

export type InvokeJson = (body: Record<string, unknown>) => Promise<Record<string, unknown>>;

/**
 * Sends the query as the request body and answers the result body. `keysUri`: where the
 * evaluation keys are (single layout), for the custom-attributes header.
 */
export type InvokeBody = (query: Uint8Array, o: { keysUri?: string }) => Promise<{ result: Uint8Array; server?: unknown }>;

export interface S3Route {
  store: ObjectStore;
  bucket: string;
  /** Key prefix of keys/, queries/ and results/ [sealed/]. */
  prefix?: string;
  /** Base URL of the inference server (direct HTTP), e.g. http://127.0.0.1:8080 */
  endpoint: string;
  /** Another way to call /invocations with JSON (SageMaker real-time or async); default: direct HTTP. */
  invoke?: InvokeJson;
  /**
   * Another way to send a query as the body (SageMaker's InvokeEndpoint). Default: direct HTTP
   * when `invoke` is not replaced; with `invoke` set and this not, the channel takes JSON only
   * (an async endpoint), so queries go through S3.
   */
  invokeBody?: InvokeBody;
}

/** Whether the route can carry a query as the request body. */
export const bodyAvailable = (r: S3Route) => r.invokeBody !== undefined || r.invoke === undefined;

/** SHA-256 of `bytes`, lowercase hex (node:crypto: this module runs in Node only). */
export const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

const prefixOf = (r: S3Route) => r.prefix ?? 'sealed/';

/** Where evaluation keys with this content id live: uploaded once, found again by their name. */
export const keysLocation = (r: S3Route, id: string): S3Location => ({ bucket: r.bucket, key: `${prefixOf(r)}keys/${id}.keys` });

/** Fresh object names for one request's query and result. */
export function requestLocations(r: S3Route): { query: S3Location; result: S3Location } {
  const id = randomUUID();
  return { query: { bucket: r.bucket, key: `${prefixOf(r)}queries/${id}.query` }, result: { bucket: r.bucket, key: `${prefixOf(r)}results/${id}.result` } };
}
