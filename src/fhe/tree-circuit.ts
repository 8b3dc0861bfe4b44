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
import {
  TYPICAL_UNIT_MS,
  factoredDepth,
  factoredInputs,
  factoredOpCounts,
  splitFactored,
  typicalCostMs,
  type FactorNode,
  type TreeOpCounts,
} from './tree-factored.ts';

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

/**
 * A part of one batch's circuit, for one of several threads (tree-eval.ts evaluatePart): a
 * sub-trie of the factored form (splitFactored), or a range of the grouped form's groups.
 */
export type TreePart = { factored: FactorNode } | { groups: [number, number] };

/** The scale of a circuit's results, in bits: 2^(D a + S) factored (D the trie's depth), 2^(4a + S) grouped. */
export function resultScaleBits(c: Pick<TreeCircuit, 'factored' | 'inputScaleBits' | 'leafScaleBits'>): number {
  return (c.factored ? factoredDepth(c.factored) : 4) * c.inputScaleBits + c.leafScaleBits;
}

/** The inputs a part reads, in the order its task carries them. */
export function partInputs(c: TreeShape, part: TreePart): number[] {
  return 'factored' in part ? factoredInputs(part.factored) : usedInputs({ ...c, factored: undefined, groups: c.groups.slice(...part.groups) });
}

/**
 * The grouped form's groups cut into at most `parts` ranges of close estimated cost (operation
 * counts at relative unit costs, as splitFactored); the first range is shorter by the flood
 * masks it also makes. Ranges keep the groups' order, so groups sharing a top pair stay together
 * but where a cut falls (one more top product there).
 */
function splitGroups(c: TreeShape, parts: number): [number, number][] {
  const n = c.groups.length;
  if (parts <= 1 || n < 2) return [[0, n]];
  const cost = c.groups.map((g) => typicalCostMs(treeOpCounts({ ...c, factored: undefined, groups: [g] })));
  const masks = TYPICAL_UNIT_MS.flood * c.outputs;
  const share = (cost.reduce((a, b) => a + b, 0) + masks) / Math.min(parts, n);
  const out: [number, number][] = [];
  let from = 0;
  let acc = masks;
  for (let g = 0; g < n; g++) {
    acc += cost[g];
    const left = n - g - 1;
    if (out.length < parts - 1 && left > 0 && (acc >= share * (out.length + 1) || left <= parts - 1 - out.length)) {
      out.push([from, g + 1]);
      from = g + 1;
    }
  }
  out.push([from, n]);
  return out;
}

const split = new WeakMap<TreeShape, Map<number, TreePart[]>>();

/**
 * A tree circuit's parts for `parts` threads (fewer when it has fewer pieces): the factored
 * form's trie split (splitFactored), or the grouped form's groups in ranges. The same on every
 * thread: the server's main thread sends each part its inputs (partInputs), the workers evaluate
 * them.
 */
export function treeParts(c: TreeShape, parts: number): TreePart[] {
  let byCount = split.get(c);
  if (!byCount) split.set(c, (byCount = new Map()));
  let p = byCount.get(parts);
  if (!p) {
    p = c.factored ? splitFactored(c.factored, parts, c.outputs).map((n) => ({ factored: n })) : splitGroups(c, parts).map((r) => ({ groups: r }));
    byCount.set(parts, p);
  }
  return p;
}
