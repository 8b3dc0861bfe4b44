// The batch plan: the instruction set of batch mode, where slot s of every ciphertext belongs
// to record s and ciphertext i holds input feature i of all records (CryptoNets' layout).
// Every weight then multiplies a whole ciphertext by one integer, and the whole evaluation is
// coefficient-wise arithmetic on the RNS residues (NTT form):
//
//   hidden_j = bias1_j + sum_t w1[t] * x[index[t]]      (sparse: conv or dense; size 2)
//   hidden_j^2                                          (tensor square, NOT relinearized: size 3)
//   out_k    = bias2_k + sum_j w2[k, j] * hidden_j^2    (dense; size 3)
//
// No rotations, no relinearization, no rescaling: the server needs no evaluation keys at all,
// and the client decrypts the size-3 results with s and s^2. The scale grows instead of being
// rescaled, so the modulus is chosen to hold the final scale times the largest output.
import type { CkksParams } from './params.ts';

export interface BatchPlan {
  params: CkksParams;
  inputScaleBits: number;
  inputs: number;
  /** First affine layer as sparse rows: row j uses taps start[j] .. start[j+1]-1. */
  first: { rows: number; start: number[]; index: number[]; weight: number[]; weightScaleBits: number; bias: number[] };
  square: boolean;
  /** Dense outputs x rows(first), row-major; only with `square`. */
  second?: { rows: number; weight: number[]; weightScaleBits: number; bias: number[] };
  /** log2 of the results' scale. */
  outputScaleBits: number;
}

/** Largest |integer weight|: products with 26-bit residues stay below 2^41, so 2^11 of them sum exactly in a double. */
export const MAX_INT_WEIGHT = 2 ** 15 - 1;
export const PRIME_BITS = 26;
export const BATCH_DEGREE = 8192;

export const outputsOf = (p: BatchPlan) => (p.second ? p.second.rows : p.first.rows);
/** Polynomials per result ciphertext. */
export const resultSize = (p: BatchPlan) => (p.square ? 3 : 2);
export const dataPrimesOf = (p: BatchPlan) => p.params.coeffModulusBits.length - 1;
export const recordsPerBatch = (p: BatchPlan) => p.params.polyModulusDegree / 2;

export function scaleBitsOf(p: BatchPlan): { first: number; square: number; out: number } {
  const first = p.inputScaleBits + p.first.weightScaleBits;
  const square = p.square ? 2 * first : first;
  const out = p.second ? square + p.second.weightScaleBits : square;
  return { first, square, out };
}

/** The kernel reduces its output accumulators this often (rows of the first layer). */
export const REDUCE_EVERY = 2048;

/**
 * Operation counts for one batch, in units of one residue lane (one coefficient modulo one
 * prime): `macFirst`/`macSecond` multiply-adds of the two affine layers, `square` (reduce a
 * hidden value's two residues, then three modular products), `reduce` other modular
 * reductions. `decode`/`encode`: ciphertexts SEAL loads (queries) and saves (results).
 */
export function batchOpCounts(p: BatchPlan): { macFirst: number; macSecond: number; square: number; reduce: number; decode: number; encode: number; lanes: number } {
  const lanes = dataPrimesOf(p) * p.params.polyModulusDegree;
  const macSecond = p.second ? p.second.weight.length * 3 : 0;
  const reduce = p.square ? outputsOf(p) * 3 * (1 + Math.floor(p.first.rows / REDUCE_EVERY)) : p.first.rows * 2;
  return {
    macFirst: p.first.index.length * 2 * lanes,
    macSecond: macSecond * lanes,
    square: (p.square ? p.first.rows : 0) * lanes,
    reduce: reduce * lanes,
    decode: p.inputs,
    encode: outputsOf(p),
    lanes,
  };
}
