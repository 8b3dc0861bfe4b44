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

/** Records preprocessed per pass of preprocessColumnsInto: their values are then written column by column. */
const BLOCK = 64;

/**
 * preprocessRecord of every row, each value times `factors[j]` when given (batch mode's input
 * factors), or their box sums with `box` (batch mode's input box, input-box.ts), written column by
 * column: input j of record r at out[j * stride + r] (stride >= rows). The encryption threads then
 * read each column as it lies (ciphertext j holds input j of every record), where reading it out
 * of a row-major matrix touched a new page per record: ~2.5 s of their CPU per LeNet batch
 * (16,384 records x 729 inputs, --cpu-prof). Records go through a small row-major block first,
 * so the writes are runs of up to 64 values per column. No array per record: a full batch
 * query of MNIST made 1.4 GB of them, ~0.9 s of the client's main thread (session 54).
 */
export function preprocessColumnsInto(
  rows: ArrayLike<number>[],
  part: Pick<ClientPart, 'preprocess' | 'image'>,
  factors: number[] | undefined,
  out: Float64Array,
  stride: number,
  box?: InputBox,
): void {
  const { mean, std } = part.preprocess;
  const width = box ? boxedInputs(box) : mean.length;
  if (rows.length > stride || (width - 1) * stride + rows.length > out.length)
    throw new RangeError('preprocessColumnsInto: the records do not fit the columns');
  // With `box`, each record's values go through this row and the block gets their box sums.
  const row = box ? new Float64Array(mean.length) : undefined;
  const block = new Float64Array(BLOCK * width);
  for (let r0 = 0; r0 < rows.length; r0 += BLOCK) {
    const n = Math.min(BLOCK, rows.length - r0);
    for (let b = 0; b < n; b++) {
      const raw = rows[r0 + b];
      const r = part.image?.deskew ? deskew(raw, part.image.side) : raw;
      // Without a box the record's values are its inputs, straight into the block.
      const dst = row ?? block.subarray(b * width, (b + 1) * width);
      for (let j = 0; j < r.length; j++) {
        const x = (r[j] - mean[j]) / std[j];
        dst[j] = factors ? x * factors[j] : x;
      }
      if (box) boxSumsInto(dst, box, block, b * width);
    }
    for (let j = 0; j < width; j++) {
      const at = j * stride + r0;
      for (let b = 0; b < n; b++) out[at + b] = block[b * width + j];
    }
  }
}
