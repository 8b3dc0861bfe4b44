// The server's side of seeded batch ciphertexts (seeded-batch.ts has the format and the client's
// encryptor): a section checked against the batch parameters, its residues unpacked and its
// uniform half expanded from the seed, whole or one prime at a time.
import { SealedError } from '../errors.ts';
import { AT_SEED, expandUniform, HEAD, HINT, isSeededSection, seededSectionBytes, type SeededLevel } from './seeded-batch.ts';

/**
 * The server's side: checks a section against the batch parameters and writes its ciphertext's
 * residues into dst[offset..]: c0, then c1 expanded from the seed ([poly][prime][coeff]).
 */
export function decodeSeededSection(bytes: Uint8Array, level: SeededLevel, scale: number, dst: Uint32Array, offset: number, what: string): void {
  checkSeededSection(bytes, level, scale, what);
  const { primes, degree: N } = level;
  const bad = unpack26(bytes, HEAD, primes, N, dst, offset);
  if (bad >= 0) throw residueAbove(what, bad, primes.length);
  expandUniform(bytes.subarray(AT_SEED, HEAD), primes, N, dst, offset + primes.length * N);
}

/**
 * One prime of a section, checked as decodeSeededSection checks it: c0's residues modulo
 * primes[p] into dst[offset..offset + N), then c1's, expanded from keystream word `from` on: 0
 * for prime 0, else what this returned for prime p - 1 (the stream runs through the primes in
 * turn). Returns where prime p + 1's words start. The server evaluates a batch a prime at a time
 * (batch.ts), so it holds one prime's residues of the batch, not all of them.
 */
export function decodeSeededPrime(
  bytes: Uint8Array,
  level: SeededLevel,
  scale: number,
  p: number,
  dst: Uint32Array,
  offset: number,
  from: number,
  what: string,
): number {
  checkSeededSection(bytes, level, scale, what);
  const { primes, degree: N } = level;
  if (unpack26(bytes, HEAD + (p * N * 13) / 4, [primes[p]], N, dst, offset) >= 0) throw residueAbove(what, p, primes.length);
  return expandUniform(bytes.subarray(AT_SEED, HEAD), [primes[p]], N, dst, offset + N, from);
}

const residueAbove = (what: string, p: number, k: number) =>
  new SealedError('bad-query', `${what} has a residue above its prime (prime ${p + 1} of ${k})`, HINT);

/** Refuses a section whose form, N, k, scale, parms_id or length differ from the batch parameters'. */
function checkSeededSection(bytes: Uint8Array, level: SeededLevel, scale: number, what: string): void {
  const fail = (why: string) => new SealedError('bad-query', `${what} ${why}`, HINT);
  const { primes, degree: N, parmsId } = level;
  const k = primes.length;
  if (bytes.length < HEAD || !isSeededSection(bytes)) throw fail('is not a seeded batch ciphertext');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint32(4, true) !== N || v.getUint32(8, true) !== k)
    throw fail(`has ring degree ${v.getUint32(4, true)} and ${v.getUint32(8, true)} primes, the model uses ${N} and ${k}`);
  const got = v.getFloat64(12, true);
  if (got !== scale)
    throw fail(
      `has scale ${Number.isFinite(got) && got > 0 ? `2^${Math.log2(got).toFixed(2)}` : 'that is not a power of two'}, expected 2^${Math.log2(scale)}`,
    );
  for (let i = 0; i < 32; i++) if (bytes[20 + i] !== parmsId[i]) throw fail("is not at the batch parameters' top level");
  if (bytes.length !== seededSectionBytes(level)) throw fail(`has ${bytes.length} bytes, expected ${seededSectionBytes(level)}`);
}

/** pack26's inverse into dst[offset..], prime block by prime block; the index of the first prime with a residue >= it, else -1. */
export function unpack26(b: Uint8Array, at: number, primes: readonly number[], N: number, dst: Uint32Array, offset: number): number {
  let p = at;
  for (let j = 0; j < primes.length; j++) {
    const q = primes[j];
    let high = 0;
    for (let i = offset + j * N, end = i + N; i < end; i += 4, p += 13) {
      const b3 = b[p + 3],
        b6 = b[p + 6],
        b9 = b[p + 9];
      const x0 = b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | ((b3 & 3) << 24);
      const x1 = (b3 >>> 2) | (b[p + 4] << 6) | (b[p + 5] << 14) | ((b6 & 15) << 22);
      const x2 = (b6 >>> 4) | (b[p + 7] << 4) | (b[p + 8] << 12) | ((b9 & 63) << 20);
      const x3 = (b9 >>> 6) | (b[p + 10] << 2) | (b[p + 11] << 10) | (b[p + 12] << 18);
      dst[i] = x0;
      dst[i + 1] = x1;
      dst[i + 2] = x2;
      dst[i + 3] = x3;
      // One comparison per four: the largest of them against q.
      high = Math.max(high, x0, x1, x2, x3);
    }
    if (high >= q) return j;
  }
  return -1;
}
