// The flood's integers modulo SEAL's primes (up to 61 bits), without a BigInt per coefficient:
// what the single layout and the tree forms add to every result (privacy.ts floodRawCiphertext).
//
// Each integer is a sum of K terms round(s_k z) (noise.ts floodScales), doubles that are exact
// integers. Split into 32-bit limbs by powers of two (exact in float64) and summed per sign (each
// limb sum below K 2^32), they make the exact integer P - M once per coefficient; the kernel
// (kernel.wat floodResidues64) reduces P and M modulo each prime by Shoup's products with 2^(64 j)
// mod q. The BigInt form (noise.ts floodSums, then % q per prime) took 32.9 ms for a flood of
// 2^83 on ring 16384 and six primes, this form 13.4 ms (2026-12-05's VM, the NTTs included); most
// of the BigInt form's time was making a BigInt of each coefficient's first, large term.
import { SealedError } from '../errors.ts';
import { floodScales, standardNormals } from './noise.ts';
import { kernelInstance } from './ntt.ts';

const TWO_32 = 2 ** 32;

/** u64 limbs that hold a flood integer's positive or negative part: |z| < 8.7, the terms after the first add 2^-40 of it. */
export function floodLimbs(sigma: number): number {
  return Math.max(1, Math.ceil((Math.log2(9 * sigma) + 1) / 64));
}

/**
 * floodSums(scales, z, n)'s integers, exactly, into `words` (u32, little-endian u64 limbs): per
 * coefficient the positive terms' sum, then the negative terms' |sum|, `limbs` u64 limbs each.
 */
export function floodLimbWords(scales: number[], z: Float64Array, n: number, limbs: number, words: Uint32Array): void {
  const W = 2 * limbs;
  if (words.length < 2 * W * n) throw new SealedError('internal', `flood limbs: ${words.length} words for ${n} coefficients`);
  const acc = new Float64Array(2 * W);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    for (let k = 0; k < scales.length; k++) {
      const t = Math.round(scales[k] * z[k * n + i]);
      let x = Math.abs(t);
      let j = t < 0 ? W : 0;
      const end = j + W;
      while (x > 0) {
        if (j === end) throw new SealedError('internal', `flood limbs: a term of ${Math.log2(x).toFixed(0)}+ bits past ${limbs} limbs`);
        const hi = Math.floor(x / TWO_32);
        acc[j++] += x - hi * TWO_32;
        x = hi;
      }
    }
    const at = 2 * W * i;
    for (let part = 0; part < 2 * W; part += W) {
      let carry = 0;
      for (let j = 0; j < W; j++) {
        const v = acc[part + j] + carry;
        carry = Math.floor(v / TWO_32);
        words[at + part + j] = v - carry * TWO_32;
      }
      if (carry !== 0) throw new SealedError('internal', `flood limbs: a sum past ${limbs} limbs`);
    }
  }
}

/** One thread's flood kernel: the limbs of one flood, reduced modulo each prime in turn. */
export class FloodKernel {
  readonly n: number;
  readonly limbs: number;
  /** Where floodLimbWords writes. */
  readonly words: Uint32Array;
  private readonly x: { floodResidues64(at: number, n: number, limbs: number, q: bigint, tab: number, out: number): void };
  private readonly table: BigUint64Array;
  private readonly out: BigUint64Array;
  /** out's u32 halves: a residue below 2^32 is its limb's low word. */
  private readonly outWords: Uint32Array;

  constructor(n: number, limbs: number) {
    this.n = n;
    this.limbs = limbs;
    const tabAt = 16 * limbs * n;
    const outAt = tabAt + 16 * limbs;
    const { exports, buffer } = kernelInstance<FloodKernel['x']>(outAt + 8 * n);
    this.x = exports;
    this.words = new Uint32Array(buffer, 0, 4 * limbs * n);
    this.table = new BigUint64Array(buffer, tabAt, 2 * limbs);
    this.out = new BigUint64Array(buffer, outAt, n);
    this.outWords = new Uint32Array(buffer, outAt, 2 * n);
  }

  /** The flood's integers modulo q < 2^61, in [0, q): a view, valid until the next call. */
  residues(q: bigint): BigUint64Array {
    if (q >= 1n << 61n || q % 2n === 0n) throw new SealedError('internal', `flood residues: the prime ${q}`);
    for (let j = 0; j < this.limbs; j++) {
      const c = (1n << (64n * BigInt(j))) % q;
      this.table[2 * j] = c;
      this.table[2 * j + 1] = (c << 64n) / q;
    }
    this.x.floodResidues64(0, this.n, this.limbs, q, this.table.byteOffset, this.out.byteOffset);
    return this.out;
  }

  /** residues(q) for a prime q < 2^32 as doubles (batch mode's primes), read without a BigInt per coefficient. */
  smallResidues(q: number): Float64Array {
    if (!(q < TWO_32)) throw new SealedError('internal', `flood residues: the prime ${q} is not below 2^32`);
    this.residues(BigInt(q));
    const out = new Float64Array(this.n);
    for (let i = 0; i < this.n; i++) out[i] = this.outWords[2 * i];
    return out;
  }
}

let kernel: FloodKernel | undefined;

/** This thread's kernel holding a flood of `sigma` on n coefficients, its limbs made from normals `z` (K n of them; fresh when not given). */
export function floodKernel(n: number, sigma: number, z?: Float64Array): FloodKernel {
  const scales = floodScales(sigma);
  const limbs = floodLimbs(sigma);
  if (!kernel || kernel.n !== n || kernel.limbs !== limbs) kernel = new FloodKernel(n, limbs);
  floodLimbWords(scales, z ?? standardNormals(scales.length * n), n, limbs, kernel.words);
  return kernel;
}

/**
 * A fresh flood of `sigma` on n coefficients modulo each of batch mode's primes (< 2^32), one
 * array each; from normals `z` when given (tests). Batch mode reduced its flood in doubles
 * instead until session 49, with a mantissa split to stay exact near 2^53 (the cause of the
 * corrupt batch results of sessions 46-48); this integer form is exact by construction and takes
 * about a third less time (a model-(b) result's flood: 16 primes, ring 16384, sigma 2^379; medians
 * of 15 calls, alternated: 32-36 against 47-53 ms, the normals included; 2-core AMD VM).
 */
export function floodNoiseResidues(n: number, sigma: number, primes: readonly number[], z?: Float64Array): Float64Array[] {
  const k = floodKernel(n, sigma, z);
  return primes.map((q) => k.smallResidues(q));
}
