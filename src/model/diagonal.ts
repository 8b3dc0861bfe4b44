// Linear maps as sums of masked rotations (the diagonal method), with the baby-step /
// giant-step split: sum_d D_d * rot(x, d) = sum_g rot( sum_b rot(D_{g+b}, -g) * rot(x, b), g ),
// which needs |babies| + |giants| rotations instead of one per diagonal.
import type { LinearStep } from '../fhe/program.ts';
import { rotate } from './simulate.ts';

export interface Diagonal {
  offset: number;
  mask: Float64Array;
}

export interface LinearParts {
  step: LinearStep;
  masks: Float64Array[];
}

/** Builds a linear step from diagonals; `split` maps an offset to [giant, baby]. */
export function bsgsStep(
  diagonals: Diagonal[],
  split: (offset: number) => [number, number],
  folds: number[],
  rescale: boolean,
  maskBase: number,
  weightScaleBits?: number,
): LinearParts {
  const masks: Float64Array[] = [];
  const terms: LinearStep['terms'] = [];
  for (const d of diagonals) {
    if (!d.mask.some((v) => v !== 0)) continue; // an empty diagonal costs nothing
    const [giant, baby] = split(d.offset);
    masks.push(giant === 0 ? d.mask : rotate(d.mask, -giant));
    terms.push({ giant, baby, mask: maskBase + masks.length - 1 });
  }
  const step: LinearStep = { op: 'linear', terms, folds, rescale };
  if (!rescale) step.weightScaleBits = weightScaleBits;
  return { step, masks };
}

/** Square-root split for offsets 0..m-1: babies 0..B-1, giants multiples of B. */
export function squareSplit(m: number): (offset: number) => [number, number] {
  const b = 2 ** Math.ceil(Math.log2(Math.max(1, m)) / 2);
  return (d) => [d - (d % b), d % b];
}

export function nextPow2(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}
