// The first step's rotations done by the client: it encrypts rot(x, d) for every offset d the
// step reads, so the server multiplies and adds without rotating, and needs no Galois key for
// them. Each rotation saved is one at the top level, the dearest (a key switch over every
// prime): for the MNIST MLP 784-128-64-10, 6 of its 30 rotations, 18-19% of its evaluation
// time, for a query of 16 ciphertexts instead of 1. Each copy costs a load and its
// bytes: served, 4 ciphertexts keep 5-10% end to end and 16 nothing. Opt-in
// (CompileOptions.inputCopies): latency for bytes (docs/bring-your-own-model.md).
import type { LinearStep } from '../fhe/program.ts';
import type { BuiltNetwork } from './network-steps.ts';
import { rotate } from './simulate.ts';

/** At most this many rotated copies per input: a section of 64 ciphertexts (bundle.ts refuses more). */
export const MAX_INPUT_ROTATIONS = 63;

/**
 * The network with its first linear step re-split so that every term reads its own copy:
 * sum_g rot(sum_b M[g,b] * rot(x, b), g) = sum_(g,b) rot(M[g,b], g) * rot(x, g + b), giant 0,
 * baby g + b, each offset g + b other than 0 a copy the client sends. When that takes more
 * than `maxCiphertexts` in all, the baby steps alone are sent (the giant steps stay the server's);
 * unchanged (the same object) when neither fits or the step does not rotate before its folds.
 */
export function withInputCopies(built: BuiltNetwork, maxCiphertexts: number): BuiltNetwork {
  const first = built.steps[0];
  if (first?.op !== 'linear') return built;
  const S = built.input.slots;
  const offset = (t: LinearStep['terms'][number]) => (((t.giant + t.baby) % S) + S) % S;
  const most = Math.min(maxCiphertexts, MAX_INPUT_ROTATIONS + 1);
  const { babies, offsets } = copiesOfStep(first, S);
  if (offsets.length + 1 > most) {
    // Too many for every offset: the baby steps alone, where they fit (giant steps stay the server's).
    if (babies.length === 0 || babies.length + 1 > most) return built;
    const step: LinearStep = { ...first, inputRotations: babies };
    return { ...built, steps: [step, ...built.steps.slice(1)], input: { ...built.input, rotations: babies } };
  }
  if (offsets.length === 0) return built;
  const masks = built.masks.slice();
  const terms = first.terms.map((t) => {
    if (t.giant !== 0) masks[t.mask] = rotate(built.masks[t.mask], t.giant);
    return { giant: 0, baby: offset(t), mask: t.mask };
  });
  const step: LinearStep = { ...first, terms, inputRotations: offsets };
  return { ...built, steps: [step, ...built.steps.slice(1)], masks, input: { ...built.input, rotations: offsets } };
}

/** The rotations a step's copies would be: its baby steps, and every offset it reads (giant + baby mod S), 0 left out, increasing. */
export function copiesOfStep(step: LinearStep, S: number): { babies: number[]; offsets: number[] } {
  const sorted = (v: number[]) => [...new Set(v)].filter((d) => d !== 0).sort((a, b) => a - b);
  return { babies: sorted(step.terms.map((t) => t.baby)), offsets: sorted(step.terms.map((t) => (((t.giant + t.baby) % S) + S) % S)) };
}
