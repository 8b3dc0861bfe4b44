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
  let x = input;
  for (const st of p.steps) {
    if (st.op === 'square') {
      x = x.map((v) => v * v);
    } else if (st.op === 'rescale') {
      // Exact on values: only the scale changes.
    } else {
      const babies = new Map<number, Float64Array>([[0, x]]);
      const acc = new Float64Array(x.length);
      const byGiant = new Map<number, { baby: number; mask: number }[]>();
      for (const t of st.terms) byGiant.set(t.giant, [...(byGiant.get(t.giant) ?? []), t]);
      for (const [g, terms] of byGiant) {
        const inner = new Float64Array(x.length);
        for (const t of terms) {
          let r = babies.get(t.baby);
          if (!r) babies.set(t.baby, (r = rotate(x, t.baby)));
          const m = masks[t.mask];
          for (let i = 0; i < inner.length; i++) inner[i] += m[i] * r[i];
        }
        const rg = g === 0 ? inner : rotate(inner, g);
        for (let i = 0; i < acc.length; i++) acc[i] += rg[i];
      }
      let out = acc;
      for (const f of st.folds) {
        const r = rotate(out, f);
        out = out.map((v, i) => v + r[i]);
      }
      if (st.bias !== undefined) {
        const b = masks[st.bias];
        out = out.map((v, i) => v + b[i]);
      }
      x = out;
    }
    if (trace) trace.maxAbs.push(x.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
  }
  return x;
}
