// The largest values a batch plan reaches on the compiler's samples, stage by stage: what its
// modulus is sized from (compile-batch.ts) and what the client bounds decrypted scores by.
import type { BatchPlan } from '../fhe/batch-plan.ts';
import type { InputRange } from './batch-noise.ts';
import { simulateBatchTrace } from './simulate-batch.ts';

/** Headroom over the largest magnitude seen on the samples. */
export const HEADROOM_BITS = 4;

/** The largest |value| of each layer (the first, then the later ones) and of the results, and each of the plan's inputs' range, on the samples. */
export interface Peaks {
  layers: number[];
  out: number;
  input: InputRange;
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

export function samplePeaks(plan: BatchPlan, samples: ArrayLike<number>[]): Peaks {
  const peak: Peaks = { layers: [], out: 0, input: { low: new Float64Array(plan.inputs).fill(Infinity), high: new Float64Array(plan.inputs).fill(-Infinity) } };
  for (const s of samples) {
    const { inputs: x, layers } = simulateBatchTrace(plan, s);
    for (let i = 0; i < plan.inputs; i++) {
      peak.input.low[i] = Math.min(peak.input.low[i], x[i]);
      peak.input.high[i] = Math.max(peak.input.high[i], x[i]);
    }
    layers.forEach((values, l) => {
      for (const v of values) peak.layers[l] = Math.max(peak.layers[l] ?? 0, Math.abs(v));
    });
  }
  if (!samples.length) [peak.input.low, peak.input.high] = [new Float64Array(plan.inputs), new Float64Array(plan.inputs)];
  peak.out = peak.layers[peak.layers.length - 1] ?? 0;
  return peak;
}
