// The rounding a rescale adds to a ciphertext's phase, bounded for the flood (batch-noise.ts) and
// for the result rescale after it: how many primes the flooded results can drop.
import { outputPrimesOf, resultSize, type BatchPlan } from '../fhe/batch-plan.ts';
import { sealPrimes } from '../fhe/params.ts';
import { FLOOD_SECURITY_BITS, floodSigma } from '../fhe/privacy.ts';

/**
 * The rounding a rescale adds to a size-`size` ciphertext's phase (rescale.ts): nu = rho_0 +
 * rho_1 s + ... + rho_(size-1) s^(size-1), the rho_i the coefficients' rounding errors, in
 * [-1/2, 1/2]. |rho|_2 <= sqrt(N)/2 always; in the slots rho and s (ternary) are sums of N bounded
 * independent terms, so by Hoeffding each part (real, imaginary) stays within 6 deviations of its
 * sub-Gaussian bound, sqrt(N)/2 and sqrt(N), but with probability 2 e^-18: |rho|_can <= 3
 * sqrt(2N), |s|_can <= 6 sqrt(2N) (the same six deviations as the fresh noise's bounds above).
 * That bounds |nu|_can, and |rho_i s^i|_2 by |rho_i|_2 |s|_can^i; but only the slots where s peaks
 * reach |s|_can^i. In the slots (emb / sqrt(N) is unitary) |rho_i s^i|_2^2 = (1/N) sum_j
 * |rho_i(j)|^2 |s(j)|^(2i), an average over N/2 conjugate pairs of slots of independent factors (the
 * roundings are those of the ciphertext's coefficients, not of the key): rho_i(j) of variance N/12,
 * s(j) with independent real and imaginary parts of variance N/3 (Sum cos^2 = Sum sin^2 = N/2 over
 * the roots of X^N + 1; ternary moments stay below the Gaussian's), so E |s(j)|^(2i) <= i! (2N/3)^i.
 * Each pair's term has variance below 2 C(2i, i) times its mean squared: the average stays within 6
 * deviations, 6 sqrt(4 C(2i, i) / N) of the mean, as the other bounds. LeNet's size-5 rescale:
 * |nu|_2 <= 2^37.2 instead of 2^48.8 (ring 32768). Dropping k primes one after another adds k roundings,
 * each earlier one divided by the later primes (2^-25 or less): counted as 1 + 2^-20 times one.
 */
export function rescaleRounding(N: number, size = 3): { l2: number; can: number } {
  const S = 6 * Math.sqrt(2 * N);
  let powers = 0;
  for (let m = size - 1; m >= 0; m--) powers = powers * S + 1;
  const extra = 1 + 2 ** -20;
  let l2 = Math.sqrt(N) / 2;
  for (let i = 1, moment = 1, pairs = 1; i < size; i++) {
    moment *= (i * 2 * N) / 3;
    pairs = (pairs * (2 * i - 1) * 2 * i) / (i * i);
    const mean = (N / 12) * moment;
    l2 += Math.min(Math.sqrt(mean * (1 + 6 * Math.sqrt((4 * pairs) / N))), (Math.sqrt(N) / 2) * S ** i);
  }
  return { l2: l2 * extra, can: 3 * Math.sqrt(2 * N) * powers * extra };
}

/**
 * How far below the flood's noise (divided by D) the result rescale's rounding stays, at least:
 * 2^-10 of it, in the slots, moves the outputs' error by under 0.1%.
 */
export const RESULT_ROUNDING_MARGIN_BITS = 10;

/**
 * The most of a flooded plan's last output primes whose product D the results can be divided by
 * after the flood (batch-plan.ts, resultRescalePrimes), one prime kept at least: the flood's
 * standard deviation in a slot, sigma sqrt(N/2) of the quietest output, over D stays at least
 * 2^RESULT_ROUNDING_MARGIN_BITS times the rounding's bound in the slots (rescaleRounding, for the
 * results' polynomials). The values need no check: D divides them with the modulus.
 */
export function resultRescaleFor(plan: BatchPlan): number {
  const N = plan.params.polyModulusDegree;
  const lambda = plan.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  const flood = Math.min(...plan.noiseL2Bits!.map((b) => floodSigma(2 ** b, lambda))) * Math.sqrt(N / 2);
  const limit = flood / (rescaleRounding(N, resultSize(plan)).can * 2 ** RESULT_ROUNDING_MARGIN_BITS);
  const primes = sealPrimes(N, plan.params.coeffModulusBits).slice(0, outputPrimesOf(plan));
  let k = 0;
  for (let D = 1; k + 1 < primes.length && D * primes[primes.length - 1 - k] <= limit; k++) D *= primes[primes.length - 1 - k];
  return k;
}
