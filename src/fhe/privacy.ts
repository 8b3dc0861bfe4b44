// Circuit privacy: before a result leaves the server it is re-randomized and its noise flooded,
// so that it reveals (up to a stated statistical distance) nothing beyond the decrypted outputs.
//
// Without this, a result is a deterministic function of values the client knows: in batch mode
// the result's c1 is sum_t w_t c1_t mod q in every lane, so one result gives the exact integer
// weights by linear algebra (test/circuit-privacy.test.ts does it), and its decryption noise
// sum_t w_t v_t is linear in the weights too (v_t: the noise of query ciphertext t, which the
// client can compute).
//
// The server returns, for a result ct = (c_0, .., c_{k-1}) of k = 2 or 3 polynomials,
//
//   ct' = ct + u * pk + (e_0 + F, e_1, .., e_{k-1})        (all in NTT form, RNS residues)
//
// pk = (a_0, a_1, .., a_{k-1}): the client's re-randomization key, a_j uniform (j >= 1) and
// a_0 = -(a_1 s + .. + a_{k-1} s^{k-1}) + e; u ternary and e_j ~ SEAL's noise, fresh per result;
// F the flood: an integer polynomial with i.i.d. Gaussian coefficients of standard deviation
// sigma (floodSigma). Then
//
//   <ct', (1, s, .., s^{k-1})> = m + v + (u e + e_0 + e_1 s + .. + e_{k-1} s^{k-1}) + F
//
// where m + v is the honest result's phase (v: its noise, which depends on the weights) and the
// bracket is independent of the circuit. Security argument (the usual noise-flooding one,
// Gentry's thesis section 21 / Bourse-del Pino-Minelli-Wee 2016 for the flooding step):
//  - (a_j, u a_j + e_j) for j >= 1 are RLWE samples with the server's fresh secret u, so c_j'
//    (j >= 1) are computationally uniform, even to the holder of s (the client knows s and pk,
//    not u); given them, c_0' is fixed by the phase.
//  - the phase hides v statistically: KL(N(v, sigma^2 I) || N(0, sigma^2 I)) = |v|_2^2 / (2 sigma^2),
//    so by Pinsker SD <= |v|_2 / (2 sigma); with |v|_2 <= B (noiseL2Bound) and
//    sigma = 2^lambda B / 2 the result is within SD 2^-lambda of one made from m alone.
//    Rounding F to integers is post-processing (v is an integer polynomial), so it keeps the bound.
//    Over Q results of one client the distances add at most: Q 2^-lambda (KL adds, so in fact
//    sqrt(Q) 2^-lambda).
// B is a bound for HONEST queries (fresh encryptions with SEAL's noise, inputs in the range the
// compiler sized for). A client that sends a malformed query with huge noise is not covered
// (that needs proofs of well-formedness); it learns no more than a client sending large inputs,
// which the function itself answers.
//
// Flooding costs lambda + log2(sqrt N) + 1 bits of precision: the compiler raises the input
// scale by that much (FLOOD_EXTRA_BITS) and adds primes to hold it.
import { SealedError } from '../errors.ts';

export type Privacy = 'flood' | 'none';

/** Statistical security of the flood (bits): SD <= 2^-lambda per result. OpenFHE's default for noise flooding is 30. */
export const FLOOD_SECURITY_BITS = 30;

/** SEAL's fresh-encryption noise: centered binomial of standard deviation 3.2, |e| <= 21 (SEAL 4.1 default, not Gaussian). */
export const SEAL_NOISE_SIGMA = 3.2;

/** sigma of the flood for a result whose honest noise has |v|_2 <= noiseL2: SD <= noiseL2 / (2 sigma) = 2^-lambda. */
export function floodSigma(noiseL2: number, lambda = FLOOD_SECURITY_BITS): number {
  return (2 ** lambda * noiseL2) / 2;
}

/**
 * Bits of precision the flood costs, relative to the honest result: slot noise grows from
 * about |v|_2 / sqrt(2) / Delta to sigma sqrt(N/2) / Delta, i.e. by 2^(lambda - 1) sqrt(N); one bit
 * more for the factor between the bound B and the typical |v|_2.
 */
export function floodExtraBits(degree: number, lambda = FLOOD_SECURITY_BITS): number {
  return Math.ceil(lambda - 1 + Math.log2(degree) / 2 + 1);
}

// ---------------------------------------------------------------------------------------------
// Randomness: crypto.getRandomValues (Node and browsers), never Math.random.

function randomWords(n: number): Uint32Array {
  const out = new Uint32Array(n);
  // getRandomValues fills at most 65,536 bytes per call.
  for (let i = 0; i < n; i += 16384) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 16384)));
  return out;
}

/** n standard normal samples (Box-Muller on 53-bit uniforms). */
export function standardNormals(n: number): Float64Array {
  const w = randomWords(4 * Math.ceil(n / 2));
  const out = new Float64Array(n);
  const unit = (hi: number, lo: number) => ((hi >>> 5) * 67108864 + (lo >>> 6) + 0.5) / 2 ** 53; // 53 random bits, in (0, 1)
  for (let i = 0, k = 0; i < n; i += 2, k += 4) {
    const r = Math.sqrt(-2 * Math.log(unit(w[k], w[k + 1])));
    const th = 2 * Math.PI * unit(w[k + 2], w[k + 3]);
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** Uniform ternary coefficients in {-1, 0, 1} (as SEAL's u), by rejection from bytes. */
export function ternary(n: number): Int8Array {
  const out = new Int8Array(n);
  let i = 0;
  while (i < n) {
    const w = randomWords(Math.ceil((n - i) / 3) + 16);
    for (let k = 0; k < w.length && i < n; k++) {
      for (let b = 0; b < 4 && i < n; b++) {
        const x = (w[k] >>> (8 * b)) & 255;
        if (x < 255) out[i++] = (x % 3) - 1;
      }
    }
  }
  return out;
}

/** SEAL-like small noise: rounded Gaussian of sigma 3.2 clipped at 6 sigma. */
export function smallNoise(n: number): Int32Array {
  const z = standardNormals(n);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.max(-19, Math.min(19, Math.round(SEAL_NOISE_SIGMA * z[i])));
  return out;
}

/**
 * The flood: n integers ~ N(0, sigma^2), as BigInts (sigma may exceed 2^53). A float sample
 * sigma z has 53 significant bits, so above 2^49 it lies on a grid coarser than 1; a second
 * Gaussian of sigma 2^-11 sigma (far wider than that grid, far narrower than sigma) smooths it,
 * and so on until the last one's grid is below 1. Total variance sigma^2 (1 + 2^-22 + ...).
 */
export function floodNoise(n: number, sigma: number): bigint[] {
  const scales: number[] = [];
  for (let x = sigma; ; x *= 2 ** -11) {
    scales.push(x);
    if (x < 2 ** 49) break;
  }
  const z = standardNormals(scales.length * n);
  const out = new Array<bigint>(n);
  for (let i = 0; i < n; i++) {
    let f = 0n;
    for (let k = 0; k < scales.length; k++) f += BigInt(Math.round(scales[k] * z[k * n + i]));
    out[i] = f;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The negacyclic NTT of SEAL (Z_q[X]/(X^N + 1) -> Z_q^N), for primes below 2^26 so that every
// product of two residues is below 2^52, exact in a float64. SEAL's NTTTables use the minimal
// primitive 2N-th root psi, stored in bit-reversed order, and the Cooley-Tukey / Gentleman-Sande
// loops of Longa-Naehrig 2016 (output in bit-reversed order): so do we. Checked against SEAL in
// test/circuit-privacy.test.ts: the inverse transform of SEAL's secret key is ternary.

function mulmod(a: number, b: number, q: number): number {
  const p = a * b;
  let r = p - Math.floor(p / q) * q;
  if (r < 0) r += q;
  else if (r >= q) r -= q;
  return r;
}

function powmod(a: number, e: number, q: number): number {
  let r = 1;
  a %= q;
  while (e > 0) {
    if (e & 1) r = mulmod(r, a, q);
    a = mulmod(a, a, q);
    e = Math.floor(e / 2);
  }
  return r;
}

function bitReverse(x: number, bits: number): number {
  let r = 0;
  for (let i = 0; i < bits; i++) r = (r << 1) | ((x >>> i) & 1);
  return r;
}

export class NegacyclicNtt {
  readonly q: number;
  readonly n: number;
  /** psi^bitrev(i) and psi^-bitrev(i). */
  private readonly psiRev: Float64Array;
  private readonly psiInvRev: Float64Array;
  private readonly nInv: number;

  constructor(q: number, n: number) {
    if (q >= 2 ** 26 || (q - 1) % (2 * n) !== 0) throw new SealedError('internal', `NTT: ${q} is not a prime below 2^26 congruent to 1 mod 2N`);
    this.q = q;
    this.n = n;
    const bits = Math.log2(n);
    // Some primitive 2N-th root (g^N = -1), then the smallest of its odd powers: SEAL's choice.
    let g = 0;
    for (let x = 2; x < q; x++) {
      g = powmod(x, (q - 1) / (2 * n), q);
      if (powmod(g, n, q) === q - 1) break;
    }
    let psi = g;
    const g2 = mulmod(g, g, q);
    for (let k = 0, p = g; k < n; k++, p = mulmod(p, g2, q)) if (p < psi) psi = p;
    const psiInv = powmod(psi, 2 * n - 1, q);
    this.psiRev = new Float64Array(n);
    this.psiInvRev = new Float64Array(n);
    for (let i = 0, p = 1, pi = 1; i < n; i++, p = mulmod(p, psi, q), pi = mulmod(pi, psiInv, q)) {
      this.psiRev[bitReverse(i, bits)] = p;
      this.psiInvRev[bitReverse(i, bits)] = pi;
    }
    this.nInv = powmod(n, q - 2, q);
  }

  /** In place; entries in [0, q). */
  forward(a: Float64Array): void {
    const { q, n, psiRev } = this;
    for (let m = 1, t = n >> 1; m < n; m <<= 1, t >>= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = mulmod(a[j + t], S, q);
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          const y = U - V;
          a[j + t] = y < 0 ? y + q : y;
        }
      }
    }
  }

  /** In place; the inverse of forward. */
  inverse(a: Float64Array): void {
    const { q, n, psiInvRev } = this;
    for (let m = n >> 1, t = 1; m >= 1; m >>= 1, t <<= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiInvRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = a[j + t];
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          const y = U - V;
          a[j + t] = mulmod(y < 0 ? y + q : y, S, q);
        }
      }
    }
    for (let j = 0; j < n; j++) a[j] = mulmod(a[j], this.nInv, q);
  }
}

/** A small signed integer polynomial reduced modulo q, as residues in [0, q). */
function reduceSmall(x: ArrayLike<number>, q: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] < 0 ? x[i] + q : x[i];
  return out;
}

function reduceBig(x: bigint[], q: number): Float64Array {
  const Q = BigInt(q);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    let r = x[i] % Q;
    if (r < 0n) r += Q;
    out[i] = Number(r);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Batch mode (raw residues, primes below 2^26): the client's re-randomization key and the
// server's step. The key covers the data primes of the batch parameters (results stay at the
// top level in batch mode).

/**
 * The client's re-randomization key for results of `size` polynomials: (a_0, .., a_{size-1}) per
 * data prime, residues in NTT form, a_0 = -(a_1 s + a_2 s^2) + e. The bytes it uploads:
 *   "SRK1" | size u32 | primes u32 | degree u32 | prime values u32 x primes | residues u32 [poly][prime][coeff]
 */
export interface RerandKey {
  size: number;
  degree: number;
  primes: number[];
  /** [poly][prime][coeff] */
  residues: Uint32Array;
}

const KEY_MAGIC = 0x314b5253; // "SRK1"

/**
 * The secret key's residues (NTT form) for the first `primes` primes, from SEAL's bytes: a
 * SecretKey is saved as a Plaintext of (data primes + special prime) x N residues, last in the
 * stream (SEALHeader | parms_id | coeff_count | scale | DynArray header | count | data).
 */
export function secretKeyResidues(skUncompressed: Uint8Array, degree: number, allPrimes: number, primes: number): Uint32Array {
  const count = degree * allPrimes;
  const at = skUncompressed.length - 8 * count;
  const v = new DataView(skUncompressed.buffer, skUncompressed.byteOffset, skUncompressed.byteLength);
  if (at < 0 || Number(v.getBigUint64(at - 8, true)) !== count) throw new SealedError('bad-keys', 'the secret key does not have the expected layout');
  const out = new Uint32Array(degree * primes);
  for (let i = 0; i < out.length; i++) out[i] = Number(v.getBigUint64(at + 8 * i, true));
  return out;
}

/** Makes the re-randomization key (client side; `s`: secretKeyResidues for the data primes). */
export function makeRerandKey(s: Uint32Array, primes: number[], degree: number, size: 2 | 3): RerandKey {
  const N = degree;
  const residues = new Uint32Array(size * primes.length * N);
  const e = smallNoise(N);
  const at = (poly: number, p: number) => (poly * primes.length + p) * N;
  primes.forEach((q, p) => {
    const ntt = new NegacyclicNtt(q, N);
    const eHat = reduceSmall(e, q);
    ntt.forward(eHat);
    const uni = randomWords(2 * (size - 1) * N);
    for (let c = 0; c < N; c++) {
      const sc = s[p * N + c];
      let power = sc; // s^j at this NTT point
      let acc = 0;
      for (let j = 1; j < size; j++) {
        // 64 random bits modulo q: bias below 2^-38, negligible.
        const aj = (uni[2 * ((j - 1) * N + c)] * 4294967296 + uni[2 * ((j - 1) * N + c) + 1]) % q;
        residues[at(j, p) + c] = aj;
        acc = (acc + mulmod(aj, power, q)) % q;
        power = mulmod(power, sc, q);
      }
      residues[at(0, p) + c] = (q - acc + eHat[c]) % q;
    }
  });
  return { size, degree, primes: [...primes], residues };
}

/** Bytes of a saved re-randomization key. */
export const rerandKeyBytes = (primes: number, degree: number, size: number) => 16 + 4 * primes + 4 * size * primes * degree;

export function saveRerandKey(k: RerandKey): Uint8Array {
  const head = 16 + 4 * k.primes.length;
  const out = new Uint8Array(head + 4 * k.residues.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, KEY_MAGIC, true);
  v.setUint32(4, k.size, true);
  v.setUint32(8, k.primes.length, true);
  v.setUint32(12, k.degree, true);
  k.primes.forEach((q, i) => v.setUint32(16 + 4 * i, q, true));
  new Uint8Array(out.buffer, head).set(new Uint8Array(k.residues.buffer, k.residues.byteOffset, 4 * k.residues.length));
  return out;
}

/** Loads and checks a re-randomization key against the parameters the server expects. */
export function loadRerandKey(bytes: Uint8Array, primes: number[], degree: number, size: number): RerandKey {
  const bad = (why: string) => new SealedError('bad-keys', `the re-randomization key ${why}`, 'make keys for this model with `sealed keygen`');
  if (bytes.length < 16) throw bad('is truncated');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint32(0, true) !== KEY_MAGIC) throw bad('is not a sealed re-randomization key');
  if (v.getUint32(4, true) !== size) throw bad(`has ${v.getUint32(4, true)} polynomials, results have ${size}`);
  if (v.getUint32(8, true) !== primes.length || v.getUint32(12, true) !== degree) throw bad('is for other parameters');
  const head = 16 + 4 * primes.length;
  if (bytes.length !== head + 4 * size * primes.length * degree) throw bad('has the wrong length');
  primes.forEach((q, i) => {
    if (v.getUint32(16 + 4 * i, true) !== q) throw bad('is for other primes');
  });
  const residues = new Uint32Array(size * primes.length * degree);
  new Uint8Array(residues.buffer).set(bytes.subarray(head));
  for (let poly = 0; poly < size; poly++)
    primes.forEach((q, p) => {
      const o = (poly * primes.length + p) * degree;
      for (let c = 0; c < degree; c++) if (residues[o + c] >= q) throw bad('has a residue above its prime');
    });
  return { size, degree, primes: [...primes], residues };
}

/**
 * Re-randomizes and floods one result in place: `residues` at `offset` hold its `size`
 * polynomials, [poly][prime][coeff], NTT form (as the batch kernel writes them).
 */
export function rerandomizeResidues(key: RerandKey, residues: Uint32Array, offset: number, sigma: number, ntts: NegacyclicNtt[]): void {
  const { size, degree: N, primes } = key;
  const u = ternary(N);
  const flood = floodNoise(N, sigma);
  const e = Array.from({ length: size }, () => smallNoise(N));
  for (let c = 0; c < N; c++) flood[c] += BigInt(e[0][c]);
  primes.forEach((q, p) => {
    const ntt = ntts[p];
    const uHat = reduceSmall(u, q);
    ntt.forward(uHat);
    for (let poly = 0; poly < size; poly++) {
      const eHat = poly === 0 ? reduceBig(flood, q) : reduceSmall(e[poly], q);
      ntt.forward(eHat);
      const k = (poly * primes.length + p) * N;
      const r = offset + k;
      for (let c = 0; c < N; c++) {
        // u * a + e + c, each term below q: the sum stays far below 2^53.
        residues[r + c] = (mulmod(uHat[c], key.residues[k + c], q) + eHat[c] + residues[r + c]) % q;
      }
    }
  });
}

/** One NTT table per prime (build once per session: ~10 ms each at N = 8192). */
export function nttTables(primes: number[], degree: number): NegacyclicNtt[] {
  return primes.map((q) => new NegacyclicNtt(q, degree));
}

// ---------------------------------------------------------------------------------------------
// The single layout: results are SEAL ciphertexts of size 2 whose primes may have up to 60 bits.
// Re-randomization is SEAL's own public-key encryption of zero (u pk + (e0, e1)) with the
// client's PublicKey; the flood is added to c0 on the raw residues, through the same negacyclic
// NTT in BigInt (one transform per prime and result).

function powmodBig(a: bigint, e: bigint, q: bigint): bigint {
  let r = 1n;
  a %= q;
  while (e > 0n) {
    if (e & 1n) r = (r * a) % q;
    a = (a * a) % q;
    e >>= 1n;
  }
  return r;
}

/** NegacyclicNtt for any SEAL prime (up to 60 bits), in BigInt: ~20x slower, used once per result. */
export class NegacyclicNttBig {
  readonly q: bigint;
  readonly n: number;
  private readonly psiRev: BigUint64Array;
  private psiInvRev?: BigUint64Array;

  constructor(q: bigint, n: number) {
    const N2 = BigInt(2 * n);
    if ((q - 1n) % N2 !== 0n) throw new SealedError('internal', `NTT: ${q} is not congruent to 1 mod 2N`);
    this.q = q;
    this.n = n;
    let g: bigint;
    for (let x = 2n; ; x++) {
      g = powmodBig(x, (q - 1n) / N2, q);
      if (powmodBig(g, BigInt(n), q) === q - 1n) break;
    }
    let psi = g;
    const g2 = (g * g) % q;
    for (let k = 0, p = g; k < n; k++, p = (p * g2) % q) if (p < psi) psi = p;
    const bits = Math.log2(n);
    this.psiRev = new BigUint64Array(n);
    for (let i = 0, p = 1n; i < n; i++, p = (p * psi) % q) this.psiRev[bitReverse(i, bits)] = p;
  }

  forward(a: BigUint64Array): void {
    const { q, n, psiRev } = this;
    for (let m = 1, t = n >> 1; m < n; m <<= 1, t >>= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = (a[j + t] * S) % q;
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          a[j + t] = U >= V ? U - V : U + q - V;
        }
      }
    }
  }

  /** In place; the inverse of forward (tables made on first use: the server never needs it). */
  inverse(a: BigUint64Array): void {
    const { q, n } = this;
    if (!this.psiInvRev) {
      const psiInv = powmodBig(this.psiRev[bitReverse(1, Math.log2(n))], q - 2n, q);
      const bits = Math.log2(n);
      this.psiInvRev = new BigUint64Array(n);
      for (let i = 0, p = 1n; i < n; i++, p = (p * psiInv) % q) this.psiInvRev[bitReverse(i, bits)] = p;
    }
    const psiInvRev = this.psiInvRev;
    for (let m = n >> 1, t = 1; m >= 1; m >>= 1, t <<= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiInvRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = a[j + t];
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          a[j + t] = ((U >= V ? U - V : U + q - V) * S) % q;
        }
      }
    }
    const nInv = powmodBig(BigInt(n), q - 2n, q);
    for (let j = 0; j < n; j++) a[j] = (a[j] * nInv) % q;
  }
}

/** Raw ciphertext bytes (SEAL, uncompressed): the residues start here (see raw-ciphertext.ts). */
const RAW_RESIDUES_AT = 16 + 32 + 1 + 8 + 8 + 8 + 8 + 8 + 16 + 8;

/**
 * Adds the flood F ~ N(0, sigma^2) (integer coefficients) to c0 of an uncompressed SEAL
 * ciphertext, in place. `primes`: the ciphertext's primes, `ntts` their tables (same order).
 */
export function floodRawCiphertext(raw: Uint8Array, ntts: NegacyclicNttBig[], sigma: number): void {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = ntts[0].n;
  if (Number(v.getBigUint64(16 + 32 + 1 + 8 + 8, true)) !== ntts.length) throw new SealedError('internal', 'flood: the ciphertext is at another level than its NTT tables');
  const flood = floodNoise(n, sigma);
  ntts.forEach((ntt, p) => {
    const { q } = ntt;
    const f = new BigUint64Array(n);
    for (let i = 0; i < n; i++) {
      const r = flood[i] % q;
      f[i] = r < 0n ? r + q : r;
    }
    ntt.forward(f);
    for (let i = 0; i < n; i++) {
      const at = RAW_RESIDUES_AT + 8 * (p * n + i); // c0 is the first polynomial
      const x = v.getBigUint64(at, true) + f[i];
      v.setBigUint64(at, x >= q ? x - q : x, true);
    }
  });
}
