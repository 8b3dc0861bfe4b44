// Re-fitting a linear layer after an approximated activation. A per-neuron quadratic in place of
// ReLU is a poor copy of it on its own (model (a) of the fixtures loses 11 points of accuracy),
// but what matters is the next layer's output, and that layer can compensate: its weights are
// re-fitted by ridge least squares so that, fed the approximated activations, it reproduces the
// original layer's outputs on the calibration records,
//
//   min over W', b'  sum_r |W' q_r + b' - (W e_r + b)|^2 + lambda |[W' b'] - [W b]|^2
//
// (q_r: activations of record r through the approximated layers, e_r: through the original
// ones). The prior keeps the weights near the model's where calibration says little. The
// compiled model then approximates the original model, not each activation on its own; the
// compile report gives the layer's error on calibration before and after, and every accuracy
// figure (simulated, encrypted) is measured on the re-fitted program.
import type { AffineStage } from './lower.ts';

export interface RefitReport {
  records: number;
  /** Root-mean-square error of the layer's outputs against the original model's, on calibration. */
  rmse_before: number;
  rmse_after: number;
}

/** Widest layer input re-fitted: the normal equations are (inputs + 1)^2 and solved in O(inputs^3). */
export const REFIT_MAX_INPUTS = 1024;
/** Ridge weight, relative to the mean diagonal of the normal matrix. */
const LAMBDA = 1e-3;

/** W x + b. */
export const affineMap = (w: number[][], b: number[], x: ArrayLike<number>) =>
  Float64Array.from(w, (row, k) => row.reduce((acc, v, j) => acc + v * x[j], b[k]));

/**
 * The stage's weights re-fitted on `approx` (its inputs through the approximated layers) to
 * reproduce its outputs on `exact` (its inputs through the original ones), or undefined when it
 * is too wide, calibration is too small to say anything, or the fit is not better.
 */
export function refitAffine(
  stage: AffineStage,
  approx: Float64Array[],
  exact: Float64Array[],
): { weights: number[][]; bias: number[]; report: RefitReport } | undefined {
  const n = stage.weights[0]?.length ?? 0;
  const N = approx.length;
  if (n === 0 || n > REFIT_MAX_INPUTS || N < 2) return undefined;
  const d = n + 1; // inputs and the constant 1
  // Normal matrix G = sum q q^T (upper triangle, then mirrored), q augmented with 1.
  const G = new Float64Array(d * d);
  for (const q of approx) {
    for (let i = 0; i < n; i++) {
      const qi = q[i];
      if (qi === 0) continue;
      const row = i * d;
      for (let k = i; k < n; k++) G[row + k] += qi * q[k];
      G[row + n] += qi;
    }
    G[n * d + n] += 1;
  }
  for (let i = 0; i < d; i++) for (let k = 0; k < i; k++) G[i * d + k] = G[k * d + i];
  let trace = 0;
  for (let i = 0; i < d; i++) trace += G[i * d + i];
  const lambda = (LAMBDA * trace) / d || 1e-12;
  for (let i = 0; i < d; i++) G[i * d + i] += lambda;
  const L = cholesky(G, d);
  if (!L) return undefined;

  const targets = exact.map((e) => affineMap(stage.weights, stage.bias, e));
  const weights: number[][] = [];
  const bias: number[] = [];
  const rhs = new Float64Array(d);
  for (let o = 0; o < stage.weights.length; o++) {
    rhs.fill(0);
    approx.forEach((q, r) => {
      const t = targets[r][o];
      for (let i = 0; i < n; i++) rhs[i] += q[i] * t;
      rhs[n] += t;
    });
    for (let i = 0; i < n; i++) rhs[i] += lambda * stage.weights[o][i];
    rhs[n] += lambda * stage.bias[o];
    const w = solveCholesky(L, d, rhs);
    weights.push(Array.from(w.subarray(0, n)));
    bias.push(w[n]);
  }
  const rmse = (w: number[][], b: number[]) => {
    let se = 0;
    approx.forEach((q, r) => affineMap(w, b, q).forEach((v, o) => (se += (v - targets[r][o]) ** 2)));
    return Math.sqrt(se / (N * stage.weights.length));
  };
  const report = { records: N, rmse_before: rmse(stage.weights, stage.bias), rmse_after: rmse(weights, bias) };
  if (!(report.rmse_after < report.rmse_before)) return undefined;
  return { weights, bias, report };
}

/** Lower-triangular L with L L^T = A (row-major d x d), or undefined when A is not positive definite. */
function cholesky(A: Float64Array, d: number): Float64Array | undefined {
  const L = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * d + j];
      for (let k = 0; k < j; k++) s -= L[i * d + k] * L[j * d + k];
      if (i === j) {
        if (!(s > 0)) return undefined;
        L[i * d + i] = Math.sqrt(s);
      } else L[i * d + j] = s / L[j * d + j];
    }
  }
  return L;
}

function solveCholesky(L: Float64Array, d: number, b: Float64Array): Float64Array {
  const z = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    let s = b[i];
    for (let k = 0; k < i; k++) s -= L[i * d + k] * z[k];
    z[i] = s / L[i * d + i];
  }
  const x = new Float64Array(d);
  for (let i = d - 1; i >= 0; i--) {
    let s = z[i];
    for (let k = i + 1; k < d; k++) s -= L[k * d + i] * x[k];
    x[i] = s / L[i * d + i];
  }
  return x;
}
