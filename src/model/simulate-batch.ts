// A batch plan (src/fhe/batch-plan.ts) in plaintext: what the batch kernel computes, with its
// integer weights at their scales and no noise. The compiler sizes the modulus from it; tests,
// benchmarks and `sealed compile` compare it with the network it approximates.
import { laterLayers, type BatchPlan } from '../fhe/batch-plan.ts';
import { boxSums } from './input-box.ts';

/** The plan's inputs of a record's features (pre-processed, times any input factors): their box sums where the plan takes them. */
export const planInputs = (plan: BatchPlan, features: ArrayLike<number>): ArrayLike<number> => (plan.inputBox ? boxSums(features, plan.inputBox) : features);

/** `weight` (rows x inputs, row-major, at 2^-bits) times the squares of `x`, plus `bias`. */
function denseOfSquares(layer: { rows: number; weight: number[]; weightScaleBits: number; bias: number[] }, x: Float64Array): Float64Array {
  const s = 2 ** -layer.weightScaleBits;
  const n = x.length;
  const out = new Float64Array(layer.rows);
  for (let o = 0; o < layer.rows; o++) {
    let acc = 0;
    for (let j = 0; j < n; j++) acc += layer.weight[o * n + j] * x[j] * x[j];
    out[o] = acc * s + layer.bias[o];
  }
  return out;
}

/**
 * The batch plan in plaintext on a record's features (as planInputs takes them): the integer
 * weights at their scales, no noise. `layers`: each
 * layer's values (the first's before its square), `hidden` the first's, `mid` the second's (the
 * outputs when there is none), `out` the last's; `inputs` the plan's inputs it took.
 */
export function simulateBatchTrace(
  plan: BatchPlan,
  features: ArrayLike<number>,
): { inputs: ArrayLike<number>; hidden: Float64Array; mid: Float64Array; out: Float64Array; layers: Float64Array[] } {
  const x = planInputs(plan, features);
  const f = plan.first;
  const s1 = 2 ** -f.weightScaleBits;
  const hidden = new Float64Array(f.rows);
  for (let j = 0; j < f.rows; j++) {
    let acc = 0;
    for (let t = f.start[j]; t < f.start[j + 1]; t++) acc += f.weight[t] * x[f.index[t]];
    hidden[j] = acc * s1 + f.bias[j];
  }
  const layers: Float64Array[] = [hidden];
  for (const layer of laterLayers(plan)) layers.push(denseOfSquares(layer, layers[layers.length - 1]));
  return { inputs: x, hidden, mid: layers[1] ?? hidden, out: layers[layers.length - 1], layers };
}

export const simulateBatch = (plan: BatchPlan, x: ArrayLike<number>) => simulateBatchTrace(plan, x).out;
