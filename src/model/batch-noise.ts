// Bounds on the honest noise of batch results, for the flood (src/fhe/privacy.ts): what circuit
// privacy must hide. compile-batch.ts raises the input scale until the flood sized from these
// bounds costs the outputs no more than FLOOD_PRECISION_BITS.
import { droppedPrimesByLayer, laterLayers, type BatchPlan } from '../fhe/batch-plan.ts';
import { SEAL_NOISE_SIGMA } from '../fhe/privacy.ts';
import { rescaleRounding } from './rescale-rounding.ts';

/**
 * A bound B on |v|_2 for each output's honest noise v (coefficient domain), for honest queries:
 * fresh encryptions (SEAL's noise e_t, independent coefficients of sigma sqrt(21/2), SEAL_NOISE_SIGMA) of inputs within
 * each feature's range on the samples (`inputRange`).
 *
 * The input of record s is what the client's plaintext polynomial m_t holds, mu_t = emb(m_t) /
 * Delta (x_t up to the encoder's rounding, which the client chose and knows); the kernel's
 * integer arithmetic is exact and emb a ring homomorphism, so the result's message is exactly the
 * model on mu, and the only noise is what e_t becomes. Tools: |a b|_2 <= |a|_can |b|_2 (emb /
 * sqrt(N) is unitary; |.|_can the embedding's largest coordinate), |a b|_can <= |a|_can |b|_can,
 * and for fixed a_t, sum_t a_t e_t has independent Gaussian embedding coordinates of variance at
 * most N sigma^2 sum_t |a_t|_can^2, so its |.|_2 exceeds 2 sqrt(N) sigma sqrt(sum_t |a_t|_can^2)
 * with probability below e^-N/8, and its |.|_can exceeds 6 sqrt(N) sigma sqrt(...) with
 * probability below N e^-18.
 *  - linear rows: v = sum_t w_t e_t, B = 2 sqrt(N) sigma |w|_2.
 *  - squared rows: h_j = m_j + v_j (m_j = Delta_1 emb^-1(H_j), |m_j|_can <= Delta_1 P_j with P_j
 *    the interval bound on |H_j|), h_j^2 - m_j^2 = 2 m_j v_j + v_j^2. The linear part
 *    sum_j w2_j 2 m_j v_j = sum_t a_t e_t with |a_t|_can <= c_t = sum_j |w2_j w1_jt| 2 Delta_1 P_j
 *    gives 2 sqrt(N) sigma |c|_2; the quadratic part sum_j |w2_j| V_j L_j, with L_j = 2 sqrt(N)
 *    sigma |w1_j|_2 and V_j = 6 sqrt(N) sigma |w1_j|_2 bounds on |v_j|_2 and |v_j|_can.
 *  - a second square and a third layer: g_k = M_k + u_k is a second-layer row as above (its
 *    message |M_k|_can <= Delta_mid P2_k, P2_k the interval bound on |mid_k|; |u_k|_2 <= U_k, the
 *    bound above, and |u_k|_can <= 6 sqrt(N) sigma |c_k|_2 + sum_j |w2_kj| V_j^2). Then
 *    sum_k w3_k (g_k^2 - M_k^2) = sum_k w3_k (2 M_k lin_k + 2 M_k quad_k + u_k^2): the first
 *    part is again linear in e, sum_t d_t e_t with |d_t|_can <= sum_k |w3_k| 2 Delta_mid P2_k c_kt,
 *    so 2 sqrt(N) sigma |d|_2; the others by the triangle inequality,
 *    sum_k |w3_k| (2 Delta_mid P2_k Q_k + |u_k|_can U_k), Q_k the quadratic part of U_k.
 *  - any number of squares: the same step again. A layer's row k is described by c_k (its noise's
 *    part linear in e), Q_k and Qcan_k (bounds on |.|_2 and |.|_can of the rest), P_k and the
 *    layer's scale Delta; U_k = 2 sqrt(N) sigma |c_k|_2 + Q_k, Ucan_k = 6 sqrt(N) sigma |c_k|_2 +
 *    Qcan_k. The next layer's row o: c'_o = sum_k |w_ok| 2 Delta P_k c_k, Q'_o = sum_k |w_ok|
 *    (2 Delta P_k Q_k + Ucan_k U_k), Qcan'_o = sum_k |w_ok| (2 Delta P_k Qcan_k + Ucan_k^2),
 *    Delta' = Delta^2 2^w'. The rows c_k are the same vectors whatever the input scale and the
 *    rescales, up to the factor Delta / Delta_in (Delta_in the input scale): NoiseShape computes
 *    them once, in units of the values (c-hat, with the weights' real values), and the bounds for
 *    each candidate plan cost a few products per weight.
 *  - a rescale by D (rescale.ts) of a layer's values: they become M_k / D + u_k / D + nu_k, nu_k
 *    the rounding (rescaleRounding): Delta / D, Q_k / D + |nu|_2, Qcan_k / D + |nu|_can, and c_k /
 *    D (which the factor Delta / Delta_in already says).
 */
export function batchNoiseL2Bounds(plan: BatchPlan, inputs: InputRange, caps?: number[]): number[] {
  return noiseBounds(plan, noiseShape(plan, inputs, caps));
}

/** The rows' parts of the bounds that depend on neither the input scale nor the rescales (batchNoiseL2Bounds). */
export interface NoiseShape {
  /** Per layer (the first, then laterLayers): per row, |c-hat_k|_2 and the interval bound P_k. */
  layers: { chat: Float64Array; P: Float64Array }[];
}

/** Honest inputs: each of the plan's inputs i between low[i] and high[i] (on the samples). */
export interface InputRange {
  low: Float64Array;
  high: Float64Array;
}

/**
 * The most multiply-adds noiseShape spends on the second layer's exact linear parts
 * (exactSquaredLinear); beyond it (dense first layers) it takes the triangle inequality's bound.
 */
const EXACT_WORK = 4e8;

/**
 * `caps[i]`: a bound on later layer i's values where they are squared again (the compiler's: what
 * the modulus holds once squared), Infinity where absent. The interval bounds keep signs: each
 * row's values lie in [lo, hi] (an affine function of the inputs over their box; a weighted sum of
 * squares, each in [0 or the smaller square, the larger]), P = max(|lo|, |hi|).
 */
export function noiseShape(plan: BatchPlan, inputs: InputRange, caps: number[] = []): NoiseShape {
  const f = plan.first;
  const s1 = 2 ** -f.weightScaleBits;
  // c-hat of the first layer's rows: |w1_jt| (real weights), sparse over the inputs.
  let lo = new Float64Array(f.rows);
  let hi = new Float64Array(f.rows);
  const P = new Float64Array(f.rows);
  const chat = new Float64Array(f.rows);
  for (let j = 0; j < f.rows; j++) {
    let l2 = 0,
      up = f.bias[j],
      down = f.bias[j];
    for (let t = f.start[j]; t < f.start[j + 1]; t++) {
      const w = f.weight[t] * s1;
      const a = w * inputs.low[f.index[t]],
        b = w * inputs.high[f.index[t]];
      l2 += w * w;
      up += Math.max(a, b);
      down += Math.min(a, b);
    }
    chat[j] = Math.sqrt(l2);
    [lo[j], hi[j], P[j]] = [down, up, Math.max(-down, up)];
  }
  const layers = [{ chat, P }];
  // The vectors themselves (per input) are needed to sum them: first as the sparse rows, then dense.
  let vectors: (o: number, add: (t: number, v: number) => void) => void = (j, add) => {
    for (let t = f.start[j]; t < f.start[j + 1]; t++) add(f.index[t], Math.abs(f.weight[t]) * s1);
  };
  let before = { rows: f.rows, P };
  laterLayers(plan).forEach((layer, i) => {
    const s = 2 ** -layer.weightScaleBits;
    const cap = caps[i] ?? Infinity;
    const exact = i === 0 ? exactSquaredLinear(plan, inputs) : undefined;
    const dense = exact ?? new Float64Array(layer.rows * plan.inputs);
    const [lo2, hi2, P2] = [new Float64Array(layer.rows), new Float64Array(layer.rows), new Float64Array(layer.rows)];
    const chat2 = new Float64Array(layer.rows);
    for (let o = 0; o < layer.rows; o++) {
      const c = dense.subarray(o * plan.inputs, (o + 1) * plan.inputs);
      let up = layer.bias[o],
        down = layer.bias[o];
      for (let k = 0; k < before.rows; k++) {
        const w = layer.weight[o * before.rows + k] * s;
        if (w === 0) continue;
        const Pk = before.P[k];
        const least = lo[k] <= 0 && hi[k] >= 0 ? 0 : Math.min(lo[k] * lo[k], hi[k] * hi[k]);
        up += w * (w > 0 ? Pk * Pk : least);
        down += w * (w > 0 ? least : Pk * Pk);
        if (exact) continue;
        const scale = Math.abs(w) * 2 * Pk;
        vectors(k, (t, v) => (c[t] += scale * v));
      }
      lo2[o] = Math.max(down, -cap);
      hi2[o] = Math.min(up, cap);
      P2[o] = Math.min(Math.max(-down, up), cap);
      chat2[o] = Math.sqrt(c.reduce((a, x) => a + x * x, 0));
    }
    layers.push({ chat: chat2, P: P2 });
    const n = plan.inputs;
    vectors = (o, add) => {
      for (let t = 0; t < n; t++) if (dense[o * n + t] !== 0) add(t, dense[o * n + t]);
    };
    before = { rows: layer.rows, P: P2 };
    [lo, hi] = [lo2, hi2];
  });
  return { layers };
}

/**
 * The second layer's c-hat rows taken over the input box itself rather than term by term: the
 * linear part of row o's noise has coefficient a_ot = sum_k w2_ok 2 H_k(x) w1_kt on e_t, H_k(x) =
 * b_k + sum_s w1_ks x_s the first layer's row k; for each t an affine function of the inputs,
 * alpha_t + sum_s beta_ts x_s, whose largest |.| over the box is exact. The triangle inequality's
 * sum_k |w2_ok| 2 P_k |w1_kt| ignores that the rows H_k move together (convolutions: neighbouring
 * windows share pixels): LeNet's rows come out ~2^2.2 smaller. Row-major rows x inputs;
 * undefined when it would cost more than EXACT_WORK.
 */
function exactSquaredLinear(plan: BatchPlan, inputs: InputRange): Float64Array | undefined {
  const f = plan.first;
  const layer = plan.second!;
  const n = plan.inputs;
  const s1 = 2 ** -f.weightScaleBits;
  const s2 = 2 ** -layer.weightScaleBits;
  let work = n * n * layer.rows;
  for (let o = 0; o < layer.rows; o++) for (let k = 0; k < f.rows; k++) if (layer.weight[o * f.rows + k] !== 0) work += (f.start[k + 1] - f.start[k]) ** 2;
  if (work > EXACT_WORK) return undefined;
  const out = new Float64Array(layer.rows * n);
  const beta = new Float64Array(n * n);
  const alpha = new Float64Array(n);
  for (let o = 0; o < layer.rows; o++) {
    beta.fill(0);
    alpha.fill(0);
    for (let k = 0; k < f.rows; k++) {
      const w2 = 2 * layer.weight[o * f.rows + k] * s2;
      if (w2 === 0) continue;
      for (let a = f.start[k]; a < f.start[k + 1]; a++) {
        const t = f.index[a];
        const wt = w2 * f.weight[a] * s1;
        alpha[t] += wt * f.bias[k];
        const row = t * n;
        for (let b = f.start[k]; b < f.start[k + 1]; b++) beta[row + f.index[b]] += wt * f.weight[b] * s1;
      }
    }
    for (let t = 0; t < n; t++) {
      let up = alpha[t],
        down = alpha[t];
      const row = t * n;
      for (let x = 0; x < n; x++) {
        const b = beta[row + x];
        if (b === 0) continue;
        const u = b * inputs.low[x],
          v = b * inputs.high[x];
        up += Math.max(u, v);
        down += Math.min(u, v);
      }
      out[o * n + t] = Math.max(up, -down);
    }
  }
  return out;
}

/**
 * The bounds of `plan` from its NoiseShape (batchNoiseL2Bounds's recursion): one per output, in
 * the results' coefficient units.
 */
export function noiseBounds(plan: BatchPlan, shape: NoiseShape): number[] {
  const N = plan.params.polyModulusDegree;
  const gauss = Math.sqrt(N) * SEAL_NOISE_SIGMA;
  const deltaIn = 2 ** plan.inputScaleBits;
  let delta = 2 ** (plan.inputScaleBits + plan.first.weightScaleBits);
  const rows0 = shape.layers[0].chat.length;
  let Q = new Float64Array(rows0);
  let Qcan = new Float64Array(rows0);
  const dropped = droppedPrimesByLayer(plan);
  laterLayers(plan).forEach((layer, i) => {
    const { chat, P } = shape.layers[i];
    const rows = chat.length;
    // The layer before (the first never rescales) rescaled by D.
    const d = i > 0 ? dropped[i - 1] : [];
    if (d.length) {
      const D = d.reduce((a, q) => a * q, 1);
      const nu = rescaleRounding(N, 2 ** i + 1);
      delta /= D;
      Q = Q.map((v) => v / D + nu.l2);
      Qcan = Qcan.map((v) => v / D + nu.can);
    }
    const U = new Float64Array(rows);
    const Ucan = new Float64Array(rows);
    for (let k = 0; k < rows; k++) {
      const lin = (delta / deltaIn) * chat[k];
      U[k] = 2 * gauss * lin + Q[k];
      Ucan[k] = 6 * gauss * lin + Qcan[k];
    }
    const Q2 = new Float64Array(layer.rows);
    const Qcan2 = new Float64Array(layer.rows);
    for (let o = 0; o < layer.rows; o++) {
      let q = 0,
        qc = 0;
      for (let k = 0; k < rows; k++) {
        const w = Math.abs(layer.weight[o * rows + k]);
        if (w === 0) continue;
        const m = 2 * delta * P[k];
        q += w * (m * Q[k] + Ucan[k] * U[k]);
        qc += w * (m * Qcan[k] + Ucan[k] * Ucan[k]);
      }
      Q2[o] = q;
      Qcan2[o] = qc;
    }
    Q = Q2;
    Qcan = Qcan2;
    delta = delta * delta * 2 ** layer.weightScaleBits;
  });
  const { chat } = shape.layers[shape.layers.length - 1];
  return Array.from(chat, (c, o) => Math.max(1, 2 * gauss * (delta / deltaIn) * c + Q[o]));
}
