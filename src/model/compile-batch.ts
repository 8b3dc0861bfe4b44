// Compiles a network into a batch plan (see src/fhe/batch-plan.ts): conv2d-parity or dense,
// then squares (quadratic activations folded as in the single layout) each followed by a dense
// layer; or one dense layer alone (linear models). Weights become integers at a per-layer
// scale, and the modulus is sized from the largest values the training samples reach. With two
// activations and the flood, or three, the values of the layers squared again (but the first's)
// may be rescaled (divided by some of the last primes) before their square: the compiler keeps
// the plan with the fewest primes (model (b): 12 instead of 16). Flooded results are rescaled
// once more, after the flood, by as many primes as its noise allows (rescale-rounding.ts, resultRescaleFor).
import { BATCH_DEGREE, BATCH_DEGREE_DEEP, BATCH_DEGREE_WIDE, dataPrimesOf, layerScales, type BatchPlan, type DenseLayer } from '../fhe/batch-plan.ts';
import { validateBatchPlan } from '../fhe/batch-plan-check.ts';
import { MAX_INT_WEIGHT, PRIME_BITS } from '../fhe/kernel-limits.ts';
import { MAX_BITS_128 } from '../fhe/params.ts';
import { FLOOD_SECURITY_BITS, floodExtraBits, floodSigma, type Privacy } from '../fhe/privacy.ts';
import { noiseBounds, noiseShape, type NoiseShape } from './batch-noise.ts';
import { resultRescaleFor } from './rescale-rounding.ts';
import { batchInputFactors, batchShape, batchUnsupported, type Shape } from './batch-shape.ts';
import { boxedInputs, factorBox, type InputBox } from './input-box.ts';
import type { Network } from './network.ts';
import { HEADROOM_BITS, batchOutputBound, samplePeaks, type Peaks } from './batch-peaks.ts';

export { batchInputFactors, batchOutputBound, batchUnsupported };

/** Fresh-encryption noise is about 2^10 in the slots: 2^26 leaves inputs ~2^-16 accurate. */
const INPUT_SCALE_BITS = 26;
/** Each 26-bit prime is above 2^25.9 (SEAL picks them just below 2^26). */
const BITS_PER_PRIME = 25.9;
/** The smallest special prime the compiler uses (see buildPlan). */
const SPECIAL_PRIME_MIN_BITS = 17;

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
   * Plans with two activations and the flood, or three: also try rescaling the values of each
   * layer squared again but the first (batch-plan.ts, rescalePrimes) and keep the plan with the
   * fewest data primes (the default; false: never rescale).
   */
  rescale?: boolean;
  /**
   * Plans that flood: divide each flooded result by as many of its last primes as the flood's
   * noise allows (rescale-rounding.ts, resultRescaleFor; the default), so results cross the network smaller; false:
   * results keep the outputs' primes.
   */
  resultRescale?: boolean;
  /**
   * Filled in: the most bits of precision (-log2 of the error over the largest output) any plan
   * within the 128-bit bound reached, where the compiler checks it (plans that flood, or with
   * three activations): a refused network's distance from FLOOD_PRECISION_BITS.
   */
  report?: { precisionBits?: number };
  /** Only this ring degree (default: the smallest that holds a plan, batch-plan.ts's BATCH_DEGREE*). */
  degree?: number;
  /**
   * The records' shape when they are images (channels x height x width): a dense first layer
   * that sums 2x2 boxes (a convolution, then 2x2 average pooling) then takes the box sums as
   * its inputs (input-box.ts), which the client computes. Not with inputFactors.
   */
  image?: InputBox;
}

/**
 * With the flood, each output's error is the flood's: standard deviation sigma sqrt(N/2) / Delta_out
 * in the slots (the real part of a sum of N Gaussian coefficients times unit roots). The compiler
 * raises the input scale until that is at most 2^-FLOOD_PRECISION_BITS of the largest output
 * magnitude on the samples (and at most that absolutely when outputs are below 1): the honest noise
 * shrinks as 1 / Delta_in relative to the outputs, the flood with it.
 */
export const FLOOD_PRECISION_BITS = 12;

/** `samples`: preprocessed records (their features), to size the modulus. Returns undefined when the network does not fit batch mode. */
export function compileBatch(net: Network, samples: ArrayLike<number>[], o: BatchCompileOptions = {}): BatchPlan | undefined {
  const privacy = o.privacy ?? 'flood';
  const lambda = o.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  if (batchUnsupported(net)) return undefined;
  const f = o.inputFactors;
  if (f) samples = samples.map((x) => Array.from(x, (v, j) => v * f[j]));
  const shape = batchShape(net, f);
  if (!shape) return undefined;
  const boxed = !f && o.image ? factorBox(shape.first, o.image) : undefined;
  if (boxed) Object.assign(shape, { first: boxed, inputBox: o.image, unboxedWeights: shape.first.weight });
  const depth = shape.later.length;
  // One square: ring 8192. Two or three: 16384, or 32768 where 16384 holds no plan (more primes
  // per record, but the only room for LeNet's flood).
  const degrees = o.degree ? [o.degree] : depth >= 2 ? [BATCH_DEGREE_DEEP, BATCH_DEGREE_WIDE] : [BATCH_DEGREE];
  for (const degree of degrees) {
    const plan = compileAt(shape, net, samples, degree, privacy, lambda, o);
    if (plan) return plan;
  }
  return undefined;
}

/** compileBatch at one ring degree. */
function compileAt(
  shape: Shape,
  net: Network,
  samples: ArrayLike<number>[],
  degree: number,
  privacy: Privacy,
  lambda: number,
  o: BatchCompileOptions,
): BatchPlan | undefined {
  const depth = shape.later.length;
  // The flood costs about floodExtraBits, each square's noise growth ~8 bits more; the loop
  // ends earlier when the modulus outgrows the ring.
  const highest = INPUT_SCALE_BITS + (privacy === 'flood' ? floodExtraBits(degree, lambda) : 0) + 8 * depth;
  let peaks: Peaks | undefined; // the values do not depend on the input scale: simulated once
  let noise: NoiseShape | undefined; // nor do the noise bounds' rows (batch-noise.ts)
  // Primes each rescale may drop (all 0: none), for every layer whose values are squared again
  // but the first's. For each choice, the smallest input scale whose flood costs the outputs at
  // most FLOOD_PRECISION_BITS gives its fewest primes; the fewest over all wins. Without the
  // flood, up to two activations fit without a rescale, at the first input scale; three need
  // rescales, whose roundings (times the powers of s) must then leave the outputs as precise.
  const deep = depth >= 3;
  const rescales = (o.rescale ?? true) && (privacy === 'flood' || deep) ? Math.max(0, depth - 1) : 0;
  const drops = rescaleChoices(depth, rescales);
  const found = new Map<string, BatchPlan | undefined>();
  const last = privacy === 'none' && !deep ? INPUT_SCALE_BITS : highest;
  for (let inputScaleBits = INPUT_SCALE_BITS; inputScaleBits <= last && found.size < drops.length; inputScaleBits++) {
    for (const k of drops) {
      const key = k.join(',');
      if (found.has(key)) continue;
      const built = buildPlan(shape, net, degree, inputScaleBits, samples, peaks, k);
      // Too large a drop for this input scale's values: perhaps not for a larger one.
      if (built === 'low') continue;
      // The modulus only grows with the input scale: this drop never fits.
      if (!built) {
        found.set(key, undefined);
        continue;
      }
      const { plan, peak } = built;
      peaks = peak;
      plan.privacy = privacy;
      if (privacy === 'none' && !deep) {
        found.set(key, plan);
        continue;
      }
      // Honest queries keep the values squared again within what the modulus holds once squared
      // (2^(HEADROOM_BITS / 2) times the samples' largest): beyond it the result is garbage,
      // flooded or not. The single layout caps its interval bounds the same way (network-flood.ts).
      noise ??= noiseShape(
        plan,
        peak.input,
        peak.layers.slice(1, -1).map((p) => 2 ** (HEADROOM_BITS / 2) * Math.max(p, 1)),
      );
      const bounds = noiseBounds(plan, noise);
      const N = plan.params.polyModulusDegree;
      // Without the flood, the honest noise itself: |v|_2 over sqrt(2) per slot (rms).
      const error = Math.max(
        ...bounds.map((b) => (privacy === 'flood' ? floodSigma(b, lambda) * Math.sqrt(N / 2) : b / Math.SQRT2) / 2 ** plan.outputScaleBits),
      );
      const precision = -Math.log2(error / Math.max(1, peak.out));
      if (o.report) o.report.precisionBits = Math.max(o.report.precisionBits ?? -Infinity, precision);
      if (precision < FLOOD_PRECISION_BITS) continue;
      if (privacy === 'flood') {
        plan.noiseL2Bits = bounds.map((b) => Math.log2(b));
        plan.floodSecurityBits = lambda;
      }
      found.set(key, plan);
    }
  }
  let best: BatchPlan | undefined;
  for (const k of drops) {
    const plan = found.get(k.join(','));
    if (plan && (!best || dataPrimesOf(plan) < dataPrimesOf(best))) best = plan;
  }
  if (best?.privacy === 'flood' && (o.resultRescale ?? true)) {
    const k = resultRescaleFor(best);
    if (k > 0) best.resultRescalePrimes = k;
  }
  // The server refuses a plan outside the kernel limits; refuse it here first, when it is made.
  return best && validateBatchPlan(best, 'the compiled batch plan');
}

/** The most primes the compiler tries to drop by rescaling (each ~26 bits off the values' scale). */
const MAX_RESCALE_PRIMES = 8;
/** The least scale values keep after a rescale. */
const MIN_RESCALED_BITS = 20;

/**
 * Every choice of primes to drop at each rescale point (later layers 0 .. points - 1, those
 * squared again), all zeros first: (MAX_RESCALE_PRIMES + 1)^points of them.
 */
function rescaleChoices(depth: number, points: number): number[][] {
  let choices: number[][] = [[]];
  for (let i = 0; i < points; i++) choices = choices.flatMap((c) => Array.from({ length: MAX_RESCALE_PRIMES + 1 }, (_, k) => [...c, k]));
  return choices.map((c) => [...c, ...new Array<number>(depth - c.length).fill(0)]);
}

/**
 * The plan at one input scale, its modulus sized from the samples; undefined when it needs more
 * than 128-bit security allows, 'low' when a rescale would leave values below MIN_RESCALED_BITS.
 * `drop[i]`: the primes later layer i's values are divided by before their square.
 */
function buildPlan(
  shape: Shape,
  net: Network,
  degree: number,
  inputScaleBits: number,
  samples: ArrayLike<number>[],
  known: Peaks | undefined,
  drop: number[],
): { plan: BatchPlan; peak: Peaks } | undefined | 'low' {
  const { first, later } = shape;
  // Over box sums, at the scale the weights before the factorization had: the box's weights are
  // ~4 times smaller, and 2 more bits of their scale would double through every square after
  // (LeNet: one more prime) for precision the flood drowns.
  const w1Bits = shape.unboxedWeights ? Math.min(weightBits(first.weight), weightBits(shape.unboxedWeights)) : weightBits(first.weight);
  const layers: DenseLayer[] = later.map((l, i) => {
    const bits = weightBits(l.weight);
    const layer: DenseLayer = { ...l, weight: quantize(l.weight, bits), weightScaleBits: bits };
    if (drop[i]) layer.rescalePrimes = drop[i];
    return layer;
  });
  const plan: BatchPlan = {
    params: { scheme: 'ckks', polyModulusDegree: degree, coeffModulusBits: [], securityLevel: 128 },
    inputScaleBits,
    inputs: shape.inputBox ? boxedInputs(shape.inputBox) : net.input.height * net.input.width,
    ...(shape.inputBox ? { inputBox: shape.inputBox } : {}),
    first: { ...first, weight: quantize(first.weight, w1Bits), weightScaleBits: w1Bits },
    square: layers.length > 0,
    second: layers[0],
    outputScaleBits: 0,
  };
  if (!plan.second) delete plan.second;
  if (layers.length >= 2) plan.third = layers[1];
  if (layers.length >= 3) plan.deeper = layers.slice(2);
  // Every intermediate value times its scale must stay below half the modulus at its level: the
  // values before a rescale below the primes they have, their squares below those it leaves.
  const peak = known ?? samplePeaks(plan, samples);
  const bits = (v: number) => Math.log2(Math.max(v, 1));
  const margin = 1 + HEADROOM_BITS;
  /** Bits each level needs, [data primes it has, bits]; up to later layer `upTo`'s values only, if given. */
  const needs = (scales: ReturnType<typeof layerScales>, upTo = Infinity) => {
    const at: [number, number][] = [];
    const s0 = scales[0].values;
    at.push([s0.primes, Math.max(inputScaleBits + 1, s0.log2 + bits(peak.layers[0]))]);
    if (plan.square) at.push([s0.primes, 2 * s0.log2 + 2 * bits(peak.layers[0])]);
    scales.slice(1).forEach(({ values, rescaled }, i) => {
      if (i > upTo) return;
      at.push([values.primes, values.log2 + bits(peak.layers[i + 1])]);
      if (i < layers.length - 1 && i < upTo) at.push([rescaled.primes, 2 * rescaled.log2 + 2 * bits(peak.layers[i + 1])]);
    });
    return at.map(([primes, b]) => [primes, b + margin]);
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
  const dropped = drop.reduce((a, b) => a + b, 0);
  // Up to the first rescale the scales do not depend on the primes: what they need gives a start.
  const firstRescale = drop.findIndex((k) => k > 0);
  const strip = (l: DenseLayer): DenseLayer => ({ ...l, rescalePrimes: undefined });
  const top = needs(
    layerScales({ ...plan, second: plan.second && strip(plan.second), third: plan.third && strip(plan.third), deeper: plan.deeper?.map(strip) }),
    firstRescale < 0 ? Infinity : firstRescale,
  );
  const start = Math.max(...top.map(([, b]) => Math.ceil(b / BITS_PER_PRIME)));
  for (let dataPrimes = Math.max(start, dropped + 1); ; dataPrimes++) {
    if (!withPrimes(dataPrimes)) return undefined;
    // With a rescale the divisors, hence the scales after it, depend on the primes SEAL picks.
    const scales = layerScales(plan);
    if (scales.some((s, i) => i > 0 && s.rescaled !== s.values && s.rescaled.log2 < MIN_RESCALED_BITS)) return 'low';
    if ([...needs(scales)].some(([primes, b]) => b > primes * BITS_PER_PRIME)) continue;
    plan.outputScaleBits = scales[scales.length - 1].values.log2;
    return { plan, peak };
  }
}
