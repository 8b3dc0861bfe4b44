// Batch mode's query ciphertexts, encrypted by our own code instead of SEAL's Encryptor, and
// their uniform half expanded from a seed by ChaCha20 instead of SEAL's Blake2xb.
//
// A batch query is hundreds of fresh symmetric encryptions at primes below 2^26, where our NTT
// (ntt.ts, checked against SEAL's) is exact in float64. SEAL made them in ~6 ms each at ring
// 8192 with 8 primes (encode, encrypt, save) and the server loaded each in ~4.5 ms (unpack, SEAL's
// load and seed expansion, a save to get the residues back out); the kernel wants residues, not
// SEAL objects. Here the client still has SEAL encode the plaintext (its canonical embedding is
// SEAL's business), then computes c0 = m + e - a s and c1 = a in NTT form itself, with a from
// ChaCha20(seed) and e SEAL's noise; the server unpacks c0 and expands c1 straight into the
// kernel's input. The same RLWE sample SEAL makes (secret key, noise width, uniform a), so the
// same security; SEAL decrypts it (test/unit/seeded-batch.test.ts).
//
//   "S26" 0 | degree u32 | primes u32 | scale f64 | parms_id (32) | seed (32)
//   | c0's residues, prime after prime, four to 13 bytes (26 bits each)
import { SealedError } from '../errors.ts';
import { chacha20Blocks } from './chacha20.ts';
import { smallNoise } from './noise.ts';
import { NegacyclicNtt } from './ntt.ts';

const MAGIC = [0x53, 0x32, 0x36, 0x00];
const SEED_BYTES = 32;
const AT_SEED = 52;
const HEAD = AT_SEED + SEED_BYTES;
const HINT = 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves';

/** The top level of the batch parameters: what a section must match. */
export interface SeededLevel {
  parmsId: Uint8Array;
  /** The data primes, all below 2^26. */
  primes: readonly number[];
  degree: number;
}

export const seededSectionBytes = (level: SeededLevel) => HEAD + ((level.primes.length * level.degree) / 4) * 13;

export function isSeededSection(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && MAGIC.every((b, i) => bytes[i] === b);
}

/**
 * Uniform residues modulo each prime in turn (`degree` per prime) into out[offset..], from
 * ChaCha20's keystream under `seed`: a word is kept when below the largest multiple of q under
 * 2^32 (so its remainder is exactly uniform) and skipped otherwise (under 1.6% of words for primes
 * above 2^25.9).
 */
export function expandUniform(seed: Uint8Array, primes: readonly number[], degree: number, out: Uint32Array, offset: number): void {
  const words = new Uint32Array(1024);
  let block = 0;
  let w = words.length;
  let o = offset;
  for (const q of primes) {
    const limit = Math.floor(4294967296 / q) * q;
    const qInv = 1 / q;
    for (let i = 0; i < degree;) {
      if (w === words.length) {
        chacha20Blocks(seed, block, words);
        block += words.length / 16;
        w = 0;
      }
      const x = words[w++];
      if (x < limit) {
        // x mod q: the quotient estimate is off by at most one (x < 2^32, exact in a double).
        let r = x - Math.floor(x * qInv) * q;
        if (r < 0) r += q;
        else if (r >= q) r -= q;
        out[o++] = r;
        i++;
      }
    }
  }
}

/**
 * The residues of SEAL's uncompressed Plaintext (or SecretKey, which is one) of `count`
 * residues below 2^32, into `out`: they come last (... | DynArray header | count u64 | data).
 */
export function plainResidues(raw: Uint8Array, count: number, out: Uint32Array = new Uint32Array(count)): Uint32Array {
  const at = raw.length - 8 * count;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (at < 8 || v.getUint32(at - 8, true) !== count || v.getUint32(at - 4, true) !== 0)
    throw new SealedError('bad-keys', 'a plaintext does not have the expected layout');
  // High halves OR-ed and checked once, after the loop.
  let high = 0;
  for (let i = 0, b = at; i < count; i++, b += 8) {
    out[i] = v.getUint32(b, true);
    high |= v.getUint32(b + 4, true);
  }
  if (high !== 0) throw new SealedError('bad-keys', 'a plaintext has residues above 32 bits');
  return out;
}

/** The client's side: fresh encryptions under one secret key. */
export class SeededBatchEncryptor {
  private readonly level: SeededLevel;
  /** The secret key's residues in NTT form, [prime][coeff]. */
  private readonly s: Uint32Array;
  private readonly ntts: NegacyclicNtt[];
  private c0: Uint32Array | undefined;
  private eHat: Float64Array | undefined;

  constructor(level: SeededLevel, secretResidues: Uint32Array) {
    if (level.primes.some((q) => q >= 2 ** 26)) throw new SealedError('insecure-parameters', 'seeded batch encryption needs primes below 2^26');
    if (secretResidues.length !== level.primes.length * level.degree) throw new SealedError('bad-keys', 'the secret key does not match the batch parameters');
    this.level = level;
    this.s = Uint32Array.from(secretResidues);
    this.ntts = level.primes.map((q) => NegacyclicNtt.of(q, level.degree));
  }

  /** `plain`: the plaintext's residues (NTT form, [prime][coeff]) as SEAL encoded them at `scale`. */
  encrypt(plain: Uint32Array, scale: number): Uint8Array {
    const { primes, degree: N, parmsId } = this.level;
    const k = primes.length;
    if (plain.length !== k * N) throw new Error(`a plaintext of ${plain.length} residues, expected ${k * N}`);
    const out = new Uint8Array(seededSectionBytes(this.level));
    const v = new DataView(out.buffer);
    out.set(MAGIC);
    v.setUint32(4, N, true);
    v.setUint32(8, k, true);
    v.setFloat64(12, scale, true);
    out.set(parmsId, 20);
    const seed = out.subarray(AT_SEED, HEAD);
    crypto.getRandomValues(seed);
    // Scratch reused across calls: fresh memory costs a page fault per 4 KiB on some VMs.
    const c0 = (this.c0 ??= new Uint32Array(k * N));
    expandUniform(seed, primes, N, c0, 0); // a, replaced by c0 below, one residue at a time
    const e = smallNoise(N);
    const eHat = (this.eHat ??= new Float64Array(N));
    for (let p = 0; p < k; p++) {
      const q = primes[p];
      const qInv = 1 / q;
      for (let i = 0; i < N; i++) eHat[i] = e[i] < 0 ? e[i] + q : e[i];
      this.ntts[p].forward(eHat);
      for (let i = 0, x = p * N; i < N; i++, x++) {
        // a s mod q: the product is below 2^52, exact; the quotient estimate is off by at most one.
        const prod = c0[x] * this.s[x];
        let as = prod - Math.floor(prod * qInv) * q;
        if (as < 0) as += q;
        else if (as >= q) as -= q;
        let c = plain[x] + eHat[i] - as; // in (-q, 2q)
        if (c < 0) c += q;
        else if (c >= q) c -= q;
        c0[x] = c;
      }
    }
    eHat.fill(0);
    e.fill(0);
    pack26(c0, out, HEAD);
    return out;
  }

  close(): void {
    this.s.fill(0);
  }
}

/**
 * The server's side: checks a section against the batch parameters and writes its ciphertext's
 * residues into dst[offset..]: c0, then c1 expanded from the seed ([poly][prime][coeff]).
 */
export function decodeSeededSection(bytes: Uint8Array, level: SeededLevel, scale: number, dst: Uint32Array, offset: number, what: string): void {
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
  const bad = unpack26(bytes, HEAD, primes, N, dst, offset);
  if (bad >= 0) throw fail(`has a residue above its prime (prime ${bad + 1} of ${k})`);
  expandUniform(bytes.subarray(AT_SEED, HEAD), primes, N, dst, offset + k * N);
}

/** Four residues below 2^26 to 13 bytes, least significant bit first. */
function pack26(r: Uint32Array, out: Uint8Array, at: number): void {
  for (let i = 0, o = at; i < r.length; i += 4, o += 13) {
    const a = r[i],
      b = r[i + 1],
      c = r[i + 2],
      d = r[i + 3];
    out[o] = a;
    out[o + 1] = a >>> 8;
    out[o + 2] = a >>> 16;
    out[o + 3] = (a >>> 24) | (b << 2);
    out[o + 4] = b >>> 6;
    out[o + 5] = b >>> 14;
    out[o + 6] = (b >>> 22) | (c << 4);
    out[o + 7] = c >>> 4;
    out[o + 8] = c >>> 12;
    out[o + 9] = (c >>> 20) | (d << 6);
    out[o + 10] = d >>> 2;
    out[o + 11] = d >>> 10;
    out[o + 12] = d >>> 18;
  }
}

/** pack26's inverse into dst[offset..], prime block by prime block; the index of the first prime with a residue >= it, else -1. */
function unpack26(b: Uint8Array, at: number, primes: readonly number[], N: number, dst: Uint32Array, offset: number): number {
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
