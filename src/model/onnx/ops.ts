// Plaintext reference of the linear ONNX operators, on "affine values": a tensor that is an
// affine function of the current segment's input, held as rows (row 0: its value at input 0;
// row k + 1: how it changes along input k). Pushing the basis through the operators this way
// materialises every chain of linear operators as one matrix (lower.ts). Constants (Add, Sub of
// a constant, biases) act on row 0 only; scalings act on every row.
/* eslint-disable max-lines -- Over 300 lines on purpose: one short reference per operator, kept in
   one file so that the affine-rows convention above is stated and applied in one place. */
import { SealedError } from '../../errors.ts';
import type { OnnxNode, Tensor } from './graph.ts';

export interface Affine {
  shape: number[];
  rows: Float64Array[];
}

export const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export function refuse(node: OnnxNode, why: string, what: string): never {
  throw new SealedError('bad-data', `node ${node.name} (${node.op}): ${why}`, what);
}

const ints = (node: OnnxNode, key: string, dflt: number[]): number[] => {
  const v = node.attrs[key];
  return Array.isArray(v) ? (v as number[]) : dflt;
};
const int = (node: OnnxNode, key: string, dflt: number): number => (typeof node.attrs[key] === 'number' ? (node.attrs[key] as number) : dflt);
const float = int;

const mapRows = (x: Affine, shape: number[], f: (row: Float64Array, isOffset: boolean) => Float64Array): Affine => ({
  shape,
  rows: x.rows.map((r, i) => f(r, i === 0)),
});

/** Output shape and, for each operand, the index of each output element (numpy broadcasting). */
function broadcast(a: number[], b: number[]): { shape: number[]; ia: Int32Array; ib: Int32Array } {
  const n = Math.max(a.length, b.length);
  const pa = [...Array<number>(n - a.length).fill(1), ...a];
  const pb = [...Array<number>(n - b.length).fill(1), ...b];
  const shape = pa.map((d, k) => {
    if (d !== pb[k] && d !== 1 && pb[k] !== 1) throw new Error(`shapes ${a.join('x')} and ${b.join('x')} do not broadcast`);
    return Math.max(d, pb[k]);
  });
  const size = sizeOf(shape);
  const ia = new Int32Array(size);
  const ib = new Int32Array(size);
  const idx = new Array<number>(n).fill(0);
  for (let o = 0; o < size; o++) {
    let oa = 0,
      ob = 0;
    for (let k = 0; k < n; k++) {
      oa = oa * pa[k] + (pa[k] === 1 ? 0 : idx[k]);
      ob = ob * pb[k] + (pb[k] === 1 ? 0 : idx[k]);
    }
    ia[o] = oa;
    ib[o] = ob;
    for (let k = n - 1; k >= 0; k--) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
  return { shape, ia, ib };
}

/** Elementwise op between an affine value and a constant (Add, Sub, Mul, Div), either order. */
export function withConstant(node: OnnxNode, x: Affine, c: Tensor, constantFirst: boolean): Affine {
  let b: ReturnType<typeof broadcast>;
  try {
    b = constantFirst ? swap(broadcast(c.dims, x.shape)) : broadcast(x.shape, c.dims);
  } catch (e) {
    return refuse(node, (e as Error).message, 'check the exported shapes');
  }
  const op = node.op;
  if (op === 'Div' && constantFirst) refuse(node, 'divides a constant by the input, which is not a polynomial', 'divide by constants only');
  return mapRows(x, b.shape, (r, isOffset) => {
    const out = new Float64Array(b.ia.length);
    for (let o = 0; o < out.length; o++) {
      const v = r[b.ia[o]],
        k = c.data[b.ib[o]];
      if (op === 'Mul') out[o] = v * k;
      else if (op === 'Div') out[o] = v / k;
      else if (op === 'Add') out[o] = isOffset ? v + k : v;
      else out[o] = constantFirst ? (isOffset ? k - v : -v) : isOffset ? v - k : v; // Sub
    }
    return out;
  });
}

function swap(b: ReturnType<typeof broadcast>) {
  return { shape: b.shape, ia: b.ib, ib: b.ia };
}

/** Add or Sub of two affine values of the same input. */
export function addAffine(node: OnnxNode, x: Affine, y: Affine, sign: number): Affine {
  let b: ReturnType<typeof broadcast>;
  try {
    b = broadcast(x.shape, y.shape);
  } catch (e) {
    return refuse(node, (e as Error).message, 'check the exported shapes');
  }
  return { shape: b.shape, rows: x.rows.map((r, i) => Float64Array.from({ length: b.ia.length }, (_, o) => r[b.ia[o]] + sign * y.rows[i][b.ib[o]])) };
}

/** y = x @ B (+ C) with x of shape [..., K] and B constant [K, N]. */
function matmul(x: Affine, B: Float64Array, K: number, N: number, transB: boolean, scale: number, bias?: (o: number) => number): Affine {
  const lead = x.shape.slice(0, -1);
  const M = sizeOf(lead);
  return mapRows(x, [...lead, N], (r, isOffset) => {
    const out = new Float64Array(M * N);
    for (let m = 0; m < M; m++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += r[m * K + k] * (transB ? B[j * K + k] : B[k * N + j]);
        out[m * N + j] = scale * s + (isOffset && bias ? bias(m * N + j) : 0);
      }
    return out;
  });
}

export function gemm(node: OnnxNode, x: Affine, B: Tensor, C: Tensor | undefined): Affine {
  if (int(node, 'transA', 0) !== 0) refuse(node, 'transA=1 on the input', 'export without transposing the input');
  if (x.shape.length !== 2) refuse(node, `input of rank ${x.shape.length}`, 'flatten before Gemm');
  const transB = int(node, 'transB', 0) !== 0;
  const [K, N] = transB ? [B.dims[1], B.dims[0]] : [B.dims[0], B.dims[1]];
  if (K !== x.shape[1]) refuse(node, `takes ${K} inputs but receives ${x.shape[1]}`, 'check the exported shapes');
  const alpha = float(node, 'alpha', 1),
    beta = float(node, 'beta', 1);
  let bias: ((o: number) => number) | undefined;
  if (C) {
    const b = broadcast([x.shape[0], N], C.dims);
    bias = (o) => beta * C.data[b.ib[o]];
  }
  return matmul(x, B.data, K, N, transB, alpha, bias);
}

export function matMul(node: OnnxNode, x: Affine, B: Tensor): Affine {
  if (B.dims.length !== 2) refuse(node, `a constant operand of rank ${B.dims.length}`, 'use a 2-D weight matrix');
  if (x.shape[x.shape.length - 1] !== B.dims[0])
    refuse(node, `takes ${B.dims[0]} inputs but receives ${x.shape[x.shape.length - 1]}`, 'check the exported shapes');
  return matmul(x, B.data, B.dims[0], B.dims[1], false, 1);
}

/** 2-D spatial geometry of Conv and AveragePool: output size and pads, from the attributes. */
function geometry(node: OnnxNode, H: number, W: number, kh: number, kw: number) {
  const [sh, sw] = ints(node, 'strides', [1, 1]);
  const [dh, dw] = ints(node, 'dilations', [1, 1]);
  let [pt, pl, pb, pr] = ints(node, 'pads', [0, 0, 0, 0]);
  const auto = node.attrs.auto_pad as string | undefined;
  const ekh = (kh - 1) * dh + 1,
    ekw = (kw - 1) * dw + 1;
  if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    const oh = Math.ceil(H / sh),
      ow = Math.ceil(W / sw);
    const ph = Math.max(0, (oh - 1) * sh + ekh - H),
      pw = Math.max(0, (ow - 1) * sw + ekw - W);
    const lower = auto === 'SAME_LOWER';
    [pt, pb] = lower ? [Math.ceil(ph / 2), Math.floor(ph / 2)] : [Math.floor(ph / 2), Math.ceil(ph / 2)];
    [pl, pr] = lower ? [Math.ceil(pw / 2), Math.floor(pw / 2)] : [Math.floor(pw / 2), Math.ceil(pw / 2)];
  } else if (auto === 'VALID') [pt, pl, pb, pr] = [0, 0, 0, 0];
  if (int(node, 'ceil_mode', 0) !== 0) refuse(node, 'ceil_mode=1', 'use ceil_mode=0 (floor), the default');
  const OH = Math.floor((H + pt + pb - ekh) / sh) + 1;
  const OW = Math.floor((W + pl + pr - ekw) / sw) + 1;
  if (OH < 1 || OW < 1) refuse(node, 'an empty output', 'check kernel, stride and padding');
  return { sh, sw, dh, dw, pt, pl, OH, OW };
}

export function conv(node: OnnxNode, x: Affine, Wt: Tensor, B: Tensor | undefined): Affine {
  if (x.shape.length !== 4 || Wt.dims.length !== 4) refuse(node, `a ${x.shape.length - 2}-D convolution`, 'use 2-D convolutions (NCHW)');
  const [, C, H, W] = x.shape;
  const [M, Cg, kh, kw] = Wt.dims;
  const group = int(node, 'group', 1);
  if (Cg * group !== C || M % group !== 0)
    refuse(node, `weights ${Wt.dims.join('x')} with group ${group} do not fit ${C} input channels`, 'check the exported shapes');
  const g = geometry(node, H, W, kh, kw);
  const Mg = M / group;
  // Scattered from each nonzero input: the rows after an activation are basis vectors, so this
  // costs one kernel per row where gathering every output costs the whole convolution (2.9 s of
  // the 17.3 s compiling the LeNet and cnn3 fixtures took before, in a CPU profile).
  const plane = H * W;
  return mapRows(x, [1, M, g.OH, g.OW], (r, isOffset) => {
    const out = new Float64Array(M * g.OH * g.OW);
    if (isOffset && B) for (let m = 0; m < M; m++) out.fill(B.data[m], m * g.OH * g.OW, (m + 1) * g.OH * g.OW);
    for (let i = 0; i < r.length; i++) {
      const v = r[i];
      if (v === 0) continue;
      const ci = Math.floor(i / plane),
        iy = Math.floor((i % plane) / W),
        ix = i % W;
      const grp = Math.floor(ci / Cg),
        c = ci - grp * Cg;
      for (let ky = 0; ky < kh; ky++) {
        const ny = iy + g.pt - ky * g.dh;
        if (ny < 0 || ny % g.sh !== 0 || ny / g.sh >= g.OH) continue;
        const oy = ny / g.sh;
        for (let kx = 0; kx < kw; kx++) {
          const nx = ix + g.pl - kx * g.dw;
          if (nx < 0 || nx % g.sw !== 0 || nx / g.sw >= g.OW) continue;
          const ox = nx / g.sw;
          for (let m = grp * Mg; m < (grp + 1) * Mg; m++) out[(m * g.OH + oy) * g.OW + ox] += Wt.data[((m * Cg + c) * kh + ky) * kw + kx] * v;
        }
      }
    }
    return out;
  });
}

export function averagePool(node: OnnxNode, x: Affine, global: boolean): Affine {
  if (x.shape.length !== 4) refuse(node, `a ${x.shape.length - 2}-D pooling`, 'use 2-D pooling (NCHW)');
  const [, C, H, W] = x.shape;
  const [kh, kw] = global ? [H, W] : ints(node, 'kernel_shape', [1, 1]);
  const g = global ? { sh: 1, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0, OH: 1, OW: 1 } : geometry(node, H, W, kh, kw);
  const includePad = int(node, 'count_include_pad', 0) !== 0;
  return mapRows(x, [1, C, g.OH, g.OW], (r) => {
    const out = new Float64Array(C * g.OH * g.OW);
    for (let c = 0; c < C; c++)
      for (let oy = 0; oy < g.OH; oy++)
        for (let ox = 0; ox < g.OW; ox++) {
          let s = 0,
            n = 0;
          for (let ky = 0; ky < kh; ky++)
            for (let kx = 0; kx < kw; kx++) {
              const iy = oy * g.sh - g.pt + ky,
                ix = ox * g.sw - g.pl + kx;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                if (includePad) n++;
                continue;
              }
              s += r[(c * H + iy) * W + ix];
              n++;
            }
          out[(c * g.OH + oy) * g.OW + ox] = s / n;
        }
    return out;
  });
}

/** Inference-mode batch normalization: a per-channel scale and shift (channel = dimension 1). */
export function batchNorm(node: OnnxNode, x: Affine, scale: Tensor, bias: Tensor, mean: Tensor, variance: Tensor): Affine {
  const eps = float(node, 'epsilon', 1e-5);
  const C = x.shape[1];
  const inner = sizeOf(x.shape.slice(2));
  const k = Float64Array.from({ length: C }, (_, c) => scale.data[c] / Math.sqrt(variance.data[c] + eps));
  return mapRows(x, x.shape, (r, isOffset) =>
    Float64Array.from(r, (v, i) => {
      const c = Math.floor(i / inner) % C;
      return v * k[c] + (isOffset ? bias.data[c] - mean.data[c] * k[c] : 0);
    }),
  );
}

export function transpose(node: OnnxNode, x: Affine): Affine {
  const n = x.shape.length;
  const perm = ints(
    node,
    'perm',
    Array.from({ length: n }, (_, k) => n - 1 - k),
  );
  const shape = perm.map((p) => x.shape[p]);
  const stridesIn = x.shape.map((_, k) => sizeOf(x.shape.slice(k + 1)));
  const size = sizeOf(shape);
  const from = new Int32Array(size);
  const idx = new Array<number>(n).fill(0);
  for (let o = 0; o < size; o++) {
    from[o] = idx.reduce((acc, v, k) => acc + v * stridesIn[perm[k]], 0);
    for (let k = n - 1; k >= 0; k--) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
  return mapRows(x, shape, (r) => Float64Array.from(from, (i) => r[i]));
}

/** Reshape, Flatten, Squeeze, Unsqueeze: the data stays, the shape changes. */
export function reshape(node: OnnxNode, x: Affine, shapeArg: Tensor | undefined): Affine {
  const n = sizeOf(x.shape);
  let shape: number[];
  if (node.op === 'Flatten') {
    let axis = int(node, 'axis', 1);
    if (axis < 0) axis += x.shape.length;
    shape = [sizeOf(x.shape.slice(0, axis)), sizeOf(x.shape.slice(axis))];
  } else if (node.op === 'Reshape') {
    if (!shapeArg) refuse(node, 'a shape computed from the input', 'export with a constant target shape (torch: x.flatten(1) or nn.Flatten)');
    shape = Array.from(shapeArg.data, (d, k) => (d === 0 && int(node, 'allowzero', 0) === 0 ? x.shape[k] : d));
    const known = sizeOf(shape.filter((d) => d !== -1));
    shape = shape.map((d) => (d === -1 ? n / known : d));
  } else {
    const axes = shapeArg ? Array.from(shapeArg.data) : ints(node, 'axes', []);
    if (node.op === 'Squeeze') {
      const norm = axes.map((a) => (a < 0 ? a + x.shape.length : a));
      shape = x.shape.filter((d, k) => (axes.length ? !norm.includes(k) : d !== 1));
    } else {
      const rank = x.shape.length + axes.length;
      const norm = axes.map((a) => (a < 0 ? a + rank : a));
      shape = [];
      let j = 0;
      for (let k = 0; k < rank; k++) shape.push(norm.includes(k) ? 1 : x.shape[j++]);
    }
  }
  if (sizeOf(shape) !== n || shape.some((d) => !Number.isInteger(d) || d < 0))
    refuse(node, `cannot reshape ${x.shape.join('x')} to ${shape.join('x')}`, 'check the exported shapes');
  return { shape, rows: x.rows };
}

/** ai.onnx.ml Scaler: (x - offset) * scale, per feature or one for all. */
export function scaler(node: OnnxNode, x: Affine): Affine {
  const offset = (node.attrs.offset as number[] | undefined) ?? [0];
  const scale = (node.attrs.scale as number[] | undefined) ?? [1];
  const C = x.shape[x.shape.length - 1];
  const at = (v: number[], i: number) => v[v.length === 1 ? 0 : i % C];
  return mapRows(x, x.shape, (r, isOffset) => Float64Array.from(r, (v, i) => (v - (isOffset ? at(offset, i) : 0)) * at(scale, i)));
}

/** The scores of ai.onnx.ml LinearClassifier / LinearRegressor: coefficients (rows x n) and intercepts. */
export function linearScores(node: OnnxNode, x: Affine, rowsKey: 'classlabels' | 'targets'): Affine {
  const coef = (node.attrs.coefficients as number[] | undefined) ?? [];
  const icpt = (node.attrs.intercepts as number[] | undefined) ?? [];
  const n = x.shape[x.shape.length - 1];
  const R = coef.length / n;
  if (!Number.isInteger(R) || R < 1) refuse(node, `${coef.length} coefficients for ${n} features`, 'check the exporter');
  if (rowsKey === 'targets' && int(node, 'targets', 1) !== R)
    refuse(node, `${R} coefficient rows for ${int(node, 'targets', 1)} targets`, 'check the exporter');
  // Coefficients are row-major (row r, feature j) = B^T: a Gemm with transB.
  return matmul(x, Float64Array.from(coef), n, R, true, 1, (o) => icpt[o % R] ?? 0);
}

/** Pad, mode constant: padded positions hold the constant (on the offset row; 0 elsewhere). */
export function pad(node: OnnxNode, x: Affine, pads: Tensor, value: Tensor | undefined): Affine {
  const mode = (node.attrs.mode as string | undefined) ?? 'constant';
  if (mode !== 'constant') refuse(node, `padding mode ${mode}`, 'use constant (zero) padding');
  const n = x.shape.length;
  const p = Array.from(pads.data);
  if (p.length !== 2 * n || p.some((v) => v < 0)) refuse(node, `pads ${p.join(',')} for rank ${n}`, 'use non-negative pads, one pair per dimension');
  const shape = x.shape.map((d, k) => d + p[k] + p[k + n]);
  const c = value?.data[0] ?? 0;
  const size = sizeOf(shape);
  const from = new Int32Array(size).fill(-1);
  const idx = new Array<number>(n).fill(0);
  const stridesIn = x.shape.map((_, k) => sizeOf(x.shape.slice(k + 1)));
  for (let o = 0; o < size; o++) {
    let src = 0;
    for (let k = 0; k < n && src >= 0; k++) {
      const i = idx[k] - p[k];
      src = i < 0 || i >= x.shape[k] ? -1 : src + i * stridesIn[k];
    }
    from[o] = src;
    for (let k = n - 1; k >= 0; k--) {
      if (++idx[k] < shape[k]) break;
      idx[k] = 0;
    }
  }
  return mapRows(x, shape, (r, isOffset) => Float64Array.from(from, (i) => (i >= 0 ? r[i] : isOffset ? c : 0)));
}
