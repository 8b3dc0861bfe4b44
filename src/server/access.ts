// Who may name what, checked with no I/O before a request is admitted. Every S3 location of a
// request must lie under the endpoint's allow-lists (whole '/'-separated segments), and with a
// tenant root the query, keys and output of one request must sit under the same tenant's
// prefix, so a caller can neither read another tenant's objects through the server nor make it
// write over them. Outside --allow-any, evaluation keys must be named by their SHA-256.
import { safeText, SealedError } from '../errors.ts';
import { bucketProblem, keyProblem, parseS3Uri, type S3Location } from '../storage/s3.ts';
import { keysNameHash } from './key-store.ts';

/** The JSON form of POST /invocations: where the query is, the keys are and the result goes. */
export interface InvocationRequest {
  encrypted_query_uri: string;
  /** Needed by the single layout; batch mode uses no evaluation keys. */
  evaluation_keys_uri?: string;
  output_uri: string;
  /**
   * SHA-256 (64 lowercase hex digits) of the query object as uploaded. Optional: the server
   * hashes the query as it reads it either way and publishes no result if the two differ. Naming
   * it lets the server write the result's header (which carries it) before it has read the whole
   * query; without it, a query whose result is streamed is read twice (once to hash it).
   */
  query_sha256?: string;
}

/**
 * An S3 prefix of an allow-list or of the tenant root: `key` without trailing '/' ('' is the
 * whole bucket). It covers the object named `key` and every object under `key/`, never
 * `key-x/...`: matching is on whole '/'-separated segments.
 */
export interface S3Prefix {
  bucket: string;
  key: string;
}

/** Where callers may point the server. */
export interface AccessPolicy {
  /** Prefixes the server may read (query, keys) and write (results); undefined: anywhere (--allow-any). */
  read?: S3Prefix[];
  write?: S3Prefix[];
  /**
   * The segment after this prefix names a tenant (s3://bucket/tenants/<tenant>/...): the query,
   * the keys and the output of one request must all sit under the same tenant's prefix.
   */
  tenantRoot?: S3Prefix;
  /**
   * Refuse evaluation keys whose object name is not their SHA-256. Keys named by their hash are
   * verified against it in every deployment; a name that does not commit to the content could be
   * replaced by anyone who can write there, and the server could not tell, so a deployment with
   * allow-lists (several clients) takes only hash-named keys. --allow-any (one trusted user:
   * tests, the demo, a local stack) also takes hand-named keys, unverified.
   */
  hashNamedKeys: boolean;
}

/**
 * Parses an allow-list entry or tenant root given by the operator: s3://bucket or
 * s3://bucket/prefix, trailing slashes ignored (s3://b/res and s3://b/res/ mean the same).
 */
export function parseS3Prefix(uri: string, what: string): S3Prefix {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/s.exec(uri.trim());
  const hint = 'give locations as s3://bucket/prefix/, comma-separated';
  if (!m) throw new SealedError('bad-request', `${what}: ${safeText(uri)} is not an s3://bucket/prefix location`, hint);
  const bad = bucketProblem(m[1]);
  if (bad) throw new SealedError('bad-request', `${what}: ${safeText(uri)} names an invalid bucket: ${bad}`, hint);
  const key = (m[2] ?? '').replace(/\/+$/, '');
  const badKey = key === '' ? undefined : keyProblem(key);
  if (badKey) throw new SealedError('bad-request', `${what}: ${safeText(uri)} has an invalid prefix: ${badKey}`, hint);
  return { bucket: m[1], key };
}

export const formatS3Prefix = (p: S3Prefix) => `s3://${p.bucket}/${p.key}${p.key ? '/' : ''}`;

/** Whether `loc` is the object `p` names or lies under it, on whole segments. */
export function isUnder(loc: S3Location, p: S3Prefix): boolean {
  return loc.bucket === p.bucket && (p.key === '' || loc.key === p.key || loc.key.startsWith(`${p.key}/`));
}

/** The tenant whose prefix holds `loc` (the non-empty segment after the root, followed by more key), or undefined. */
export function tenantOf(loc: S3Location, root: S3Prefix): string | undefined {
  if (!isUnder(loc, root) || loc.key === root.key) return undefined;
  const rest = root.key === '' ? loc.key : loc.key.slice(root.key.length + 1);
  const end = rest.indexOf('/');
  return end > 0 ? rest.slice(0, end) : undefined;
}

interface Named {
  field: string;
  loc: S3Location;
  verb: 'read' | 'write';
}

/** 403 for the first field outside the allow-lists, or outside the tenant of the request. */
export function checkAccess(a: AccessPolicy, fields: Named[]): void {
  for (const f of fields) {
    const list = f.verb === 'read' ? a.read : a.write;
    if (list && !list.some((p) => isUnder(f.loc, p))) {
      throw new SealedError(
        'forbidden',
        `${f.field} is outside the locations this endpoint may ${f.verb}`,
        `use a location under ${list.map(formatS3Prefix).join(' or ')}`,
      );
    }
  }
  const root = a.tenantRoot;
  if (!root) return;
  let first: { field: string; tenant: string } | undefined;
  for (const f of fields) {
    const tenant = tenantOf(f.loc, root);
    if (tenant === undefined)
      throw new SealedError('forbidden', `${f.field} is not inside a tenant's prefix`, `use locations under ${formatS3Prefix(root)}<tenant>/`);
    if (!first) first = { field: f.field, tenant };
    else if (tenant !== first.tenant) {
      throw new SealedError(
        'forbidden',
        `${f.field} is in tenant ${safeText(tenant)}'s prefix, ${first.field} in tenant ${safeText(first.tenant)}'s: a request reads and writes within one tenant`,
        `put the query, the keys and the output under the same ${formatS3Prefix(root)}<tenant>/`,
      );
    }
  }
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Keys named by a request (either form): hash-named outside --allow-any. */
export function checkKeysName(a: AccessPolicy, keysLoc: S3Location, field: string): void {
  if (a.hashNamedKeys && !keysNameHash(keysLoc.key)) {
    throw new SealedError(
      'bad-uri',
      `${field} does not name the keys by their SHA-256: this endpoint takes evaluation keys only as .../<64 hex digits of the SHA-256 of their bytes>[.keys]`,
      'upload the keys under their SHA-256, as `sealed predict` does (<prefix>keys/<sha256>.keys)',
    );
  }
}

/** A request's locations and fields, checked without any I/O. */
export interface CheckedRequest {
  queryLoc: S3Location;
  keysLoc: S3Location | undefined;
  outLoc: S3Location;
  declared: string | undefined;
}

/**
 * Checks what a request names (S3 rules, allow-lists, tenants, key naming, the query hash)
 * without any I/O. The app runs it before admission, so a request that can never succeed gets
 * its 4xx at once rather than a 503 that clients retry.
 */
export function checkRequest(req: InvocationRequest, c: { access: AccessPolicy }): CheckedRequest {
  const queryLoc = parseS3Uri(req.encrypted_query_uri, 'encrypted_query_uri');
  const keysLoc = req.evaluation_keys_uri === undefined ? undefined : parseS3Uri(req.evaluation_keys_uri, 'evaluation_keys_uri');
  const outLoc = parseS3Uri(req.output_uri, 'output_uri');
  checkAccess(c.access, [
    { field: 'encrypted_query_uri', loc: queryLoc, verb: 'read' },
    ...(keysLoc ? [{ field: 'evaluation_keys_uri', loc: keysLoc, verb: 'read' as const }] : []),
    { field: 'output_uri', loc: outLoc, verb: 'write' },
  ]);
  if (keysLoc) checkKeysName(c.access, keysLoc, 'evaluation_keys_uri');
  const declared = req.query_sha256;
  if (declared !== undefined && (typeof declared !== 'string' || !SHA256_HEX.test(declared))) {
    throw new SealedError('bad-request', 'query_sha256 is not 64 lowercase hex digits', 'give the SHA-256 of the query object in hex, or leave it out');
  }
  return { queryLoc, keysLoc, outLoc, declared };
}
