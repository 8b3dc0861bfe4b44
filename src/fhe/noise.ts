// Randomness for circuit privacy: crypto.getRandomValues (Node and browsers), never Math.random.

/**
 * The standard deviation of SEAL's fresh-encryption noise, and of smallNoise's: SEAL's default
 * sampler (sample_poly_cbd, for its nominal 3.2) is the centered binomial of 21 + 21 bits, variance
 * 21/2, |e| <= 21. The noise bounds use this, not the nominal 3.2 (1.25% below it).
 */
export const SEAL_NOISE_SIGMA = Math.sqrt(21 / 2);

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

/**
 * SEAL's fresh-encryption noise, as SEAL samples it (sample_poly_cbd): per coefficient, the
 * number of ones in 21 random bits minus that in 21 others. Branch-free (no timing depends on
 * the noise), and ~5x a rounded Gaussian by Box-Muller (its log, sqrt, cos and sin): 1.1 ->
 * ~0.2 ms per 32,768 samples, one per coefficient of every fresh ciphertext at ring 32768.
 */
export function smallNoise(n: number): Int32Array {
  const w = randomWords(2 * n);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = ones21(w[2 * i]) - ones21(w[2 * i + 1]);
  return out;
}

/** The number of ones in the low 21 bits of x (a branch-free population count). */
function ones21(x: number): number {
  x &= 0x1fffff;
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return (x * 0x01010101) >>> 24;
}

/**
 * The flood: n integers ~ N(0, sigma^2), as BigInts (sigma may exceed 2^53). A float sample
 * sigma z has 53 significant bits and |z| < 8.7 (standardNormals), so it lies on a grid of at most
 * 2^-48.8 sigma, coarser than 1 above 2^49. A second Gaussian, of FLOOD_SMOOTHING_STEP sigma
 * (2^-40 sigma), is at least 2^8.8 times wider than that grid, which it smooths (the sum's distance
 * from a continuous Gaussian's is of order exp(-2 pi^2 2^17.6)), and adds 2^-80 of sigma^2; and so
 * on until the last one, below 2^49, lies on a grid below 1. Total variance sigma^2 (1 + 2^-80 + ...).
 * The reference form: the servers add these integers' residues without BigInt (flood-wide.ts).
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
