// Compiles a network into a batch plan (see src/fhe/batch-plan.ts): conv2d-parity or dense,
// then a square (a quadratic activation folded as in the single layout), then dense, and
// optionally a second square and dense layer; or one dense layer alone (linear models).
// Weights become integers at a per-layer scale, and the modulus is sized from the largest values
// the training samples reach. With two activations and the flood, the second layer's values may
// be rescaled (divided by some of the last primes) before their square: the compiler keeps the
// plan with the fewest primes (model (b): 12 instead of 16).
import { BATCH_DEGREE, BATCH_DEGREE_DEEP, dataPrimesOf, scaleBitsOf, validateBatchPlan, type BatchPlan } from '../fhe/batch-plan.ts';
import { MAX_INT_WEIGHT, PRIME_BITS } from '../fhe/kernel-limits.ts';
import { MAX_BITS_128 } from '../fhe/params.ts';
import { FLOOD_SECURITY_BITS, floodExtraBits, floodSigma, type Privacy } from '../fhe/privacy.ts';
import { batchNoiseL2Bounds, secondLayerNoise, thirdLayerNoise, type MidNoise } from './batch-noise.ts';
import { batchShape, batchUnsupported, type Shape } from './batch-shape.ts';
import type { Network } from './network.ts';
import { simulateBatchTrace } from './simulate-batch.ts';

export { batchUnsupported };

/** Fresh-encryption noise is about 2^10 in the slots: 2^26 leaves inputs ~2^-16 accurate. */
const INPUT_SCALE_BITS = 26;
/** Each 26-bit prime is above 2^25.9 (SEAL picks them just below 2^26). */
const BITS_PER_PRIME = 25.9;
/** Headroom over the largest magnitude seen on the samples. */
const HEADROOM_BITS = 4;
/** The smallest special prime the compiler uses (see buildPlan). */
const SPECIAL_PRIME_MIN_BITS = 17;

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

function weightBits(weights: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < weights.length; i++) max = Math.max(max, Math.abs(weights[i]));
  if (max === 0) return 0;
  return Math.floor(Math.log2(MAX_INT_WEIGHT / max));
}

/**
 * The weights as integers at 2^bits. The compiler builds a plan for every input scale and rescale
 * it tries, all with the same integer weights: made once per layer (they are never changed).
 */
function quantize(ws: number[], bits: number): number[] {
  const known = quantized.get(ws);
  if (known?.bits === bits) return known.weights;
  const weights = ws.map((w) => Math.round(w * 2 ** bits));
  quantized.set(ws, { bits, weights });
  return weights;
}
const quantized = new WeakMap<number[], { bits: number; weights: number[] }>();

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
  /**
   * Plans with two activations and the flood: also try rescaling the second layer's values
   * (batch-plan.ts, second.rescalePrimes) and keep the plan with the fewest data primes (the
   * default; false: never rescale).
   */
  rescale?: boolean;
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
  // Primes a rescale may drop (0: none). For each, the smallest input scale whose flood costs the
  // outputs at most FLOOD_PRECISION_BITS gives its fewest primes; the fewest over all wins.
  const drops = (o.rescale ?? true) && shape.third && privacy === 'flood' ? Array.from({ length: MAX_RESCALE_PRIMES + 1 }, (_, k) => k) : [0];
  const found = new Map<number, BatchPlan | undefined>();
  for (let inputScaleBits = INPUT_SCALE_BITS; inputScaleBits <= highest && found.size < drops.length; inputScaleBits++) {
    let midNoise: MidNoise | undefined;
    for (const k of drops) {
      if (found.has(k)) continue;
      const built = buildPlan(shape, net, degree, inputScaleBits, samples, peaks, k);
      // Too large a drop for this input scale's values: perhaps not for a larger one.
      if (built === 'low') continue;
      // The modulus only grows with the input scale: this drop never fits.
      if (!built) {
        found.set(k, undefined);
        continue;
      }
      const { plan, peak } = built;
      peaks = peak;
      plan.privacy = privacy;
      if (privacy === 'none') return validateBatchPlan(plan, 'the compiled batch plan');
      // Honest queries keep the second layer's values within what the modulus holds once squared
      // (2^(HEADROOM_BITS / 2) times the samples' largest): beyond it the result is garbage,
      // flooded or not. The single layout caps its interval bounds the same way (network-flood.ts).
      const midCap = 2 ** (HEADROOM_BITS / 2) * Math.max(peak.mid, 1);
      let bounds: number[];
      if (shape.third) bounds = thirdLayerNoise(plan, (midNoise ??= secondLayerNoise(plan, peak.input, midCap) as MidNoise));
      else bounds = batchNoiseL2Bounds(plan, peak.input, midCap);
      const N = plan.params.polyModulusDegree;
      const error = Math.max(...bounds.map((b) => (floodSigma(b, lambda) * Math.sqrt(N / 2)) / 2 ** plan.outputScaleBits));
      if (error > 2 ** -FLOOD_PRECISION_BITS * Math.max(1, peak.out)) continue;
      plan.noiseL2Bits = bounds.map((b) => Math.log2(b));
      plan.floodSecurityBits = lambda;
      found.set(k, plan);
    }
  }
  let best: BatchPlan | undefined;
  for (const k of drops) {
    const plan = found.get(k);
    if (plan && (!best || dataPrimesOf(plan) < dataPrimesOf(best))) best = plan;
  }
  // The server refuses a plan outside the kernel limits; refuse it here first, when it is made.
  return best && validateBatchPlan(best, 'the compiled batch plan');
}

/** The most primes the compiler tries to drop by rescaling (each ~26 bits off the second layer's scale). */
const MAX_RESCALE_PRIMES = 8;
/** The least scale the second layer's values keep after a rescale. */
const MIN_RESCALED_BITS = 20;

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

/**
 * The plan at one input scale, its modulus sized from the samples; undefined when it needs more
 * than 128-bit security allows, 'low' when the rescale would leave the second layer's values
 * below MIN_RESCALED_BITS.
 */
function buildPlan(
  shape: Shape,
  net: Network,
  degree: number,
  inputScaleBits: number,
  samples: ArrayLike<number>[],
  known?: Peaks,
  rescale = 0,
): { plan: BatchPlan; peak: Peaks } | undefined | 'low' {
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
  if (third && rescale) plan.second!.rescalePrimes = rescale;
  // Every intermediate value times its scale must stay below half the modulus: the values before
  // a rescale below all the data primes, those after it below the primes it leaves.
  const peak = known ?? samplePeaks(plan, samples);
  const bits = (v: number) => Math.log2(Math.max(v, 1));
  /** Bits the values need at the top level and after the rescale (the plan's primes fix its divisor). */
  const need = (s: ReturnType<typeof scaleBitsOf>) => {
    const first = Math.max(s.first + bits(peak.first), square ? s.square + 2 * bits(peak.first) : 0, inputScaleBits + 1);
    const mid = third ? s.mid + bits(peak.mid) : 0;
    const late = Math.max(third ? s.square2 + 2 * bits(peak.mid) : 0, s.out + bits(peak.out));
    const margin = 1 + HEADROOM_BITS;
    return rescale ? { top: Math.max(first, mid) + margin, kept: late + margin } : { top: Math.max(first, mid, late) + margin, kept: 0 };
  };
  const withPrimes = (dataPrimes: number) => {
    // The special prime is unused (no key switching) but SEAL keeps one: a 26-bit one as the
    // data primes, or, where that would pass the 128-bit bound, as small as it fits (SEAL finds
    // primes = 1 mod 2N from 17 bits: 65537 for N up to 32768).
    const special = Math.min(PRIME_BITS, MAX_BITS_128[degree] - dataPrimes * PRIME_BITS);
    if (special < SPECIAL_PRIME_MIN_BITS) return false;
    plan.params.coeffModulusBits = [...new Array<number>(dataPrimes).fill(PRIME_BITS), special];
    return true;
  };
  const unscaled = need(scaleBitsOf(plan));
  for (let dataPrimes = Math.max(Math.ceil(unscaled.top / BITS_PER_PRIME), rescale + 1); ; dataPrimes++) {
    if (!withPrimes(dataPrimes)) return undefined;
    // With a rescale the divisor, hence the scales after it, depend on the primes SEAL picks.
    const scales = scaleBitsOf(plan);
    if (rescale && scales.rescaled < MIN_RESCALED_BITS) return 'low';
    if (need(scales).kept > (dataPrimes - rescale) * BITS_PER_PRIME) continue;
    plan.outputScaleBits = scales.out;
    return { plan, peak };
  }
}
