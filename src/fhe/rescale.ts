// Rescaling on the kernel's residues: a ciphertext over primes q_0 .. q_L, in NTT form, divided
// by its last prime with rounding, giving one over q_0 .. q_(L-1) whose scale is the old one
// divided by q_L. Without it every product in batch mode adds its factors' scale bits to the
// modulus; with it the modulus pays only for the bits a rescale drops. Two-activation plans use
// it before their second square (batch-plan.ts, second.rescalePrimes; BatchRescale below). No key
// is needed, and any number of polynomials works the same, one at a time (a square's three).
//
// The arithmetic is SEAL's Evaluator::rescale_to_next (RNSTool::divide_and_round_q_last_ntt),
// step for step, so a result is the ciphertext SEAL would make, residue for residue
// (test/unit/rescale.test.ts compares them). For each polynomial a (the coefficient A modulo
// Q = q_0 ... q_L):
//   1. r = A mod q_L, out of NTT form (one inverse transform modulo q_L);
//   2. r + floor(q_L / 2), modulo q_L: rounds where the plain division would floor;
//   3. for each other prime q_i: t = (r + floor(q_L / 2)) mod q_L - floor(q_L / 2), taken modulo
//      q_i and back into NTT form (one forward transform modulo q_i); a_i <- (a_i - t) q_L^-1 mod q_i.
// The result is round(A / q_L) modulo q_0 ... q_(L-1): its noise grows by the rounding (at most
// 1/2 per coefficient of each polynomial, times the secret key's powers when decrypted).
//
// Residues are below 2^26 (batch mode's primes), so every product of two is below 2^52 and exact
// in float64, as everywhere in the kernel (kernel-limits.ts).
import { SealedError } from '../errors.ts';
import { kernelInstance, mulmod, NegacyclicNtt } from './ntt.ts';

/** a^-1 mod q for a prime q (Fermat), exactly in float64. */
function inverseMod(a: number, q: number): number {
  let r = 1;
  let b = a % q;
  for (let e = q - 2; e > 0; e = Math.floor(e / 2), b = mulmod(b, b, q)) if (e % 2) r = mulmod(r, b, q);
  return r;
}

interface RescaleExports {
  nttInverseAt(n: number, q: number, a: number, tab: number, ninv: number): void;
  nttForwardAt(n: number, q: number, a: number, tab: number): void;
  rescaleTerm(n: number, q: number, r: number, neg: number, out: number): void;
  rescaleApply(n: number, q: number, src: number, t: number, inv: number, dst: number): void;
}

/**
 * One ciphertext's primes and the kernel instance (kernel.wat) that rescales its polynomials,
 * one at a time. Its memory holds, in bytes: the polynomial's u32 residues over every prime
 * (4 (L + 1) n), the result's (4 L n), the last prime's coefficients and one kept prime's term
 * (8n each, float64), then the tables: the last prime's inverse transform, each kept prime's
 * forward one (16n each). 5.6 MiB at N = 16384 and 16 primes.
 */
export class LastPrimeRescale {
  readonly primes: readonly number[];
  readonly degree: number;
  private readonly wasm: RescaleExports;
  private readonly words: Uint32Array;
  private readonly last: Float64Array;
  private readonly at: { src: number; dst: number; last: number; term: number; inverse: number; forward: number[] };
  /** q_i - (floor(q_L / 2) mod q_i), and q_L^-1 mod q_i, for each kept prime. */
  private readonly negHalf: Float64Array;
  private readonly lastInverse: Float64Array;
  private readonly nInv: number;

  /** `primes`: the ciphertext's primes in SEAL's order; the last is divided out. */
  constructor(primes: readonly number[], degree: number) {
    if (primes.length < 2) throw new SealedError('internal', 'rescaling needs at least two primes: one to divide by and one to keep');
    this.primes = primes;
    this.degree = degree;
    const n = degree;
    const L = primes.length - 1;
    const qL = primes[L];
    const half = Math.floor(qL / 2);
    const kept = primes.slice(0, -1);
    this.negHalf = Float64Array.from(kept, (q) => q - (half % q));
    this.lastInverse = Float64Array.from(kept, (q) => inverseMod(qL, q));
    const src = 0;
    const dst = src + 4 * (L + 1) * n;
    const last = dst + 4 * L * n;
    const term = last + 8 * n;
    const inverse = term + 8 * n;
    const forward = kept.map((_, i) => inverse + 16 * n * (i + 1));
    const bytes = inverse + 16 * n * (L + 1);
    const { exports, buffer } = kernelInstance<RescaleExports>(bytes);
    this.wasm = exports;
    this.at = { src, dst, last, term, inverse, forward };
    const ntts = primes.map((q) => NegacyclicNtt.of(q, degree));
    new Float64Array(buffer, inverse, 2 * n).set(ntts[L].inverseTables());
    kept.forEach((_, i) => new Float64Array(buffer, forward[i], 2 * n).set(ntts[i].forwardTables()));
    this.nInv = ntts[L].nInv;
    this.words = new Uint32Array(buffer, 0, (2 * L + 1) * n);
    this.last = new Float64Array(buffer, last, n);
  }

  /**
   * One polynomial: `src` holds its residues [prime][coefficient] over every prime, in NTT form;
   * `dst` receives them over all primes but the last (it may be `src`, or overlap it: the
   * residues are copied in before any is written).
   */
  polynomial(src: Uint32Array, dst: Uint32Array): void {
    const { primes, degree: n, words, last, at, wasm } = this;
    const L = primes.length - 1;
    if (src.length < (L + 1) * n || dst.length < L * n) throw new RangeError('rescale: a polynomial is primes x degree residues');
    words.set(src.subarray(0, (L + 1) * n), at.src / 4);
    const qL = primes[L];
    for (let j = 0, k = at.src / 4 + L * n; j < n; j++) last[j] = words[k + j];
    wasm.nttInverseAt(n, qL, at.last, at.inverse, this.nInv);
    const half = Math.floor(qL / 2);
    for (let j = 0; j < n; j++) {
      const r = last[j] + half;
      last[j] = r >= qL ? r - qL : r;
    }
    for (let i = 0; i < L; i++) {
      const q = primes[i];
      wasm.rescaleTerm(n, q, at.last, this.negHalf[i], at.term);
      wasm.nttForwardAt(n, q, at.term, at.forward[i]);
      wasm.rescaleApply(n, q, at.src + 4 * i * n, at.term, this.lastInverse[i], at.dst + 4 * i * n);
    }
    dst.set(words.subarray(at.dst / 4, at.dst / 4 + L * n));
  }

  /**
   * Every polynomial of a ciphertext: `size` polynomials, each laid out as `polynomial` reads and
   * writes them. In place (dst = src) too: polynomial p's result lands before polynomial p + 1's
   * residues, which are read later.
   */
  ciphertext(src: Uint32Array, dst: Uint32Array, size: number): void {
    const n = this.degree;
    const L = this.primes.length - 1;
    for (let p = 0; p < size; p++) this.polynomial(src.subarray(p * (L + 1) * n), dst.subarray(p * L * n));
  }
}

interface ProductExports extends RescaleExports {
  garnerDigits(n: number, k: number, y: number, c: number): void;
  rescaleTermDigits(n: number, q: number, y: number, k: number, w: number, neg: number, out: number): void;
}

/**
 * A polynomial over q_0 .. q_(L-1), in NTT form, divided by the product D of its last k primes
 * with rounding in one step: round(A / D) modulo the primes left, where k rescales by one prime
 * each would round k times. The same three steps as LastPrimeRescale, with A mod D in place of
 * A mod q_L:
 *   1. A mod d_j for each dropped prime, out of NTT form (k inverse transforms), and Garner's
 *      mixed-radix digits of (A + floor(D/2)) mod D (kernel.wat garnerDigits; below 2^26 each:
 *      exact in float64);
 *   2. for each kept prime q_i: t = that value - floor(D/2), modulo q_i from the digits
 *      (kernel.wat rescaleTermDigits), into NTT form;
 *   3. a_i <- (a_i - t) D^-1 mod q_i.
 * For k = 4 primes that is 4 inverse and L - 4 forward transforms, against 4 and 4L - 10 for
 * four single rescales: 2.07-2.11 ms per polynomial at N = 16384 with 12 primes and k = 4,
 * against 5.53-5.64 ms (2-core AMD VM, medians of 15). test/unit/rescale.test.ts checks it
 * against round(A / D) in BigInt.
 */
export class ProductRescale {
  readonly primes: readonly number[];
  readonly degree: number;
  readonly drop: number;
  private readonly wasm: ProductExports;
  private readonly words: Uint32Array;
  private readonly digits: Float64Array;
  private readonly at: { src: number; dst: number; digits: number; term: number; weights: number; garner: number; inverse: number[]; forward: number[] };
  private readonly dropped: number[];
  private readonly nInv: number[];
  /** Per kept prime: q - (floor(D/2) mod q), and D^-1 mod q. */
  private readonly negHalf: Float64Array;
  private readonly inverseD: Float64Array;

  /** `primes`: the polynomial's primes in SEAL's order; the last `drop` go. */
  constructor(primes: readonly number[], degree: number, drop: number) {
    const L = primes.length;
    if (!Number.isInteger(drop) || drop < 1 || drop >= L) throw new SealedError('internal', `a rescale by ${drop} of ${L} primes`);
    this.primes = primes;
    this.degree = degree;
    this.drop = drop;
    const n = degree;
    const kept = primes.slice(0, L - drop);
    // d_0 = q_(L-1), d_1 = q_(L-2), ...: the order does not matter for D.
    const dropped = (this.dropped = Array.from({ length: drop }, (_, j) => primes[L - 1 - j]));
    const D = dropped.reduce((a, d) => a * BigInt(d), 1n);
    const H = D / 2n;
    this.negHalf = Float64Array.from(kept, (q) => (q - Number(H % BigInt(q))) % q);
    this.inverseD = Float64Array.from(kept, (q) => inverseMod(Number(D % BigInt(q)), q));
    const src = 0;
    const dst = src + 4 * L * n;
    const digits = dst + 4 * kept.length * n;
    const term = digits + 8 * drop * n;
    const weights = term + 8 * n;
    const garner = weights + 8 * drop * kept.length;
    const inverse0 = garner + 8 * drop * (drop + 2);
    const inverse = dropped.map((_, j) => inverse0 + 16 * n * j);
    const forward = kept.map((_, i) => inverse0 + 16 * n * (drop + i));
    const { exports, buffer } = kernelInstance<ProductExports>(inverse0 + 16 * n * L);
    this.wasm = exports;
    this.at = { src, dst, digits, term, weights, garner, inverse, forward };
    // Garner's constants (kernel.wat garnerDigits), per digit j: d_j, digit j of floor(D/2), then
    // d_l^-1 mod d_j for l < j.
    const g = new Float64Array(buffer, garner, drop * (drop + 2));
    let h = D / 2n;
    dropped.forEach((dj, j) => {
      g[j * (drop + 2)] = dj;
      g[j * (drop + 2) + 1] = Number(h % BigInt(dj));
      h /= BigInt(dj);
      for (let l = 0; l < j; l++) g[j * (drop + 2) + 2 + l] = inverseMod(dropped[l], dj);
    });
    const ntt = (q: number) => NegacyclicNtt.of(q, degree);
    dropped.forEach((d, j) => new Float64Array(buffer, inverse[j], 2 * n).set(ntt(d).inverseTables()));
    kept.forEach((q, i) => new Float64Array(buffer, forward[i], 2 * n).set(ntt(q).forwardTables()));
    this.nInv = dropped.map((d) => ntt(d).nInv);
    // Per kept prime, d_0 ... d_(l-1) mod q for each digit l.
    const w = new Float64Array(buffer, weights, drop * kept.length);
    kept.forEach((q, i) => {
      let prefix = 1;
      for (let l = 0; l < drop; l++) {
        w[i * drop + l] = prefix;
        prefix = mulmod(prefix, dropped[l] % q, q);
      }
    });
    this.words = new Uint32Array(buffer, 0, (2 * L - drop) * n);
    this.digits = new Float64Array(buffer, digits, drop * n);
  }

  /** One polynomial, as LastPrimeRescale.polynomial (`dst` may be `src`). */
  polynomial(src: Uint32Array, dst: Uint32Array): void {
    const { primes, degree: n, drop, words, digits, at, wasm, dropped } = this;
    const L = primes.length;
    const K = L - drop;
    if (src.length < L * n || dst.length < K * n) throw new RangeError('rescale: a polynomial is primes x degree residues');
    words.set(src.subarray(0, L * n), at.src / 4);
    for (let j = 0; j < drop; j++) {
      const from = (L - 1 - j) * n;
      for (let c = 0; c < n; c++) digits[j * n + c] = words[from + c];
      wasm.nttInverseAt(n, dropped[j], at.digits + 8 * j * n, at.inverse[j], this.nInv[j]);
    }
    // Garner's digits of A mod D (A mod D = v_0 + d_0 (v_1 + d_1 (v_2 + ...))), then floor(D/2)
    // added with carries, modulo D: exact, every value below 2^26.
    wasm.garnerDigits(n, drop, at.digits, at.garner);
    for (let i = 0; i < K; i++) {
      const q = primes[i];
      wasm.rescaleTermDigits(n, q, at.digits, drop, at.weights + 8 * drop * i, this.negHalf[i], at.term);
      wasm.nttForwardAt(n, q, at.term, at.forward[i]);
      wasm.rescaleApply(n, q, at.src + 4 * i * n, at.term, this.inverseD[i], at.dst + 4 * i * n);
    }
    dst.set(words.subarray(at.dst / 4, at.dst / 4 + K * n));
  }
}

/**
 * Rescales of batch mode's second-layer values by their last `drop` primes, in one step
 * (ProductRescale; its tables take ~10 ms per prime to load, so one is kept per worker).
 */
export class BatchRescale {
  private readonly step: ProductRescale;
  readonly degree: number;

  /** `primes`: all the data primes, first to last; the last `drop` go. */
  constructor(primes: readonly number[], degree: number, drop: number) {
    this.degree = degree;
    this.step = new ProductRescale(primes, degree, drop);
  }

  /**
   * Rows `first` .. `first + count - 1` of `values` ([row][poly][prime][coefficient], `size`
   * polynomials over every prime), in place: each row's result is at the front of its place.
   */
  rows(values: Uint32Array, size: number, first: number, count: number): void {
    const { primes, drop } = this.step;
    const n = this.degree;
    const L = primes.length;
    const stride = size * L * n;
    for (let r = first; r < first + count; r++)
      for (let p = 0; p < size; p++) this.step.polynomial(values.subarray(r * stride + p * L * n), values.subarray(r * stride + p * (L - drop) * n));
  }
}
