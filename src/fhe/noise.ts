// Randomness for circuit privacy: crypto.getRandomValues (Node and browsers), never Math.random.

/** SEAL's fresh-encryption noise: centered binomial of standard deviation 3.2, |e| <= 21 (SEAL 4.1 default, not Gaussian). */
export const SEAL_NOISE_SIGMA = 3.2;

export function randomWords(n: number): Uint32Array {
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
 * sigma z has 53 significant bits and |z| < 8.7 (standardNormals), so it lies on a grid of at most
 * 2^-48.8 sigma, coarser than 1 above 2^49. A second Gaussian, of FLOOD_SMOOTHING_STEP sigma
 * (2^-40 sigma), is at least 2^8.8 times wider than that grid, which it smooths (the sum's distance
 * from a continuous Gaussian's is of order exp(-2 pi^2 2^17.6)), and adds 2^-80 of sigma^2; and so
 * on until the last one, below 2^49, lies on a grid below 1. Total variance sigma^2 (1 + 2^-80 + ...).
 * The reference form: the servers add these integers' residues without BigInt (flood-wide.ts for
 * SEAL's primes, floodResidues for batch mode's).
 */
export function floodNoise(n: number, sigma: number): bigint[] {
  const scales = floodScales(sigma);
  return floodSums(scales, standardNormals(scales.length * n), n);
}

/** The flood's integers from its scales and K n standard normals z (K terms per integer). */
export function floodSums(scales: number[], z: Float64Array, n: number): bigint[] {
  const out = new Array<bigint>(n);
  for (let i = 0; i < n; i++) {
    let f = 0n;
    for (let k = 0; k < scales.length; k++) f += BigInt(Math.round(scales[k] * z[k * n + i]));
    out[i] = f;
  }
  return out;
}

/**
 * Each smoothing Gaussian's width relative to the previous one (floodNoise). Until session 40 it
 * was 2^-11, 2^37.8 times the previous grid where 2^8.8 already leaves nothing to measure: the
 * single-record masks' floods (sigma ~2^83) took 5 terms per coefficient instead of 2, a tree
 * batch's (~2^270) 22 instead of 7, each term a standard normal and a BigInt.
 */
export const FLOOD_SMOOTHING_STEP = 2 ** -40;

export function floodScales(sigma: number): number[] {
  const scales: number[] = [];
  for (let x = sigma; ; x *= FLOOD_SMOOTHING_STEP) {
    scales.push(x);
    if (x < 2 ** 49) break;
  }
  return scales;
}

/**
 * floodNoise's integers modulo each prime q < 2^26, without BigInt (batch mode floods every
 * result it makes). Each term round(s z) is an integer a double holds exactly, so it is m 2^e
 * with m an integer below 2^53 and e >= 0 read from its exponent bits (m = t / 2^e is exact);
 * per prime, its residue is (m mod q)(2^e mod q) mod q, every product below 2^52, with m mod q
 * taken as ((h mod q)(2^26 mod q) + l) mod q for m = h 2^26 + l (both exact) when m is within
 * 2^27 of 2^53. So these are exactly the residues of floodNoise's BigInt sums.
 */
export function floodNoiseResidues(n: number, sigma: number, primes: number[]): Float64Array[] {
  const scales = floodScales(sigma);
  return floodResidues(scales, standardNormals(scales.length * n), n, primes);
}

const bits = new DataView(new ArrayBuffer(8));
/** floor(log2 |x|) for a finite x >= 1, from its exponent bits (Math.log2 can round up). */
function exponentOf(x: number): number {
  bits.setFloat64(0, x);
  return ((bits.getUint32(0) >>> 20) & 0x7ff) - 1023;
}

/** floodSums(scales, z, n) modulo each prime, as floodNoiseResidues computes them. */
export function floodResidues(scales: number[], z: Float64Array, n: number, primes: number[]): Float64Array[] {
  const K = scales.length;
  // Each term's mantissa m = t / 2^e, as lo (hi = 0) or, within 2^27 of 2^53, where the
  // reduction below is not exact (mod), as hi 2^26 + lo.
  const hi = new Float64Array(K * n);
  const lo = new Float64Array(K * n);
  const exp = new Uint16Array(K * n);
  let top = 0;
  for (let j = 0; j < K * n; j++) {
    const t = Math.round(scales[Math.floor(j / n)] * z[j]);
    const e = Math.abs(t) < TWO_53 ? 0 : exponentOf(t) - 52;
    const m = t / 2 ** e; // exact: t is a multiple of 2^e
    if (Math.abs(m) <= MOD_EXACT) lo[j] = m;
    else {
      lo[j] = m % TWO_26; // exact, with m's sign
      hi[j] = (m - lo[j]) / TWO_26; // exact: |hi| < 2^27
    }
    exp[j] = e;
    top = Math.max(top, e);
  }
  return primes.map((q) => {
    const qInv = 1 / q;
    // x mod q for an integer |x| <= MOD_EXACT: the quotient from x (1 / q) is off by at most one,
    // so the product quotient x q stays below |x| + q < 2^53, an integer a double holds. Nearer
    // 2^53 it need not: a negative x there has its quotient rounded down, the product passes 2^53
    // and is rounded, and the residue comes out one off. Every mantissa reduced whole gave about
    // one term in 10^8 wrong residues (model (b)'s flood: 5 of 3,000 results held one), and the
    // result ciphertext holding it was garbage: the corrupt batch results of sessions 46 and 48.
    const mod = (x: number) => {
      const r = x - Math.floor(x * qInv) * q;
      return r < 0 ? r + q : r >= q ? r - q : r;
    };
    const pow2 = new Float64Array(top + 1); // 2^e mod q
    pow2[0] = mod(1);
    for (let e = 1; e <= top; e++) pow2[e] = mod(2 * pow2[e - 1]);
    const p26 = mod(TWO_26);
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let r = 0; // K terms below q each: below 2^31
      for (let j = i; j < K * n; j += n) {
        const h = hi[j];
        // mod(h) p26 + lo is within (-2^26, 2^52 + 2^26): every step exact.
        r += mod(mod(h === 0 ? lo[j] : mod(h) * p26 + lo[j]) * pow2[exp[j]]);
      }
      out[i] = mod(r);
    }
    return out;
  });
}

const TWO_26 = 2 ** 26;
const TWO_53 = 2 ** 53;
/** floodResidues' mod is exact up to here: |x| + q <= 2^53 for primes q < 2^26. */
const MOD_EXACT = TWO_53 - 2 ** 27;
