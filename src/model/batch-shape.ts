// The network as batch mode computes it (batch-plan.ts): its first layer as sparse affine rows
// (a convolution's windows or a dense layer's columns), and each quadratic activation folded
// into a pure square between the layers around it. compile-batch.ts quantizes and sizes it.
import { SealedError } from '../errors.ts';
import { MAX_TAPS } from '../fhe/kernel-limits.ts';
import { factorBox, type InputBox } from './input-box.ts';
import { convOutputShape, parityCol, parityRow, perFeature, type Network } from './network.ts';

export interface Affine {
  rows: number;
  start: number[];
  index: number[];
  weight: number[];
  bias: number[];
}

function firstAffine(net: Network, factors?: number[]): Affine {
  const layer = net.layers[0];
  const start = [0];
  const index: number[] = [];
  const weight: number[] = [];
  if (layer.type === 'conv2d-parity') {
    const { height, width, filters } = convOutputShape(net, layer);
    const k = layer.kernel[0].length;
    const W = net.input.width;
    const bias: number[] = [];
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++)
        for (let f = 0; f < filters; f++) {
          const Y = parityRow(y, f);
          const X = parityCol(x, f);
          for (let dy = 0; dy < k; dy++)
            for (let dx = 0; dx < k; dx++) {
              const w = layer.kernel[f][dy][dx];
              if (w === 0) continue;
              index.push((Y + dy) * W + X + dx);
              weight.push(w);
            }
          start.push(index.length);
          bias.push(layer.bias[f]);
        }
    return { rows: height * width * filters, start, index, weight, bias };
  }
  if (layer.type === 'dense') {
    for (const row of layer.weights) {
      row.forEach((w, i) => {
        if (w !== 0) {
          index.push(i);
          weight.push(factors ? w / factors[i] : w);
        }
      });
      start.push(index.length);
    }
    return { rows: layer.weights.length, start, index, weight, bias: [...layer.bias] };
  }
  throw new SealedError('bad-data', 'batch mode needs a network that starts with a convolution or dense layer');
}

/** Why a network has no batch plan, or undefined when it has one. */
export function batchUnsupported(net: Network): string | undefined {
  const types = net.layers.map((l) => l.type).join(',');
  // Up to three squares: results of up to nine polynomials (the client's re-randomization key
  // and SEAL's decryption take the secret key's powers up to s^8).
  if (/^(conv2d-parity|dense)(,quadratic,dense){0,3}$/.test(types)) return undefined;
  return `layers ${types}: batch mode handles conv|dense, then quadratic, dense up to three times`;
}

export interface Dense {
  rows: number;
  weight: number[];
  bias: number[];
}

export interface Shape {
  first: Affine;
  /** Set when `first` is over the 2x2 box sums of an image of this shape (input-box.ts), with the weights it had before. */
  inputBox?: InputBox;
  unboxedWeights?: number[];
  /** Each squares the values of the layer before it (the first, then these in order). */
  later: Dense[];
}

/** The network as batch mode computes it: one sparse affine layer, then squares and dense layers. */
export function batchShape(net: Network, factors?: number[]): Shape | undefined {
  const first = firstAffine(net, factors);
  // The kernel sums a row's products unreduced, exactly only up to MAX_TAPS of them (kernel-limits.ts).
  for (let j = 0; j < first.rows; j++) if (first.start[j + 1] - first.start[j] > MAX_TAPS) return undefined;
  const later: Dense[] = [];
  for (let i = 1; i < net.layers.length; i += 2) {
    const layer = foldSquare(net.layers[i], net.layers[i + 1], later.at(-1) ?? first);
    if (!layer) return undefined;
    later.push(layer);
  }
  return { first, later };
}

/**
 * The quadratic activation `act` on the rows of `before`, then the dense layer `dense`, as a pure
 * square and a dense layer: a x^2 + b x + c = a (x + b/2a)^2 + (c - b^2/4a), so the shift joins
 * the bias of `before` (changed in place), a and the constant join the dense layer.
 */
function foldSquare(act: Network['layers'][number], dense: Network['layers'][number], before: { rows: number; bias: number[] }): Dense | undefined {
  if (act.type !== 'quadratic' || dense.type !== 'dense') return undefined;
  const weight: number[] = [];
  const bias = [...dense.bias];
  for (let j = 0; j < before.rows; j++) {
    const a = perFeature(act.a, j),
      b = perFeature(act.b, j),
      c = perFeature(act.c, j);
    if (a === 0) return undefined;
    before.bias[j] += b / (2 * a);
    const constant = c - (b * b) / (4 * a);
    dense.weights.forEach((row, o) => {
      bias[o] += row[j] * constant;
    });
  }
  for (const row of dense.weights) for (let j = 0; j < before.rows; j++) weight.push(row[j] * perFeature(act.a, j));
  return { rows: dense.weights.length, weight, bias };
}

/**
 * Per-input factors (powers of two) that bring every input of a dense first layer to about
 * [-1, 1] on the samples. The kernel's weights are integers of at most 15 bits at one scale per
 * layer; when a Scaler is merged into a linear model, a feature that reaches 2,500 gets a weight
 * of 0.0014 next to 240 for one that stays below 0.03, and rounding to the layer's scale loses
 * the small ones. With factors the client multiplies input j by f_j before encryption and column
 * j's weights are divided by it (the product is unchanged). They come from the samples, not the
 * weights: the client part then tells the client each feature's range on the calibration
 * records to within a factor of 2, and nothing about the model. Undefined when every factor
 * would be 1, the first layer is a convolution, or it sums 2x2 boxes of `image` (then the
 * client encrypts the box sums instead: input-box.ts).
 */
export function batchInputFactors(net: Network, samples: ArrayLike<number>[], image?: InputBox): number[] | undefined {
  if (net.layers[0]?.type !== 'dense') return undefined;
  if (image && factorBox(firstAffine(net), image)) return undefined;
  const n = net.input.height * net.input.width;
  const range = new Array<number>(n).fill(0);
  for (const x of samples) for (let j = 0; j < n; j++) range[j] = Math.max(range[j], Math.abs(x[j]));
  const f = range.map((r) => (r > 0 && Number.isFinite(r) ? 2 ** -Math.ceil(Math.log2(r)) : 1));
  return f.some((v) => v !== 1) ? f : undefined;
}
