// Plaintext twin of the engine: the same program, masks and layout on Float64Arrays. Used at
// compile time to prove a plan computes the model and to size the modulus (largest value seen),
// and by `sealed train` to predict encrypted accuracy without encrypting anything.
import type { Program } from '../fhe/program.ts';

export function rotate(v: Float64Array, k: number): Float64Array {
  const n = v.length;
  const out = new Float64Array(n);
  const s = ((k % n) + n) % n;
  out.set(v.subarray(s), 0);
  out.set(v.subarray(0, s), n - s);
  return out;
}

export interface SimulationTrace {
  /** Largest |value| in any slot after each step (garbage slots included: they share the modulus). */
  maxAbs: number[];
}

export function simulate(p: Program, masks: Float64Array[], input: Float64Array, trace?: SimulationTrace): Float64Array {
  // Rotations are read through their index (addRotated) instead of materialised: the plaintext
  // checks of compile and training run this for every calibration record, and a copy of the
  // vector per term was most of their time. The sums run in the same order as the engine's
  // description (terms within a giant, giants, folds), so results are what they were bit for bit.
  let x = input;
  for (const st of p.steps) {
    if (st.op === 'square') {
      x = x.map((v) => v * v);
    } else if (st.op === 'rescale') {
      // Exact on values: only the scale changes.
    } else {
      const n = x.length;
      const acc = new Float64Array(n);
      const inner = new Float64Array(n);
      const byGiant = new Map<number, { baby: number; mask: number }[]>();
      for (const t of st.terms) byGiant.set(t.giant, [...(byGiant.get(t.giant) ?? []), t]);
      for (const [g, terms] of byGiant) {
        inner.fill(0);
        for (const t of terms) addMaskedRotated(inner, masks[t.mask], x, t.baby);
        addRotated(acc, inner, g);
      }
      let out = acc;
      for (const f of st.folds) {
        const sum = out.slice();
        addRotated(sum, out, f);
        out = sum;
      }
      if (st.bias !== undefined) {
        const b = masks[st.bias];
        for (let i = 0; i < n; i++) out[i] += b[i];
      }
      x = out;
    }
    if (trace) trace.maxAbs.push(x.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
  }
  return x;
}

/** out[i] += v[(i + k) mod n]: out += rot(v, k), rotation to the left as in the engine. */
function addRotated(out: Float64Array, v: Float64Array, k: number): void {
  const n = v.length;
  const s = ((k % n) + n) % n;
  for (let i = 0, j = s; j < n; i++, j++) out[i] += v[j];
  for (let i = n - s, j = 0; i < n; i++, j++) out[i] += v[j];
}

/**
 * out[i] += m[i] * v[(i + k) mod n]: out += m * rot(v, k), over the mask's nonzero slots only.
 * Skipping a zero product leaves every sum as it was (out starts at +0, and x + (+-0) = x for
 * x != -0), so results are unchanged bit for bit.
 */
function addMaskedRotated(out: Float64Array, m: Float64Array, v: Float64Array, k: number): void {
  const n = v.length;
  const s = ((k % n) + n) % n;
  const wrap = n - s; // slots from here read v from its start
  const runs = nonzeroRuns(m);
  for (let r = 0; r < runs.length; r += 2) {
    const lo = runs[r];
    const hi = runs[r + 1];
    const mid = Math.min(hi, Math.max(lo, wrap));
    for (let i = lo; i < mid; i++) out[i] += m[i] * v[i + s];
    for (let i = mid; i < hi; i++) out[i] += m[i] * v[i + s - n];
  }
}

/**
 * A mask's nonzero slots as [start, end) pairs, computed once per mask. The masks of a dense map
 * spread over many slots are mostly zero (LeNet's: 9% nonzero, in runs of 3 on average; the CNN
 * with three channels: 51%, runs of 91), and compiling simulates each mask for every calibration
 * record of every layout and form it tries (training: every training record). Masks are built
 * before any simulation reads them and never changed after, which is what makes the cache sound.
 */
const runsOfMask = new WeakMap<Float64Array, Int32Array>();
function nonzeroRuns(m: Float64Array): Int32Array {
  const known = runsOfMask.get(m);
  if (known) return known;
  const runs: number[] = [];
  for (let i = 0; i < m.length;) {
    while (i < m.length && m[i] === 0) i++;
    if (i === m.length) break;
    const start = i;
    while (i < m.length && m[i] !== 0) i++;
    runs.push(start, i);
  }
  const out = Int32Array.from(runs);
  runsOfMask.set(m, out);
  return out;
}
