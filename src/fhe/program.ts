// The CKKS program: the instruction set the compiler emits and the engine runs. Plain data,
// no SEAL objects, so it is written into bundles and simulated in plaintext.
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

/** Every rotation the program performs, sorted; the client makes Galois keys for exactly these. */
export function rotationsOf(steps: Step[]): number[] {
  const s = new Set<number>();
  for (const st of steps) {
    if (st.op !== 'linear') continue;
    for (const t of st.terms) {
      if (t.baby !== 0) s.add(t.baby);
      if (t.giant !== 0) s.add(t.giant);
    }
    for (const f of st.folds) s.add(f);
  }
  return [...s].sort((a, b) => a - b);
}

/** Operation counts of one evaluation, for the cost model and benchmark reports. */
export function opCounts(p: Program): { rotations: number; multiplyPlain: number; square: number; rescale: number; addPlain: number } {
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
    const babies = new Set(st.terms.map((t) => t.baby).filter((b) => b !== 0));
    const giants = new Set(st.terms.map((t) => t.giant).filter((g) => g !== 0));
    rotations += babies.size + giants.size + st.folds.length;
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
    const babies = new Set(st.terms.map((t) => t.baby).filter((b) => b !== 0));
    const giants = new Set(st.terms.map((t) => t.giant));
    add('rotate', level, babies.size);
    add('multiplyPlain', level, st.terms.length);
    add('add', level, st.terms.length - giants.size);
    // The engine rescales each giant group before its rotation (see engine.ts).
    if (st.rescale) add('rescale', level, giants.size);
    const after = st.rescale ? level + 1 : level;
    add('rotate', after, [...giants].filter((g) => g !== 0).length);
    add('add', after, giants.size - 1);
    level = after;
    add('rotate', level, st.folds.length);
    add('add', level, st.folds.length);
    if (st.bias !== undefined) add('addPlain', level);
  }
  return counts;
}
