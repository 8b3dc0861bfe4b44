// Node: the calls to /invocations over direct HTTP, in its two forms: JSON naming S3 objects,
// and the query itself as the body (docs/usage.md, "The /invocations API").
import { SealedError, serverError } from '../errors.ts';
import { retryingKeys, type PublicKeys } from './keys-upload.ts';
import type { S3Route } from './route.ts';
import { OCTETS, PayloadRefused } from './transport.ts';

/** SageMaker's header for the caller's own attributes; the body form names the keys in it. */
export const CUSTOM_ATTRIBUTES = 'X-Amzn-SageMaker-Custom-Attributes';

/**
 * The custom attributes that name the evaluation keys: `keys=<s3 uri>`. SageMaker passes at most
 * 1,024 visible ASCII characters; a URI outside [A-Za-z0-9_.-/:=+@~] (e.g. a prefix with commas or
 * spaces) could not be read back as one attribute, so it is refused here.
 */
export function keysAttribute(uri: string): string {
  const v = `keys=${uri}`;
  if (v.length > 1024 || !/^[0-9A-Za-z_.\-/:=+@~]+$/.test(v)) {
    throw new SealedError(
      'bad-request',
      "the evaluation keys' S3 URI cannot be carried in the custom-attributes header (over 1,024 characters, or characters other than letters, digits and _.-/:=+@~)",
      'use a shorter S3 prefix of plain characters, or transport s3',
    );
  }
  return v;
}

/** fetch's error with its cause: undici says only "fetch failed", and why (ECONNRESET, "other side closed") in `cause`. */
function networkReason(e: unknown): string {
  const { message, cause } = e as Error & { cause?: { message?: string; code?: string } };
  const why = cause && (cause.code ?? cause.message);
  return why && !message.includes(why) ? `${message}: ${why}` : message;
}

export async function invokeHttp(endpoint: string, body: unknown): Promise<Record<string, unknown>> {
  let res: Response;
  try {
    res = await fetch(new URL('/invocations', endpoint), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  } catch (e) {
    throw new SealedError(
      'storage',
      `cannot reach the inference server at ${endpoint} (${networkReason(e)})`,
      'start it with `sealed serve`, or pass --endpoint',
    );
  }
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const code = typeof json.error === 'string' ? json.error : 'internal';
    throw new SealedError(
      code as never,
      `the server refused the request (${res.status}): ${String(json.message ?? res.statusText)}`,
      typeof json.hint === 'string' ? json.hint : undefined,
    );
  }
  return json;
}

/**
 * POST /invocations with the query as the body (application/octet-stream): the answer's body is
 * the encrypted result. 413 and 415 become PayloadRefused, so `auto` can fall back to S3.
 */
export async function invokeBodyHttp(endpoint: string, query: Uint8Array, o: { keysUri?: string }): Promise<{ result: Uint8Array; server?: unknown }> {
  const headers: Record<string, string> = { 'content-type': OCTETS, accept: OCTETS };
  if (o.keysUri !== undefined) headers[CUSTOM_ATTRIBUTES] = keysAttribute(o.keysUri);
  let res: Response;
  try {
    res = await fetch(new URL('/invocations', endpoint), { method: 'POST', headers, body: query as Uint8Array<ArrayBuffer> });
  } catch (e) {
    throw new SealedError(
      'storage',
      `cannot reach the inference server at ${endpoint} (${networkReason(e)})`,
      'start it with `sealed serve`, or pass --endpoint',
    );
  }
  if (res.status === 413 || res.status === 415) {
    await res.body?.cancel();
    throw new PayloadRefused(res.status, `the server refused the query as a request body (${res.status})`);
  }
  if (!res.ok) throw serverError(res.status, await res.text().catch(() => ''));
  return {
    result: resultBytes(new Uint8Array(await res.arrayBuffer()), res.headers.get('content-type')),
    server: serverHeader(res.headers.get('x-sealed-server')),
  };
}

/** The answer to a body request must be a result, not a JSON document (a server that ignored the body form). */
export function resultBytes(bytes: Uint8Array, contentType: string | null | undefined): Uint8Array {
  if (contentType && /json/i.test(contentType)) {
    throw new SealedError(
      'internal',
      `the server answered ${contentType} where an encrypted result was expected`,
      'the server does not take queries as request bodies: update it, or use transport s3',
    );
  }
  return bytes;
}

/** The server's timings, when it sends them in a header (JSON); anything else is ignored. */
export function serverHeader(v: string | null | undefined): unknown {
  if (!v) return undefined;
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Invokes the endpoint with a JSON request naming S3 objects, re-uploading the keys once if the
 * server could not use them (retryingKeys).
 */
export async function invokeWithKeys(
  t: S3Route,
  request: Record<string, string>,
  keys: PublicKeys | undefined,
): Promise<{ server: Record<string, unknown>; keysUploaded: boolean }> {
  const r = await retryingKeys(t, keys, () => (t.invoke ?? ((b) => invokeHttp(t.endpoint, b)))(request));
  return { server: r.value, keysUploaded: r.keysUploaded };
}

/** The body form over the route's channel (direct HTTP, or its invokeBody), keys re-uploaded once if needed. */
export async function invokeBodyWithKeys(
  t: S3Route,
  query: Uint8Array,
  keysUri: string | undefined,
  keys: PublicKeys | undefined,
): Promise<{ result: Uint8Array; server?: unknown; keysUploaded: boolean }> {
  const send = t.invokeBody ?? ((q, o) => invokeBodyHttp(t.endpoint, q, o));
  const r = await retryingKeys(t, keys, () => send(query, { keysUri }));
  return { ...r.value, keysUploaded: r.keysUploaded };
}
