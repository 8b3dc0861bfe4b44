// Stream helpers for the storage tests: read a stream to its end, and a producer that records
// whether it was closed.
import { createHash, randomBytes } from 'node:crypto';

/** Reads a stream to its end: its length and SHA-256. */
export async function drain(stream: AsyncIterable<Uint8Array>): Promise<{ bytes: number; sha: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const c of stream) {
    hash.update(c);
    bytes += c.byteLength;
  }
  return { bytes, sha: hash.digest('hex') };
}

/** 40 MiB of random bytes in 1 MiB chunks; `closed()` tells whether its finally ran. */
export function closingProducer(): { source: AsyncGenerator<Uint8Array>; closed(): boolean } {
  let closed = false;
  async function* source(): AsyncGenerator<Uint8Array> {
    try {
      for (let i = 0; i < 40; i++) yield randomBytes(1 << 20);
    } finally {
      closed = true;
    }
  }
  return { source: source(), closed: () => closed };
}
