// The single-record layout's CKKS chain (slots.ts places the layout): the scales after each
// rescale, the bound on the unflooded result's honest noise that the flood needs, and the
// search for the smallest chain whose bound meets that need within 128-bit security.
import { SealedError } from '../../errors.ts';
import { MAX_BITS_128 } from '../../fhe/params.ts';
import { FLOOD_SECURITY_BITS, floodSigma } from '../../fhe/privacy.ts';
import { giantOf, resultsOf, stretchOf, stretchedLeafValues, type SlotsLayout } from '../../fhe/tree-slots-layout.ts';
import { FLOOD_PRECISION_BITS } from '../compile-batch.ts';
import { SPECIAL_PRIME_BITS, absMask, noiseUnits } from '../network-flood.ts';
import { giantGroups, modOf, periodOf, segmentOf } from './slots.ts';

export interface SlotsChain {
  /** The client's input scale. */
  inputBits: number;
  /**
   * Data primes dropped (mod switches: no noise, no rescale) after the leaf values' rescale and
   * before the folds, which then key-switch over fewer primes; 0 in bundles from before it.
   */
  resultDrop?: number;
  /** The masks' scale, and the prime the gather rescales by. */
  maskBits: number;
  leafBits: number;
  /** The data primes, top level first: each segment product and the leaf values rescale by the next one down (the result keeps k - 3). */
  dataBits: number[];
}

/**
 * Nominal scale bits after each rescale (tree-slots.ts): the gather's by the mask prime leaves
 * 2^a; each segment product's, and the leaf values', by the next data prime down.
 */
export function slotsScales(c: SlotsChain): { s2: number; s3: number; sOut: number } {
  const q = (j: number) => c.dataBits[c.dataBits.length - j];
  const s2 = 2 * c.inputBits - q(1);
  const s3 = 2 * s2 - q(2);
  return { s2, s3, sOut: s3 + c.leafBits - q(3) };
}

/**
 * A bound on the unflooded result's honest noise |v|_2, relative to its scale, with the sources
 * and tools of network-flood.ts floodNoiseBound (its comment has them and their proofs): fresh
 * noise, roundings, key switches, |a b|_2 <= |a|_can |b|_2, Schur's bound on a linear map's
 * norm (sqrt(largest row sum x largest column sum) of its absolute entries), and the messages as
 * the server's plaintexts hold them (the masks' and leaf values' rounding is part of the model,
 * as for networks; absMask bounds it per slot). Step by step, at nominal scales:
 *  - gather, at scale 2^(a + mask): output slot t is sum_d M_d[t] c_j(d)[t + giant(d)], a linear
 *    map of the copies' stacked fresh noises (|.|_2 <= sqrt(copies) fresh), Schur-bounded; one
 *    key switch per giant rotation at the top level; the rescale by the mask prime (its rounding
 *    R) leaves rho_F at scale 2^a;
 *  - each segment product a b (a = F, b its rotation: one more key switch): U (rho_a + rho_b) +
 *    sqrt(N) rho_a rho_b, then the relinearization's key switch at the product's scale, then
 *    the rescale by the next data prime down (its rounding R at the new scale). The key
 *    switches are one level lower each time. U bounds the factors' messages: a slot holds one leaf's
 *    factor, t_lo - t_hi, 1 - t_hi or 1 (or 0 where no leaf is), so |.| <= 1 for any 0/1 bits,
 *    plus the roundings of the masks, the constants and the client's encoding;
 *  - the leaf values and the sum over the SEGMENT positions: a linear map (Schur: every output
 *    sums one period of the leaf values, every input reaches SEGMENT outputs), the rescale after
 *    the leaf values, then log2(SEGMENT) folds' key switches four levels down (or lower by the
 *    primes dropped first: a mod switch adds no noise in CKKS, it only drops a prime); per result
 *    ciphertext, made from the same products (the bound is the largest). A stretched layout is
 *    the same maps, each position in G slots: the gather's row and column sums do not change.
 */
export function slotsNoiseBound(layout: SlotsLayout, c: SlotsChain): number {
  return boundOf(layoutTerms(layout, c.maskBits, c.leafBits), c);
}

/**
 * The bound's terms that depend on the layout and the masks' and leaf values' scales, not on the
 * rest of the chain: slotsChain computes them once for the many chains it tries.
 */
interface LayoutTerms {
  layout: SlotsLayout;
  /** Schur's bound on the gather's map of the copies' noises. */
  gather: number;
  /** The masks' rounding at the largest slot (|.| above the message). */
  rounding: number;
  /** Giant rotations: one key switch each. */
  rotations: number;
  /** Per result ciphertext, Schur's bound on the leaf values and the sums over the SEGMENT positions. */
  leafSums: number[];
}

function layoutTerms(layout: SlotsLayout, maskBits: number, leafBits: number): LayoutTerms {
  const N = 2 * layout.slots;
  const [PERIOD, SEGMENT, mod] = [periodOf(layout), segmentOf(layout), modOf(periodOf(layout))];
  const row = new Float64Array(PERIOD);
  const column = new Float64Array(layout.copies * PERIOD); // [copy][slot]
  let rounding = 0;
  for (const [d, v] of layout.masks) {
    const abs = absMask(v, N, maskBits);
    const [g, j] = [giantOf(layout, d), d % layout.copies];
    rounding += abs[0] - Math.abs(v[0]);
    for (let t = 0; t < PERIOD; t++) {
      row[t] += abs[t];
      column[j * PERIOD + mod(t + g)] += abs[t];
    }
  }
  // Stretched by G, slot t of a result sums output (t mod G)'s SEGMENT values: the rows; each
  // slot reaches SEGMENT sums: the columns. One stretched segment holds every row.
  const G = stretchOf(layout);
  const leafSums = Array.from({ length: resultsOf(layout) }, (_, c) => {
    const leaf = absMask(stretchedLeafValues({ ...layout, slots: G * SEGMENT }, c), N, leafBits);
    const rows = Array.from({ length: G }, (_, k) => {
      let sum = 0;
      for (let j = 0; j < SEGMENT; j++) sum += leaf[j * G + k];
      return sum;
    });
    return schur(rows, [SEGMENT * largest(leaf)]);
  });
  const rotations = [...giantGroups(layout).keys()].filter((g) => g > 0).length;
  return { layout, gather: schur(row, column), rounding, rotations, leafSums };
}

const schur = (r: Iterable<number>, col: Iterable<number>) => Math.sqrt(largest(r) * largest(col));

function boundOf(terms: LayoutTerms, c: SlotsChain): number {
  const { layout, gather, rounding, rotations, leafSums } = terms;
  const N = 2 * layout.slots;
  const SEGMENT = segmentOf(layout);
  const [a, mask] = [c.inputBits, c.maskBits];
  const { fresh, R, K } = noiseUnits(N, [...c.dataBits, mask]);
  const rhoF = (gather * Math.sqrt(layout.copies) * fresh + (rotations * K(0)) / 2 ** mask + R) / 2 ** a;
  const U = 1 + rounding + ((2 + rounding) * N) / 2 ** a + N / 2 ** (a + mask);
  const { s2, s3, sOut } = slotsScales(c);
  const product = (rho: number, u: number, scaleBits: number, level: number) => {
    const rotated = rho + K(level) / 2 ** scaleBits;
    return u * (rho + rotated) + Math.sqrt(N) * rho * rotated + K(level) / 2 ** (2 * scaleBits);
  };
  const rhoP1 = product(rhoF, U, a, 1) + R / 2 ** s2;
  const rhoP2 = product(rhoP1, U * U, s2, 2) + R / 2 ** s3;
  let folds = 0;
  const foldLevel = 4 + (c.resultDrop ?? 0);
  for (let j = 0; j < Math.log2(SEGMENT); j++) folds += (2 ** (Math.log2(SEGMENT) - 1 - j) * K(foldLevel)) / 2 ** sOut;
  // Each result ciphertext is flooded on its own: the bound is the largest.
  return largest(leafSums.map((leafSum) => leafSum * rhoP2 + R / 2 ** sOut + folds));
}

/**
 * The chain the layout runs at: the fewest data primes, then the smallest input scale, whose
 * bound meets the flood's need (its error per slot, sigma sqrt(N/2) / Delta_out, at most
 * 2^-precisionBits of the score bound: FLOOD_PRECISION_BITS unless the compiler asks for more,
 * precision.ts). The leaf values' rescale leaves k - 3 of the k data primes of b bits, at scale 2^(4a + leaf - 4b) (slotsScales), and they must hold it, the
 * score's bits and the decryption's sign: (k + 1) b >= 4a + leaf + the score's bits + 1, b as
 * small as that allows (a key switch's noise grows with b / the special prime). Where b's
 * rounding leaves a prime the result can spare, the folds run after dropping it (resultDrop).
 * Within 128-bit security or refused. (Until session 26 this read k b >= ...: a prime more than
 * the result needs at every level, and resultDrop recovered only the folds' share of its cost.)
 */
export function slotsChain(
  layout: SlotsLayout,
  scoreBound: number,
  o: { lambda?: number; maskBits?: number; leafBits?: number; precisionBits?: number } = {},
): SlotsChain & { totalBits: number } {
  const N = 2 * layout.slots;
  const [maskBits, leafBits] = [o.maskBits ?? 30, o.leafBits ?? 30];
  const needs =
    (2 ** -(o.precisionBits ?? FLOOD_PRECISION_BITS) * Math.max(1, scoreBound)) / (floodSigma(1, o.lambda ?? FLOOD_SECURITY_BITS) * Math.sqrt(N / 2));
  const outBits = Math.ceil(Math.log2(Math.max(1, scoreBound) * 1.01)) + 2;
  const terms = layoutTerms(layout, maskBits, leafBits);
  for (let k = 4; k <= 10; k++) {
    for (let a = 40; ; a++) {
      const b = Math.max(20, Math.ceil((4 * a + leafBits + outBits + 1) / (k + 1)));
      const totalBits = k * b + maskBits + SPECIAL_PRIME_BITS;
      if (b > 60 || totalBits > MAX_BITS_128[N]) break;
      const chain = { inputBits: a, maskBits, leafBits, dataBits: Array<number>(k).fill(b), resultDrop: 0 };
      chain.resultDrop = resultDrop(chain, outBits);
      if (boundOf(terms, chain) <= needs) return { ...chain, totalBits };
    }
  }
  throw new SealedError(
    'bad-data',
    `no chain within ring ${N}'s 128-bit bound holds this single-record layout with circuit privacy`,
    'use fewer or shallower trees, or smaller leaf values',
  );
}

/**
 * The data primes the result can spare after the leaf values' rescale: it keeps the fewest whose
 * product, less one bit (the decryption's centred range), holds the result's scale plus the
 * score's bits; at least one prime stays.
 */
export function resultDrop(c: SlotsChain, outBits: number): number {
  const left = c.dataBits.slice(0, c.dataBits.length - 3);
  const needs = slotsScales(c).sOut + outBits + 1;
  let drop = 0;
  while (drop < left.length - 1 && left.slice(0, left.length - drop - 1).reduce((x, y) => x + y, 0) >= needs) drop++;
  return drop;
}

function largest(a: Iterable<number>): number {
  let m = 0;
  for (const x of a) m = Math.max(m, x);
  return m;
}
