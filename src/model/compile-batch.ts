// Compiles a network into a batch plan (see src/fhe/batch-plan.ts): conv2d-parity or dense,
// then a square (a quadratic activation folded as in the single layout), then dense, and
// optionally a second square and dense layer; or one dense layer alone (linear models).
// Weights become integers at a per-layer scale, and the modulus is sized from the largest values
// the training samples reach.
import { SealedError } from '../errors.ts';
import { BATCH_DEGREE, BATCH_DEGREE_DEEP, scaleBitsOf, validateBatchPlan, type BatchPlan } from '../fhe/batch-plan.ts';
import { MAX_INT_WEIGHT, MAX_TAPS, PRIME_BITS } from '../fhe/kernel-limits.ts';
import { MAX_BITS_128 } from '../fhe/params.ts';
import { FLOOD_SECURITY_BITS, floodExtraBits, floodSigma, type Privacy } from '../fhe/privacy.ts';
import { batchNoiseL2Bounds } from './batch-noise.ts';
import { convOutputShape, parityCol, parityRow, perFeature, type Network } from './network.ts';
import { simulateBatchTrace } from './simulate-batch.ts';

/** Fresh-encryption noise is about 2^10 in the slots: 2^26 leaves inputs ~2^-16 accurate. */
const INPUT_SCALE_BITS = 26;
/** Each 26-bit prime is above 2^25.9 (SEAL picks them just below 2^26). */
const BITS_PER_PRIME = 25.9;
/** Headroom over the largest magnitude seen on the samples. */
const HEADROOM_BITS = 4;
/** The smallest special prime the compiler uses (see buildPlan). */
const SPECIAL_PRIME_MIN_BITS = 17;

interface Affine {
  rows: number;
  start: number[];
  index: number[];
  weight: number[];
  bias: number[];
}

/**
 * Per-input factors (powers of two) that bring every input of a dense first layer to about
 * [-1, 1] on the samples. The kernel's weights are integers of at most 15 bits at one scale per
 * layer; when a Scaler is merged into a linear model, a feature that reaches 2,500 gets a weight
 * of 0.0014 next to 240 for one that stays below 0.03, and rounding to the layer's scale loses
 * the small ones. With factors the client multiplies input j by f_j before encryption and column
 * j's weights are divided by it (the product is unchanged). They come from the samples, not the
 * weights: the client part then tells the client each feature's range on the calibration
 * records to within a factor of 2, and nothing about the model. Undefined when every factor
 * would be 1, or the first layer is a convolution.
 */
export function batchInputFactors(net: Network, samples: ArrayLike<number>[]): number[] | undefined {
  if (net.layers[0]?.type !== 'dense') return undefined;
  const n = net.input.height * net.input.width;
  const range = new Array<number>(n).fill(0);
  for (const x of samples) for (let j = 0; j < n; j++) range[j] = Math.max(range[j], Math.abs(x[j]));
  const f = range.map((r) => (r > 0 && Number.isFinite(r) ? 2 ** -Math.ceil(Math.log2(r)) : 1));
  return f.some((v) => v !== 1) ? f : undefined;
}

function firstAffine(net: Network, factors?: number[]): Affine {
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
          weight.push(factors ? w / factors[i] : w);
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
  if (/^(dense|(conv2d-parity|dense),quadratic,dense(,quadratic,dense)?)$/.test(types)) return undefined;
  return `layers ${types}: batch mode handles conv|dense, quadratic, dense (and one more quadratic, dense), or one dense layer`;
}

export interface BatchCompileOptions {
  /**
   * Circuit privacy (privacy.ts), default 'flood': every result is re-randomized and flooded, and
   * the input scale grows until the flood costs outputs no more than FLOOD_PRECISION_BITS. 'none':
   * results reveal the weights to a client that solves for them; the model owner's choice.
   */
  privacy?: Privacy;
  /** lambda of the flood (default FLOOD_SECURITY_BITS). */
  floodSecurityBits?: number;
  /** batchInputFactors: the client multiplies input j by inputFactors[j] (dense first layers). */
  inputFactors?: number[];
}

/**
 * With the flood, each output's error is the flood's: standard deviation sigma sqrt(N/2) / Delta_out
 * in the slots (the real part of a sum of N Gaussian coefficients times unit roots). The compiler
 * raises the input scale until that is at most 2^-FLOOD_PRECISION_BITS of the largest output
 * magnitude on the samples (and at most that absolutely when outputs are below 1): the honest noise
 * shrinks as 1 / Delta_in relative to the outputs, the flood with it.
 */
export const FLOOD_PRECISION_BITS = 12;

/** `samples`: preprocessed inputs, to size the modulus. Returns undefined when the network does not fit batch mode. */
export function compileBatch(net: Network, samples: ArrayLike<number>[], o: BatchCompileOptions = {}): BatchPlan | undefined {
  const privacy = o.privacy ?? 'flood';
  const lambda = o.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  if (batchUnsupported(net)) return undefined;
  const f = o.inputFactors;
  if (f) samples = samples.map((x) => Array.from(x, (v, j) => v * f[j]));
  const shape = batchShape(net, f);
  if (!shape) return undefined;
  // The flood costs about floodExtraBits, a second square's noise growth ~8 bits more; the loop
  // ends earlier when the modulus outgrows the ring.
  const degree = shape.third ? BATCH_DEGREE_DEEP : BATCH_DEGREE;
  const highest = INPUT_SCALE_BITS + (privacy === 'flood' ? floodExtraBits(degree, lambda) + (shape.third ? 16 : 8) : 0);
  let peaks: Peaks | undefined; // the values do not depend on the input scale: simulated once
  for (let inputScaleBits = INPUT_SCALE_BITS; inputScaleBits <= highest; inputScaleBits++) {
    const built = buildPlan(shape, net, degree, inputScaleBits, samples, peaks);
    if (!built) return undefined; // the modulus only grows with the input scale
    const { plan, peak } = built;
    peaks = peak;
    plan.privacy = privacy;
    if (privacy === 'none') return validateBatchPlan(plan, 'the compiled batch plan');
    // Honest queries keep the second layer's values within what the modulus holds once squared
    // (2^(HEADROOM_BITS / 2) times the samples' largest): beyond it the result is garbage,
    // flooded or not. The single layout caps its interval bounds the same way (network-flood.ts).
    const bounds = batchNoiseL2Bounds(plan, peak.input, 2 ** (HEADROOM_BITS / 2) * Math.max(peak.mid, 1));
    const N = plan.params.polyModulusDegree;
    const error = Math.max(...bounds.map((b) => (floodSigma(b, lambda) * Math.sqrt(N / 2)) / 2 ** plan.outputScaleBits));
    if (error > 2 ** -FLOOD_PRECISION_BITS * Math.max(1, peak.out)) continue;
    plan.noiseL2Bits = bounds.map((b) => Math.log2(b));
    plan.floodSecurityBits = lambda;
    // The server refuses a plan outside the kernel limits; refuse it here first, when it is made.
    return validateBatchPlan(plan, 'the compiled batch plan');
  }
  return undefined;
}

interface Dense {
  rows: number;
  weight: number[];
  bias: number[];
}

/** The largest |value| of each stage, and of each input, on the samples. */
interface Peaks {
  first: number;
  mid: number;
  out: number;
  input: Float64Array;
}

/**
 * The largest |output| the plan's parameters are sized for: HEADROOM_BITS over the largest the
 * samples reach (as buildPlan sizes the modulus). The client refuses a decrypted score beyond it
 * (session.ts): no honest evaluation of a record like the samples gives one, and a corrupt result
 * ciphertext gives scores orders of magnitude beyond it. `samples` and `inputFactors` as compileBatch's.
 */
export function batchOutputBound(plan: BatchPlan, samples: ArrayLike<number>[], inputFactors?: number[]): number {
  const f = inputFactors;
  const peak = samplePeaks(plan, f ? samples.map((x) => Array.from(x, (v, j) => v * f[j])) : samples);
  return 2 ** HEADROOM_BITS * Math.max(1, peak.out);
}

function samplePeaks(plan: BatchPlan, samples: ArrayLike<number>[]): Peaks {
  const peak = { first: 0, mid: 0, out: 0, input: new Float64Array(plan.inputs) };
  for (const s of samples) {
    const { hidden, mid, out } = simulateBatchTrace(plan, s);
    for (let i = 0; i < plan.inputs; i++) peak.input[i] = Math.max(peak.input[i], Math.abs(s[i]));
    for (const v of hidden) peak.first = Math.max(peak.first, Math.abs(v));
    for (const v of mid) peak.mid = Math.max(peak.mid, Math.abs(v));
    for (const v of out) peak.out = Math.max(peak.out, Math.abs(v));
  }
  return peak;
}

interface Shape {
  first: Affine;
  square: boolean;
  second?: Dense;
  third?: Dense;
}

/**
 * The network as batch mode computes it: one sparse affine layer, a square, one dense layer;
 * optionally another square and dense layer.
 */
function batchShape(net: Network, factors?: number[]): Shape | undefined {
  const first = firstAffine(net, factors);
  // The kernel sums a row's products unreduced, exactly only up to MAX_TAPS of them (kernel-limits.ts).
  for (let j = 0; j < first.rows; j++) if (first.start[j + 1] - first.start[j] > MAX_TAPS) return undefined;
  if (net.layers.length === 1) return { first, square: false };
  const second = foldSquare(net.layers[1], net.layers[2], first);
  if (!second || net.layers.length === 3) return second && { first, square: true, second };
  const third = foldSquare(net.layers[3], net.layers[4], second);
  return third && { first, square: true, second, third };
}

/**
 * The quadratic activation `act` on the rows of `before`, then the dense layer `dense`, as a pure
 * square and a dense layer: a x^2 + b x + c = a (x + b/2a)^2 + (c - b^2/4a), so the shift joins
 * the bias of `before` (changed in place), a and the constant join the dense layer.
 */
function foldSquare(act: Network['layers'][number], dense: Network['layers'][number], before: { rows: number; bias: number[] }): Dense | undefined {
  if (act.type !== 'quadratic' || dense.type !== 'dense') return undefined;
  const weight: number[] = [];
  const bias = [...dense.bias];
  for (let j = 0; j < before.rows; j++) {
    const a = perFeature(act.a, j),
      b = perFeature(act.b, j),
      c = perFeature(act.c, j);
    if (a === 0) return undefined;
    before.bias[j] += b / (2 * a);
    const constant = c - (b * b) / (4 * a);
    dense.weights.forEach((row, o) => {
      bias[o] += row[j] * constant;
    });
  }
  for (const row of dense.weights) for (let j = 0; j < before.rows; j++) weight.push(row[j] * perFeature(act.a, j));
  return { rows: dense.weights.length, weight, bias };
}

/** The plan at one input scale, its modulus sized from the samples; undefined when it needs more than 128-bit security allows. */
function buildPlan(
  shape: Shape,
  net: Network,
  degree: number,
  inputScaleBits: number,
  samples: ArrayLike<number>[],
  known?: Peaks,
): { plan: BatchPlan; peak: Peaks } | undefined {
  const { first, square, second, third } = shape;
  const w1Bits = weightBits(first.weight);
  const w2Bits = second ? weightBits(second.weight) : 0;
  const w3Bits = third ? weightBits(third.weight) : 0;
  const plan: BatchPlan = {
    params: { scheme: 'ckks', polyModulusDegree: degree, coeffModulusBits: [], securityLevel: 128 },
    inputScaleBits,
    inputs: net.input.height * net.input.width,
    first: { ...first, weight: quantize(first.weight, w1Bits), weightScaleBits: w1Bits },
    square,
    second: second && { ...second, weight: quantize(second.weight, w2Bits), weightScaleBits: w2Bits },
    outputScaleBits: 0,
  };
  if (third) plan.third = { ...third, weight: quantize(third.weight, w3Bits), weightScaleBits: w3Bits };
  const scales = scaleBitsOf(plan);
  plan.outputScaleBits = scales.out;
  // Every intermediate value times its scale must stay below half the modulus.
  const peak = known ?? samplePeaks(plan, samples);
  const needBits =
    Math.max(
      scales.first + Math.log2(Math.max(peak.first, 1)),
      square ? scales.square + 2 * Math.log2(Math.max(peak.first, 1)) : 0,
      third ? scales.mid + Math.log2(Math.max(peak.mid, 1)) : 0,
      third ? scales.square2 + 2 * Math.log2(Math.max(peak.mid, 1)) : 0,
      scales.out + Math.log2(Math.max(peak.out, 1)),
      inputScaleBits + 1,
    ) +
    1 +
    HEADROOM_BITS;
  const dataPrimes = Math.ceil(needBits / BITS_PER_PRIME);
  // The special prime is unused (no key switching) but SEAL keeps one: a 26-bit one as the data
  // primes, or, where that would pass the 128-bit bound, as small as it fits (SEAL finds primes
  // = 1 mod 2N from 17 bits: 65537 for N up to 32768).
  const special = Math.min(PRIME_BITS, MAX_BITS_128[degree] - dataPrimes * PRIME_BITS);
  if (special < SPECIAL_PRIME_MIN_BITS) return undefined;
  const bits = [...new Array<number>(dataPrimes).fill(PRIME_BITS), special];
  plan.params.coeffModulusBits = bits;
  return { plan, peak };
}
