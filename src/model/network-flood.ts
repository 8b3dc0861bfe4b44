// Circuit privacy of networks in the single layout: the flood's chain and its bound on the
// honest noise, read from the steps (not the layers), so every layer lowered to linear and square
// steps is covered. compileFlooded (compile-network.ts) searches the input scale and ring with them.
/* eslint-disable max-lines -- Over 300 lines on purpose: the chain and the bound are one argument
   (the bound reads the chain's primes and the forms the chain allows), kept in one file to be read
   together. */
import { rotationRoutes, type LinearStep, type Program, type RotationRoutes, type Step } from '../fhe/program.ts';
import { simulate } from './simulate.ts';

// ---------------------------------------------------------------------------------------------
// Circuit privacy: the flood (privacy.ts). SinglePrivacy adds to the result a Gaussian F of
// sigma = 2^lambda B / 2 per coefficient, B a bound on the result's honest noise |v|_2: in the
// slots that is an error of standard deviation sigma sqrt(N/2) / Delta_out, which must stay below
// 2^-FLOOD_PRECISION_BITS max(1, largest |output|). Since B / Delta_out is the result's noise
// relative to its scale, what sets it is the noise the evaluation adds at the scales it runs at:
// the flooded chain runs at large scales (input scale ~2^75, more than one prime holds, so the
// results keep several primes) and the compiler raises the input scale until the bound meets the
// target, in the smallest ring (8192, else 16384 slots x 2) whose 128-bit budget holds the chain.
//
// The chain (top level first): result primes (<= 50 bits each by default, as many as the result
// needs), then one prime per rescale in reverse order of use: 30 bits for a rescaled linear step
// (its masks are encoded at that prime, as with privacy 'none'), the square prime (50 or 60 bits,
// and 54 in the deferred form below) for a square; then the special prime, 60 bits. Data primes
// well below the special prime keep the key-switching noise small (see floodNoiseBound).
//
// Deferred form (deferRescales, tried when the plain one does not fit a ring): every rescaled
// linear step runs unrescaled with masks at 2^30 and is followed by a 'rescale' step. Two gains:
//  - its giant and fold rotations run at scale 2^(s+30), so their key switching costs nothing,
//    and the rescale rounding is added once, not 2^folds times per giant group. For the MNIST
//    MLP 784-128-64-10 at ring 16384 that is the first layer's 2^-61.0 of 2^-60.7 (relative
//    noise, a = 86): what is left is the baby steps' key switching (2^-64.5) and the fresh noise
//    (2^-69.2), so the input scale the flood needs drops by about 4 bits.
//  - the rescale's prime may exceed 30 bits: after a square (scale 2a - s) it brings the scale
//    back towards 2^a, so the next square does not square the excess. Two squares, plain form:
//    the top level holds 30 + s1 + 30 + 2(2a - s1) + 30 + headroom + 1 = 4a - s1 + 91 + headroom
//    bits (plus the special prime). Deferred, with the rescale after the second linear step
//    dropping p: 4a - s1 - p + 121 + headroom. The x^2 MLP (headroom 9): plain needs a = 86 and
//    455 bits (s = 50) or 445 (s = 60), over ring 16384's 438; deferred needs a = 83 and takes
//    54+54+54 | 54 (square) 54 (rescale) 54 (square) 30 (rescale) | 60 = 414 bits.

/** Rescaled linear steps drop a prime of this size (their masks' scale), as with privacy 'none'. */
const FLOOD_LINEAR_PRIME_BITS = 30;
/** Square (and rescale) prime sizes tried in the deferred form: 54 bits keeps key switching cheap (2^-6 of P). */
export const FLOOD_DEFERRED_PRIME_BITS = [50, 54, 60];
/** Result prime caps tried in the deferred form. */
export const FLOOD_DEFERRED_RESULT_BITS = [50, 54, 60];

/** The deferred form: each rescaled linear step runs unrescaled with masks at 2^30, then a 'rescale' step. */
export function deferRescales(steps: Step[]): Step[] {
  return steps.flatMap((st): Step[] =>
    st.op === 'linear' && st.rescale ? [{ ...st, rescale: false, weightScaleBits: FLOOD_LINEAR_PRIME_BITS }, { op: 'rescale' }] : [st],
  );
}
/** Sizes tried for the prime a square drops (the one that gives the shorter chain is kept). */
export const FLOOD_SQUARE_PRIME_BITS = [50, 60];
/** Result primes are at most this size by default: 2^-10 of the special prime in key switching. */
export const FLOOD_RESULT_PRIME_MAX_BITS = 50;
export const SPECIAL_PRIME_BITS = 60;
/** Scale of the last layer's weights (it is not rescaled). */
export const FLOOD_WEIGHT_BITS = 30;
/** Failure probability allowed to each probabilistic bound on the keys' randomness. */
const FLOOD_DELTA = 2 ** -40;
/** Bound on how many key polynomials' noise the key-switching bound is taken over (union bound). */
const MAX_KEY_POLYS = 4096;
/**
 * Scales are tracked at the primes' nominal sizes; SEAL's primes of b >= 30 bits (the largest
 * ones = 1 mod 2N below 2^b) are within 2^-10 of 2^b, which moves the final scale by less than
 * this factor (test/circuit-privacy-network.test.ts checks the primes).
 */
export const PRIME_SIZE_MARGIN = 1.01;
/** |q / 2^b - 1| for SEAL's primes of b >= 30 bits (the test above checks it). */
const PRIME_RATIO_BOUND = 2 ** -10;

export interface FloodChain {
  /** Data primes, top level first (the coefficient modulus without the special prime). */
  dataBits: number[];
  /** The prime each rescale drops, in the order the steps drop them. */
  rescaleBits: number[];
  resultPrimes: number;
  outScaleBits: number;
  totalBits: number;
}

/** The chain for input scale 2^a, or undefined when some scale falls below 2^20. */
export function floodChain(
  steps: Step[],
  a: number,
  squareBits: number,
  headroom: number,
  resultMaxBits = FLOOD_RESULT_PRIME_MAX_BITS,
): FloodChain | undefined {
  let scale = a;
  let level = 0;
  // How many prime/2^bits ratios the output scale carries (a square doubles the count): see
  // PRIME_SIZE_MARGIN. Rescaled linear steps add none (their masks are at the prime itself).
  let drift = 0;
  const need: number[] = [a + headroom + 1];
  const rescaleBits: number[] = [];
  const at = (l: number, bits: number) => (need[l] = Math.max(need[l] ?? 0, bits));
  for (const st of steps) {
    if (st.op === 'square') {
      at(level, 2 * scale + headroom + 1);
      scale = 2 * scale - squareBits;
      rescaleBits.push(squareBits);
      drift = 2 * drift + 1;
    } else if (st.op === 'rescale') {
      // Back down to the input scale, as far as one prime (at most squareBits) takes it: the
      // noise bound needs no more scale than the input's (the fresh noise and the first step's
      // key switching, both at 2^a, dominate it), and every bit kept costs a modulus bit per
      // later square, twice.
      const bits = Math.min(squareBits, Math.max(FLOOD_LINEAR_PRIME_BITS, scale - a));
      scale -= bits;
      rescaleBits.push(bits);
      drift++;
    } else if (st.rescale) {
      at(level, scale + FLOOD_LINEAR_PRIME_BITS + headroom + 1);
      rescaleBits.push(FLOOD_LINEAR_PRIME_BITS);
    } else {
      scale += st.weightScaleBits!;
      at(level, scale + headroom + 1);
      continue;
    }
    if (scale < 20) return undefined;
    level++;
    at(level, scale + headroom + 1);
  }
  if ((1 - PRIME_RATIO_BOUND) ** -drift > PRIME_SIZE_MARGIN) return undefined;
  const depth = rescaleBits.length;
  // Q at level l = result bits + the primes dropped at level l or later.
  const above = (l: number) => rescaleBits.slice(l).reduce((x, y) => x + y, 0);
  let resultBits = need[depth];
  for (let l = 0; l < depth; l++) resultBits = Math.max(resultBits, need[l] - above(l));
  const k = Math.ceil(resultBits / resultMaxBits);
  const each = Math.max(20, Math.ceil(resultBits / k));
  const dataBits = [...Array<number>(k).fill(each), ...[...rescaleBits].reverse()];
  return { dataBits, rescaleBits, resultPrimes: k, outScaleBits: scale, totalBits: dataBits.reduce((x, y) => x + y, 0) + SPECIAL_PRIME_BITS };
}

/** |M| + the largest error of M's encoding at scale 2^bits (rounding, double precision), slot-wise. */
export function absMask(m: Float64Array, N: number, scaleBits: number): Float64Array {
  let max = 0;
  for (const x of m) max = Math.max(max, Math.abs(x));
  const eps = N / 2 ** scaleBits + 2 ** -24 * max;
  return m.map((x) => Math.abs(x) + eps);
}

/**
 * Schur's bound on the operator norm (slot domain) of a linear step, or of its terms with one
 * baby step: sqrt(max row sum * max column sum) of the entrywise absolute values. Output slot s
 * is sum_F sum_t M_t[s+F+g_t] x[s+F+g_t+b_t] (F over the fold subset sums), so the row sums are
 * the fold sums of sum_t |M_t[u+g_t]| and the column sums 2^folds sum_t |M_t[i-b_t]|.
 */
function schurGain(st: LinearStep, abs: Float64Array[], S: number, baby?: number): number {
  let row = new Float64Array(S);
  const col = new Float64Array(S);
  for (const t of st.terms) {
    if (baby !== undefined && t.baby !== baby) continue;
    const m = abs[t.mask];
    // The wraps split each loop in two (no modulo per slot: this runs per step and baby step of
    // every chain the flood search tries).
    const g = ((t.giant % S) + S) % S,
      b = ((t.baby % S) + S) % S;
    for (let s = 0; s < S - g; s++) row[s] += m[s + g];
    for (let s = S - g; s < S; s++) row[s] += m[s + g - S];
    for (let s = 0; s < S - b; s++) col[s + b] += m[s];
    for (let s = S - b; s < S; s++) col[s + b - S] += m[s];
  }
  for (const f of st.folds) {
    const r = row;
    const k = ((f % S) + S) % S;
    row = new Float64Array(S);
    for (let s = 0; s < S; s++) row[s] = r[s] + r[s + k < S ? s + k : s + k - S];
  }
  let maxRow = 0,
    maxCol = 0;
  for (let s = 0; s < S; s++) {
    maxRow = Math.max(maxRow, row[s]);
    maxCol = Math.max(maxCol, col[s]);
  }
  return Math.sqrt(maxRow * maxCol * 2 ** st.folds.length);
}

export interface FloodAnalysis {
  steps: Step[];
  N: number;
  S: number;
  /** Slots the client writes, and the largest |input| on the samples. */
  written: Uint8Array;
  inputMax: number;
  /** Per step: 4x the largest |value| on the samples (the range the modulus is sized for). */
  cap: number[];
  /** The masks' absolute values plus their encoding error (absMask; biases at scales >= 2^30). */
  abs: Float64Array[];
  /** Schur gains per linear step: of the whole step and of each baby step's terms. */
  gains: Map<number, { all: number; baby: Map<number, number> }>;
  /** Per linear step: how its rotations use the program's keys (key switches per baby, giant rotations). */
  routes: Map<number, RotationRoutes>;
  /** By input scale bits: the interval bound's largest value before each square (it does not depend on the chain). */
  squareMax: Map<number, Map<number, number>>;
}

export function analyse(
  steps: Step[],
  masks: Float64Array[],
  N: number,
  S: number,
  written: Uint8Array,
  inputMax: number,
  cap: number[],
  galoisSteps: number[],
): FloodAnalysis {
  const abs = masks.slice();
  const gains = new Map<number, { all: number; baby: Map<number, number> }>();
  const routes = new Map<number, RotationRoutes>();
  const keys = new Set(galoisSteps);
  steps.forEach((st, i) => {
    if (st.op !== 'linear') return;
    routes.set(i, rotationRoutes(st, keys));
    for (const t of st.terms) abs[t.mask] = absMask(masks[t.mask], N, st.rescale ? FLOOD_LINEAR_PRIME_BITS : st.weightScaleBits!);
    if (st.bias !== undefined) abs[st.bias] = absMask(masks[st.bias], N, 30);
    const baby = new Map<number, number>();
    for (const b of new Set(st.terms.map((t) => t.baby))) if (b !== 0) baby.set(b, schurGain(st, abs, S, b));
    gains.set(i, { all: schurGain(st, abs, S), baby });
  });
  return { steps, N, S, written, inputMax, cap, abs, gains, routes, squareMax: new Map() };
}

/** The smallest input scale the flood search tries (compile-network.ts floodSearch). */
export const FLOOD_MIN_INPUT_SCALE_BITS = 40;

/**
 * The interval bound U of the values (the steps on |masks|, from the input range plus its
 * encoding error at 2^a, capped at 4x the samples' largest): its largest value before each square.
 * U depends on a only through that error, and only grows with it (absolute masks, sums, squares of
 * nonnegative values, caps), so for every a >= FLOOD_MIN_INPUT_SCALE_BITS the bound taken at
 * FLOOD_MIN_INPUT_SCALE_BITS holds: it is computed once per analysis instead of once per scale
 * the search tries (each a full pass of the steps over every slot: a third of a LeNet compile).
 * The two differ by N / 2^40 <= 2^-25 per input value, far below what moves a chosen scale.
 */
function squareMaxima(f: FloodAnalysis, scaleBits: number): Map<number, number> {
  const a = Math.min(scaleBits, FLOOD_MIN_INPUT_SCALE_BITS);
  const known = f.squareMax.get(a);
  if (known) return known;
  const out = new Map<number, number>();
  const eps = f.N / 2 ** a + 2 ** -24 * f.inputMax;
  let U = Float64Array.from(f.written, (w) => (w ? f.inputMax : 0) + eps);
  f.steps.forEach((st, i) => {
    if (st.op === 'rescale') return;
    if (st.op === 'square') {
      let maxU = 0;
      for (const u of U) maxU = Math.max(maxU, u);
      out.set(i, maxU);
      U = U.map((u) => Math.min(u * u, f.cap[i]));
      return;
    }
    U = simulate({ steps: [st] } as Program, f.abs, U).map((u) => Math.min(u, f.cap[i]));
  });
  f.squareMax.set(a, out);
  return out;
}

/**
 * The sources of floodNoiseBound (below), as |.|_2 bounds in the coefficient domain: a fresh
 * encryption's noise, a rounding (rescale), and a key switch at `level` (primes dropped from the
 * top of `dataBits`, which lists the data primes top level first).
 */
export function noiseUnits(N: number, dataBits: number[]): { fresh: number; R: number; K: (level: number) => number } {
  const sqrtN = Math.sqrt(N);
  const sCan = Math.sqrt(2 * N * Math.log((4 * N) / FLOOD_DELTA));
  const eCan = Math.sqrt(21 * N * Math.log((4 * N * MAX_KEY_POLYS) / FLOOD_DELTA));
  const R = (sqrtN / 2) * (1 + sCan);
  const K = (level: number) => {
    const digits = dataBits.slice(0, dataBits.length - level);
    return sqrtN * eCan * digits.reduce((acc, b) => acc + 2 ** (b - SPECIAL_PRIME_BITS), 0) + R;
  };
  return { fresh: 21 * sqrtN, R, K };
}

/**
 * A bound B on |v|_2, the coefficient-domain L2 norm of the honest noise of the result, returned
 * relative to the result's scale (B / Delta_out). Honest: fresh encryptions under honestly made
 * keys of inputs whose features are within the samples' largest |value| (images: pixels in [0, 1])
 * and whose values at every step stay within 4x the samples' largest (what the modulus is sized
 * for; beyond it the result is garbage, flooded or not).
 *
 * Messages. As in compile-batch.ts, the input is what the client's plaintext polynomial holds
 * (mu = emb(m)/Delta_in: the encoder's rounding is the client's choice), and the masks and biases
 * are what the server's plaintexts hold (their rounding is part of the model the server evaluates:
 * deterministic, known to the server). Plaintext products, additions, rotations and mod-switching
 * are exact on messages (emb is a ring homomorphism, rotations are automorphisms), rescaling is an
 * exact division up to its rounding, so the result's message is exactly that model on mu, and the
 * noise v is what the engine adds: fresh noise, rescale rounding, key switching.
 *
 * Tools, in the slot domain (|p|_2 = sqrt(2/N) |emb(p) on the N/2 slots|_2, emb/sqrt(N) unitary):
 * |a b|_2 <= |a|_can |b|_2 (|.|_can: the largest slot of emb); rotations keep |.|_2 and |.|_can;
 * a linear step maps noise as the slot-domain matrix of its masks, rotations and folds, whose norm
 * is at most Schur's bound (schurGain) with the masks' encoding error counted in (absMask).
 * Sources, each a bound that holds always or with probability 1 - 2^-40 over the keys:
 *  - fresh: SEAL's noise is bounded by 21 (centered binomial; clipped normal: 19.2):
 *    |e|_2 <= 21 sqrt(N).
 *  - rounding (rescale, and the division by the special prime P in key switching): e0 + e1 s with
 *    |e_i|_inf <= 1/2: |.|_2 <= sqrt(N)/2 (1 + |s|_can); s uniform ternary, each slot a sum of N
 *    terms in [-1, 1] with sum cos^2 = N/2, so by Hoeffding and a union bound over the N real and
 *    imaginary parts |s|_can <= sqrt(2 N ln(4N/delta)).
 *  - key switching at a level with primes q_i: (1/P) sum_i d_i e_i + rounding, d_i the digits of
 *    the switched polynomial (coefficients in [0, q_i)), e_i the key's noise (independent,
 *    subgaussian with variance proxy 10.5): |d_i e_i|_2 <= |d_i|_2 |e_i|_can <= sqrt(N) q_i |e_i|_can
 *    with |e_i|_can <= sqrt(21 N ln(4 N K / delta)) (K key polynomials). q_i / P <= 2^-10 for
 *    the result primes, so the rounding dominates; a 60-bit square prime adds about 7x it.
 * Propagation (rho = |v|_2 / Delta, at the nominal scales, which only underestimate the actual
 * ones; the 1.01 margin covers the final scale, floodChain refuses chains where it would not):
 *  - linear step: rho -> G rho + sum_b G_b K_b / Delta + 2^folds (R per rescaled giant group +
 *    K per giant rotation) / Delta' + sum_j 2^(folds-1-j) K / Delta' (fold j's rotation).
 *  - square: (m + v)^2 - m^2 = 2 m v + v^2 with |m|_can = Delta max_slot |z| <= Delta U (U: the
 *    interval bound of the values, from the absolute masks and the input range, capped at 4x the
 *    samples' largest) and |v^2|_2 <= |v|_can |v|_2 <= sqrt(N) |v|_2^2; then relinearization (K at
 *    Delta^2) and the rescale (R at the new scale).
 * The bound is sound but loose: test/circuit-privacy-network.test.ts measures honest noise 2^15
 * to 2^18 below it. It allows each step's most amplified direction, U at its interval bound, and
 * rounding errors of +-1/2 lined up with both; measured, rounding errors behave like independent
 * uniform ones, but nothing guarantees it (they are deterministic functions of the ciphertexts),
 * and a bound that holds for every rounding pattern cannot be much lower. The slack costs input
 * scale, hence modulus bits, not precision: the scales grow until the flood meets its target.
 */
export function floodNoiseBound(f: FloodAnalysis, a: number, chain: FloodChain): number {
  const { steps, N } = f;
  const sqrtN = Math.sqrt(N);
  const { fresh, R, K } = noiseUnits(N, chain.dataBits);
  const squareMax = squareMaxima(f, a);
  let rho = fresh / 2 ** a;
  let scale = a;
  let level = 0;
  let rescales = 0;
  steps.forEach((st, i) => {
    if (st.op === 'rescale') {
      // Exact division of the message; the rounding adds R at the new scale.
      scale -= chain.rescaleBits[rescales++];
      level++;
      rho += R / 2 ** scale;
      return;
    }
    if (st.op === 'square') {
      const maxU = squareMax.get(i)!;
      rho = 2 * maxU * rho + sqrtN * rho * rho + K(level) / 2 ** (2 * scale);
      scale = 2 * scale - chain.rescaleBits[rescales++];
      level++;
      rho += R / 2 ** scale;
      return;
    }
    const g = f.gains.get(i)!;
    let out = g.all * rho;
    // A baby step reached in h rotations (compactRotations) carries h key switches' noise. A
    // copy the client sends (first step: rho is the fresh bound) carries its own fresh noise
    // instead: |sum_b A_b e_b| <= sum_b G_b rho, covered by G rho (G >= G_0) plus G_b rho each.
    const routes = f.routes.get(i)!;
    const given = new Set(st.inputRotations);
    for (const [b, gb] of g.baby) out += given.has(b) ? gb * rho : (gb * routes.hops.get(b)! * K(level)) / 2 ** scale;
    const nextScale = st.rescale ? scale : scale + st.weightScaleBits!;
    const nextLevel = st.rescale ? level + 1 : level;
    if (st.rescale) rescales++;
    const giants = new Set(st.terms.map((t) => t.giant));
    const k = K(nextLevel) / 2 ** nextScale;
    // Giant rotations: one per giant step, or Horner's (top giant / B), each one key switch.
    const groups = (st.rescale ? giants.size * R : 0) / 2 ** nextScale + routes.giantRotations * k;
    out += 2 ** st.folds.length * groups;
    st.folds.forEach((_, j) => (out += 2 ** (st.folds.length - 1 - j) * k));
    rho = out;
    scale = nextScale;
    level = nextLevel;
  });
  return rho;
}
