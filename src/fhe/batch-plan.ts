// The batch plan: the instruction set of batch mode, where slot s of every ciphertext belongs
// to record s and ciphertext i holds input feature i of all records (CryptoNets' layout).
// Every weight then multiplies a whole ciphertext by one integer, and the whole evaluation is
// coefficient-wise arithmetic on the RNS residues (NTT form):
//
//   hidden_j = bias1_j + sum_t w1[t] * x[index[t]]      (sparse: conv or dense; size 2)
//   hidden_j^2                                          (tensor square, NOT relinearized: size 3)
//   out_k    = bias2_k + sum_j w2[k, j] * hidden_j^2    (dense; size 3)
//
// or, for networks with two activations, a second square and a third layer after it:
//
//   mid_k    = bias2_k + sum_j w2[k, j] * hidden_j^2    (dense; size 3)
//   mid_k / (q_L ... q_(L-r+1))                         (rescale by the last r primes; optional)
//   mid_k^2                                             (tensor square of size 3: size 5)
//   out_o    = bias3_o + sum_k w3[o, k] * mid_k^2       (dense; size 5, over the primes left)
//
// and, for three, the same again (`deeper`): the third layer's values, rescaled or not, squared
// into size 9 and summed by a fourth layer.
//
// No rotations, no relinearization: the server needs no evaluation keys at all, and the client
// decrypts the size-3 (5, 9) results with the powers of s up to s^2 (s^4, s^8). The scale grows
// with every product, so the modulus is chosen to hold the largest scale times the largest
// value; a rescale (which needs no key either) divides a layer's values by some of the last
// primes left before they are squared, so that what follows needs fewer bits (model (b): 12 data
// primes instead of 16). Two or three squares take ring 16384.
import { PRIME_BITS } from './kernel-limits.ts';
import { sealPrimes, type CkksParams } from './params.ts';
import type { Privacy } from './privacy.ts';

// batch-io.ts reads the prime size from here.
export { PRIME_BITS };

/** A dense layer over the squares of the layer before it (row-major, outputs x rows before). */
export interface DenseLayer {
  rows: number;
  weight: number[];
  weightScaleBits: number;
  bias: number[];
  /** Its values are divided by this many of the last data primes left before they are squared (never on the last layer). */
  rescalePrimes?: number;
}

/** An image's shape: channels x height x width, row-major. */
export interface InputBox {
  channels: number;
  height: number;
  width: number;
}

export interface BatchPlan {
  params: CkksParams;
  inputScaleBits: number;
  inputs: number;
  /**
   * Present when the inputs are the 2x2 box sums of each channel of an image of this shape
   * (src/model/input-box.ts), which the client computes before encryption: then
   * inputs = channels (height - 1) (width - 1). The server only checks it.
   */
  inputBox?: InputBox;
  /** First affine layer as sparse rows: row j uses taps start[j] .. start[j+1]-1. */
  first: { rows: number; start: number[]; index: number[]; weight: number[]; weightScaleBits: number; bias: number[] };
  square: boolean;
  /**
   * Dense outputs x rows(first), row-major; only with `square`. `rescalePrimes` (plans with a
   * layer after it): its values, bias included, are divided by that many of the last data primes
   * left (rescale.ts) before they are squared, and the layers after run over the primes left, at
   * a scale smaller by their product (layerScales).
   */
  second?: DenseLayer;
  /**
   * Two activations: the second layer's outputs are squared (size 3 -> 5) and feed this dense
   * layer, outputs x second.rows, row-major. Absent in plans with one square or none.
   */
  third?: DenseLayer;
  /**
   * Three or more activations: each layer here squares the values of the one before it (size s
   * -> 2s - 1: 9 after a third square) and is dense over them, outputs x rows before, row-major.
   */
  deeper?: DenseLayer[];
  /** log2 of the results' scale. */
  outputScaleBits: number;
  /**
   * Circuit privacy (privacy.ts): 'flood' re-randomizes and floods every result; absent in
   * bundles made before it, which are read as 'none' (their scales have no room for the flood).
   */
  privacy?: Privacy;
  /** With 'flood': log2 of a bound on |v|_2, the honest noise of each output (one per output). */
  noiseL2Bits?: number[];
  /** With 'flood': lambda, the statistical security of the flood in bits. */
  floodSecurityBits?: number;
  /**
   * With 'flood': each result, once flooded, is divided by the product D of this many of its last
   * primes (rescale.ts) before it is saved, so the client receives it over fewer primes (LeNet: 9
   * -> 5, 86 -> 48 MB per batch) at a scale D times smaller. The flood's noise, divided by D too,
   * stays far above the rounding this adds (rescale-rounding.ts, resultRescaleFor). Absent: none.
   */
  resultRescalePrimes?: number;
}

/**
 * Batch mode's ring degree with at most one square; two or three squares need BATCH_DEGREE_DEEP's
 * modulus, or BATCH_DEGREE_WIDE's where the flood needs more (LeNet: 16,384 records per batch,
 * each ciphertext twice as large).
 */
export const BATCH_DEGREE = 8192;
export const BATCH_DEGREE_DEEP = 16384;
export const BATCH_DEGREE_WIDE = 32768;

/** The layers after the first, in order: each squares the values of the one before it. */
export const laterLayers = (p: BatchPlan): DenseLayer[] => (p.second ? [p.second, ...(p.third ? [p.third, ...(p.deeper ?? [])] : [])] : []);

export const outputsOf = (p: BatchPlan) => laterLayers(p).at(-1)?.rows ?? p.first.rows;
/** Polynomials per result ciphertext: a square of a size-s ciphertext has 2s - 1 (3, 5, 9 after one, two, three). */
export const resultSize = (p: BatchPlan) => 2 ** laterLayers(p).length + 1;
export const dataPrimesOf = (p: BatchPlan) => p.params.coeffModulusBits.length - 1;
export const recordsPerBatch = (p: BatchPlan) => p.params.polyModulusDegree / 2;

/**
 * The scale of a layer's values, 2^bits / (d_1 d_2 ...): each rescale divides by the primes it
 * drops, and each square squares the divisors with the rest. `log2` is its logarithm (not an
 * integer after a rescale); `primes` the data primes the values have at that point.
 */
export interface LayerScale {
  bits: number;
  divisors: number[];
  log2: number;
  primes: number;
}

/**
 * Per layer (the first, then laterLayers), the scale of its values (bias included) and, where the
 * layer rescales, after the rescale (`rescaled`; the same otherwise). The last layer's values are
 * the results.
 */
export function layerScales(p: BatchPlan): { values: LayerScale; rescaled: LayerScale }[] {
  const dropped = droppedPrimesByLayer(p);
  const all = dataPrimesOf(p);
  const first: LayerScale = { bits: p.inputScaleBits + p.first.weightScaleBits, divisors: [], log2: 0, primes: all };
  first.log2 = first.bits;
  const out = [{ values: first, rescaled: first }];
  // log2 step by step (2 x before + w, less log2 of the primes' product), as bundles state it.
  laterLayers(p).forEach((layer, i) => {
    const before = out[i].rescaled;
    const bits = 2 * before.bits + layer.weightScaleBits;
    const divisors = [...before.divisors, ...before.divisors];
    const values = { bits, divisors, log2: 2 * before.log2 + layer.weightScaleBits, primes: before.primes };
    const d = dropped[i];
    const rescaled = d.length
      ? { bits, divisors: [...divisors, ...d], log2: values.log2 - Math.log2(d.reduce((a, q) => a * q, 1)), primes: before.primes - d.length }
      : values;
    out.push({ values, rescaled });
  });
  return out;
}

/**
 * The data primes each later layer's rescale drops (SEAL's values: sealPrimes), in the order
 * they go, [] where it does not rescale: the first rescale takes the last rescalePrimes data
 * primes, the next the last of those left.
 */
export function droppedPrimesByLayer(p: BatchPlan): number[][] {
  const later = laterLayers(p);
  if (!later.some((l) => l.rescalePrimes)) return later.map(() => []);
  const data = sealPrimes(p.params.polyModulusDegree, p.params.coeffModulusBits).slice(0, -1);
  let end = data.length;
  return later.map((l) => {
    const k = l.rescalePrimes ?? 0;
    const d = data.slice(end - k, end).reverse();
    end -= k;
    return d;
  });
}

/**
 * The scale of the results the client receives: the outputs' (outputScale) over the primes the
 * result rescale drops (resultRescaleDivisors).
 */
export function resultScale(p: BatchPlan): number {
  return resultRescaleDivisors(p).reduce((scale, q) => scale / q, outputScale(p));
}

/** The primes (SEAL's values) the result rescale divides each flooded output by: the last resultRescalePrimes of the outputs'. */
export function resultRescaleDivisors(p: BatchPlan): number[] {
  const k = p.resultRescalePrimes ?? 0;
  if (k === 0) return [];
  const data = sealPrimes(p.params.polyModulusDegree, p.params.coeffModulusBits).slice(0, -1);
  return data.slice(outputPrimesOf(p) - k, outputPrimesOf(p));
}

/** The kernel's outputs' scale: 2^out, or, after rescales, the chain of squares over the dropped primes (as exact as float64 allows). */
export function outputScale(p: BatchPlan): number {
  const s = layerScales(p);
  const last = s[s.length - 1].values;
  if (last.divisors.length === 0) return 2 ** last.bits;
  // Squared step by step (each one rounding once): 2^bits alone may pass float64's range.
  let scale = 2 ** s[0].values.bits;
  droppedPrimesByLayer(p).forEach((d, i) => {
    scale = scale * scale * 2 ** laterLayers(p)[i].weightScaleBits;
    for (const q of d) scale /= q;
  });
  return scale;
}

/**
 * Per rescale, in order: the later layer whose values it divides, their rows and polynomials,
 * and the data primes they have before and after it.
 */
export function rescalesOf(p: BatchPlan): { layer: number; rows: number; size: number; primesBefore: number; primesAfter: number }[] {
  let primes = dataPrimesOf(p);
  const out: ReturnType<typeof rescalesOf> = [];
  laterLayers(p).forEach((l, i) => {
    if (!l.rescalePrimes) return;
    out.push({ layer: i, rows: l.rows, size: 2 ** (i + 1) + 1, primesBefore: primes, primesAfter: primes - l.rescalePrimes });
    primes -= l.rescalePrimes;
  });
  return out;
}

/** Data primes the kernel's outputs have (where they are flooded): all of them, less those the rescales drop. */
export const outputPrimesOf = (p: BatchPlan) => dataPrimesOf(p) - laterLayers(p).reduce((a, l) => a + (l.rescalePrimes ?? 0), 0);

/** Data primes the results the client receives have: the outputs', less those the result rescale drops. */
export const resultPrimesOf = (p: BatchPlan) => outputPrimesOf(p) - (p.resultRescalePrimes ?? 0);
