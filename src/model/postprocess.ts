// Turning decrypted scores into predictions: shared by the client and by training reports.
import type { ClientPart } from './client-part.ts';
import { deskew } from './deskew.ts';
import { boxedInputs, boxSumsInto, type InputBox } from './input-box.ts';

export interface Prediction {
  label: string | number;
  scores: number[];
  probabilities?: number[];
}

export function postprocess(c: Pick<ClientPart, 'postprocess' | 'labels' | 'task'>, scores: number[]): Prediction {
  const p = c.postprocess;
  if (p.kind === 'sigmoid') {
    const prob = 1 / (1 + Math.exp(-scores[0]));
    const cls = prob >= 0.5 ? 1 : 0;
    return { label: c.labels?.[cls] ?? cls, scores, probabilities: [1 - prob, prob] };
  }
  if (p.kind === 'softmax') {
    const max = Math.max(...scores);
    const e = scores.map((s) => Math.exp(s - max));
    const sum = e.reduce((a, b) => a + b, 0);
    const probs = e.map((v) => v / sum);
    const cls = probs.indexOf(Math.max(...probs));
    return { label: c.labels?.[cls] ?? cls, scores, probabilities: probs };
  }
  return { label: scores[0] * (p.std ?? 1) + (p.mean ?? 0), scores };
}

/** Class index (binary, multiclass) of a prediction, for accuracy. */
export function classOf(c: Pick<ClientPart, 'postprocess'>, scores: number[]): number {
  if (c.postprocess.kind === 'sigmoid') return scores[0] >= 0 ? 1 : 0;
  return scores.indexOf(Math.max(...scores));
}

export function standardise(row: ArrayLike<number>, pre: ClientPart['preprocess']): number[] {
  return Array.from(row, (v, j) => (v - pre.mean[j]) / pre.std[j]);
}

/** Everything the client does to a raw record before packing it: deskew (images), standardise. */
export function preprocessRecord(row: ArrayLike<number>, part: Pick<ClientPart, 'preprocess' | 'image'>): number[] {
  return standardise(part.image?.deskew ? deskew(row, part.image.side) : row, part.preprocess);
}

/**
 * preprocessRecord of every row, each value times `factors[j]` when given (batch mode's input
 * factors), written to `out` (rows x features, row-major), or their box sums (rows x
 * boxedInputs) with `box` (batch mode's input box, input-box.ts). The same values, with no array per
 * record: a full batch query of MNIST made 1.4 GB of them, ~0.9 s of the client's main thread
 * before its first ciphertext (session 54).
 */
export function preprocessRowsInto(
  rows: ArrayLike<number>[],
  part: Pick<ClientPart, 'preprocess' | 'image'>,
  factors: number[] | undefined,
  out: Float64Array,
  box?: InputBox,
): void {
  const { mean, std } = part.preprocess;
  // With `box`, each record's features go through one scratch row and out gets their box sums.
  const row = box ? new Float64Array(mean.length) : out;
  let o = 0;
  for (const raw of rows) {
    const r = part.image?.deskew ? deskew(raw, part.image.side) : raw;
    let at = box ? 0 : o;
    for (let j = 0; j < r.length; j++) {
      const x = (r[j] - mean[j]) / std[j];
      row[at++] = factors ? x * factors[j] : x;
    }
    if (box) {
      boxSumsInto(row, box, out, o);
      o += boxedInputs(box);
    } else o = at;
  }
}
