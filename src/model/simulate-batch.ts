// A batch plan (src/fhe/batch-plan.ts) in plaintext: what the batch kernel computes, with its
// integer weights at their scales and no noise. The compiler sizes the modulus from it; tests,
// benchmarks and `sealed compile` compare it with the network it approximates.
import type { BatchPlan } from '../fhe/batch-plan.ts';

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
