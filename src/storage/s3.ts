// S3 access for server and client. The same code talks to AWS S3 and to the embedded local
// S3-compatible server; only the endpoint differs.
/* eslint-disable max-lines -- Just over 300 lines: ObjectStore is one class (whole, shared and
   streamed get and put, head with its 403 rule) and its error mapping; the URI rules are in s3-uri.ts. */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { safeText, SealedError } from '../errors.ts';
import { uploadInParts } from './multipart-upload.ts';
import { BUCKET_HINT, bucketProblem, checkLocation, describeS3Location, KEY_HINT, type S3Location } from './s3-uri.ts';

export * from './s3-uri.ts';

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

export interface HeadOptions {
  /** Ask for S3's full-object SHA-256 (ChecksumMode ENABLED); `sha256` (hex) when it has one. */
  checksum?: boolean;
  /** A 403 that a listing of the key cannot settle either means "not known to exist" (undefined), not an error. */
  deniedAsUnknown?: boolean;
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
    const cfg: S3ClientConfig = {
      region: o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      maxAttempts: 4,
      retryMode: 'standard',
    };
    if (o.endpoint) {
      cfg.endpoint = o.endpoint;
      cfg.forcePathStyle = true;
      // The local server accepts any credentials; do not require the user to have AWS ones.
      if (!process.env.AWS_ACCESS_KEY_ID) cfg.credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
    }
    this.client = new S3Client(cfg);
    // Request bodies are not hashed into the signature (x-amz-content-sha256: UNSIGNED-PAYLOAD,
    // which S3 accepts; the SDK speaks TLS to it): otherwise the SDK hashes every byte uploaded
    // with SHA-256 once more, on the thread that streams the query (2.2 s of CPU for the 1.3 GB
    // of a 10,000-image batch run of model (b)). Each part still carries the SDK's CRC32, which
    // S3 checks, and a query its own SHA-256, which the server checks.
    this.client.middlewareStack.add(
      (next) => (args) => {
        const req = args.request as { method?: string; headers?: Record<string, string> };
        if (req.method === 'PUT' && req.headers) req.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
        return next(args);
      },
      { step: 'build', name: 'sealedUnsignedPayload' },
    );
    this.endpoint = o.endpoint;
  }

  async get(loc: S3Location, maxBytes: number, what: string): Promise<{ bytes: Uint8Array; etag?: string }> {
    checkLocation(loc, what);
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      if (r.ContentLength !== undefined && r.ContentLength > maxBytes) {
        (r.Body as { destroy?: () => void } | undefined)?.destroy?.();
        throw new SealedError(
          'bad-request',
          `${what} at ${describeS3Location(loc)} is ${r.ContentLength} bytes, over the limit of ${maxBytes}`,
          'check that the URI names the right object',
        );
      }
      const bytes = await r.Body!.transformToByteArray();
      if (r.ContentLength !== undefined && bytes.length !== r.ContentLength) {
        throw new SealedError(
          'storage',
          `${what} at ${describeS3Location(loc)} was read incompletely (${bytes.length} of ${r.ContentLength} bytes)`,
          'retry the request',
        );
      }
      return { bytes, etag: r.ETag };
    } catch (e) {
      throw storageError(e, loc, what);
    }
  }

  /**
   * GetObject into shared memory: a SharedArrayBuffer of the object's size, filled as the body
   * arrives. Worker threads then read the bytes in place: a message holding views of it copies
   * nothing, where one holding views of an ordinary buffer clones it whole (~100 ms per 29 MB
   * message on a 2-core VM, page faults included). `sha256`: the hex SHA-256 of the bytes,
   * hashed chunk by chunk as they arrive, while the connection is waited on: hashed after the
   * download, a 359 MB tree batch query held the main thread ~0.4 s longer.
   */
  async getShared(loc: S3Location, maxBytes: number, what: string): Promise<{ bytes: Uint8Array; etag?: string; sha256: string }> {
    const hash = createHash('sha256');
    const r = await this.readShared(loc, maxBytes, what, (chunk) => hash.update(chunk));
    return { ...r, sha256: hash.digest('hex') };
  }

  /**
   * getShared without the hash (`onChunk` sees each chunk as it arrives). The client reads batch
   * results this way: its decryption threads take views of them, and the SDK's own buffering
   * (chunks, then one concatenated copy) cost a LeNet batch's 100 MB result 0.7 s of the main
   * thread, and copying it out for the threads 0.8 s more (session 61's profile).
   */
  async readShared(loc: S3Location, maxBytes: number, what: string, onChunk?: (chunk: Uint8Array) => void): Promise<{ bytes: Uint8Array; etag?: string }> {
    const o = await this.getStream(loc, maxBytes, what);
    const bytes = new Uint8Array(new SharedArrayBuffer(o.size));
    let at = 0;
    // The stream throws before it yields more than Content-Length, and after fewer.
    for await (const chunk of o.stream) {
      bytes.set(chunk, at);
      onChunk?.(chunk);
      at += chunk.byteLength;
    }
    return { bytes, etag: o.etag };
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
    checkLocation(loc, what);
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      body = r.Body as unknown as Readable;
      etag = r.ETag;
      if (r.ContentLength === undefined) {
        body?.destroy?.();
        throw new SealedError(
          'storage',
          `S3 returned ${what} at ${describeS3Location(loc)} without a Content-Length`,
          'check the S3 endpoint (a proxy may be altering responses); then retry',
        );
      }
      size = r.ContentLength;
      if (size > maxBytes) {
        body?.destroy?.();
        throw new SealedError(
          'bad-request',
          `${what} at ${describeS3Location(loc)} is ${size} bytes, over the limit of ${maxBytes}`,
          'check that the URI names the right object',
        );
      }
      if (!body || typeof (body as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] !== 'function') {
        throw new SealedError('storage', `S3 response for ${what} at ${describeS3Location(loc)} has no readable body`, 'retry the request');
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
    checkLocation(loc, what);
    let sourceFailed = false;
    let sourceError: unknown;
    try {
      const bytes = await uploadInParts(this.client, { Bucket: loc.bucket, Key: loc.key }, source, {
        partSize: STREAM_PART_SIZE,
        queue: STREAM_QUEUE_SIZE,
        onSourceError: (e) => {
          sourceFailed = true;
          sourceError = e;
        },
      });
      return { bytes };
    } catch (e) {
      if (sourceFailed) throw sourceError;
      throw storageError(e, loc, what);
    }
  }

  /**
   * The object's size (and ETag, and with `checksum` its full-object SHA-256), or undefined when
   * it does not exist. S3 answers HeadObject on a missing key with 403, not 404, to an identity
   * without s3:ListBucket on the bucket (a ListBucket limited by an s3:prefix condition does not
   * count: HeadObject carries no prefix). So a 403 is asked again as ListObjectsV2 of exactly that
   * key, which a prefix-conditioned grant allows: listed means present but unreadable (an error),
   * not listed means missing. When the listing is refused too, nothing says whether the object
   * exists: an error by default, or with `deniedAsUnknown` undefined ("not known to exist"), for
   * callers that then write the object anyway (their PUT fails clearly if they may not) or that
   * poll for it to appear.
   */
  async head(loc: S3Location, o: HeadOptions = {}): Promise<{ size: number; etag?: string; sha256?: string } | undefined> {
    checkLocation(loc, 'object');
    try {
      const r = await this.client.send(
        new HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key, ...(o.checksum ? { ChecksumMode: 'ENABLED' as const } : {}) }),
      );
      // Only a full-object checksum says what the bytes are (a multipart upload's is a hash of
      // the parts' hashes, "...-N").
      const c = r.ChecksumSHA256;
      const sha256 = o.checksum && c && !c.includes('-') && r.ChecksumType !== 'COMPOSITE' ? Buffer.from(c, 'base64').toString('hex') : undefined;
      return { size: r.ContentLength ?? 0, etag: r.ETag, ...(sha256 ? { sha256 } : {}) };
    } catch (e) {
      if (isMissing(e)) return undefined;
      if (!isDenied(e)) throw storageError(e, loc, 'object');
      let listed: boolean;
      try {
        const l = await this.client.send(new ListObjectsV2Command({ Bucket: loc.bucket, Prefix: loc.key, MaxKeys: 1 }));
        listed = (l.Contents ?? []).some((x) => x.Key === loc.key);
      } catch (le) {
        if (!isDenied(le)) throw storageError(le, loc, 'object');
        if (o.deniedAsUnknown) return undefined;
        throw new SealedError(
          'storage',
          `cannot tell whether ${describeS3Location(loc)} exists: HeadObject was denied (S3 answers 403, not 404, for a missing key to an identity without s3:ListBucket) and so was listing that key`,
          'grant s3:ListBucket on the bucket for this prefix (an s3:prefix condition is enough) and s3:GetObject on its objects; `npm run deploy -- policies` prints such grants',
          { cause: le },
        );
      }
      if (!listed) return undefined;
      throw new SealedError(
        'storage',
        `access denied to ${describeS3Location(loc)}: it exists, but this identity may not read it`,
        'give the role s3:GetObject on that prefix',
        { cause: e },
      );
    }
  }

  async put(loc: S3Location, bytes: Uint8Array, what: string): Promise<void> {
    checkLocation(loc, what);
    try {
      // SSE-S3 on every write: least-privilege bucket policies deny unencrypted uploads.
      await this.client.send(
        new PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: bytes, ContentType: 'application/octet-stream', ServerSideEncryption: 'AES256' }),
      );
    } catch (e) {
      throw storageError(e, loc, what);
    }
  }

  async ensureBucket(bucket: string): Promise<void> {
    const bad = bucketProblem(bucket);
    if (bad) throw new SealedError('bad-uri', `invalid bucket name: ${bad}`, BUCKET_HINT);
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
    new SealedError(
      'storage',
      `${what} at ${describeS3Location(loc)} was read incompletely (${n} of ${size} bytes)`,
      'retry the request',
      cause === undefined ? undefined : { cause },
    );
  try {
    try {
      for await (const chunk of body as AsyncIterable<Uint8Array>) {
        n += chunk.byteLength;
        if (n > size)
          throw new SealedError('storage', `${what} at ${describeS3Location(loc)} is longer than its Content-Length (${size} bytes)`, 'retry the request');
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

function isDenied(e: unknown): boolean {
  const name = (e as { name?: string }).name;
  const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return name === 'AccessDenied' || name === 'Forbidden' || status === 403;
}

function storageError(e: unknown, loc: S3Location, what: string): unknown {
  if (e instanceof SealedError) return e;
  if (isMissing(e)) return new SealedError('not-found', `${what} not found at ${describeS3Location(loc)}`, 'upload it first, or check the bucket and key');
  const name = (e as { name?: string }).name ?? 'error';
  const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  if (name === 'AccessDenied' || status === 403)
    return new SealedError('storage', `access denied to ${describeS3Location(loc)}`, 'give the role read/write access to that bucket and prefix');
  if (isRequestBuildingError(e)) {
    // The SDK could not turn the location into a request (checkLocation should have refused it
    // first): the caller's string is at fault, and no retry or other endpoint would help.
    return new SealedError(
      'bad-uri',
      `the S3 location for ${what} (${describeS3Location(loc)}) cannot be put in an S3 request (${safeText(name, 40)})`,
      KEY_HINT,
      { cause: e },
    );
  }
  return new SealedError(
    'storage',
    `S3 request for ${what} at ${describeS3Location(loc)} failed (${safeText(name, 40)})`,
    'check the S3 endpoint and that the service is reachable; then retry',
    { cause: e },
  );
}

/**
 * Errors thrown while building a request, before anything is sent: URIError (encodeURIComponent
 * on a lone surrogate), and Node's TypeErrors for characters a URL path or header cannot hold.
 * Network failures are never these (they carry codes such as ECONNRESET), nor are S3's answers
 * (those have $metadata.httpStatusCode).
 */
function isRequestBuildingError(e: unknown): boolean {
  if (e instanceof URIError) return true;
  if (!(e instanceof TypeError) || (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== undefined) return false;
  const code = (e as { code?: unknown }).code;
  return code === 'ERR_INVALID_CHAR' || code === 'ERR_UNESCAPED_CHARACTERS' || code === 'ERR_INVALID_URL' || code === 'ERR_INVALID_ARG_VALUE';
}
