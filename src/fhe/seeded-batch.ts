// Batch mode's query ciphertexts, encoded and encrypted by our own code instead of SEAL's
// CKKSEncoder and Encryptor, with their uniform half expanded from a seed by ChaCha20 instead of
// SEAL's Blake2xb.
//
// A batch query is hundreds of fresh symmetric encryptions at primes below 2^26, where our NTT
// (ntt.ts, checked against SEAL's) is exact in float64. SEAL made them in ~5 ms each at ring 8192
// with 7 data primes (encode, encrypt, save) and the server loaded each in ~3.3 ms (unpack, SEAL's
// load and seed expansion, a save to get the residues back out); the kernel wants residues, not
// SEAL objects. Here the client encodes (ckks-encode.ts: SEAL's encoding, coefficient for
// coefficient), adds the noise to the integer coefficients and transforms once per prime, then
// computes c0 = m + e - a s with a from ChaCha20(seed), all in NTT form: 3.2 ms, 1.3 ms since
// its loops and NTTs run in kernel.wat and the keystream is OpenSSL's under Node. The server
// unpacks c0 and expands c1 = a straight into the kernel's input (seeded-decode.ts; all primes
// or one at a time): 0.7 ms. It is the RLWE sample SEAL makes (its secret key, its noise width,
// a exactly uniform), so the same security; SEAL decrypts it (test/unit/seeded-batch.test.ts).
//
//   "S26" 0 | degree u32 | primes u32 | scale f64 | parms_id (32) | seed (32)
//   | c0's residues, prime after prime, four to 13 bytes (26 bits each)
import { SealedError } from '../errors.ts';
import { KEYSTREAM_WORDS, keystream } from './chacha20.ts';
import { CkksEncoder } from './ckks-encode.ts';
import { smallNoise } from './noise.ts';
import { kernelInstance, NegacyclicNtt } from './ntt.ts';

const MAGIC = [0x53, 0x32, 0x36, 0x00];
const SEED_BYTES = 32;
/** Where the seed starts, and where the header (and the seed) end: seeded-decode.ts reads from both. */
export const AT_SEED = 52;
export const HEAD = AT_SEED + SEED_BYTES;
const TWO32 = 4294967296;
const TWO52 = 2 ** 52;
const TWO84 = 2 ** 84;
export const HINT = 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves';

/** The top level of the batch parameters: what a section must match. */
export interface SeededLevel {
  parmsId: Uint8Array;
  /** The data primes, all below 2^26. */
  primes: readonly number[];
  degree: number;
}

/** Bytes of a section of k primes at ring degree N. */
export const seededBytes = (k: number, N: number) => HEAD + ((k * N) / 4) * 13;
export const seededSectionBytes = (level: SeededLevel) => seededBytes(level.primes.length, level.degree);

export function isSeededSection(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && MAGIC.every((b, i) => bytes[i] === b);
}

/** kernel.wat's loop of expandUniform, and where its words and residues live in its memory. */
interface UniformKernel {
  uniformResidues(w: number, nw: number, out: number, n: number, q: number, limit: number): [number, number];
  words: Uint32Array;
  residues: Uint32Array;
}
let uniform: UniformKernel | undefined;

/** This thread's kernel instance for expandUniform, with room for pieces of `words` words. */
function uniformKernel(words: number): UniformKernel {
  if (!uniform || uniform.words.length < words) {
    const { exports, buffer } = kernelInstance<Pick<UniformKernel, 'uniformResidues'>>(8 * words);
    uniform = { uniformResidues: exports.uniformResidues, words: new Uint32Array(buffer, 0, words), residues: new Uint32Array(buffer, 4 * words, words) };
  }
  return uniform;
}

/**
 * Uniform residues modulo each prime in turn (`degree` per prime) into out[offset..], from
 * ChaCha20's keystream under `seed` from word `from` on: a word is kept when below the largest
 * multiple of q under 2^32 (so its remainder is exactly uniform) and skipped otherwise (under
 * 1/64 of words for primes below 2^26). Returns the word after the last one read, where the next
 * prime's residues start: the server expands one prime at a time (batch.ts). The loop runs in
 * kernel.wat (uniformResidues: four words at a time where none is skipped), on each piece of
 * the keystream copied into its memory: 3.8 -> 3.1 ms for 18 primes at ring 32768, keystream
 * included. Its branches depend on the words, which is no leak: they make c1 = a, public (the
 * seed travels in the clear).
 */
export function expandUniform(seed: Uint8Array, primes: readonly number[], degree: number, out: Uint32Array, offset: number, from = 0): number {
  // One prime at a time: a piece holds its words with room for twice the expected skips.
  const piece = primes.length === 1 ? degree + (degree >> 5) + 16 : undefined;
  const next = keystream(seed, from, piece);
  const kernel = uniformKernel((piece ?? KEYSTREAM_WORDS) + 16);
  const { words: wordsAt, residues } = kernel;
  let words = next();
  wordsAt.set(words);
  let w = 0;
  let read = from;
  let o = offset;
  for (const q of primes) {
    const limit = Math.floor(4294967296 / q) * q;
    for (let need = degree; need > 0;) {
      if (w === words.length) {
        read += w;
        words = next();
        wordsAt.set(words);
        w = 0;
      }
      const [used, wrote] = kernel.uniformResidues(wordsAt.byteOffset + 4 * w, words.length - w, residues.byteOffset, need, q, limit);
      out.set(residues.subarray(0, wrote), o);
      o += wrote;
      need -= wrote;
      w += used;
    }
  }
  return read + w;
}

/** kernel.wat's loops of a seeded encryption (byte offsets into its memory). */
interface EncryptLoops {
  messageResidues(n: number, q: number, base: number, m: number, hi: number, e: number, hat: number): void;
  subtractAS(n: number, q: number, hat: number, tab: number, a: number, s: number): void;
  pack26(src: number, n: number, dst: number): void;
}

/**
 * The client's side: fresh encryptions under one secret key. The loops over the residues run in
 * WebAssembly SIMD (kernel.wat: messageResidues, then subtractAS with the forward NTT), in a
 * kernel instance of this encryptor's own that holds, from byte 0: every prime's NTT tables (16N
 * bytes each), m, hi and hat (float64, N each), e (int32, N), s and a (u32, kN each; a becomes c0),
 * then c0 packed (kernel.wat pack26, 13 bytes per four residues).
 */
export class SeededBatchEncryptor {
  private readonly level: SeededLevel;
  private readonly loops: EncryptLoops;
  private readonly at: { m: number; hi: number; hat: number; e: number; s: number; a: number; packed: number };
  private readonly m: Float64Array;
  private readonly hi: Float64Array;
  private readonly hat: Float64Array;
  private readonly e: Int32Array;
  /** The secret key's residues in NTT form, [prime][coeff]. */
  private readonly s: Uint32Array;
  private readonly c0: Uint32Array;
  private readonly packed: Uint8Array;
  /** log2 of the data primes' product. */
  private readonly modulusBits: number;
  /** Coefficients past 2^84, by index (none at the scales batch plans use). */
  private readonly whole = new Map<number, number>();

  constructor(level: SeededLevel, secretResidues: Uint32Array) {
    if (level.primes.some((q) => q >= 2 ** 26)) throw new SealedError('insecure-parameters', 'seeded batch encryption needs primes below 2^26');
    if (secretResidues.length !== level.primes.length * level.degree) throw new SealedError('bad-keys', 'the secret key does not match the batch parameters');
    this.level = level;
    const { primes, degree: N } = level;
    const k = primes.length;
    const m = k * 16 * N;
    const a = m + 28 * N + 4 * k * N;
    this.at = { m, hi: m + 8 * N, hat: m + 16 * N, e: m + 24 * N, s: m + 28 * N, a, packed: a + 4 * k * N };
    const { exports, buffer } = kernelInstance<EncryptLoops>(this.at.packed + ((k * N) / 4) * 13);
    this.loops = exports;
    primes.forEach((q, p) => new Float64Array(buffer, p * 16 * N, 2 * N).set(NegacyclicNtt.of(q, N).forwardTables()));
    this.m = new Float64Array(buffer, this.at.m, N);
    this.hi = new Float64Array(buffer, this.at.hi, N);
    this.hat = new Float64Array(buffer, this.at.hat, N);
    this.e = new Int32Array(buffer, this.at.e, N);
    this.s = new Uint32Array(buffer, this.at.s, k * N);
    this.s.set(secretResidues);
    this.c0 = new Uint32Array(buffer, this.at.a, k * N);
    this.packed = new Uint8Array(buffer, this.at.packed, ((k * N) / 4) * 13);
    this.modulusBits = primes.reduce((a, q) => a + Math.log2(q), 0);
  }

  /** Bytes of one section (of one encrypt). */
  get bytes(): number {
    return seededSectionBytes(this.level);
  }

  /**
   * A fresh encryption of `values` (at most N/2 slots; the others zero) at `scale`, written into
   * `into` (exactly `bytes` long; every byte is written) or a new array.
   */
  encrypt(values: ArrayLike<number>, scale: number, into?: Uint8Array): Uint8Array {
    const { primes, degree: N, parmsId } = this.level;
    const k = primes.length;
    if (into && into.length !== this.bytes) throw new SealedError('internal', `a seeded section is ${this.bytes} bytes, not ${into.length}`);
    const out = into ?? new Uint8Array(this.bytes);
    const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
    out.set(MAGIC);
    v.setUint32(4, N, true);
    v.setUint32(8, k, true);
    v.setFloat64(12, scale, true);
    out.set(parmsId, 20);
    const seed = out.subarray(AT_SEED, HEAD);
    crypto.getRandomValues(seed);
    const { m, hi, hat, e, c0, whole, at } = this;
    expandUniform(seed, primes, N, c0, 0); // a, replaced by c0 below
    // m's integer coefficients (doubles: exact integers, above 2^53 too), then per prime: m mod q
    // plus e (never added to the double, where it could round away), to NTT form, minus a s.
    const most = CkksEncoder.of(N).encode(values, scale, m);
    if (!(Math.log2(most) < this.modulusBits - 1)) {
      m.fill(0);
      throw new SealedError(
        'bad-data',
        Number.isFinite(most) ? 'a value is too large for the batch scale: its encoding passes half the modulus' : 'a value to encrypt is not a finite number',
        'records far outside the calibration range overflow batch mode; send them in the single layout (`sealed predict --layout single`)',
      );
    }
    // Coefficients past 2^52 (circuit privacy's input scale 2^62 makes most of them so) split once
    // as hi 2^32 + lo, not once per prime: m keeps lo, hi their high part (0 for the others).
    // Those past 2^84 are reduced whole (modLarge), prime by prime, over what the loop wrote.
    for (let i = 0; i < N; i++) {
      const x = m[i];
      if (x > -TWO52 && x < TWO52) hi[i] = 0;
      else if (x > -TWO84 && x < TWO84) {
        hi[i] = Math.floor(x / TWO32); // exact: a power of two
        m[i] = x - hi[i] * TWO32;
      } else {
        hi[i] = 0;
        m[i] = 0;
        whole.set(i, x);
      }
    }
    e.set(smallNoise(N));
    for (let p = 0; p < k; p++) {
      const q = primes[p];
      this.loops.messageResidues(N, q, TWO32 % q, at.m, at.hi, at.e, at.hat);
      for (const [i, x] of whole) {
        const r = modLarge(x, q) + e[i];
        hat[i] = r < 0 ? r + q : r >= q ? r - q : r;
      }
      this.loops.subtractAS(N, q, at.hat, p * 16 * N, at.a + 4 * p * N, at.s + 4 * p * N);
    }
    m.fill(0);
    hi.fill(0);
    whole.clear();
    hat.fill(0);
    e.fill(0);
    this.loops.pack26(at.a, k * N, at.packed);
    out.set(this.packed, HEAD);
    return out;
  }

  close(): void {
    this.s.fill(0);
  }
}

/** x mod q for an integer-valued double of any size, exactly: 32 bits at a time, Horner's rule from the top. */
function modLarge(x: number, q: number): number {
  const negative = x < 0;
  let rest = Math.abs(x);
  const limbs: number[] = [];
  while (rest >= 1) {
    const hi = Math.floor(rest / 4294967296); // exact: a power of two
    limbs.push(rest - hi * 4294967296);
    rest = hi;
  }
  const base = 4294967296 % q;
  let r = 0;
  for (let j = limbs.length - 1; j >= 0; j--) r = (((r * base) % q) + (limbs[j] % q)) % q; // r base < 2^52
  return negative && r !== 0 ? q - r : r;
}
