// Bounds on the honest noise of the tree circuits' results (|v|_2, relative to their scale), for
// sizing the flood (privacy.ts): the grouped form (tree-circuit.ts) and the factored form
// (tree-factored.ts), with the tools and conventions of network-flood.ts floodNoiseBound:
// |ab|_2 <= |a|_can |b|_2, |x|_can <= sqrt(N) |x|_2, fresh |e|_2 <= 21 sqrt(N), key switching K.
// test/light/circuit-privacy-trees.test.ts measures both forms' noise against them.
import { walkFactored, type FactorNode } from '../../fhe/tree-factored.ts';
import type { TreeGroup } from '../../fhe/tree-circuit.ts';

export const SPECIAL_PRIME_BITS = 60;
/** Failure probability allowed to each probabilistic bound on the keys' randomness. */
const FLOOD_DELTA = 2 ** -40;
/** Bound on how many key polynomials' noise the key-switching bound is taken over (union bound). */
const MAX_KEY_POLYS = 4096;

/** Key switching's added noise |v|_2 (absolute: divide by the scale it happens at). */
function keySwitchNoise(N: number, dataBits: number[]): number {
  const sqrtN = Math.sqrt(N);
  const sCan = Math.sqrt(2 * N * Math.log((4 * N) / FLOOD_DELTA));
  const eCan = Math.sqrt(21 * N * Math.log((4 * N * MAX_KEY_POLYS) / FLOOD_DELTA));
  const R = (sqrtN / 2) * (1 + sCan);
  return sqrtN * eCan * dataBits.reduce((acc, b) => acc + 2 ** (b - SPECIAL_PRIME_BITS), 0) + R;
}

/**
 * The grouped form: a bound on |v|_2 of the results' honest noise, relative to their scale 2^(4a+S):
 *  - literal (t or 1 - t; the constant 1 is exact at 2^a): rho0 = 21 sqrt(N) / 2^a, |m|_can <= U0 = 1 + N / 2^a;
 *  - pair product: 2 U0 rho0 + sqrt(N) rho0^2 (+ K / 2^(2a) when relinearized), |m|_can <= U0^2;
 *  - group sum for output k: sum over leaves of (|v| + eps) rho_pair + K / 2^(2a+S) (its relinearization),
 *    eps = N / 2^S the constant plaintext's worst-case encoding error; |m|_can <= sum (|v| + eps) U0^2;
 *    with `leaves` (relinearize 'leaf'), each pair is relinearized instead: sum (|v| + eps) (rho_pair +
 *    K / 2^(2a)), which is the larger (sum (|v| + eps) >= eps = N / 2^S), so it bounds both forms;
 *  - final product: U_top rho_G + U_G rho_top + sqrt(N) rho_top rho_G; the output sums these
 *    over groups and adds K / 2^(4a+S) for its relinearization.
 * No rescale happens, so the scales are exact powers of two (no prime-size margin needed).
 */
export function treeNoiseBound(groups: TreeGroup[], outputs: number, N: number, a: number, S: number, dataBits: number[], leaves = false): number {
  const sqrtN = Math.sqrt(N);
  const K = keySwitchNoise(N, dataBits);
  const rho0 = (21 * sqrtN) / 2 ** a;
  const U0 = 1 + N / 2 ** a;
  const pair = 2 * U0 * rho0 + sqrtN * rho0 * rho0;
  const rhoTop = pair + K / 2 ** (2 * a);
  const Upair = U0 * U0;
  const eps = N / 2 ** S;
  let worst = 0;
  for (let k = 0; k < outputs; k++) {
    let rho = K / 2 ** (4 * a + S);
    for (const g of groups) {
      let w = 0;
      for (const l of g.leaves) if (l.values[k] !== 0) w += Math.abs(l.values[k]) + eps;
      if (w === 0) continue;
      const rhoG = leaves ? w * (pair + K / 2 ** (2 * a)) : w * pair + K / 2 ** (2 * a + S);
      const UG = w * Upair;
      rho += Upair * rhoG + UG * rhoTop + sqrtN * rhoTop * rhoG;
    }
    worst = Math.max(worst, rho);
  }
  return worst;
}

/** A value's noise |v|_2 relative to its scale 2^bits, its message's |m|_can bound, its polynomials. */
interface Noise {
  rho: number;
  U: number;
  size: number;
  bits: number;
}

/**
 * The factored form: the same bound, step by step along the walk the evaluator takes:
 *  - bit t_i: rho0 = 21 sqrt(N) / 2^a, |m|_can <= U0 = 1 + N / 2^a; a factor t_lo - t_hi: 2 rho0,
 *    and |m|_can <= 1 + 2N / 2^a (its slots are 0 or 1 on honest inputs); 1 - t: rho0, U0;
 *  - constant c (rounded at 2^S, lifted exactly): rho and |m|_can times |c| + eps, eps = N / 2^S
 *    the constant's worst-case encoding error; an added constant: |m|_can + |c| + eps;
 *  - product: U_x rho_y + U_y rho_x + sqrt(N) rho_x rho_y, |m|_can <= U_x U_y;
 *  - relinearization of a value at 2^bits: + K / 2^bits; sums add both.
 */
export function factoredNoiseBound(root: FactorNode, outputs: number, N: number, a: number, S: number, dataBits: number[]): number {
  const sqrtN = Math.sqrt(N);
  const K = keySwitchNoise(N, dataBits);
  const rho0 = (21 * sqrtN) / 2 ** a;
  const U0 = 1 + N / 2 ** a;
  const eps = N / 2 ** S;
  const out = walkFactored<Noise>(root, outputs, {
    input: () => ({ rho: rho0, U: U0, size: 2, bits: a }),
    factor: (lo, hi) => (lo >= 0 && hi >= 0 ? { rho: 2 * rho0, U: 1 + (2 * N) / 2 ** a, size: 2, bits: a } : { rho: rho0, U: U0, size: 2, bits: a }),
    scaleConst: (x, c, lift) => ({ rho: (Math.abs(c) + eps) * x.rho, U: (Math.abs(c) + eps) * x.U, size: x.size, bits: x.bits + S + lift * a }),
    addConst: (x, c) => {
      x.U += Math.abs(c) + eps;
    },
    multiply: (x, y) => ({ rho: x.U * y.rho + y.U * x.rho + sqrtN * x.rho * y.rho, U: x.U * y.U, size: x.size + y.size - 1, bits: x.bits + y.bits }),
    relinearize: (x) => {
      x.rho += K / 2 ** x.bits;
      x.size = 2;
    },
    add: (acc, x) => {
      acc.rho += x.rho;
      acc.U += x.U;
      acc.size = Math.max(acc.size, x.size);
    },
    size: (x) => x.size,
    release: () => {},
  });
  let worst = 0;
  for (const v of out) if (typeof v !== 'number') worst = Math.max(worst, v.rho + (v.size > 2 ? K / 2 ** v.bits : 0));
  return worst;
}
