// The factored form of the encrypted tree circuit (docs/trees.md): every root-to-leaf path as a
// product of at most four factors, one per feature it splits on, and the ensemble as a sum of
// these products written as a trie (Horner's scheme over shared prefixes).
//
// A factor is an interval indicator on one feature's thermometer bits: [lo <= bin < hi] is
// t_lo - t_hi (t_hi = 1 implies t_lo = 1 on honest inputs, so this is t_lo (1 - t_hi)), or t_lo,
// or 1 - t_hi. It is linear in the bits: two literals on one feature cost no product. A trie node
// at depth d has the value
//
//   V(node) = sum over children c of  factor(c) * V(c)  +  the values of leaves ending here
//
// and the outputs are V(root). A child whose subtree holds only leaf constants contributes
// c * factor: a linear function of the bits (plaintext products only, at any depth). Every other
// child costs one ciphertext product, and a relinearization when V(c) is itself a product sum
// (three polynomials): one per trie node of height >= 2, not one per group of leaves. For the
// breast-cancer model (50 trees of depth 4, 234 leaves) that is 33 relinearizations and 111
// products per batch, against 233 and 466 in the grouped form (tree-circuit.ts).
//
// No rescale happens: the input scale is 2^a, V(node at depth d) is at 2^((D-d) a + S) (D the
// trie's depth, S the leaf constants' scale), so a constant at depth d is round(c 2^S) 2^((D-d) a):
// exact, whatever its size. The walk below is written once over an algebra, so the evaluator,
// the operation counts, the plaintext simulation and the noise bound follow the same steps.

/** A node of the trie. The root has no factor. */
export interface FactorNode {
  /**
   * The factor this node's subtree is multiplied by: [lo, hi] input indices (-1: none), the
   * value (lo >= 0 ? t_lo : 1) - (hi >= 0 ? t_hi : 0).
   */
  factor?: [number, number];
  /** Per output: the values of the leaves whose path ends at this node. */
  values?: number[];
  children?: FactorNode[];
}

/** What the walk needs of its values T (ciphertexts, counts, plaintext numbers, noise bounds). */
export interface FactoredAlgebra<T> {
  /** Thermometer bit i (borrowed: the walk never releases it). */
  input(i: number): T;
  /** The factor [lo, hi]: a new value, or an input (borrowed) when it is one. */
  factor(lo: number, hi: number): T;
  /** x times round(c 2^S) 2^(lift a): a new value. */
  scaleConst(x: T, c: number, lift: number): T;
  /** x += round(c 2^S) 2^(lift a), in place. */
  addConst(x: T, c: number, lift: number): void;
  multiply(x: T, y: T): T;
  /** In place, from three polynomials to two. */
  relinearize(x: T): void;
  /** acc += x, in place. */
  add(acc: T, x: T): void;
  /** Polynomials: 2, or 3 after a product. */
  size(x: T): number;
  /** Frees a value the walk is done with (a no-op for inputs, which a factor may be). */
  release(x: T): void;
}

/** Longest root-to-leaf path, in factors (the trie's depth D). */
export function factoredDepth(n: FactorNode): number {
  return n.children?.length ? 1 + Math.max(...n.children.map(factoredDepth)) : 0;
}

/** The inputs the trie reads. */
export function factoredInputs(root: FactorNode): number[] {
  const s = new Set<number>();
  const visit = (n: FactorNode) => {
    if (n.factor) for (const i of n.factor) if (i >= 0) s.add(i);
    n.children?.forEach(visit);
  };
  visit(root);
  return [...s].sort((a, b) => a - b);
}

/**
 * V(root) per output, at lift D (scale 2^(D a + S)). An output the trie never reaches is
 * `undefined`; one it reaches only through constants is a number (the walk makes no value for it).
 * `D`: the whole trie's depth when `root` is a part of it (splitFactored), so every part's values
 * are at the scale of the whole and add up.
 */
export function walkFactored<T>(root: FactorNode, outputs: number, alg: FactoredAlgebra<T>, D = factoredDepth(root)): (T | number)[] {
  const visit = (n: FactorNode, d: number): (T | number)[] => {
    const acc: (T | undefined)[] = new Array(outputs);
    const linear = Array.from({ length: outputs }, () => new Map<number, number>());
    const constant = n.values ? n.values.slice() : new Array<number>(outputs).fill(0);
    const addTerm = (k: number, x: T) => {
      const a = acc[k];
      if (a === undefined) acc[k] = x;
      else {
        alg.add(a, x);
        alg.release(x);
      }
    };
    for (const child of n.children ?? []) {
      const [lo, hi] = child.factor!;
      const sub = child.children?.length ? visit(child, d + 1) : child.values!;
      let phi: T | undefined;
      for (let k = 0; k < outputs; k++) {
        const v = sub[k];
        if (typeof v === 'number') {
          // v * factor: linear, gathered per input and multiplied once below.
          if (v === 0) continue;
          if (lo >= 0) linear[k].set(lo, (linear[k].get(lo) ?? 0) + v);
          else constant[k] += v;
          if (hi >= 0) linear[k].set(hi, (linear[k].get(hi) ?? 0) - v);
          continue;
        }
        if (alg.size(v) > 2) alg.relinearize(v);
        phi ??= alg.factor(lo, hi);
        addTerm(k, alg.multiply(phi, v));
        alg.release(v);
      }
      if (phi !== undefined) alg.release(phi);
    }
    return Array.from({ length: outputs }, (_, k) => {
      for (const [i, w] of linear[k]) if (w !== 0) addTerm(k, alg.scaleConst(alg.input(i), w, D - d - 1));
      const x = acc[k];
      if (x === undefined) return constant[k];
      if (constant[k] !== 0) alg.addConst(x, constant[k], D - d);
      return x;
    });
  };
  return visit(root, 0);
}

/**
 * The trie cut into at most `parts` tries whose sums are V(root): the root's children dealt out
 * so that the parts' estimated costs are close (largest first, each to the cheapest part so far),
 * the root's own values and the flood masks in the first part. Parts are evaluated on different
 * threads and their sums added (tree-eval.ts); each keeps the whole trie's depth (walkFactored's D).
 */
export function splitFactored(root: FactorNode, parts: number, outputs: number): FactorNode[] {
  const children = root.children ?? [];
  if (parts <= 1 || children.length < 2) return [root];
  const cost = (n: FactorNode) => typicalCostMs(factoredOpCounts({ children: [n] }, outputs));
  // The first part also makes the flood masks (tree-eval.ts evaluatePart).
  const out = Array.from({ length: Math.min(parts, children.length) }, (_, i) => ({
    cost: i === 0 ? TYPICAL_UNIT_MS.flood * outputs : 0,
    children: [] as FactorNode[],
  }));
  for (const { n, c } of children.map((n) => ({ n, c: cost(n) })).sort((x, y) => y.c - x.c)) {
    const p = out.reduce((a, b) => (b.cost < a.cost ? b : a));
    p.children.push(n);
    p.cost += c;
  }
  return out.map((p, i) => (i === 0 && root.values ? { values: root.values, children: p.children } : { children: p.children }));
}

/**
 * Typical cost of each operation (ms, ring 16384 at five primes, measured on the 2-core VM:
 * docs/trees.md; flood: one output's). Only their ratios matter: they choose the cheaper form
 * (model/trees/factored.ts) and balance the parts of a batch (splitFactored, tree-circuit.ts
 * splitGroups). tree-cost.ts measures the real ones on the machine at hand.
 */
export const TYPICAL_UNIT_MS: Readonly<Record<string, number>> & { flood: number } = {
  relinearize: 33,
  multiply: 4.2,
  multiplyPlain: 3.1,
  encode: 0.54,
  add: 0.4,
  negate: 0.64,
  load: 6.6,
  flood: 85,
};

/** `counts` at the typical unit costs (flood not included: counts have none). */
export function typicalCostMs(counts: TreeOpCounts): number {
  return Object.entries(counts).reduce((a, [op, n]) => a + n * (TYPICAL_UNIT_MS[op] ?? 0), 0);
}

/** Operations per batch of a tree circuit, either form (tree-circuit.ts treeOpCounts). */
export interface TreeOpCounts {
  load: number;
  negate: number;
  multiply: number;
  multiplyPlain: number;
  encode: number;
  relinearize: number;
  add: number;
}

/** Operations per batch, as tree-eval.ts performs them in the factored form. */
export function factoredOpCounts(root: FactorNode, outputs: number): TreeOpCounts {
  // encode starts at 1: the evaluator's constant 1 (for 1 - t).
  const n: TreeOpCounts = { load: factoredInputs(root).length, negate: 0, multiply: 0, multiplyPlain: 0, encode: 1, relinearize: 0, add: 0 };
  const out = walkFactored<{ size: number }>(root, outputs, {
    input: () => ({ size: 2 }),
    factor: (lo, hi) => {
      if (lo >= 0 && hi >= 0) n.add++;
      else if (hi >= 0) n.negate++;
      return { size: 2 };
    },
    scaleConst: (x) => {
      n.encode++;
      n.multiplyPlain++;
      return { size: x.size };
    },
    addConst: () => {
      n.encode++;
      n.add++;
    },
    multiply: (x, y) => {
      n.multiply++;
      return { size: x.size + y.size - 1 };
    },
    relinearize: (x) => {
      n.relinearize++;
      x.size = 2;
    },
    add: (a, x) => {
      n.add++;
      a.size = Math.max(a.size, x.size);
    },
    size: (x) => x.size,
    release: () => {},
  });
  for (const v of out) if (typeof v !== 'number' && v.size > 2) n.relinearize++;
  return n;
}
