// Bounds on the honest noise of batch results, for the flood (src/fhe/privacy.ts): what circuit
// privacy must hide. compile-batch.ts raises the input scale until the flood sized from these
// bounds costs the outputs no more than FLOOD_PRECISION_BITS.
import { rescaleDivisor, type BatchPlan } from '../fhe/batch-plan.ts';
import { SEAL_NOISE_SIGMA } from '../fhe/privacy.ts';

/**
 * A bound B on |v|_2 for each output's honest noise v (coefficient domain), for honest queries:
 * fresh encryptions (SEAL's noise e_t, independent coefficients of sigma 3.2) of inputs within
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
 */
export function batchNoiseL2Bounds(plan: BatchPlan, inputRange: Float64Array, midCap = Infinity): number[] {
  const mid = secondLayerNoise(plan, inputRange, midCap);
  return Array.isArray(mid) ? mid : thirdLayerNoise(plan, mid);
}

/** The second layer's rows as the third layer sees them (see batchNoiseL2Bounds). */
export interface MidNoise {
  rows: { c: Float64Array; U: number; Ucan: number; quadratic: number; P2: number }[];
}

/**
 * The bounds of plans without a third layer, or the second layer's rows for thirdLayerNoise.
 * They do not depend on the third layer or on a rescale: the compiler computes them once per
 * input scale and tries several rescales (compile-batch.ts).
 */
export function secondLayerNoise(plan: BatchPlan, inputRange: Float64Array, midCap = Infinity): number[] | MidNoise {
  const N = plan.params.polyModulusDegree;
  const gauss = Math.sqrt(N) * SEAL_NOISE_SIGMA; // root mean square of |e|_2
  const f = plan.first;
  const norm = (v: Float64Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  const row = (j: number) => {
    let l2 = 0,
      range = 0;
    for (let t = f.start[j]; t < f.start[j + 1]; t++) {
      l2 += f.weight[t] * f.weight[t];
      range += Math.abs(f.weight[t]) * inputRange[f.index[t]];
    }
    return { l2: Math.sqrt(l2), P: Math.abs(f.bias[j]) + range * 2 ** -f.weightScaleBits };
  };
  if (!plan.second) return Array.from({ length: f.rows }, (_, j) => Math.max(1, 2 * gauss * row(j).l2));
  const delta1 = 2 ** (plan.inputScaleBits + f.weightScaleBits);
  const rows = Array.from({ length: f.rows }, (_, j) => {
    const { l2, P } = row(j);
    return { P, L: 2 * gauss * l2, V: 6 * gauss * l2 };
  });
  const sec = plan.second;
  /** Second-layer row k: c_k (per input), |c_k|_2, the quadratic parts' L2 and canonical bounds, P2_k. */
  const mid = Array.from({ length: sec.rows }, (_, k) => {
    const c = new Float64Array(plan.inputs);
    let quadratic = 0,
      quadraticCan = 0,
      P2 = Math.abs(sec.bias[k]);
    for (let j = 0; j < f.rows; j++) {
      const w2 = Math.abs(sec.weight[k * f.rows + j]);
      if (w2 === 0) continue;
      const scale = w2 * 2 * delta1 * rows[j].P;
      for (let t = f.start[j]; t < f.start[j + 1]; t++) c[f.index[t]] += scale * Math.abs(f.weight[t]);
      quadratic += w2 * rows[j].V * rows[j].L;
      quadraticCan += w2 * rows[j].V * rows[j].V;
      P2 += w2 * 2 ** -sec.weightScaleBits * rows[j].P * rows[j].P;
    }
    const cl2 = norm(c);
    return { c, U: 2 * gauss * cl2 + quadratic, Ucan: 6 * gauss * cl2 + quadraticCan, quadratic, P2: Math.min(P2, midCap) };
  });
  if (!plan.third) return mid.map((m) => Math.max(1, m.U));
  return { rows: mid };
}

/**
 * The rounding a rescale adds to a size-3 ciphertext's phase (rescale.ts): nu = rho_0 + rho_1 s +
 * rho_2 s^2, the rho_i the coefficients' rounding errors, in [-1/2, 1/2]. |rho|_2 <= sqrt(N)/2
 * always; in the slots rho and s (ternary) are sums of N bounded independent terms, so by
 * Hoeffding each part (real, imaginary) stays within 6 deviations of its sub-Gaussian bound,
 * sqrt(N)/2 and sqrt(N), but with probability 2 e^-18: |rho|_can <= 3 sqrt(2N), |s|_can <=
 * 6 sqrt(2N) (the same six deviations as the fresh noise's bounds above). Dropping k primes one
 * after another adds k roundings, each earlier one divided by the later primes (2^-25 or less):
 * counted as 1 + 2^-20 times one.
 */
export function rescaleRounding(N: number): { l2: number; can: number } {
  const S = 6 * Math.sqrt(2 * N);
  const powers = 1 + S + S * S;
  const extra = 1 + 2 ** -20;
  return { l2: (Math.sqrt(N) / 2) * powers * extra, can: 3 * Math.sqrt(2 * N) * powers * extra };
}

/**
 * The third layer's bounds from the second layer's rows (secondLayerNoise), after the rescale the
 * plan states (divisor D = 1 without one). With one, the second layer's values g_k = M_k + u_k
 * become M_k / D + u'_k with u'_k = u_k / D + nu_k (rescaleRounding), and
 * sum_k w3_k (g'_k^2 - (M_k / D)^2) = sum_k w3_k (2 M_k u_k / D^2 + 2 (M_k / D) nu_k + u'_k^2):
 * the first term is the unrescaled bound's linear and quadratic parts over D^2, the others by
 * the triangle inequality, |M_k / D|_can <= Delta_mid P2_k / D, |u'_k|_can <= Ucan_k / D + nu_can.
 */
export function thirdLayerNoise(plan: BatchPlan, mid: MidNoise, D = rescaleDivisor(plan)): number[] {
  const N = plan.params.polyModulusDegree;
  const gauss = Math.sqrt(N) * SEAL_NOISE_SIGMA;
  const norm = (v: Float64Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));
  const f = plan.first;
  const sec = plan.second!;
  const third = plan.third!;
  const deltaMid = 2 ** (2 * (plan.inputScaleBits + f.weightScaleBits) + sec.weightScaleBits);
  const nu = D === 1 ? { l2: 0, can: 0 } : rescaleRounding(N);
  const d = new Float64Array(plan.inputs);
  return Array.from({ length: third.rows }, (_, o) => {
    d.fill(0);
    let rest = 0;
    let rounded = 0;
    for (let k = 0; k < sec.rows; k++) {
      const w3 = Math.abs(third.weight[o * sec.rows + k]);
      if (w3 === 0) continue;
      const m = mid.rows[k];
      const scale = w3 * 2 * deltaMid * m.P2;
      for (let t = 0; t < plan.inputs; t++) d[t] += scale * m.c[t];
      if (D === 1) rest += w3 * (2 * deltaMid * m.P2 * m.quadratic + m.Ucan * m.U);
      else {
        rest += w3 * 2 * deltaMid * m.P2 * m.quadratic;
        rounded += w3 * (2 * (deltaMid / D) * m.P2 * nu.l2 + (m.Ucan / D + nu.can) * (m.U / D + nu.l2));
      }
    }
    return Math.max(1, (2 * gauss * norm(d) + rest) / (D * D) + rounded);
  });
}
