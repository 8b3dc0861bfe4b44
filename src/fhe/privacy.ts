// Circuit privacy: before a result leaves the server it is re-randomized and its noise flooded,
// so that it reveals (up to a stated statistical distance) nothing beyond the decrypted outputs.
//
// Without this, a result is a deterministic function of values the client knows: in batch mode
// the result's c1 is sum_t w_t c1_t mod q in every lane, so one result gives the exact integer
// weights by linear algebra (test/unit/circuit-privacy.test.ts does it), and its decryption noise
// sum_t w_t v_t is linear in the weights too (v_t: the noise of query ciphertext t, which the
// client can compute).
//
// The server returns, for a result ct = (c_0, .., c_{k-1}) of k = 2, 3, 5 or 9 polynomials,
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
import { floodKernel } from './flood-wide.ts';
import type { NegacyclicNttBig } from './ntt.ts';

// The pieces live by concern; this module is the one circuit privacy is imported from.
export * from './noise.ts';
export * from './ntt.ts';
export * from './rerand-key.ts';

export type Privacy = 'flood' | 'none';

/** Statistical security of the flood (bits): SD <= 2^-lambda per result. OpenFHE's default for noise flooding is 30. */
export const FLOOD_SECURITY_BITS = 30;

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

/** Raw ciphertext bytes (SEAL, uncompressed): the residues start here (see raw-ciphertext.ts). */
const RAW_RESIDUES_AT = 16 + 32 + 1 + 8 + 8 + 8 + 8 + 8 + 16 + 8;

/**
 * Adds the flood F ~ N(0, sigma^2) (integer coefficients) to c0 of an uncompressed SEAL
 * ciphertext, in place. `primes`: the ciphertext's primes, `ntts` their tables (same order).
 * `z`: the flood's standard normals (tests; fresh ones otherwise).
 */
export function floodRawCiphertext(raw: Uint8Array, ntts: NegacyclicNttBig[], sigma: number, z?: Float64Array): void {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = ntts[0].n;
  if (Number(v.getBigUint64(16 + 32 + 1 + 8 + 8, true)) !== ntts.length)
    throw new SealedError('internal', 'flood: the ciphertext is at another level than its NTT tables');
  const flood = floodKernel(n, sigma, z);
  // c0 is the first polynomial.
  ntts.forEach((ntt, p) => ntt.addForwardInto(flood.residues(ntt.q), raw, RAW_RESIDUES_AT + 8 * p * n));
}
