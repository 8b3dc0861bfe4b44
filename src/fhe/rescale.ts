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

/**
 * Rescales of batch mode's second-layer values by their last `drop` primes, one prime at a time
 * as SEAL does (each LastPrimeRescale's instance kept: its tables take ~10 ms per prime to load).
 */
export class BatchRescale {
  private readonly steps: LastPrimeRescale[];
  readonly degree: number;

  /** `primes`: all the data primes, first to last; the last `drop` go. */
  constructor(primes: readonly number[], degree: number, drop: number) {
    if (!Number.isInteger(drop) || drop < 1 || drop >= primes.length) throw new SealedError('internal', `a rescale by ${drop} of ${primes.length} primes`);
    this.degree = degree;
    this.steps = Array.from({ length: drop }, (_, i) => new LastPrimeRescale(primes.slice(0, primes.length - i), degree));
  }

  /**
   * Rows `first` .. `first + count - 1` of `values` ([row][poly][prime][coefficient], `size`
   * polynomials over every prime), in place: each row's result is at the front of its place.
   */
  rows(values: Uint32Array, size: number, first: number, count: number): void {
    const stride = size * this.steps[0].primes.length * this.degree;
    for (let r = first; r < first + count; r++) {
      const row = values.subarray(r * stride, (r + 1) * stride);
      for (const step of this.steps) step.ciphertext(row, row, size);
    }
  }
}
