// Dense layers in layouts that need fewer rotations and plaintext products than the hybrid
// diagonal method (denseStep in network-steps.ts) for some shapes; buildNetwork tries them and
// keeps the cheapest program (networkCost). S slots, m = nextPow2(out).
//  - replicatedFirstDense: the client writes the input so that T = nextPow2(n m / S) terms cover
//    every (row, feature) pair once; the output is fully replicated (row o at every s = o mod m).
//  - rowSumStep: from a layout of period P with out*P <= S, one product (row o's weights on the
//    P slots of block o, each slot reading its own feature) and folds 1, 2, .., P/2: row o's sum
//    ends at slot P*o (the other slots hold partial sums of two rows, read by no later mask).
//  - sparseStep: from features at slots P*j (P >= out), terms with offsets k = 0..out-1 put the
//    products of output k on the slots P*j - k, folds P, 2P, .. gather them at slot S - k.
import { SealedError } from '../errors.ts';
import { bsgsStep, nextPow2, squareSplit, type Diagonal } from './diagonal.ts';
import type { Dense } from './network.ts';

export interface Layout {
  /** feature j's value is at slot[j] + c*period for every c */
  period: number;
  /** slot (in [0, period)) of each feature */
  slot: Int32Array;
}

/** Pending activation scale and offset per input feature, folded into the next dense layer. */
export interface Pending {
  a: number[];
  g: number[];
}

const weightOf = (layer: Dense, pending: Pending | undefined) => (o: number, j: number) => layer.weights[o][j] * (pending ? pending.a[j] : 1);

/** The bias of each output with the pending offsets folded in: b_o + sum_j W[o][j] g_j. */
export function foldedBias(layer: Dense, pending: Pending | undefined): number[] {
  return layer.bias.map((b, o) => (pending ? layer.weights[o].reduce((acc, wj, j) => acc + wj * pending.g[j], b) : b));
}

/** Terms of the replicated first layer, or undefined when its layout does not apply (T > m). */
export function replicatedTerms(out: number, n: number, S: number): number | undefined {
  const m = nextPow2(out);
  const T = nextPow2(Math.ceil((n * m) / S));
  return m <= S && T <= m ? T : undefined;
}

/**
 * First dense layer (out x n), client-written input: slot p holds feature phi(p) = T floor(p/m) +
 * (p mod T) (none when >= n). Term k's mask is M_k[s] = W[s mod m][phi(s + k)]; folds m, 2m, ..,
 * S/2 sum over s's coset of m. For output o and term k, s + k runs over every block of m slots
 * (floor((s+k)/m) takes all S/m values on the coset) with (s + k) mod T = (o + k) mod T (T | m),
 * and k = 0..T-1 takes every residue: each (row, feature) pair is counted exactly once, and
 * every slot s ends holding y[s mod m].
 */
export function replicatedFirstDense(layer: Dense, n: number, S: number, last: boolean, maskBase: number) {
  const out = layer.weights.length;
  const m = nextPow2(out);
  const T = replicatedTerms(out, n, S);
  if (T === undefined) throw new SealedError('internal', `the replicated layout does not fit ${n} inputs x ${out} outputs in ${S} slots`);
  const phi = (p: number) => T * Math.floor(p / m) + (p % T);
  const diagonals: Diagonal[] = [];
  for (let k = 0; k < T; k++) {
    const mask = new Float64Array(S);
    for (let s = 0; s < S; s++) {
      const o = s % m;
      const f = phi((s + k) % S);
      if (o < out && f < n) mask[s] = layer.weights[o][f];
    }
    diagonals.push({ offset: k, mask });
  }
  const folds: number[] = [];
  for (let f = m; f < S; f *= 2) folds.push(f);
  const parts = bsgsStep(diagonals, squareSplit(T), folds, !last, maskBase);
  const bias = new Float64Array(S);
  for (let s = 0; s < S; s++) if (s % m < out) bias[s] = layer.bias[s % m];
  parts.step.bias = maskBase + parts.masks.length;
  parts.masks.push(bias);
  // Feature f = T B + r sits at the slots m B + r + T i of block B (i < m/T).
  const featureSlots = Array.from({ length: n }, (_, f) => Array.from({ length: m / T }, (_, i) => m * Math.floor(f / T) + (f % T) + T * i));
  const layout: Layout = { period: m, slot: Int32Array.from({ length: out }, (_, o) => o) };
  return { parts, featureSlots, layout };
}

/** rowSumStep applies: one product reads every (row, feature) pair. */
export const rowSumFits = (out: number, layout: Layout, S: number) => out * layout.period <= S;

/** Dense layer from a layout of period P (out*P <= S): output o at slot P*o. */
export function rowSumStep(layer: Dense, layout: Layout, S: number, pending: Pending | undefined, last: boolean, maskBase: number) {
  const out = layer.weights.length;
  const P = layout.period;
  if (!rowSumFits(out, layout, S)) throw new SealedError('internal', `${out} rows of period ${P} do not fit ${S} slots`);
  const featureAt = new Int32Array(P).fill(-1);
  layout.slot.forEach((s, j) => (featureAt[s] = j));
  const w = weightOf(layer, pending);
  const mask = new Float64Array(S);
  for (let o = 0; o < out; o++) for (let i = 0; i < P; i++) if (featureAt[i] >= 0) mask[o * P + i] = w(o, featureAt[i]);
  const folds: number[] = [];
  for (let f = 1; f < P; f *= 2) folds.push(f);
  const parts = bsgsStep([{ offset: 0, mask }], () => [0, 0], folds, !last, maskBase);
  const perOut = foldedBias(layer, pending);
  const bias = new Float64Array(S);
  for (let o = 0; o < out; o++) bias[o * P] = perOut[o];
  parts.step.bias = maskBase + parts.masks.length;
  parts.masks.push(bias);
  const next: Layout = { period: S, slot: Int32Array.from({ length: out }, (_, o) => o * P) };
  return { parts, layout: next };
}

/** The spacing P when feature j sits at slot P*j with P >= out and the folds stay within a period, else undefined. */
export function sparseSpacing(out: number, layout: Layout): number | undefined {
  const n = layout.slot.length;
  const P = n > 1 ? layout.slot[1] : layout.period;
  if (P < out || P < 1 || (P & (P - 1)) !== 0 || P * nextPow2(n) > layout.period) return undefined;
  return layout.slot.every((s, j) => s === P * j) ? P : undefined;
}

/** Dense layer from features at slots P*j: output k at slot (S - k) mod S. */
export function sparseStep(layer: Dense, layout: Layout, S: number, pending: Pending | undefined, last: boolean, maskBase: number) {
  const out = layer.weights.length;
  const n = layer.weights[0].length;
  const P = sparseSpacing(out, layout);
  if (P === undefined) throw new SealedError('internal', 'the sparse layout does not apply');
  const w = weightOf(layer, pending);
  const diagonals: Diagonal[] = [];
  for (let k = 0; k < out; k++) {
    const mask = new Float64Array(S);
    for (let j = 0; j < n; j++) mask[(P * j - k + S) % S] = w(k, j);
    diagonals.push({ offset: k, mask });
  }
  const folds: number[] = [];
  for (let f = P; f < P * nextPow2(n); f *= 2) folds.push(f);
  const parts = bsgsStep(diagonals, squareSplit(nextPow2(out)), folds, !last, maskBase);
  const perOut = foldedBias(layer, pending);
  const bias = new Float64Array(S);
  for (let k = 0; k < out; k++) bias[(S - k) % S] = perOut[k];
  parts.step.bias = maskBase + parts.masks.length;
  parts.masks.push(bias);
  const next: Layout = { period: S, slot: Int32Array.from({ length: out }, (_, k) => (S - k) % S) };
  return { parts, layout: next };
}
