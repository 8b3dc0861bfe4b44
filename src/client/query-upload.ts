// A query streamed to S3 as its sections are made: the wire encoding (writeWireStream) goes into a
// multipart upload and through SHA-256 as it passes, so neither the whole query nor a copy of it
// is ever held (a batch query is hundreds of MB; encoded whole, the client held it twice).
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import type { QueryHeader } from '../wire/format.ts';
import { writeWireStream } from '../wire/stream.ts';
import type { S3Location } from '../storage/s3.ts';
import type { S3Route } from './route.ts';

/** Puts the query whose `count` sections `sections` yields; its size and the SHA-256 of its bytes. */
export async function putQueryStream(
  t: S3Route,
  loc: S3Location,
  header: QueryHeader,
  count: number,
  sections: AsyncIterable<Uint8Array>,
): Promise<{ bytes: number; sha256: string }> {
  const h = hashing(writeWireStream('query', header, count, sections));
  const { bytes } = await t.store.putStream(loc, h.stream, 'encrypted query');
  return { bytes, sha256: h.hex() };
}

/** The bytes of `source` as they pass, and their SHA-256 once all have passed. */
function hashing(source: AsyncIterable<Uint8Array>): { stream: AsyncGenerator<Uint8Array>; hex(): string } {
  const hash = createHash('sha256');
  let done = false;
  return {
    stream: (async function* () {
      for await (const chunk of source) {
        hash.update(chunk);
        yield chunk;
      }
      done = true;
    })(),
    hex() {
      if (!done) throw new SealedError('internal', 'the query was not uploaded to its end');
      return hash.digest('hex');
    },
  };
}

/** An iterable as an async one that lets the upload's sockets run between two of its values. */
export async function* toAsync<T>(it: Iterable<T>): AsyncGenerator<T> {
  for (const v of it) {
    yield v;
    await new Promise((r) => setImmediate(r));
  }
}
