// The 2x2 box prefilter of batch mode's inputs. A convolution followed by 2x2 average pooling
// (LeNet, CryptoNets) is one convolution with a (k+1)x(k+1) kernel at stride 2, which is the
// k x k one applied to the 2x2 box sums of the image. The client, which holds the image in
// plaintext, sums the boxes before encrypting: LeNet's query is then 729 ciphertexts instead of
// 784, and each of the first layer's 576 rows sums 25 products instead of 36. The client part
// says only that the first layer pools 2x2 (its shape), nothing of its weights.
import type { InputBox } from '../fhe/batch-plan.ts';

/** Sparse affine rows (batch-shape.ts's Affine): row j's taps are start[j] .. start[j+1]-1. */
interface Rows {
  rows: number;
  start: number[];
  index: number[];
  weight: number[];
  bias: number[];
}

export type { InputBox };

/** Inputs after the prefilter: (H - 1) x (W - 1) box sums per channel. */
export const boxedInputs = (b: InputBox) => b.channels * (b.height - 1) * (b.width - 1);

/** The box sums of `x` (channels x height x width, row-major) into `out` from `at`, in the same order. */
export function boxSumsInto(x: ArrayLike<number>, b: InputBox, out: Float64Array | number[], at: number): void {
  const { height: H, width: W } = b;
  let o = at;
  for (let c = 0; c < b.channels; c++) {
    const base = c * H * W;
    for (let y = 0; y + 1 < H; y++) {
      const r0 = base + y * W;
      const r1 = r0 + W;
      for (let x0 = 0; x0 + 1 < W; x0++) out[o++] = x[r0 + x0] + x[r0 + x0 + 1] + x[r1 + x0] + x[r1 + x0 + 1];
    }
  }
}

export function boxSums(x: ArrayLike<number>, b: InputBox): number[] {
  const out = new Array<number>(boxedInputs(b));
  boxSumsInto(x, b, out, 0);
  return out;
}

/** Relative size below which a recovered weight is a rounding residue of 0. */
const ZERO = 1e-12;
/** Largest error, relative to the row's largest weight, of an exact factorization (float64 rounding). */
const EXACT = 1e-9;

/**
 * The first layer over the box sums, when every row of `first` (over channels x height x width
 * inputs) is a row k over the box sums: w = k * box, i.e. w[y][x] = k[y][x] + k[y-1][x] +
 * k[y][x-1] + k[y-1][x-1] (k zero outside). Undefined when a row does not factor, or the rows
 * would not have fewer taps in all.
 */
export function factorBox(first: Rows, b: InputBox): Rows | undefined {
  const { channels: C, height: H, width: W } = b;
  const n = C * H * W;
  const w = new Float64Array(n);
  const k = new Float64Array(boxedInputs(b));
  const out: Rows = { rows: first.rows, start: [0], index: [], weight: [], bias: [...first.bias] };
  for (let j = 0; j < first.rows; j++) {
    w.fill(0);
    let top = 0;
    for (let t = first.start[j]; t < first.start[j + 1]; t++) {
      if (first.index[t] >= n) return undefined;
      w[first.index[t]] = first.weight[t];
      top = Math.max(top, Math.abs(first.weight[t]));
    }
    // k from the top-left corner down: each w[y][x] with y < H-1, x < W-1 fixes k[y][x].
    const K = (c: number, y: number, x: number) => (y < 0 || x < 0 || y >= H - 1 || x >= W - 1 ? 0 : k[(c * (H - 1) + y) * (W - 1) + x]);
    for (let c = 0; c < C; c++)
      for (let y = 0; y + 1 < H; y++)
        for (let x = 0; x + 1 < W; x++) {
          const v = w[(c * H + y) * W + x] - K(c, y - 1, x) - K(c, y, x - 1) - K(c, y - 1, x - 1);
          k[(c * (H - 1) + y) * (W - 1) + x] = Math.abs(v) <= ZERO * top ? 0 : v;
        }
    // The factorization holds only if k * box gives back every weight, the last row and column included.
    for (let c = 0; c < C; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          const v = K(c, y, x) + K(c, y - 1, x) + K(c, y, x - 1) + K(c, y - 1, x - 1);
          if (Math.abs(v - w[(c * H + y) * W + x]) > EXACT * top) return undefined;
        }
    k.forEach((v, i) => {
      if (v === 0) return;
      out.index.push(i);
      out.weight.push(v);
    });
    out.start.push(out.index.length);
  }
  return out.index.length < first.index.length ? out : undefined;
}
