// The leaves-in-slots layout for one record (docs/trees.md, Not done yet): where each leaf and
// its factors sit in the slots, the masks that gather the client's thermometer bits there, and a
// plaintext model of the circuit (slots-chain.ts bounds its honest noise and picks its chain;
// single.ts compiles both into a bundle).
//
// The client's bits fill one period of slots (repeated over all slots). A period is 4 segments
// of SEGMENT positions (256, or 512 for more leaves or inputs: SEGMENTS); a leaf owns one position p and each of its factors a segment k,
// at slot k SEGMENT + p. Factor slot t is sum_d M_d[t] x[t + d] + c[t]: a diagonal d per
// (input, slot) pair, with masks of +1 (t_lo), -1 (t_hi) and the constant 1 where a factor has
// no t_lo (1 - t_hi) or a leaf fewer than 4 factors. Then F rot(F, 2 SEGMENT), times its own
// rotation by SEGMENT, puts each leaf's product of factors at its position; times the leaf
// values, summed over the SEGMENT positions, every slot holds the score (src/fhe/tree-slots.ts
// evaluates it encrypted). A model with several outputs (a multiclass forest) has a vector of
// leaf values per output; single.ts stretches its layout so that several outputs' leaf sums
// share a result ciphertext (SlotsLayout.stretch).
import { SealedError } from '../../errors.ts';
import { giantOf, type SlotsLayout } from '../../fhe/tree-slots-layout.ts';
import { MAX_PATH } from './circuit.ts';

export type { SlotsLayout };

/** Segment lengths, smallest first: a period is four segments; a segment holds one leaf per position. */
export const SEGMENTS = [256, 512] as const;

export const periodOf = (layout: Pick<SlotsLayout, 'constant'>) => layout.constant.length;
export const segmentOf = (layout: Pick<SlotsLayout, 'leafValues'>) => layout.leafValues[0].length;
export const modOf = (period: number) => (v: number) => ((v % period) + period) % period;

/** A leaf as the layout needs it: per feature [t_lo, t_hi] input indices (-1: absent), and its value per output. */
export interface SlotsLeaf {
  factors: [number, number][];
  values: number[];
}

/** The batch circuit's leaves (literals: +(i+1) for t_i, -(i+1) for 1 - t_i) as factors per feature. */
export function slotsLeaves(leaves: { lits: number[]; values: number[] }[], offsets: number[]): SlotsLeaf[] {
  const featureOf = (i: number) => offsets.findLastIndex((o) => o <= i);
  return leaves.map((l) => {
    const byFeature = new Map<number, [number, number]>();
    for (const x of l.lits) {
      const i = Math.abs(x) - 1;
      const f = byFeature.get(featureOf(i)) ?? [-1, -1];
      f[x > 0 ? 0 : 1] = i;
      byFeature.set(featureOf(i), f);
    }
    return { factors: [...byFeature.values()], values: l.values };
  });
}

const ORDERS: number[][] = (() => {
  const out: number[][] = [];
  const permute = (a: number[], k: number): void => {
    if (k === a.length) out.push([...a]);
    for (let i = k; i < a.length; i++) {
      [a[k], a[i]] = [a[i], a[k]];
      permute(a, k + 1);
      [a[k], a[i]] = [a[i], a[k]];
    }
  };
  permute([0, 1, 2, 3], 0);
  return out;
})();

/**
 * Per number of factors f, the segment orders that differ in their first f segments (the rest
 * hold no factor, so they cost the same), each the first of its kind in ORDERS: the search
 * keeps the first of equal costs, so it places a leaf as if it tried all 24.
 */
const ORDERS_BY_FACTORS: number[][][] = Array.from({ length: 5 }, (_, f) => {
  const seen = new Set<string>();
  return ORDERS.filter((o) => {
    const key = o.slice(0, f).join();
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
});

/** Seeded shuffles placeLeaves tries after the leaves' own order (~0.16 s each for the digits forest's 476 leaves, AMD VM). */
export const PLACEMENT_RESTARTS = 8;
/**
 * A giant step's weight against one diagonal when placements are compared: a top-level rotation
 * (~38 ms at ring 16384 on the AMD VM, and a Galois key) against a mask product (~0.45 ms in
 * gather-kernel.ts, for both copies' polynomials).
 */
const GIANT_WEIGHT = 80;

/**
 * Places the leaves greedily (placeOnce), in their order and in `restarts` seeded shuffles of it
 * (the greedy is sensitive to ties in its order: the digits forest's 23 giant steps become 18),
 * and keeps the cheapest: fewest masks + GIANT_WEIGHT x giant steps, the first on ties.
 * Deterministic: the same leaves give the same layout.
 */
export function placeLeaves(leaves: SlotsLeaf[], inputs: number, copies: number, slots = 8192, restarts = PLACEMENT_RESTARTS): SlotsLayout {
  const cost = (l: SlotsLayout) => l.masks.size + GIANT_WEIGHT * [...giantGroups(l).keys()].filter((g) => g > 0).length;
  let best = placeOnce(leaves, inputs, copies, slots);
  let bestCost = cost(best);
  let seed = 0x5eed;
  // xorshift32: any fixed sequence will do; this one needs no dependency.
  const random = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  for (let r = 0; r < restarts; r++) {
    const order = [...leaves];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const layout = placeOnce(order, inputs, copies, slots);
    const c = cost(layout);
    if (c < bestCost) [best, bestCost] = [layout, c];
  }
  return best;
}

/**
 * One greedy placement, most factors first (the order given on ties): each leaf at the free
 * position and segment order adding the fewest new diagonals, a new giant step (one more
 * rotation) weighing 11.
 */
function placeOnce(leaves: SlotsLeaf[], inputs: number, copies: number, slots: number): SlotsLayout {
  const largest = SEGMENTS[SEGMENTS.length - 1];
  if (leaves.length > largest)
    throw new SealedError('bad-data', `${leaves.length} leaves: the single-record layout places at most ${largest}`, 'use fewer or shallower trees');
  if (inputs > 4 * largest)
    throw new SealedError('bad-data', `${inputs} inputs: the single-record layout holds at most ${4 * largest}`, 'use fewer bits per feature');
  if (leaves.some((l) => l.factors.length > MAX_PATH)) throw new SealedError('bad-data', `a leaf has more than ${MAX_PATH} factors`);
  // The smallest segment that holds the leaves and whose period holds the inputs.
  const SEGMENT = SEGMENTS.find((g) => leaves.length <= g && inputs <= 4 * g)!;
  const PERIOD = 4 * SEGMENT;
  const mod = modOf(PERIOD);
  const outputs = leaves[0]?.values.length ?? 1;
  const layout: SlotsLayout = {
    slots,
    copies,
    masks: new Map(),
    constant: new Float64Array(PERIOD),
    leafValues: Array.from({ length: outputs }, () => new Float64Array(SEGMENT)),
  };
  // Flags and a stamp per diagonal and giant step (both below PERIOD) rather than sets: this
  // search tries every free position and segment order for every leaf.
  const hasMask = new Uint8Array(PERIOD);
  const giantUsed = new Uint8Array(PERIOD);
  const freshAt = new Int32Array(PERIOD);
  let trial = 0;
  const taken = new Uint8Array(SEGMENT);
  for (const leaf of [...leaves].sort((x, y) => y.factors.length - x.factors.length)) {
    let best = { cost: Infinity, p: -1, order: ORDERS[0] };
    // A place that adds nothing is the first the search would keep: stop there.
    for (let p = 0; p < SEGMENT && best.cost > 0; p++) {
      if (taken[p]) continue;
      for (const order of ORDERS_BY_FACTORS[leaf.factors.length]) {
        if (best.cost === 0) break;
        let cost = 0;
        trial++;
        for (let k = 0; k < leaf.factors.length && cost < best.cost; k++) {
          for (const i of leaf.factors[k]) {
            if (i < 0) continue;
            const d = mod(i - (SEGMENT * order[k] + p));
            if (hasMask[d]) continue;
            const g = giantOf(layout, d);
            cost += g && !giantUsed[g] && freshAt[g] !== trial ? 11 : 1;
            freshAt[g] = trial;
          }
        }
        if (cost < best.cost) best = { cost, p, order };
      }
    }
    taken[best.p] = 1;
    leaf.values.forEach((v, k) => (layout.leafValues[k][best.p] = v));
    for (let k = 0; k < 4; k++) {
      const slot = SEGMENT * best.order[k] + best.p;
      const [lo, hi] = leaf.factors[k] ?? [-1, -1];
      if (lo < 0) layout.constant[slot] = 1; // 1 - t_hi, or a missing factor (1)
      for (const [i, c] of [
        [lo, 1],
        [hi, -1],
      ] as const) {
        if (i < 0) continue;
        const d = mod(i - slot);
        let v = layout.masks.get(d);
        if (!v) layout.masks.set(d, (v = new Float64Array(PERIOD)));
        hasMask[d] = 1;
        v[slot] += c;
        giantUsed[giantOf(layout, d)] = 1;
      }
    }
  }
  return layout;
}

/** The diagonals by giant step. */
export function giantGroups(layout: SlotsLayout): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  for (const d of layout.masks.keys()) groups.set(giantOf(layout, d), [...(groups.get(giantOf(layout, d)) ?? []), d]);
  return groups;
}

/** The layout's scores (one per output) for one record's bits, in plaintext (what slot 0 of each result decrypts to, up to rounding and noise). */
export function simulateSlots(layout: SlotsLayout, bits: ArrayLike<number>): number[] {
  const [PERIOD, SEGMENT, mod] = [periodOf(layout), segmentOf(layout), modOf(periodOf(layout))];
  const x = Float64Array.from({ length: PERIOD }, (_, i) => (i < bits.length ? bits[i] : 0));
  const F = Float64Array.from(layout.constant);
  for (const [d, m] of layout.masks) for (let t = 0; t < PERIOD; t++) if (m[t]) F[t] += m[t] * x[mod(t + d)];
  const P1 = F.map((f, t) => f * F[mod(t + 2 * SEGMENT)]);
  return layout.leafValues.map((values) => {
    let score = 0;
    for (let p = 0; p < SEGMENT; p++) score += values[p] * P1[p] * P1[p + SEGMENT];
    return score;
  });
}
