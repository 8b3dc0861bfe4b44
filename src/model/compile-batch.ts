// Compiles a network into a batch plan (see src/fhe/batch-plan.ts): conv2d-parity or dense,
// then a square (a quadratic activation folded as in the single layout), then dense; or one
// dense layer alone (linear models). Weights become integers at a per-layer scale, and the
// modulus is sized from the largest values the training samples reach.
import { SealedError } from '../errors.ts';
import { BATCH_DEGREE, scaleBitsOf, validateBatchPlan, type BatchPlan } from '../fhe/batch-plan.ts';
import { MAX_INT_WEIGHT, MAX_TAPS, PRIME_BITS } from '../fhe/kernel-limits.ts';
import { MAX_BITS_128 } from '../fhe/params.ts';
import { FLOOD_SECURITY_BITS, SEAL_NOISE_SIGMA, floodExtraBits, type Privacy } from '../fhe/privacy.ts';
import { convOutputShape, parityCol, parityRow, perFeature, type Network } from './network.ts';

/** Fresh-encryption noise is about 2^10 in the slots: 2^26 leaves inputs ~2^-16 accurate. */
const INPUT_SCALE_BITS = 26;
/** Each 26-bit prime is above 2^25.9 (SEAL picks them just below 2^26). */
const BITS_PER_PRIME = 25.9;
/** Headroom over the largest magnitude seen on the samples. */
const HEADROOM_BITS = 4;

interface Affine {
  rows: number;
  start: number[];
  index: number[];
  weight: number[];
  bias: number[];
}

function firstAffine(net: Network): Affine {
  const layer = net.layers[0];
  const start = [0];
  const index: number[] = [];
  const weight: number[] = [];
  if (layer.type === 'conv2d-parity') {
    const { height, width, filters } = convOutputShape(net, layer);
    const k = layer.kernel[0].length;
    const W = net.input.width;
    const bias: number[] = [];
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++)
        for (let f = 0; f < filters; f++) {
          const Y = parityRow(y, f);
          const X = parityCol(x, f);
          for (let dy = 0; dy < k; dy++)
            for (let dx = 0; dx < k; dx++) {
              const w = layer.kernel[f][dy][dx];
              if (w === 0) continue;
              index.push((Y + dy) * W + X + dx);
              weight.push(w);
            }
          start.push(index.length);
          bias.push(layer.bias[f]);
        }
    return { rows: height * width * filters, start, index, weight, bias };
  }
  if (layer.type === 'dense') {
    for (const row of layer.weights) {
      row.forEach((w, i) => {
        if (w !== 0) {
          index.push(i);
          weight.push(w);
        }
      });
      start.push(index.length);
    }
    return { rows: layer.weights.length, start, index, weight, bias: [...layer.bias] };
  }
  throw new SealedError('bad-data', 'batch mode needs a network that starts with a convolution or dense layer');
}

function weightBits(weights: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < weights.length; i++) max = Math.max(max, Math.abs(weights[i]));
  if (max === 0) return 0;
  return Math.floor(Math.log2(MAX_INT_WEIGHT / max));
}

const quantize = (ws: number[], bits: number) => ws.map((w) => Math.round(w * 2 ** bits));

/** Why a network has no batch plan, or undefined when it has one. */
export function batchUnsupported(net: Network): string | undefined {
  const types = net.layers.map((l) => l.type).join(',');
  if (types === 'dense' || types === 'conv2d-parity,quadratic,dense' || types === 'dense,quadratic,dense') return undefined;
  return `layers ${types}: batch mode handles conv|dense, quadratic, dense (or one dense layer)`;
}

export interface BatchCompileOptions {
  /**
   * Circuit privacy: 'flood' raises the input scale by floodExtraBits, primes follow. Default
   * 'none' UNTIL the worker floods batch results (the lead wires BatchPrivacy in): then 'flood'.
   * A square plan (the MNIST CNN) with the flood needs more than 218 bits at N = 8192: no batch
   * plan (undefined) until batch mode supports N = 16384.
   */
  privacy?: Privacy;
  /** lambda of the flood (default FLOOD_SECURITY_BITS). */
  floodSecurityBits?: number;
}

/** `samples`: preprocessed inputs, to size the modulus. Returns undefined when the network does not fit batch mode. */
export function compileBatch(net: Network, samples: ArrayLike<number>[], o: BatchCompileOptions = {}): BatchPlan | undefined {
  const privacy = o.privacy ?? 'none';
  const lambda = o.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  const inputScaleBits = INPUT_SCALE_BITS + (privacy === 'flood' ? floodExtraBits(BATCH_DEGREE, lambda) : 0);
  if (batchUnsupported(net)) return undefined;
  const first = firstAffine(net);
  const inputs = net.input.height * net.input.width;
  // The kernel sums a row's products unreduced, exactly only up to MAX_TAPS of them (kernel-limits.ts).
  for (let j = 0; j < first.rows; j++) if (first.start[j + 1] - first.start[j] > MAX_TAPS) return undefined;
  let square = false;
  let second: { rows: number; weight: number[]; bias: number[] } | undefined;
  if (net.layers.length === 3) {
    const act = net.layers[1];
    const dense = net.layers[2];
    if (act.type !== 'quadratic' || dense.type !== 'dense') return undefined;
    // a x^2 + b x + c = a (x + b/2a)^2 + (c - b^2/4a): the shift joins bias1, a and the
    // constant join the dense layer.
    const weight: number[] = [];
    const bias = [...dense.bias];
    for (let j = 0; j < first.rows; j++) {
      const a = perFeature(act.a, j), b = perFeature(act.b, j), c = perFeature(act.c, j);
      if (a === 0) return undefined;
      first.bias[j] += b / (2 * a);
      const constant = c - (b * b) / (4 * a);
      dense.weights.forEach((row, o) => {
        bias[o] += row[j] * constant;
      });
    }
    for (const row of dense.weights) for (let j = 0; j < first.rows; j++) weight.push(row[j] * perFeature(act.a, j));
    square = true;
    second = { rows: dense.weights.length, weight, bias };
  }
  const w1Bits = weightBits(first.weight);
  const w2Bits = second ? weightBits(second.weight) : 0;
  const plan: BatchPlan = {
    params: { scheme: 'ckks', polyModulusDegree: BATCH_DEGREE, coeffModulusBits: [], securityLevel: 128 },
    inputScaleBits,
    inputs,
    first: { ...first, weight: quantize(first.weight, w1Bits), weightScaleBits: w1Bits },
    square,
    second: second && { ...second, weight: quantize(second.weight, w2Bits), weightScaleBits: w2Bits },
    outputScaleBits: 0,
  };
  const scales = scaleBitsOf(plan);
  plan.outputScaleBits = scales.out;
  // Every intermediate value times its scale must stay below half the modulus.
  const peak = { first: 0, out: 0, hidden: new Float64Array(first.rows) };
  for (const s of samples) {
    const { hidden, out } = simulateBatchTrace(plan, s);
    hidden.forEach((v, j) => (peak.hidden[j] = Math.max(peak.hidden[j], Math.abs(v))));
    for (const v of hidden) peak.first = Math.max(peak.first, Math.abs(v));
    for (const v of out) peak.out = Math.max(peak.out, Math.abs(v));
  }
  const needBits = Math.max(
    scales.first + Math.log2(Math.max(peak.first, 1)),
    square ? scales.square + 2 * Math.log2(Math.max(peak.first, 1)) : 0,
    scales.out + Math.log2(Math.max(peak.out, 1)),
    inputScaleBits + 1,
  ) + 1 + HEADROOM_BITS;
  const dataPrimes = Math.ceil(needBits / BITS_PER_PRIME);
  // The special prime is unused (no key switching) but SEAL keeps one: the smallest allowed.
  const bits = [...new Array<number>(dataPrimes).fill(PRIME_BITS), PRIME_BITS];
  if (bits.reduce((a, b) => a + b, 0) > MAX_BITS_128[BATCH_DEGREE]) return undefined;
  plan.params.coeffModulusBits = bits;
  plan.privacy = privacy;
  if (privacy === 'flood') {
    plan.noiseL2Bits = noiseL2Bounds(plan, peak.hidden).map((b) => Math.log2(b));
    plan.floodSecurityBits = lambda;
  }
  // The server refuses a plan outside the kernel limits; refuse it here first, when it is made.
  return validateBatchPlan(plan, 'the compiled batch plan');
}

/**
 * A bound B on |v|_2 for each output's honest noise v (coefficient domain), for the flood
 * (privacy.ts). A query ciphertext's phase is Delta emb^-1(x) + v_t with v_t = e_t + r_t: e_t
 * SEAL's fresh noise (independent coefficients, sigma 3.2) and r_t the encoder's rounding
 * (|r_t| <= 1/2). The kernel multiplies phases by integers and adds exact residues, so
 *  - linear rows: v = sum_t w_t v_t, |v|_2 <= sqrt(N) (2 sigma |w|_2 + |w|_1 / 2): the first term
 *    twice the root mean square of a sum of N independent terms (exceeding it has probability
 *    below e^-N/8), the second the rounding's worst case.
 *  - squared rows: h_j = Delta_1 H_j + v_j, h_j^2 = Delta_1^2 H_j^2 + 2 Delta_1 H_j v_j + v_j^2; with
 *    the canonical embedding's norm (|a b|_can <= |a|_can |b|_can, |p|_2 <= |p|_can,inf):
 *    |v|_2 <= sum_j |w2_j| (2 Delta_1 P_j V_j + V_j^2), P_j = 4 x the largest |hidden_j| on the
 *    samples (the compiler's headroom), V_j = 6 sqrt(N) sigma |w1_j|_2 + N |w1_j|_1 / 2 (six
 *    standard deviations in each of the N embedding coordinates, worst-case rounding).
 */
function noiseL2Bounds(plan: BatchPlan, peakHidden: Float64Array): number[] {
  const N = plan.params.polyModulusDegree;
  const f = plan.first;
  const norms = (j: number) => {
    let l1 = 0, l2 = 0;
    for (let t = f.start[j]; t < f.start[j + 1]; t++) {
      l1 += Math.abs(f.weight[t]);
      l2 += f.weight[t] * f.weight[t];
    }
    return { l1, l2: Math.sqrt(l2) };
  };
  if (!plan.second) {
    return Array.from({ length: f.rows }, (_, j) => {
      const { l1, l2 } = norms(j);
      return Math.max(1, Math.sqrt(N) * (2 * SEAL_NOISE_SIGMA * l2 + l1 / 2));
    });
  }
  const delta1 = 2 ** (plan.inputScaleBits + f.weightScaleBits);
  const per = Array.from({ length: f.rows }, (_, j) => {
    const { l1, l2 } = norms(j);
    const V = 6 * Math.sqrt(N) * SEAL_NOISE_SIGMA * l2 + (N * l1) / 2;
    return 2 * delta1 * 4 * peakHidden[j] * V + V * V;
  });
  const sec = plan.second;
  return Array.from({ length: sec.rows }, (_, o) => {
    let b = 0;
    for (let j = 0; j < f.rows; j++) b += Math.abs(sec.weight[o * f.rows + j]) * per[j];
    return Math.max(1, b);
  });
}

/** The batch plan in plaintext: the integer weights at their scales, no noise. */
export function simulateBatchTrace(plan: BatchPlan, x: ArrayLike<number>): { hidden: Float64Array; out: Float64Array } {
  const f = plan.first;
  const s1 = 2 ** -f.weightScaleBits;
  const hidden = new Float64Array(f.rows);
  for (let j = 0; j < f.rows; j++) {
    let acc = 0;
    for (let t = f.start[j]; t < f.start[j + 1]; t++) acc += f.weight[t] * x[f.index[t]];
    hidden[j] = acc * s1 + f.bias[j];
  }
  if (!plan.second) return { hidden, out: hidden };
  const sec = plan.second;
  const s2 = 2 ** -sec.weightScaleBits;
  const out = new Float64Array(sec.rows);
  for (let o = 0; o < sec.rows; o++) {
    let acc = 0;
    for (let j = 0; j < f.rows; j++) acc += sec.weight[o * f.rows + j] * hidden[j] * hidden[j];
    out[o] = acc * s2 + sec.bias[o];
  }
  return { hidden, out };
}

export const simulateBatch = (plan: BatchPlan, x: ArrayLike<number>) => simulateBatchTrace(plan, x).out;
