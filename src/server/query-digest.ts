// The query's SHA-256, computed as it is read. A result names the hash of the query it answers
// (the client refuses a result made from another query), and a request may declare the hash:
// the server checks it before the last of the result is handed out, so a mismatch publishes
// nothing.
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import type { ObjectStore, S3Location } from '../storage/s3.ts';

export const deadlinePassed = () => new SealedError('deadline', 'the request passed its deadline');

/**
 * The SHA-256 of the query's bytes as they stream past (Content-Length is known up front, and
 * the S3 stream throws if more or fewer bytes arrive, so the digest is final once `size` bytes
 * went through).
 */
export class QueryDigest {
  private readonly hash = createHash('sha256');
  private seen = 0;
  private hex: string | undefined;
  private readonly size: number;

  constructor(size: number) {
    this.size = size;
  }

  async *wrap(stream: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of stream) {
      this.hash.update(chunk);
      this.seen += chunk.byteLength;
      yield chunk;
    }
  }

  /**
   * Once the whole query was read: its SHA-256, checked against the one the request named.
   * Called before the last of the result is handed to S3, so a mismatch publishes nothing.
   */
  settle(expected: string | undefined): string {
    if (this.seen !== this.size) throw new SealedError('internal', `the query was read to byte ${this.seen} of ${this.size} only`);
    this.hex ??= this.hash.digest('hex');
    if (expected !== undefined && this.hex !== expected) {
      throw new SealedError(
        'bad-query',
        `the encrypted query's SHA-256 is ${this.hex}, not the query_sha256 the request names (${expected})`,
        'name the SHA-256 of the query object exactly as uploaded (or leave query_sha256 out); if it was right, the object was replaced after it was uploaded: upload it again',
      );
    }
    return this.hex;
  }
}

/** Thrown (and caught in invoke) when a streamed result needs the query's hash before the query is read. */
export class NeedsDigest extends Error {}

/** SHA-256 of a whole S3 object, read as a stream. */
export async function digestObject(c: { store: ObjectStore; maxQueryBytes: number }, loc: S3Location, signal?: AbortSignal): Promise<string> {
  const obj = await c.store.getStream(loc, c.maxQueryBytes, 'encrypted query');
  const stop = () => obj.cancel();
  signal?.addEventListener('abort', stop, { once: true });
  try {
    const hash = createHash('sha256');
    for await (const chunk of obj.stream) {
      if (signal?.aborted) throw deadlinePassed();
      hash.update(chunk);
    }
    return hash.digest('hex');
  } finally {
    signal?.removeEventListener('abort', stop);
    obj.cancel();
  }
}
