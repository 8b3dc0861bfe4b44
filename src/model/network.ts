// The layer graph of an HE-friendly network, as training exports it, and its plaintext forward
// pass (the reference the compiled CKKS program must reproduce).
//
// Conventions: a single-channel H x W image, row-major. `conv2d-parity` is a 'valid' k x k
// convolution at stride 1 whose filter f is kept only on one 2x2 parity sub-grid: output
// (y, x, f) = conv(2y + a_f, 2x + b_f, f) with a_f = (f >> 1) & 1, b_f = f & 1, so it has the
// size of a stride-2 convolution but costs the same rotations as one stride-1 convolution for
// every four filters. Feature maps flatten as (y * width + x) * filters + f (TensorFlow's NHWC).

export interface Conv2dParity {
  type: 'conv2d-parity';
  /** filters x k x k */
  kernel: number[][][];
  bias: number[];
}

/** a*x^2 + b*x + c, per feature (arrays) or for all features (numbers). */
export interface Quadratic {
  type: 'quadratic';
  a: number | number[];
  b: number | number[];
  c: number | number[];
}

export interface Dense {
  type: 'dense';
  /** outputs x inputs */
  weights: number[][];
  bias: number[];
}

export type Layer = Conv2dParity | Quadratic | Dense;

export interface Network {
  input: { height: number; width: number };
  layers: Layer[];
}

/** Input row and column of output (y, x) of filter f: its parity sub-grid's origin (a_f, b_f). */
export const parityRow = (y: number, f: number) => 2 * y + ((f >> 1) & 1);
export const parityCol = (x: number, f: number) => 2 * x + (f & 1);

export const perFeature = (v: number | number[], j: number) => (typeof v === 'number' ? v : v[j]);

export function convOutputShape(net: Network, conv: Conv2dParity): { height: number; width: number; filters: number } {
  const k = conv.kernel[0].length;
  return { height: Math.floor((net.input.height - k + 1) / 2), width: Math.floor((net.input.width - k + 1) / 2), filters: conv.kernel.length };
}

export function forward(net: Network, image: ArrayLike<number>): number[] {
  let x: number[] = Array.from(image);
  for (const layer of net.layers) {
    if (layer.type === 'conv2d-parity') {
      const { height, width, filters } = convOutputShape(net, layer);
      const k = layer.kernel[0].length;
      const W = net.input.width;
      const out = new Array<number>(height * width * filters);
      for (let y = 0; y < height; y++)
        for (let xx = 0; xx < width; xx++)
          for (let f = 0; f < filters; f++) {
            const Y = parityRow(y, f);
            const X = parityCol(xx, f);
            let s = layer.bias[f];
            for (let dy = 0; dy < k; dy++) for (let dx = 0; dx < k; dx++) s += layer.kernel[f][dy][dx] * x[(Y + dy) * W + X + dx];
            out[(y * width + xx) * filters + f] = s;
          }
      x = out;
    } else if (layer.type === 'quadratic') {
      x = x.map((v, j) => perFeature(layer.a, j) * v * v + perFeature(layer.b, j) * v + perFeature(layer.c, j));
    } else {
      x = layer.weights.map((row, o) => row.reduce((acc, w, j) => acc + w * x[j], layer.bias[o]));
    }
  }
  return x;
}
