// Quantization for encrypted tree evaluation (docs/trees.md). The client maps feature f to its
// bin, the number of the feature's edges e_1 < .. < e_m that are <= x, and encrypts the
// thermometer code t_{f,j} = [x >= e_j], j = 1..m. The edges are per-feature quantiles of the
// calibration records: they reveal those quantiles (a coarse picture of the calibration data's
// marginals), and nothing of the trees: no threshold, leaf or structure went into them.
//
// The compiler then moves each threshold to a cut: cut j sends a record left iff bin < j, i.e.
// iff t_{f,j} = 0 (j = 0: never left; j = m + 1: always left). Of the cuts, it takes the one that
// moves the fewest calibration records to the other side of the split (ties: nearest in value).
// The quantized model is the original with every threshold replaced by its cut's edge: exactly
// what the encrypted circuit computes, up to CKKS's approximation.
import { SealedError } from '../../errors.ts';
import type { Tree, TreeEnsemble } from './ensemble.ts';

export interface TreeBins {
  /** Edges per feature, strictly increasing (bins = edges + 1). */
  edges: number[][];
  /**
   * Where a missing value (NaN) goes: 'low' (below every edge), 'high' (above), or 'refuse' (the
   * model's splits on the feature disagree on the default direction: the client refuses NaN).
   */
  missing: ('low' | 'high' | 'refuse')[];
}

/** Quantile edges: up to 2^bits - 1 per feature, from the calibration records' values. */
export function quantileEdges(records: ArrayLike<number>[], features: number, bits: number): number[][] {
  const K = 2 ** bits;
  return Array.from({ length: features }, (_, f) => {
    const v = records
      .map((r) => r[f])
      .filter((x) => Number.isFinite(x))
      .sort((a, b) => a - b);
    const edges: number[] = [];
    for (let j = 1; j < K && v.length; j++) {
      const e = v[Math.min(v.length - 1, Math.floor((j * v.length) / K))];
      if (e > v[0] && (edges.length === 0 || e > edges[edges.length - 1])) edges.push(e);
    }
    return edges;
  });
}

/** The bin of x on these edges (number of edges <= x). */
export function binOf(edges: number[], x: number): number {
  let lo = 0,
    hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (edges[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The thermometer inputs' offsets: input (f, j) (j = 1..m_f) is offsets[f] + j - 1. */
export function inputOffsets(edges: number[][]): { offsets: number[]; inputs: number } {
  const offsets: number[] = [];
  let n = 0;
  for (const e of edges) {
    offsets.push(n);
    n += e.length;
  }
  return { offsets, inputs: n };
}

/** Client side: bins of one record under the bins' missing-value rule. */
export function binsOf(b: TreeBins, x: ArrayLike<number>, features: string[] = []): number[] {
  return b.edges.map((e, f) => {
    const v = x[f];
    if (typeof v !== 'number') throw new SealedError('bad-data', `the record has no value for feature ${features[f] ?? f}`, 'give every feature of the model');
    if (Number.isNaN(v)) {
      if (b.missing[f] === 'low') return 0;
      if (b.missing[f] === 'high') return e.length;
      throw new SealedError(
        'bad-data',
        `feature ${features[f] ?? f} is missing, and this model has no single default direction for it`,
        'impute the missing value before predicting',
      );
    }
    return binOf(e, v);
  });
}

/** A quantized tree: node i goes left iff bin(x[feature]) < cut (leaves: left = -1). */
export interface QuantizedTree {
  feature: Int32Array;
  cut: Int32Array;
  left: Int32Array;
  right: Int32Array;
  value: Float64Array;
}

export interface QuantizedEnsemble {
  outputs: number;
  trees: QuantizedTree[];
  base: number[];
}

/** Sorted calibration values per feature (for counting records between two values). */
function sortedColumns(records: ArrayLike<number>[], features: number): Float64Array[] {
  return Array.from({ length: features }, (_, f) => Float64Array.from(records.map((r) => r[f]).filter((x) => Number.isFinite(x))).sort());
}

/** Values < x in a sorted array. */
function below(a: Float64Array, x: number): number {
  let lo = 0,
    hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The cut for split `x < threshold` on feature f: fewest calibration values change side. */
export function cutFor(edges: number[], column: Float64Array, threshold: number): number {
  const leftAt = (c: number) => (c === 0 ? 0 : c > edges.length ? column.length : below(column, edges[c - 1]));
  const want = below(column, threshold);
  let best = 0,
    bestMoved = Infinity,
    bestDist = Infinity;
  for (let c = 0; c <= edges.length + 1; c++) {
    const moved = Math.abs(leftAt(c) - want);
    const edge = c === 0 ? -Infinity : c > edges.length ? Infinity : edges[c - 1];
    const dist = Math.abs(edge - threshold);
    if (moved < bestMoved || (moved === bestMoved && dist < bestDist)) {
      best = c;
      bestMoved = moved;
      bestDist = dist;
    }
  }
  return best;
}

export function quantize(e: TreeEnsemble, calibration: ArrayLike<number>[], bits: number): { bins: TreeBins; model: QuantizedEnsemble } {
  const edges = quantileEdges(calibration, e.features, bits);
  const cols = sortedColumns(calibration, e.features);
  const dir: (Set<number> | undefined)[] = Array.from({ length: e.features }, () => undefined);
  const trees = e.trees.map((t: Tree) => {
    const cut = new Int32Array(t.left.length);
    for (let i = 0; i < t.left.length; i++) {
      if (t.left[i] < 0) continue;
      const f = t.feature[i];
      cut[i] = cutFor(edges[f], cols[f], t.threshold[i]);
      // Only non-trivial cuts route records; their default directions set the missing rule.
      if (cut[i] > 0 && cut[i] <= edges[f].length) (dir[f] ??= new Set()).add(t.missingLeft[i]);
    }
    return { feature: t.feature, cut, left: t.left, right: t.right, value: t.value };
  });
  const missing = dir.map((d) => (!d ? 'low' : d.size === 2 ? 'refuse' : d.has(1) ? 'low' : 'high'));
  return { bins: { edges, missing }, model: { outputs: e.outputs, trees, base: e.base } };
}

/** Quantized plaintext evaluation on bins: what the encrypted circuit computes. */
export function quantizedScores(q: QuantizedEnsemble, bins: number[]): number[] {
  const out = q.base.slice();
  for (const t of q.trees) {
    let n = 0;
    while (t.left[n] >= 0) n = bins[t.feature[n]] < t.cut[n] ? t.left[n] : t.right[n];
    for (let k = 0; k < q.outputs; k++) out[k] += t.value[n * q.outputs + k];
  }
  return out;
}
