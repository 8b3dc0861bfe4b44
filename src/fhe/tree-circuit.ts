// The encrypted tree-ensemble circuit as plain data (written into bundles, evaluated by
// tree-eval.ts, simulated by model/trees). docs/trees.md explains the design. Two forms: the
// grouped form below, and the factored form (tree-factored.ts), which the compiler picks when it
// is cheaper (one output: about a seventh of the relinearizations).
//
// Inputs: the client's thermometer bits t_i (one ciphertext per bit and batch of records, a
// record per slot), at scale 2^a. A literal is t_i (written +(i+1)) or 1 - t_i (written -(i+1)).
// Every root-to-leaf path is padded to four literals (repeating its last: l l = l on bits) and
// split in two pairs, top and bottom. A leaf's indicator is the product of its four literals, and
//
//   output_k = sum over groups g of  P(top_g) * ( sum over the group's leaves  c_leaf,k P(bottom_leaf) )
//
// with P(a, b) = a b (one ciphertext product) and c the leaf value rounded to 2^-S (constant
// plaintexts at scale 2^S). Two products deep, no rescale: every ciphertext stays at the top
// level and the result's scale is 2^(4a + S). Top products are relinearized, and the final sum
// once per output. Bottom products are relinearized in one of two ways, whichever takes fewer
// relinearizations (relinearizeLeaves): their sums once per (group, output) (one output: fewer),
// or each product once, before its plaintext products (many outputs: digits' 10 classes take 603
// instead of 1,037 per batch).
import type { CkksParams } from './params.ts';
import type { Privacy } from './privacy.ts';
import { factoredInputs, factoredOpCounts, splitFactored, type FactorNode, type TreeOpCounts } from './tree-factored.ts';

export interface TreeGroup {
  /** Literals of the top pair. */
  top: [number, number];
  /**
   * Bottom pairs and their leaf values per output (unrounded; the evaluator encodes them at
   * 2^S). A bottom product is computed once and feeds every output whose value is not 0.
   */
  leaves: { bottom: [number, number]; values: number[] }[];
}

export interface TreeCircuit {
  params: CkksParams;
  inputScaleBits: number;
  leafScaleBits: number;
  /** Thermometer ciphertexts per batch. */
  inputs: number;
  outputs: number;
  /** The grouped form (empty in the factored form). */
  groups: TreeGroup[];
  /**
   * The factored form (tree-factored.ts), when the compiler found it cheaper; the result's scale
   * is then 2^(D a + S), D the trie's depth. Bundles from before it have none.
   */
  factored?: FactorNode;
  privacy: Privacy;
  /**
   * 'leaf': each bottom product is relinearized (relinearizeLeaves says when that is fewer);
   * absent: each group's sum per output. Bundles from before it have none and keep their form.
   */
  relinearize?: 'leaf';
  /** With 'flood': log2 of the bound on the results' honest noise |v|_2 (privacy.ts). */
  noiseL2Bits?: number;
  floodSecurityBits?: number;
}

/** What a circuit computes, without its parameters: enough to count its operations before sizing. */
export type TreeShape = Pick<TreeCircuit, 'groups' | 'outputs' | 'relinearize' | 'factored'>;

/** The inputs the circuit reads (others the client sends are never loaded). */
export function usedInputs(c: TreeShape): number[] {
  if (c.factored) return factoredInputs(c.factored);
  const s = new Set<number>();
  for (const g of c.groups) {
    for (const l of g.top) s.add(Math.abs(l) - 1);
    for (const leaf of g.leaves) for (const l of leaf.bottom) s.add(Math.abs(l) - 1);
  }
  return [...s].sort((a, b) => a - b);
}

/**
 * Whether relinearizing every bottom product (one per leaf) takes fewer relinearizations than
 * relinearizing every group's sum for every output its leaves reach.
 */
export function relinearizeLeaves(groups: TreeGroup[], outputs: number): boolean {
  let leaves = 0;
  let sums = 0;
  for (const g of groups) {
    leaves += g.leaves.length;
    for (let k = 0; k < outputs; k++) if (g.leaves.some((l) => l.values[k] !== 0)) sums++;
  }
  return leaves < sums;
}

/** Operations per batch, as tree-eval.ts performs them (for cost models and the benchmark). */
export function treeOpCounts(c: TreeShape): TreeOpCounts {
  if (c.factored) return factoredOpCounts(c.factored, c.outputs);
  const used = usedInputs(c);
  const neg = new Set<number>();
  let multiply = 0,
    multiplyPlain = 0,
    relinearize = 0,
    add = 0;
  let lastTop = '';
  const contributing = new Array<number>(c.outputs).fill(0);
  for (const g of c.groups) {
    for (const l of [...g.top, ...g.leaves.flatMap((x) => x.bottom)]) if (l < 0) neg.add(-l);
    const key = g.top.join(',');
    if (key !== lastTop) {
      multiply++;
      relinearize++;
      lastTop = key;
    }
    multiply += g.leaves.length;
    if (c.relinearize === 'leaf') relinearize += g.leaves.length;
    for (let k = 0; k < c.outputs; k++) {
      const n = g.leaves.filter((l) => l.values[k] !== 0).length;
      if (n === 0) continue;
      multiplyPlain += n;
      add += n - 1 + (contributing[k]++ > 0 ? 1 : 0); // within the group, then into the output's sum
      if (c.relinearize !== 'leaf') relinearize++;
      multiply++;
    }
  }
  relinearize += c.outputs;
  return { load: used.length, negate: neg.size, multiply, multiplyPlain, encode: multiplyPlain + 1, relinearize, add };
}

const split = new WeakMap<TreeCircuit, Map<number, FactorNode[]>>();

/**
 * A tree circuit's parts for `parts` threads: the factored form's trie split (splitFactored),
 * none for the grouped form (always evaluated whole). The same on every thread: the server's main thread
 * sends each part its inputs (factoredInputs), the workers evaluate them.
 */
export function treeParts(c: TreeCircuit, parts: number): FactorNode[] {
  if (!c.factored) return [];
  let byCount = split.get(c);
  if (!byCount) split.set(c, (byCount = new Map()));
  let p = byCount.get(parts);
  if (!p) byCount.set(parts, (p = splitFactored(c.factored, parts, c.outputs)));
  return p;
}
