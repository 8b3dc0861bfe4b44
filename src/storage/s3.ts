// S3 access for server and client. The same code talks to AWS S3 and to the embedded local
// S3-compatible server; only the endpoint differs.
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { SealedError } from '../errors.ts';

export interface S3Location {
  bucket: string;
  key: string;
}

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function parseS3Uri(uri: unknown, field = 'uri'): S3Location {
  if (typeof uri !== 'string') throw new SealedError('bad-uri', `${field} must be a string of the form s3://bucket/key`);
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!m) throw new SealedError('bad-uri', `${field} is not an s3:// URI (expected s3://bucket/key)`, 'give the S3 location as s3://bucket/key');
  const [, bucket, key] = m;
  if (!BUCKET_RE.test(bucket)) throw new SealedError('bad-uri', `${field} names an invalid bucket`, 'bucket names are 3-63 lowercase letters, digits, dots and hyphens');
  if (key.length > 1024 || key.split('/').some((p) => p === '..')) throw new SealedError('bad-uri', `${field} has an invalid key`);
  return { bucket, key };
}

export const formatS3Uri = (l: S3Location) => `s3://${l.bucket}/${l.key}`;

export interface StorageOptions {
  /** S3-compatible endpoint (local server); absent: AWS S3 from the environment's configuration. */
  endpoint?: string;
  region?: string;
}

export class ObjectStore {
  readonly client: S3Client;
  readonly endpoint: string | undefined;

  constructor(o: StorageOptions = {}) {
    // Retries: the SDK's standard mode (exponential back-off with jitter, throttling and 5xx
    // only), 4 attempts; our GETs and whole-object PUTs are idempotent, so retrying is safe.
    const cfg: S3ClientConfig = { region: o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1', maxAttempts: 4, retryMode: 'standard' };
    if (o.endpoint) {
      cfg.endpoint = o.endpoint;
      cfg.forcePathStyle = true;
      // The local server accepts any credentials; do not require the user to have AWS ones.
      if (!process.env.AWS_ACCESS_KEY_ID) cfg.credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
    }
    this.client = new S3Client(cfg);
    this.endpoint = o.endpoint;
  }

  async get(loc: S3Location, maxBytes: number, what: string): Promise<{ bytes: Uint8Array; etag?: string }> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      if (r.ContentLength !== undefined && r.ContentLength > maxBytes) {
        (r.Body as { destroy?: () => void } | undefined)?.destroy?.();
        throw new SealedError('bad-request', `${what} at ${formatS3Uri(loc)} is ${r.ContentLength} bytes, over the limit of ${maxBytes}`, 'check that the URI names the right object');
      }
      const bytes = await r.Body!.transformToByteArray();
      if (r.ContentLength !== undefined && bytes.length !== r.ContentLength) {
        throw new SealedError('storage', `${what} at ${formatS3Uri(loc)} was read incompletely (${bytes.length} of ${r.ContentLength} bytes)`, 'retry the request');
      }
      return { bytes, etag: r.ETag };
    } catch (e) {
      throw storageError(e, loc, what);
    }
  }

  async head(loc: S3Location): Promise<{ size: number; etag?: string } | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      return { size: r.ContentLength ?? 0, etag: r.ETag };
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw storageError(e, loc, 'object');
    }
  }

  async put(loc: S3Location, bytes: Uint8Array, what: string): Promise<void> {
    try {
      // SSE-S3 on every write: least-privilege bucket policies deny unencrypted uploads.
      await this.client.send(new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: bytes, ContentType: 'application/octet-stream', ServerSideEncryption: 'AES256' }));
    } catch (e) {
      throw storageError(e, loc, what);
    }
  }

  async ensureBucket(bucket: string): Promise<void> {
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: bucket }));
    } catch (e) {
      const name = (e as { name?: string }).name;
      if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw storageError(e, { bucket, key: '' }, 'bucket');
    }
  }

  close(): void {
    this.client.destroy();
  }
}

function isMissing(e: unknown): boolean {
  const name = (e as { name?: string }).name;
  const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchBucket' || status === 404;
}

function storageError(e: unknown, loc: S3Location, what: string): unknown {
  if (e instanceof SealedError) return e;
  if (isMissing(e)) return new SealedError('not-found', `${what} not found at ${formatS3Uri(loc)}`, 'upload it first, or check the bucket and key');
  const name = (e as { name?: string }).name ?? 'error';
  const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  if (name === 'AccessDenied' || status === 403) return new SealedError('storage', `access denied to ${formatS3Uri(loc)}`, 'give the role read/write access to that bucket and prefix');
  return new SealedError('storage', `S3 request for ${what} at ${formatS3Uri(loc)} failed (${name})`, 'check the S3 endpoint and that the service is reachable; then retry', { cause: e });
}
