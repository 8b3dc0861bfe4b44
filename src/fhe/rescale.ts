// Rescaling on the kernel's residues: a ciphertext over primes q_0 .. q_(L-1), in NTT form,
// divided by the product D of its last k primes with rounding, giving one over the primes left
// whose scale is the old one divided by D. Without it every product in batch mode adds its
// factors' scale bits to the modulus; with it the modulus pays only for the bits a rescale drops.
// Two-activation plans use it before their second square (batch-plan.ts, second.rescalePrimes).
// No key is needed, and any number of polynomials works the same, one at a time (a square's three).
//
// For k = 1 the arithmetic is SEAL's Evaluator::rescale_to_next (RNSTool::
// divide_and_round_q_last_ntt) step for step, so a result is the ciphertext SEAL would make,
// residue for residue (test/unit/rescale.test.ts compares them). For each polynomial a (the
// coefficient A modulo Q):
//   1. A mod D, out of NTT form (one inverse transform per dropped prime, then Garner's
//      mixed-radix digits of A mod D), plus floor(D/2), modulo D: rounds where the plain
//      division would floor;
//   2. for each kept prime q_i: t = that value - floor(D/2), taken modulo q_i and back into NTT
//      form (one forward transform modulo q_i);
//   3. a_i <- (a_i - t) D^-1 mod q_i.
// The result is round(A / D) modulo the primes left (rescale.test.ts checks it against BigInt):
// its noise grows by one rounding (at most 1/2 per coefficient of each polynomial, times the
// secret key's powers when decrypted), where k rescales by one prime each would round k times
// and cost k inverse and k(2L - k - 1)/2 forward transforms instead of k and L - k.
//
// Residues are below 2^26 (batch mode's primes), so every product of two is below 2^52 and exact
// in float64, as everywhere in the kernel (kernel-limits.ts).
import { SealedError } from '../errors.ts';
import { inverseMod, kernelInstance, mulmod, NegacyclicNtt } from './ntt.ts';

interface ProductExports {
  nttInverseAt(n: number, q: number, a: number, tab: number, ninv: number): void;
  nttForwardAt(n: number, q: number, a: number, tab: number): void;
  rescaleApply(n: number, q: number, src: number, t: number, inv: number, dst: number): void;
  garnerDigits(n: number, k: number, y: number, c: number): void;
  rescaleTermDigits(n: number, q: number, y: number, k: number, w: number, neg: number, out: number): void;
}

/**
 * The rescale of one ciphertext's primes by its last `drop` (file comment), and the kernel
 * instance (kernel.wat) that runs it: 2.07-2.11 ms per polynomial at N = 16384 with 12 primes
 * and k = 4, against 5.53-5.64 ms for four rescales by one prime (2-core AMD VM, medians of 15).
 * Its tables take ~10 ms per prime to load: a worker keeps one per plan (server/batch-model.ts).
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
    const inverse0 = garner + 8 * drop * (drop + 3);
    const inverse = dropped.map((_, j) => inverse0 + 16 * n * j);
    const forward = kept.map((_, i) => inverse0 + 16 * n * (drop + i));
    const { exports, buffer } = kernelInstance<ProductExports>(inverse0 + 16 * n * L);
    this.wasm = exports;
    this.at = { src, dst, digits, term, weights, garner, inverse, forward };
    // Garner's constants (kernel.wat garnerDigits), per digit j: d_j, 1 / d_j, digit j of
    // floor(D/2), then d_l^-1 mod d_j for l < j.
    const g = new Float64Array(buffer, garner, drop * (drop + 3));
    let h = H;
    dropped.forEach((dj, j) => {
      g[j * (drop + 3)] = dj;
      g[j * (drop + 3) + 1] = 1 / dj;
      g[j * (drop + 3) + 2] = Number(h % BigInt(dj));
      h /= BigInt(dj);
      for (let l = 0; l < j; l++) g[j * (drop + 3) + 3 + l] = inverseMod(dropped[l], dj);
    });
    const ntt = (q: number) => NegacyclicNtt.of(q, degree);
    dropped.forEach((d, j) => new Float64Array(buffer, inverse[j], 2 * n).set(ntt(d).inverseTables()));
    kept.forEach((q, i) => new Float64Array(buffer, forward[i], 2 * n).set(ntt(q).forwardTables()));
    this.nInv = dropped.map((d) => ntt(d).nInv);
    // Per kept prime, d_0 ... d_(l-1) mod q for each digit l, centered (kernel.wat rescaleTermDigits
    // sums four products of them unreduced).
    const w = new Float64Array(buffer, weights, drop * kept.length);
    kept.forEach((q, i) => {
      let prefix = 1;
      for (let l = 0; l < drop; l++) {
        w[i * drop + l] = prefix > q / 2 ? prefix - q : prefix;
        prefix = mulmod(prefix, dropped[l] % q, q);
      }
    });
    this.words = new Uint32Array(buffer, 0, (2 * L - drop) * n);
    this.digits = new Float64Array(buffer, digits, drop * n);
  }

  /**
   * One polynomial: `src` holds its residues [prime][coefficient] over every prime, in NTT form;
   * `dst` receives them over the primes kept (it may be `src`, or overlap it: the residues are
   * copied in before any is written).
   */
  polynomial(src: Uint32Array, dst: Uint32Array): void {
    const { primes, degree: n, drop, words, digits, at, wasm, dropped } = this;
    const L = primes.length;
    const K = L - drop;
    if (src.length < L * n || dst.length < K * n) throw new RangeError('rescale: a polynomial is primes x degree residues');
    words.set(src.subarray(0, L * n), at.src / 4);
    for (let j = 0; j < drop; j++) {
      const from = (L - 1 - j) * n;
      digits.subarray(j * n, (j + 1) * n).set(words.subarray(from, from + n));
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

  /** Every polynomial of a ciphertext: `size` of them, each laid out as `polynomial` reads and writes them. */
  ciphertext(src: Uint32Array, dst: Uint32Array, size: number): void {
    const L = this.primes.length;
    const n = this.degree;
    for (let p = 0; p < size; p++) this.polynomial(src.subarray(p * L * n), dst.subarray(p * (L - this.drop) * n));
  }

  /**
   * Rows `first` .. `first + count - 1` of `values` ([row][poly][prime][coefficient], `size`
   * polynomials over every prime), in place: each row's result is at the front of its place
   * (polynomial p's result lands before polynomial p + 1's residues, which are read later).
   */
  rows(values: Uint32Array, size: number, first: number, count: number): void {
    const stride = size * this.primes.length * this.degree;
    for (let r = first; r < first + count; r++) {
      const row = values.subarray(r * stride, (r + 1) * stride);
      this.ciphertext(row, row, size);
    }
  }
}
