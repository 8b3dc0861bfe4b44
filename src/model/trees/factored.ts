// The factored form of a quantized ensemble (fhe/tree-factored.ts explains it): each leaf's path
// as one factor per feature, the factors ordered by how many leaves share them so that paths
// share prefixes, and the leaves inserted into a trie.
import { estimateTreeBatchMs } from '../../fhe/tree-cost.ts';
import { TYPICAL_UNIT_MS, walkFactored, type FactorNode } from '../../fhe/tree-factored.ts';
import type { TreeCircuit, TreeShape } from '../../fhe/tree-circuit.ts';
import { simulateCircuit } from './circuit.ts';

/** The input's feature: the last offset at or below it. */
function featureOf(offsets: number[], i: number): number {
  let lo = 0,
    hi = offsets.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (offsets[mid] <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * The trie of `leaves` (literals as circuit.ts writes them: +(i+1) for t_i, -(i+1) for 1 - t_i;
 * at most one of each sign per feature, as its simplify leaves them).
 */
export function buildFactored(leaves: { lits: number[]; values: number[] }[], offsets: number[], outputs: number): FactorNode {
  const factorsOf = (lits: number[]) => {
    const byFeature = new Map<number, [number, number]>();
    for (const l of lits) {
      const i = Math.abs(l) - 1;
      const f = featureOf(offsets, i);
      const factor = byFeature.get(f) ?? [-1, -1];
      factor[l > 0 ? 0 : 1] = i;
      byFeature.set(f, factor);
    }
    return [...byFeature.values()];
  };
  const key = (f: [number, number]) => `${f[0]},${f[1]}`;
  type Path = { factors: Map<string, [number, number]>; values: number[] };
  const paths: Path[] = leaves.map((l) => ({ factors: new Map(factorsOf(l.lits).map((f) => [key(f), f])), values: l.values }));
  // Greedy, top down: a node's children are the factor most of its remaining paths share, then the
  // one most of the rest share, ... Each child costs a product (and a relinearization when it has
  // children of its own), so the fewer and fuller the children, the cheaper.
  const grow = (node: FactorNode, rest: Path[]): FactorNode => {
    const open: Path[] = [];
    for (const p of rest) {
      if (p.factors.size) open.push(p);
      else {
        const values = (node.values ??= new Array<number>(outputs).fill(0));
        p.values.forEach((v, k) => (values[k] += v));
      }
    }
    const children: FactorNode[] = [];
    let left = open;
    while (left.length) {
      const count = new Map<string, number>();
      for (const p of left) for (const k of p.factors.keys()) count.set(k, (count.get(k) ?? 0) + 1);
      let best = '';
      for (const [k, n] of count) if (best === '' || n > count.get(best)! || (n === count.get(best)! && k < best)) best = k;
      const factor = left.find((p) => p.factors.has(best))!.factors.get(best)!;
      const under = left.filter((p) => p.factors.has(best)).map((p) => ({ factors: new Map([...p.factors].filter(([k]) => k !== best)), values: p.values }));
      left = left.filter((p) => !p.factors.has(best));
      children.push(grow({ factor }, under));
    }
    return children.length ? { ...node, children } : node;
  };
  return grow({}, paths);
}

/** The factored circuit in plaintext on one record's bits: what the encrypted evaluation approximates. */
export function simulateFactored(root: FactorNode, outputs: number, bits: ArrayLike<number>): number[] {
  const box = (v: number) => ({ v });
  const out = walkFactored<{ v: number }>(root, outputs, {
    input: (i) => box(bits[i]),
    factor: (lo, hi) => box((lo >= 0 ? bits[lo] : 1) - (hi >= 0 ? bits[hi] : 0)),
    scaleConst: (x, c) => box(x.v * c),
    addConst: (x, c) => {
      x.v += c;
    },
    multiply: (x, y) => box(x.v * y.v),
    relinearize: () => {},
    add: (acc, x) => {
      acc.v += x.v;
    },
    size: () => 2,
    release: () => {},
  });
  return out.map((x) => (typeof x === 'number' ? x : x.v));
}

/** Either form of a circuit in plaintext on one record's bits. */
export function simulateTreeCircuit(c: TreeCircuit, bits: ArrayLike<number>): number[] {
  return c.factored ? simulateFactored(c.factored, c.outputs, bits) : simulateCircuit(c.groups, c.outputs, bits);
}

/** Whether the factored form of `root` costs less than the grouped circuit `grouped` (TYPICAL_UNIT_MS). */
export function factoredIsCheaper(root: FactorNode, grouped: TreeShape): boolean {
  return estimateTreeBatchMs({ ...grouped, factored: root }, TYPICAL_UNIT_MS).total < estimateTreeBatchMs(grouped, TYPICAL_UNIT_MS).total;
}
