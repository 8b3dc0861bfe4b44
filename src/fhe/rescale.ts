// Rescaling on the kernel's residues: a ciphertext over primes q_0 .. q_L, in NTT form, divided
// by its last prime with rounding, giving one over q_0 .. q_(L-1) whose scale is the old one
// divided by q_L. It is the step batch mode lacks to go deeper than the scale's growth allows
// (docs/batch-mode.md): without it every product adds its factors' scale bits to the modulus;
// with it the modulus pays only for the bits a product's rescale drops. No key is needed, and any
// number of polynomials works the same, one at a time (a square's three, a fourth power's five).
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
import { mulmod, NegacyclicNtt } from './ntt.ts';

/** a^-1 mod q for a prime q (Fermat), exactly in float64. */
function inverseMod(a: number, q: number): number {
  let r = 1;
  let b = a % q;
  for (let e = q - 2; e > 0; e = Math.floor(e / 2), b = mulmod(b, b, q)) if (e % 2) r = mulmod(r, b, q);
  return r;
}

export class LastPrimeRescale {
  readonly primes: readonly number[];
  readonly degree: number;
  private readonly ntts: NegacyclicNtt[];
  /** floor(q_L / 2) mod q_i, and q_L^-1 mod q_i, for each remaining prime. */
  private readonly halfMod: Float64Array;
  private readonly lastInverse: Float64Array;
  private readonly last: Float64Array;
  private readonly term: Float64Array;

  /** `primes`: the ciphertext's primes in SEAL's order; the last is divided out. */
  constructor(primes: readonly number[], degree: number) {
    if (primes.length < 2) throw new SealedError('internal', 'rescaling needs at least two primes: one to divide by and one to keep');
    this.primes = primes;
    this.degree = degree;
    this.ntts = primes.map((q) => NegacyclicNtt.of(q, degree));
    const qL = primes[primes.length - 1];
    const half = Math.floor(qL / 2);
    const kept = primes.slice(0, -1);
    this.halfMod = Float64Array.from(kept, (q) => half % q);
    this.lastInverse = Float64Array.from(kept, (q) => inverseMod(qL, q));
    this.last = new Float64Array(degree);
    this.term = new Float64Array(degree);
  }

  /**
   * One polynomial: `src` holds its residues [prime][coefficient] over every prime, in NTT form;
   * `dst` receives them over all primes but the last (it may be `src`: each kept prime's residues
   * are read before they are written, and the last prime's are read first).
   */
  polynomial(src: Uint32Array, dst: Uint32Array): void {
    const { primes, degree: n, last, term } = this;
    const L = primes.length - 1;
    if (src.length < (L + 1) * n || dst.length < L * n) throw new RangeError('rescale: a polynomial is primes x degree residues');
    const qL = primes[L];
    const half = Math.floor(qL / 2);
    for (let j = 0; j < n; j++) last[j] = src[L * n + j];
    this.ntts[L].inverse(last);
    for (let j = 0; j < n; j++) {
      const r = last[j] + half;
      last[j] = r >= qL ? r - qL : r;
    }
    for (let i = 0; i < L; i++) {
      const q = primes[i];
      const qinv = 1 / q;
      const negHalf = q - this.halfMod[i];
      for (let j = 0; j < n; j++) {
        // r mod q, by the float quotient corrected once (a float modulo is ~4x slower).
        const x = last[j];
        let r = x - Math.floor(x * qinv) * q + negHalf;
        if (r < 0) r += q;
        while (r >= q) r -= q;
        term[j] = r;
      }
      this.ntts[i].forward(term);
      const inv = this.lastInverse[i];
      const at = i * n;
      for (let j = 0; j < n; j++) {
        let d = src[at + j] - term[j];
        if (d < 0) d += q;
        // d q_L^-1 < 2^52: exact; the float quotient is off by at most one.
        const p = d * inv;
        let r = p - Math.floor(p * qinv) * q;
        if (r < 0) r += q;
        else if (r >= q) r -= q;
        dst[at + j] = r;
      }
    }
  }

  /** Every polynomial of a ciphertext: `size` polynomials, each laid out as `polynomial` reads and writes them. */
  ciphertext(src: Uint32Array, dst: Uint32Array, size: number): void {
    const n = this.degree;
    const L = this.primes.length - 1;
    for (let p = 0; p < size; p++) this.polynomial(src.subarray(p * (L + 1) * n), dst.subarray(p * L * n));
  }
}
