// How exact a tree model's encrypted scores must be: the flood's error per slot (a Gaussian of
// standard deviation sigma) decides a record's class wrongly when it moves one score past
// another, so the scores' precision follows the calibration records' closest call.
//
// The networks' FLOOD_PRECISION_BITS (2^-12 of the largest score) is a floor. A random forest's
// class scores are averages of leaf fractions: the digits forest's two best classes lie 1.1e-4
// apart on a calibration record and 4.2e-4 on a held-out one (2^-11.2), where a 2^-12 flood on
// each score can flip the class (up to one query in nine; session 39's bench saw it). A bit of
// precision costs the chain D bits (the honest noise relative to the result falls as 2^-a, the
// result's scale grows by D bits per bit of a): digits at 16 bits keeps its five data primes, of
// 60 bits instead of 57, and the single-record form's five grow from 53 to 55 bits; one more bit
// would take a sixth prime.
import { SealedError } from '../../errors.ts';
import { FLOOD_PRECISION_BITS } from '../compile-batch.ts';
import type { TreeEnsemble } from './ensemble.ts';

/**
 * Standard deviations of the flood on the difference of two scores kept below the closest call:
 * at 5 the closest call goes the other way with probability below 3e-7 per query.
 */
export const DECISION_MARGIN_SIGMAS = 5;
/** Beyond this the closest call is a tie in all but name: precision stops growing (2^-24 of the scores). */
export const MAX_DECISION_PRECISION_BITS = 24;

/**
 * The margin of a record's decision: how far its scores are from deciding otherwise (the two
 * best classes' difference; a binary model's distance from its threshold). Regression has no
 * decision: undefined.
 */
export function decisionMargin(e: Pick<TreeEnsemble, 'post' | 'outputs'>, s: ArrayLike<number>): number | undefined {
  if (e.post === 'identity') return undefined;
  if (e.post === 'sigmoid') return Math.abs(s[0]);
  if (e.post === 'proba' && e.outputs === 1) return Math.abs(s[0] - 0.5);
  let first = -Infinity,
    second = -Infinity;
  for (let k = 0; k < s.length; k++) {
    if (s[k] > first) [first, second] = [s[k], first];
    else if (s[k] > second) second = s[k];
  }
  return first - second;
}

export interface DecisionPrecision {
  /** The scores' error per slot is at most 2^-bits of max(1, the score bound). */
  bits: number;
  /** The smallest nonzero decision margin on the calibration records (undefined: regression, or no record decided). */
  closestCall?: number;
}

/**
 * The precision that keeps DECISION_MARGIN_SIGMAS standard deviations of the difference of two
 * flooded scores (sqrt(2) sigma) within the closest call on the calibration records: at least
 * FLOOD_PRECISION_BITS, at most MAX_DECISION_PRECISION_BITS. Exact ties (margin 0) are left out:
 * the plaintext model breaks them by class order, noise breaks them either way, and no precision
 * changes that.
 */
export function decisionPrecision(
  e: Pick<TreeEnsemble, 'post' | 'outputs'>,
  calibrationScores: Iterable<ArrayLike<number>>,
  scoreBound: number,
): DecisionPrecision {
  let closestCall = Infinity;
  for (const s of calibrationScores) {
    const m = decisionMargin(e, s);
    if (m !== undefined && m > 0 && m < closestCall) closestCall = m;
  }
  if (closestCall === Infinity) return { bits: FLOOD_PRECISION_BITS };
  const needed = Math.ceil(Math.log2((DECISION_MARGIN_SIGMAS * Math.SQRT2 * Math.max(1, scoreBound)) / closestCall));
  return { bits: Math.min(MAX_DECISION_PRECISION_BITS, Math.max(FLOOD_PRECISION_BITS, needed)), closestCall };
}

/**
 * The most precision up to `bits` that costs no more than the floor (FLOOD_PRECISION_BITS): a chain
 * sized by `make` for each precision, `cost` comparing them (a larger ring or another prime slows
 * every query, so the closest calls keep the floor's odds instead). The floor's own failure is
 * the caller's (no chain at all); a higher precision whose chain is refused (a SealedError) is
 * skipped.
 */
export function affordablePrecision<T>(bits: number, make: (bits: number) => T, cost: (chain: T) => number): { chain: T; bits: number } {
  const floor = make(FLOOD_PRECISION_BITS);
  for (let b = bits; b > FLOOD_PRECISION_BITS; b--) {
    let chain: T;
    try {
      chain = make(b);
    } catch (e) {
      if (e instanceof SealedError) continue;
      throw e;
    }
    if (cost(chain) <= cost(floor)) return { chain, bits: b };
  }
  return { chain: floor, bits: FLOOD_PRECISION_BITS };
}
