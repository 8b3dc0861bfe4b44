// Nonlinear activations: their exact plaintext meaning, and their replacement under encryption
// by a x^2 + b x + c per neuron, fitted by least squares on the values the calibration data
// produces at that neuron. Degree 2 is what one `square` step computes (compile-network folds
// b and c into the neighbouring linear steps), so every activation costs one level.
import { perFeature, type Quadratic } from '../network.ts';

export type ActivationKind = 'square' | 'relu' | 'leaky-relu' | 'sigmoid' | 'tanh' | 'softplus' | 'gelu';

export interface Activation {
  kind: ActivationKind;
  /** LeakyRelu's slope. */
  alpha?: number;
  /** The ONNX node, for the report. */
  node: string;
}

const erf = (x: number) => {
  // Abramowitz-Stegun 7.1.26 is 1.5e-7 accurate: below float32 onnxruntime's own error.
  const s = Math.sign(x),
    a = Math.abs(x),
    t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
};

export function applyActivation(a: Activation, x: number): number {
  switch (a.kind) {
    case 'square':
      return x * x;
    case 'relu':
      return Math.max(0, x);
    case 'leaky-relu':
      return x >= 0 ? x : (a.alpha ?? 0.01) * x;
    case 'sigmoid':
      return 1 / (1 + Math.exp(-x));
    case 'tanh':
      return Math.tanh(x);
    case 'softplus':
      return x > 30 ? x : Math.log1p(Math.exp(x));
    case 'gelu':
      return 0.5 * x * (1 + erf(x / Math.SQRT2));
  }
}

export interface FitReport {
  node: string;
  kind: ActivationKind;
  degree: 2;
  /** The range of the calibration values over all neurons of the layer. */
  range: [number, number];
  /** Root-mean-square and largest error of the fit on the calibration values. */
  rmse: number;
  maxError: number;
  exact: boolean;
}

/**
 * Fits a x^2 + b x + c to the activation, neuron by neuron, on `values` (calibration records x
 * neurons). |a| is kept at least a tenth of the layer's mean |a| and large enough that the vertex
 * -b/2a stays within 8 times the range: compile-network folds b/2a into the previous bias, and a
 * tiny a would make that shift, and the squared values, huge.
 */
export function fitQuadratic(act: Activation, values: Float64Array[]): { layer: Quadratic; report: FitReport } {
  const n = values[0]?.length ?? 0;
  let lo = Infinity,
    hi = -Infinity;
  for (const v of values)
    for (const x of v) {
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
    }
  if (act.kind === 'square')
    return {
      layer: { type: 'quadratic', a: 1, b: 0, c: 0 },
      report: { node: act.node, kind: act.kind, degree: 2, range: [lo, hi], rmse: 0, maxError: 0, exact: true },
    };
  const fits: [number, number, number][] = [];
  const r = Math.max(1e-6, Math.abs(lo), Math.abs(hi));
  for (let j = 0; j < n; j++)
    fits.push(
      leastSquares(
        act,
        values.map((v) => v[j]),
        undefined,
        r,
      ),
    );
  const meanA = fits.reduce((s, f) => s + Math.abs(f[0]), 0) / Math.max(1, n);
  const a = new Array<number>(n),
    b = new Array<number>(n),
    c = new Array<number>(n);
  for (let j = 0; j < n; j++) {
    let [fa, fb, fc] = fits[j];
    const floor = Math.max(0.1 * meanA, 1e-4 / r, Math.abs(fb) / (16 * r));
    if (Math.abs(fa) < floor)
      [fa, fb, fc] = leastSquares(
        act,
        values.map((v) => v[j]),
        fa < 0 ? -floor : floor,
        r,
      );
    a[j] = fa;
    b[j] = fb;
    c[j] = fc;
  }
  const layer: Quadratic = { type: 'quadratic', a, b, c };
  return { layer, report: { node: act.node, kind: act.kind, degree: 2, ...measureFit(act, layer, values), exact: false } };
}

/** The layer's range of input values, and its error against the activation there. */
export function measureFit(act: Activation, layer: Quadratic, values: Float64Array[]): Pick<FitReport, 'range' | 'rmse' | 'maxError'> {
  let lo = Infinity,
    hi = -Infinity,
    se = 0,
    maxError = 0,
    count = 0;
  for (const v of values)
    v.forEach((x, j) => {
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
      const e = Math.abs(perFeature(layer.a, j) * x * x + perFeature(layer.b, j) * x + perFeature(layer.c, j) - applyActivation(act, x));
      se += e * e;
      maxError = Math.max(maxError, e);
      count++;
    });
  return { range: [lo, hi], rmse: Math.sqrt(se / Math.max(1, count)), maxError };
}

/**
 * Least squares of a x^2 + b x + c (or b x + c with a fixed) on the samples. A neuron that the
 * calibration barely moves is fitted over [-r, r] too, with a small weight, so its polynomial stays
 * sensible just outside what calibration saw.
 */
function leastSquares(act: Activation, xs: number[], fixedA: number | undefined, r: number): [number, number, number] {
  const pts: [number, number, number][] = xs.map((x) => [x, applyActivation(act, x), 1]);
  const w = xs.length / 200;
  for (let k = 0; k <= 20; k++) {
    const x = -r + (2 * r * k) / 20;
    pts.push([x, applyActivation(act, x), w]);
  }
  // Normal equations over the basis (x^2, x, 1), or (x, 1) with a fixed.
  const basis = fixedA === undefined ? (x: number) => [x * x, x, 1] : (x: number) => [x, 1];
  const m = fixedA === undefined ? 3 : 2;
  const A = Array.from({ length: m }, () => new Array<number>(m).fill(0));
  const y = new Array<number>(m).fill(0);
  for (const [x, fx, wt] of pts) {
    const phi = basis(x);
    const t = fx - (fixedA ?? 0) * x * x;
    for (let i = 0; i < m; i++) {
      y[i] += wt * phi[i] * t;
      for (let k = 0; k < m; k++) A[i][k] += wt * phi[i] * phi[k];
    }
  }
  for (let i = 0; i < m; i++) A[i][i] += 1e-12 * (A[i][i] + 1);
  const sol = solve(A, y);
  return fixedA === undefined ? [sol[0], sol[1], sol[2]] : [fixedA, sol[0], sol[1]];
}

function solve(A: number[][], y: number[]): number[] {
  const n = y.length;
  const M = A.map((row, i) => [...row, y[i]]);
  for (let i = 0; i < n; i++) {
    let p = i;
    for (let k = i + 1; k < n; k++) if (Math.abs(M[k][i]) > Math.abs(M[p][i])) p = k;
    [M[i], M[p]] = [M[p], M[i]];
    for (let k = i + 1; k < n; k++) {
      const f = M[k][i] / M[i][i];
      for (let j = i; j <= n; j++) M[k][j] -= f * M[i][j];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let i = n - 1; i >= 0; i--) x[i] = (M[i][n] - M[i].slice(i + 1, n).reduce((s, v, k) => s + v * x[i + 1 + k], 0)) / M[i][i];
  return x;
}
