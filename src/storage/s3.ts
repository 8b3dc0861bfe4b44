// S3 access for server and client. The same code talks to AWS S3 and to the embedded local
// S3-compatible server; only the endpoint differs.
import { Readable } from 'node:stream';
import { AbortMultipartUploadCommand, CreateBucketCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
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

/** Multipart part size for streamed uploads: 8 MiB (S3's minimum is 5 MiB; 10,000 parts: up to ~78 GiB). */
export const STREAM_PART_SIZE = 8 * 1024 * 1024;
/** Parts uploaded concurrently by a streamed upload; memory is about (queue + 1) parts. */
export const STREAM_QUEUE_SIZE = 2;

export interface StreamedObject {
  /** The object's bytes, in order, as they arrive. Read it once; breaking out of the loop releases the connection. */
  stream: AsyncIterable<Uint8Array>;
  /** Content-Length: the number of bytes the stream yields when read to the end (else it throws). */
  size: number;
  etag?: string;
  /** Releases the connection without reading (or without reading further). */
  cancel(): void;
}

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

  /**
   * GetObject with the body consumed as a stream, never buffered whole. Refuses objects over
   * maxBytes before reading any of their bytes. The stream throws a 'storage' SealedError if the
   * connection yields fewer (or more) bytes than Content-Length.
   */
  async getStream(loc: S3Location, maxBytes: number, what: string): Promise<StreamedObject> {
    let body: Readable;
    let size: number;
    let etag: string | undefined;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      body = r.Body as unknown as Readable;
      etag = r.ETag;
      if (r.ContentLength === undefined) {
        body?.destroy?.();
        throw new SealedError('storage', `S3 returned ${what} at ${formatS3Uri(loc)} without a Content-Length`, 'check the S3 endpoint (a proxy may be altering responses); then retry');
      }
      size = r.ContentLength;
      if (size > maxBytes) {
        body?.destroy?.();
        throw new SealedError('bad-request', `${what} at ${formatS3Uri(loc)} is ${size} bytes, over the limit of ${maxBytes}`, 'check that the URI names the right object');
      }
      if (!body || typeof (body as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] !== 'function') {
        throw new SealedError('storage', `S3 response for ${what} at ${formatS3Uri(loc)} has no readable body`, 'retry the request');
      }
    } catch (e) {
      throw storageError(e, loc, what);
    }
    const release = () => {
      if (!body.destroyed) body.destroy();
    };
    return { stream: countedBody(body, size, loc, what, release), size, etag, cancel: release };
  }

  /**
   * Streams `source` to S3 as a multipart upload (8 MiB parts, 2 in flight), so memory stays
   * bounded whatever the object's size; a source shorter than one part is sent as one PutObject.
   * Objects are written with SSE-S3 like `put`. If the source throws, or S3 fails, no object is
   * created, the source is closed, the multipart upload is aborted so that no parts are left
   * behind (best effort: if the abort fails too, the original error is still the one reported),
   * and the promise rejects with the source's own error, or a SealedError for S3 failures.
   */
  async putStream(loc: S3Location, source: AsyncIterable<Uint8Array>, what: string): Promise<{ bytes: number }> {
    let bytes = 0;
    let sourceFailed = false;
    let sourceError: unknown;
    // Counts the bytes and tells the source's own failures apart from errors thrown into this
    // generator when the upload fails and the stream is torn down (then the source is closed).
    async function* counted(): AsyncGenerator<Uint8Array> {
      const it = source[Symbol.asyncIterator]();
      let finished = false;
      try {
        for (;;) {
          let r: IteratorResult<Uint8Array>;
          try {
            r = await it.next();
          } catch (e) {
            finished = true;
            sourceFailed = true;
            sourceError = e;
            throw e;
          }
          if (r.done) {
            finished = true;
            return;
          }
          if (r.value.byteLength === 0) continue;
          bytes += r.value.byteLength;
          yield r.value;
        }
      } finally {
        if (!finished) await it.return?.();
      }
    }
    // highWaterMark 1: read one source chunk ahead at most; lib-storage then holds the part being
    // filled plus the parts in flight.
    const body = Readable.from(counted(), { objectMode: true, highWaterMark: 1 });
    const upload = new Upload({
      client: this.client,
      // SSE-S3 on every write (CreateMultipartUpload, or PutObject for a single part).
      params: { Bucket: loc.bucket, Key: loc.key, Body: body, ContentType: 'application/octet-stream', ServerSideEncryption: 'AES256' },
      partSize: STREAM_PART_SIZE,
      queueSize: STREAM_QUEUE_SIZE,
      // We abort ourselves, so that the error reported is the one that caused the failure and
      // not a failure of the abort.
      leavePartsOnError: true,
    });
    try {
      await upload.done();
      return { bytes };
    } catch (e) {
      body.destroy();
      if (upload.uploadId) {
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: loc.bucket, Key: loc.key, UploadId: upload.uploadId }));
        } catch {
          // Best effort (already retried by the SDK): the original failure is what the caller
          // needs; a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims what remains.
        }
      }
      if (sourceFailed) throw sourceError;
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

/** The body of a GetObject response, checked against Content-Length as it is read. */
async function* countedBody(body: Readable, size: number, loc: S3Location, what: string, release: () => void): AsyncGenerator<Uint8Array> {
  let n = 0;
  const incomplete = (cause?: unknown) =>
    new SealedError('storage', `${what} at ${formatS3Uri(loc)} was read incompletely (${n} of ${size} bytes)`, 'retry the request', cause === undefined ? undefined : { cause });
  try {
    try {
      for await (const chunk of body as AsyncIterable<Uint8Array>) {
        n += chunk.byteLength;
        if (n > size) throw new SealedError('storage', `${what} at ${formatS3Uri(loc)} is longer than its Content-Length (${size} bytes)`, 'retry the request');
        yield chunk;
      }
    } catch (e) {
      throw e instanceof SealedError ? e : incomplete(e);
    }
    if (n !== size) throw incomplete();
  } finally {
    release();
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
