// ChaCha20's keystream (RFC 8439), the expandable source of a batch ciphertext's uniform half
// (seeded-batch.ts). The client encrypts in browsers too, synchronously, where WebCrypto offers no
// ChaCha20 and only asynchronous AES, so this file has its own; under Node, `keystream` takes
// OpenSSL's instead (the same words, ~5x faster). Checked against RFC 8439's test vector and
// OpenSSL's chacha20 (test/unit/seeded-batch.test.ts).
import { nodeBuiltin } from '../util/node-builtin.ts';

const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]; // "expand 32-byte k"

/**
 * Keystream words of key `key` (32 bytes) and nonce 0, from block `counter` on, into `out`
 * (a whole number of 16-word blocks). Words are the little-endian words of the byte stream.
 */
export function chacha20Blocks(key: Uint8Array, counter: number, out: Uint32Array, nonce: readonly [number, number, number] = [0, 0, 0]): void {
  if (key.length !== 32) throw new Error('ChaCha20 takes a 32-byte key');
  if (out.length % 16 !== 0) throw new Error('ChaCha20 writes whole 16-word blocks');
  const k = new DataView(key.buffer, key.byteOffset, 32);
  const k0 = k.getUint32(0, true),
    k1 = k.getUint32(4, true),
    k2 = k.getUint32(8, true),
    k3 = k.getUint32(12, true),
    k4 = k.getUint32(16, true),
    k5 = k.getUint32(20, true),
    k6 = k.getUint32(24, true),
    k7 = k.getUint32(28, true);
  const [n0, n1, n2] = nonce;
  for (let at = 0; at < out.length; at += 16, counter++) {
    let x0 = SIGMA[0],
      x1 = SIGMA[1],
      x2 = SIGMA[2],
      x3 = SIGMA[3],
      x4 = k0,
      x5 = k1,
      x6 = k2,
      x7 = k3,
      x8 = k4,
      x9 = k5,
      x10 = k6,
      x11 = k7,
      x12 = counter | 0,
      x13 = n0,
      x14 = n1,
      x15 = n2;
    // Ten double rounds: columns, then diagonals; each quarter round written out (a += b; d ^= a;
    // d <<<= 16; c += d; b ^= c; b <<<= 12; a += b; d ^= a; d <<<= 8; c += d; b ^= c; b <<<= 7).
    // prettier-ignore
    for (let r = 0; r < 10; r++) {
      x0 = (x0 + x4) | 0; x12 ^= x0; x12 = (x12 << 16) | (x12 >>> 16); x8 = (x8 + x12) | 0; x4 ^= x8; x4 = (x4 << 12) | (x4 >>> 20);
      x0 = (x0 + x4) | 0; x12 ^= x0; x12 = (x12 << 8) | (x12 >>> 24); x8 = (x8 + x12) | 0; x4 ^= x8; x4 = (x4 << 7) | (x4 >>> 25);
      x1 = (x1 + x5) | 0; x13 ^= x1; x13 = (x13 << 16) | (x13 >>> 16); x9 = (x9 + x13) | 0; x5 ^= x9; x5 = (x5 << 12) | (x5 >>> 20);
      x1 = (x1 + x5) | 0; x13 ^= x1; x13 = (x13 << 8) | (x13 >>> 24); x9 = (x9 + x13) | 0; x5 ^= x9; x5 = (x5 << 7) | (x5 >>> 25);
      x2 = (x2 + x6) | 0; x14 ^= x2; x14 = (x14 << 16) | (x14 >>> 16); x10 = (x10 + x14) | 0; x6 ^= x10; x6 = (x6 << 12) | (x6 >>> 20);
      x2 = (x2 + x6) | 0; x14 ^= x2; x14 = (x14 << 8) | (x14 >>> 24); x10 = (x10 + x14) | 0; x6 ^= x10; x6 = (x6 << 7) | (x6 >>> 25);
      x3 = (x3 + x7) | 0; x15 ^= x3; x15 = (x15 << 16) | (x15 >>> 16); x11 = (x11 + x15) | 0; x7 ^= x11; x7 = (x7 << 12) | (x7 >>> 20);
      x3 = (x3 + x7) | 0; x15 ^= x3; x15 = (x15 << 8) | (x15 >>> 24); x11 = (x11 + x15) | 0; x7 ^= x11; x7 = (x7 << 7) | (x7 >>> 25);
      x0 = (x0 + x5) | 0; x15 ^= x0; x15 = (x15 << 16) | (x15 >>> 16); x10 = (x10 + x15) | 0; x5 ^= x10; x5 = (x5 << 12) | (x5 >>> 20);
      x0 = (x0 + x5) | 0; x15 ^= x0; x15 = (x15 << 8) | (x15 >>> 24); x10 = (x10 + x15) | 0; x5 ^= x10; x5 = (x5 << 7) | (x5 >>> 25);
      x1 = (x1 + x6) | 0; x12 ^= x1; x12 = (x12 << 16) | (x12 >>> 16); x11 = (x11 + x12) | 0; x6 ^= x11; x6 = (x6 << 12) | (x6 >>> 20);
      x1 = (x1 + x6) | 0; x12 ^= x1; x12 = (x12 << 8) | (x12 >>> 24); x11 = (x11 + x12) | 0; x6 ^= x11; x6 = (x6 << 7) | (x6 >>> 25);
      x2 = (x2 + x7) | 0; x13 ^= x2; x13 = (x13 << 16) | (x13 >>> 16); x8 = (x8 + x13) | 0; x7 ^= x8; x7 = (x7 << 12) | (x7 >>> 20);
      x2 = (x2 + x7) | 0; x13 ^= x2; x13 = (x13 << 8) | (x13 >>> 24); x8 = (x8 + x13) | 0; x7 ^= x8; x7 = (x7 << 7) | (x7 >>> 25);
      x3 = (x3 + x4) | 0; x14 ^= x3; x14 = (x14 << 16) | (x14 >>> 16); x9 = (x9 + x14) | 0; x4 ^= x9; x4 = (x4 << 12) | (x4 >>> 20);
      x3 = (x3 + x4) | 0; x14 ^= x3; x14 = (x14 << 8) | (x14 >>> 24); x9 = (x9 + x14) | 0; x4 ^= x9; x4 = (x4 << 7) | (x4 >>> 25);
    }
    out[at] = x0 + SIGMA[0];
    out[at + 1] = x1 + SIGMA[1];
    out[at + 2] = x2 + SIGMA[2];
    out[at + 3] = x3 + SIGMA[3];
    out[at + 4] = x4 + k0;
    out[at + 5] = x5 + k1;
    out[at + 6] = x6 + k2;
    out[at + 7] = x7 + k3;
    out[at + 8] = x8 + k4;
    out[at + 9] = x9 + k5;
    out[at + 10] = x10 + k6;
    out[at + 11] = x11 + k7;
    out[at + 12] = x12 + counter;
    out[at + 13] = x13 + n0;
    out[at + 14] = x14 + n1;
    out[at + 15] = x15 + n2;
  }
}

/** Words per piece of keystream unless asked otherwise. */
export const KEYSTREAM_WORDS = 16384;
let zeros: Uint8Array | undefined;

/**
 * ChaCha20's keystream under `key` (nonce 0) from word `from` on (word w is word w mod 16 of
 * block w div 16), `words` words per call (the first call's fewer by from mod 16): OpenSSL's
 * where the runtime is Node (node:crypto; ~5x chacha20.ts, the same words), else chacha20.ts
 * (browsers). A stream resumed at a word gives what the stream from word 0 gives there.
 */
export function keystream(key: Uint8Array, from = 0, words = KEYSTREAM_WORDS): () => Uint32Array {
  const first = Math.floor(from / 16);
  let skip = from % 16;
  const crypto = nodeBuiltin('node:crypto');
  if (crypto) {
    // OpenSSL's iv: the 32-bit block counter (little-endian), then the 96-bit nonce (0).
    const iv = new Uint8Array(16);
    new DataView(iv.buffer).setUint32(0, first, true);
    const cipher = crypto.createCipheriv('chacha20', key, iv);
    if (!zeros || zeros.length < 4 * (words + 16)) zeros = new Uint8Array(4 * (words + 16));
    return () => {
      // The first piece also covers the words skipped in its first block.
      const b = cipher.update(zeros!.subarray(0, 4 * (words + skip)));
      const w = b.byteOffset % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, words + skip) : new Uint32Array(Uint8Array.from(b).buffer);
      const out = skip ? w.subarray(skip) : w;
      skip = 0;
      return out;
    };
  }
  let block = first;
  return () => {
    // Whole blocks (a piece may hold a few words more than asked): the first from the block
    // holding `from`, cut at it.
    const blocks = Math.ceil((words + skip) / 16);
    const w = new Uint32Array(16 * blocks);
    chacha20Blocks(key, block, w);
    block += blocks;
    const out = w.subarray(skip);
    skip = 0;
    return out;
  };
}
