// From a quantized ensemble to the encrypted circuit (fhe/tree-circuit.ts): root-to-leaf paths
// as thermometer literals, simplified per feature, padded to four and grouped by their top pair.
import { SealedError } from '../../errors.ts';
import type { TreeGroup } from '../../fhe/tree-circuit.ts';
import type { QuantizedEnsemble } from './quantize.ts';

/** Longest path the circuit evaluates (two pairs of literals). */
export const MAX_PATH = 4;

export interface BuiltCircuit {
  groups: TreeGroup[];
  /** Every leaf with a value, its path's literals (root first, unpadded) and values per output. */
  leaves: { lits: number[]; values: number[] }[];
  inputs: number;
  /** Per output: the largest |score| the circuit can produce (interval bound). */
  outBound: number[];
}

/**
 * Literals of one path, root first. On feature f the path keeps the tightest lower bound
 * (t_{f,j} = 1: x >= e_j, the largest such j) and upper bound (t_{f,j} = 0, the smallest j);
 * a path whose bounds cross is unreachable for honest (thermometer) inputs and dropped.
 */
function simplify(lits: { f: number; j: number; right: boolean }[], offsets: number[]): number[] | undefined {
  const lo = new Map<number, number>();
  const hi = new Map<number, number>();
  const order: number[] = [];
  for (const l of lits) {
    if (!lo.has(l.f) && !hi.has(l.f)) order.push(l.f);
    if (l.right) lo.set(l.f, Math.max(lo.get(l.f) ?? 0, l.j));
    else hi.set(l.f, Math.min(hi.get(l.f) ?? Infinity, l.j));
  }
  const out: number[] = [];
  for (const f of order) {
    const a = lo.get(f),
      b = hi.get(f);
    if (a !== undefined && b !== undefined && a >= b) return undefined;
    if (a !== undefined) out.push(offsets[f] + a - 1 + 1);
    if (b !== undefined) out.push(-(offsets[f] + b - 1 + 1));
  }
  return out;
}

export function buildCircuit(q: QuantizedEnsemble, edges: number[][], offsets: number[], inputs: number): BuiltCircuit {
  const K = q.outputs;
  const constant = q.base.slice();
  const paths: { lits: number[]; values: number[] }[][] = [];
  q.trees.forEach((t, ti) => {
    const leaves: { lits: number[]; values: number[] }[] = [];
    const walk = (n: number, path: { f: number; j: number; right: boolean }[]) => {
      if (t.left[n] < 0) {
        const lits = simplify(path, offsets);
        if (!lits) return;
        if (lits.length > MAX_PATH)
          throw new SealedError(
            'bad-data',
            `tree ${ti} has a path of ${lits.length} splits; the encrypted circuit evaluates at most ${MAX_PATH}`,
            'retrain with max_depth <= 4',
          );
        leaves.push({ lits, values: Array.from(t.value.subarray(n * K, n * K + K)) });
        return;
      }
      const f = t.feature[n],
        j = t.cut[n],
        m = edges[f].length;
      if (j === 0) return walk(t.right[n], path); // never left
      if (j > m) return walk(t.left[n], path); // always left
      walk(t.left[n], [...path, { f, j, right: false }]);
      walk(t.right[n], [...path, { f, j, right: true }]);
    };
    walk(0, []);
    if (leaves.length === 1 && leaves[0].lits.length === 0) leaves[0].values.forEach((v, k) => (constant[k] += v));
    else paths.push(leaves);
  });
  // Constants (base scores, one-leaf trees) join every leaf of one tree per output: an honest
  // record reaches exactly one leaf of each tree.
  for (let k = 0; k < K; k++) {
    if (constant[k] === 0) continue;
    const tree = paths.find((leaves) => leaves.some((l) => l.values[k] !== 0)) ?? paths[0];
    if (!tree) throw new SealedError('bad-data', 'the model has no split at all: it predicts a constant', 'train a model that uses its features');
    for (const l of tree) l.values[k] += constant[k];
  }
  const outBound = Array.from({ length: K }, (_, k) => paths.reduce((acc, leaves) => acc + Math.max(...leaves.map((l) => Math.abs(l.values[k]))), 0));
  const byTop = new Map<string, TreeGroup>();
  const all = paths.flat().filter((l) => l.values.some((v) => v !== 0));
  for (const leaves of paths) {
    for (const { lits, values } of leaves) {
      if (values.every((v) => v === 0)) continue;
      const p = [...lits];
      while (p.length < MAX_PATH) p.push(p[p.length - 1]);
      // Sorted: a product does not depend on its order, and more leaves then share a top.
      const top = [p[0], p[1]].sort((x, y) => x - y) as [number, number];
      const key = `${top[0]},${top[1]}`;
      let g = byTop.get(key);
      if (!g) byTop.set(key, (g = { top, leaves: [] }));
      g.leaves.push({ bottom: [p[2], p[3]], values });
    }
  }
  return { groups: [...byTop.values()], leaves: all, inputs, outBound };
}

/** The client's thermometer bits of one record: input offsets[f] + j - 1 is [bin_f >= j]. */
export function thermometer(bins: number[], edges: number[][], offsets: number[], inputs: number): Uint8Array {
  const out = new Uint8Array(inputs);
  bins.forEach((b, f) => {
    for (let j = 1; j <= Math.min(b, edges[f].length); j++) out[offsets[f] + j - 1] = 1;
  });
  return out;
}

/** The circuit in plaintext on one record's bits: what the encrypted evaluation approximates. */
export function simulateCircuit(groups: TreeGroup[], outputs: number, bits: ArrayLike<number>): number[] {
  const lit = (l: number) => (l > 0 ? bits[l - 1] : 1 - bits[-l - 1]);
  const out = new Array<number>(outputs).fill(0);
  for (const g of groups) {
    const top = lit(g.top[0]) * lit(g.top[1]);
    if (top === 0) continue;
    for (const leaf of g.leaves) {
      const p = lit(leaf.bottom[0]) * lit(leaf.bottom[1]);
      if (p) leaf.values.forEach((v, k) => (out[k] += v * p));
    }
  }
  return out;
}
