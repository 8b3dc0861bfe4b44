// The CKKS program: the instruction set the compiler emits and the engine runs. Plain data,
// no SEAL objects, so it is written into bundles and simulated in plaintext.
import { SealedError } from '../errors.ts';
import type { CkksParams } from './params.ts';
import type { Privacy } from './privacy.ts';

/**
 * out = fold( sum_g rot( sum_b M[g,b] * rot(in, b), g ) ) (+ bias). Rotations are to the left
 * (slot i receives slot i + k), as SEAL's rotateVector. `fold` adds rot(acc, f) for each f.
 * With `rescale`, masks are encoded at the scale of the prime that the rescale drops, so the
 * ciphertext scale comes back to where it was; without, at 2^weightScaleBits (last layer).
 */
export interface LinearStep {
  op: 'linear';
  terms: { giant: number; baby: number; mask: number }[];
  folds: number[];
  rescale: boolean;
  weightScaleBits?: number;
  bias?: number;
  /**
   * First step only: baby steps the client sends as rotated copies of its input (each a fresh
   * encryption of rot(x, b), after x in the query's section), so the server does not rotate for
   * them and needs no key for them. A larger query for fewer rotations at the top level.
   */
  inputRotations?: number[];
}

/** x -> x * x, relinearized and rescaled: the degree-2 activation. */
export interface SquareStep {
  op: 'square';
}

/**
 * Drops one prime: the scale is divided by it, the value is unchanged. Flooded programs put one
 * after a linear step run without rescale (masks at 2^weightScaleBits), so the step's rotations
 * run at the larger scale, where key switching adds next to nothing, and the rounding is added
 * once instead of once per giant group; its prime may be larger than the masks' scale, which
 * brings the scale back down after a square (network-flood.ts). Servers older than this step
 * refuse bundles that use it (bundle.ts checks every step's operation).
 */
export interface RescaleStep {
  op: 'rescale';
}

export type Step = LinearStep | SquareStep | RescaleStep;

export interface Program {
  params: CkksParams;
  inputScaleBits: number;
  steps: Step[];
  /** Rotation steps the evaluation keys must cover. */
  galoisSteps: number[];
  /** Whether relinearization keys are needed (any ciphertext-ciphertext product). */
  relin: boolean;
  /**
   * Circuit privacy of results (privacy.ts). Absent in bundles made before it: read as 'none'
   * (their scales have no room for the flood, which would drown the outputs).
   */
  privacy?: Privacy;
  /** With 'flood': log2 of the bound on the results' honest noise |v|_2 (coefficient domain). */
  noiseL2Bits?: number;
  /** With 'flood': lambda, the flood's statistical security in bits (absent: FLOOD_SECURITY_BITS). */
  floodSecurityBits?: number;
  /**
   * Primes the result keeps (default 1: results travel at the lowest level). A flooded program's
   * results are at a scale one prime cannot hold.
   */
  resultPrimes?: number;
}

/** Ciphertexts per input: the input and the client's rotated copies of it (inputRotations). */
export function inputCiphertexts(p: Pick<Program, 'steps'>): number {
  const first = p.steps[0];
  return 1 + (first?.op === 'linear' ? (first.inputRotations?.length ?? 0) : 0);
}

/** Every rotation the program performs, sorted; the client makes Galois keys for exactly these. */
export function rotationsOf(steps: Step[]): number[] {
  const s = new Set<number>();
  for (const st of steps) {
    if (st.op !== 'linear') continue;
    const given = new Set(st.inputRotations);
    for (const t of st.terms) {
      if (t.baby !== 0 && !given.has(t.baby)) s.add(t.baby);
      if (t.giant !== 0) s.add(t.giant);
    }
    for (const f of st.folds) s.add(f);
  }
  return [...s].sort((a, b) => a - b);
}

/**
 * Fewer Galois keys for the same rotations (each key is a ciphertext per data prime; at ring
 * 16384 with 7 data primes, 7 MB): baby steps are reached from smaller ones by their binary
 * digits, giant steps k*B by Horner's rule with one key B, folds keep their own (powers of two).
 * Neither adds a rotation: baby b is one rotation from baby b - lowbit(b) (computed first, or
 * added when no term uses it), and sum_k rot(in_k, kB) = rot(..rot(in_K, B) + in_{K-1}.., B) + in_0.
 * The engine takes whatever route the keys allow (rotationRoutes), so programs that list every
 * step run as before.
 */
export function compactRotations(steps: Step[]): number[] {
  const s = new Set<number>();
  for (const st of steps) {
    if (st.op !== 'linear') continue;
    const given = new Set(st.inputRotations);
    for (const b of new Set(st.terms.map((t) => t.baby))) if (!given.has(b)) for (let r = b; r > 0; r &= r - 1) s.add(r & -r);
    const giants = [...new Set(st.terms.map((t) => t.giant))].filter((g) => g !== 0);
    // A step with one giant group (giant 0) rotates no group.
    const B = Math.min(...giants);
    if (giants.length > 0 && giants.every((g) => g % B === 0)) s.add(B);
    else for (const g of giants) s.add(g);
    for (const f of st.folds) s.add(f);
  }
  return [...s].sort((a, b) => a - b);
}

export interface RotationRoutes {
  /** Baby rotations in order: rot(in, to) = rot(rot(in, from), to - from); from 0 is the input. Includes helpers no term uses. */
  babies: { to: number; from: number }[];
  /** Key switches each baby carries (1 for a direct rotation, 0 for the client's copies). */
  hops: Map<number, number>;
  /** Giant steps by Horner's rule with this step, or undefined: one rotation per giant, each with its own key. */
  horner?: number;
  /** Rotations of the giant groups. */
  giantRotations: number;
}

/** How a linear step's rotations use the keys `keys` (all its steps when undefined). */
export function rotationRoutes(st: LinearStep, keys?: ReadonlySet<number>): RotationRoutes {
  const has = (k: number) => !keys || keys.has(k);
  const hops = new Map<number, number>([[0, 0], ...(st.inputRotations ?? []).map((b): [number, number] => [b, 0])]);
  const babies: { to: number; from: number }[] = [];
  const reach = (b: number) => {
    if (hops.has(b)) return;
    let from = 0;
    if (!has(b)) {
      if (b < 0 || !has(b & -b)) throw new SealedError('bad-bundle', `the program's Galois keys do not reach rotation ${b}`);
      from = b - (b & -b);
      reach(from);
    }
    babies.push({ to: b, from });
    hops.set(b, hops.get(from)! + 1);
  };
  for (const b of [...new Set(st.terms.map((t) => t.baby))].sort((x, y) => x - y)) reach(b);
  hops.delete(0);
  const giants = [...new Set(st.terms.map((t) => t.giant))].filter((g) => g !== 0);
  if (giants.every(has)) return { babies, hops, giantRotations: giants.length };
  const B = Math.min(...giants);
  if (!has(B) || giants.some((g) => g % B !== 0))
    throw new SealedError('bad-bundle', `the program's Galois keys do not reach giant steps ${giants.join(', ')}`);
  return { babies, hops, horner: B, giantRotations: Math.max(...giants) / B };
}

/** Operation counts of one evaluation, for the cost model and benchmark reports. */
export function opCounts(p: Pick<Program, 'steps'> & Partial<Pick<Program, 'galoisSteps'>>): {
  rotations: number;
  multiplyPlain: number;
  square: number;
  rescale: number;
  addPlain: number;
} {
  const keys = p.galoisSteps && new Set(p.galoisSteps);
  let rotations = 0,
    multiplyPlain = 0,
    square = 0,
    rescale = 0,
    addPlain = 0;
  for (const st of p.steps) {
    if (st.op === 'square') {
      square++;
      rescale++;
      continue;
    }
    if (st.op === 'rescale') {
      rescale++;
      continue;
    }
    const routes = rotationRoutes(st, keys);
    rotations += routes.babies.length + routes.giantRotations + st.folds.length;
    multiplyPlain += st.terms.length;
    if (st.rescale) rescale += new Set(st.terms.map((t) => t.giant)).size;
    if (st.bias !== undefined) addPlain++;
  }
  return { rotations, multiplyPlain, square, rescale, addPlain };
}

/** Number of rescales, i.e. the levels the program consumes. */
export function depthOf(steps: Step[]): number {
  return steps.filter((s) => s.op === 'square' || s.op === 'rescale' || s.rescale).length;
}

export type OpKind = 'rotate' | 'multiplyPlain' | 'add' | 'square' | 'relinearize' | 'rescale' | 'addPlain';

/** Operation counts per level (0 = the fresh ciphertext's level; each rescale adds one). */
export function opCountsByLevel(p: Program): Map<string, number> {
  const keys = new Set(p.galoisSteps);
  const counts = new Map<string, number>();
  const add = (op: OpKind, level: number, n = 1) => {
    if (n > 0) counts.set(`${op}@${level}`, (counts.get(`${op}@${level}`) ?? 0) + n);
  };
  let level = 0;
  for (const st of p.steps) {
    if (st.op === 'square') {
      add('square', level);
      add('relinearize', level);
      add('rescale', level);
      level++;
      continue;
    }
    if (st.op === 'rescale') {
      add('rescale', level);
      level++;
      continue;
    }
    const routes = rotationRoutes(st, keys);
    const giants = new Set(st.terms.map((t) => t.giant));
    add('rotate', level, routes.babies.length);
    add('multiplyPlain', level, st.terms.length);
    add('add', level, st.terms.length - giants.size);
    // The engine rescales each giant group before its rotation (see engine.ts).
    if (st.rescale) add('rescale', level, giants.size);
    const after = st.rescale ? level + 1 : level;
    add('rotate', after, routes.giantRotations);
    add('add', after, giants.size - 1);
    level = after;
    add('rotate', level, st.folds.length);
    add('add', level, st.folds.length);
    if (st.bias !== undefined) add('addPlain', level);
  }
  return counts;
}
