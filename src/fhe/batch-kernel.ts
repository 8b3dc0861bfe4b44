// Batch-mode evaluation on RNS residues: the hot loop of batch mode. Residues are below 2^26
// and integer weights below 2^15 in magnitude, so products and their sums are exact in
// float64 (below 2^53) and reduction modulo q happens once per sum, not once per product.
// A chunk of lanes (coefficients of one prime) is independent of every other chunk: that is
// how one batch is split across the workers of the pool, with no merge step.
import { outputsOf, REDUCE_EVERY, resultSize, type BatchPlan } from './batch-plan.ts';

/** The plan as typed arrays, with its biases as residues modulo each prime. */
export interface BatchKernel {
  plan: BatchPlan;
  primes: number[];
  degree: number;
  start: Int32Array;
  index: Int32Array;
  w1: Float64Array;
  w2?: Float64Array;
  /** [prime][row] */
  bias1: Float64Array[];
  bias2: Float64Array[];
}

/** round(value * 2^bits) mod q, exactly (the product can exceed 2^53). */
export function residue(value: number, bits: number, q: number): number {
  const big = BigInt(Math.round(value * 2 ** bits));
  const Q = BigInt(q);
  return Number(((big % Q) + Q) % Q);
}

export function prepareKernel(plan: BatchPlan, primes: number[]): BatchKernel {
  const first = plan.inputScaleBits + plan.first.weightScaleBits;
  const out = plan.outputScaleBits;
  return {
    plan,
    primes,
    degree: plan.params.polyModulusDegree,
    start: Int32Array.from(plan.first.start),
    index: Int32Array.from(plan.first.index),
    w1: Float64Array.from(plan.first.weight),
    w2: plan.second ? Float64Array.from(plan.second.weight) : undefined,
    bias1: primes.map((q) => Float64Array.from(plan.first.bias, (b) => residue(b, first, q))),
    bias2: primes.map((q) => Float64Array.from(plan.second?.bias ?? [], (b) => residue(b, out, q))),
  };
}

/**
 * Evaluates lanes [lane0, lane1) (within one prime) of one batch. `input` holds the batch's
 * ciphertexts as u32 residues, [feature][poly][prime][coefficient]; `output` receives the
 * results the same way, [output][poly][prime][coefficient].
 */
export function evaluateLanes(k: BatchKernel, input: Uint32Array, output: Uint32Array, lane0: number, lane1: number): void {
  const { plan, degree } = k;
  const LN = k.primes.length * degree;
  const pi = Math.floor(lane0 / degree);
  if (lane1 <= lane0 || Math.floor((lane1 - 1) / degree) !== pi) throw new RangeError('a lane chunk must lie within one prime');
  const q = k.primes[pi];
  const qinv = 1 / q;
  const C = lane1 - lane0;
  const rows = plan.first.rows;
  const outs = outputsOf(plan);
  const size = resultSize(plan);
  const { start, index, w1, w2 } = k;
  const b1 = k.bias1[pi];
  const a0 = new Float64Array(C);
  const a1 = new Float64Array(C);
  const s0 = new Float64Array(C);
  const s1 = new Float64Array(C);
  const s2 = new Float64Array(C);
  // |w2 * s| < 2^41: 2^11 of them sum exactly; the accumulators are reduced that often.
  const acc = new Float64Array(outs * 3 * C);

  for (let j = 0; j < rows; j++) {
    a0.fill(b1[j]);
    a1.fill(0);
    for (let t = start[j], end = start[j + 1]; t < end; t++) {
      const w = w1[t];
      const base0 = index[t] * 2 * LN + lane0;
      const base1 = base0 + LN;
      for (let c = 0; c < C; c++) {
        a0[c] += w * input[base0 + c];
        a1[c] += w * input[base1 + c];
      }
    }
    if (!plan.square) {
      // Linear model: the row is the output.
      const o0 = (j * size) * LN + lane0;
      const o1 = o0 + LN;
      for (let c = 0; c < C; c++) {
        let x = a0[c] - Math.floor(a0[c] * qinv) * q;
        if (x < 0) x += q;
        else if (x >= q) x -= q;
        let y = a1[c] - Math.floor(a1[c] * qinv) * q;
        if (y < 0) y += q;
        else if (y >= q) y -= q;
        output[o0 + c] = x;
        output[o1 + c] = y;
      }
      continue;
    }
    for (let c = 0; c < C; c++) {
      let x = a0[c] - Math.floor(a0[c] * qinv) * q;
      if (x < 0) x += q;
      else if (x >= q) x -= q;
      let y = a1[c] - Math.floor(a1[c] * qinv) * q;
      if (y < 0) y += q;
      else if (y >= q) y -= q;
      // (x + y s)^2 = x^2 + 2xy s + y^2 s^2; each product < 2^53.
      let u = x * x;
      u -= Math.floor(u * qinv) * q;
      if (u < 0) u += q;
      else if (u >= q) u -= q;
      let v = 2 * x * y;
      v -= Math.floor(v * qinv) * q;
      if (v < 0) v += q;
      else if (v >= q) v -= q;
      let z = y * y;
      z -= Math.floor(z * qinv) * q;
      if (z < 0) z += q;
      else if (z >= q) z -= q;
      s0[c] = u;
      s1[c] = v;
      s2[c] = z;
    }
    for (let o = 0; o < outs; o++) {
      const w = w2![o * rows + j];
      if (w === 0) continue;
      const base = o * 3 * C;
      for (let c = 0; c < C; c++) {
        acc[base + c] += w * s0[c];
        acc[base + C + c] += w * s1[c];
        acc[base + 2 * C + c] += w * s2[c];
      }
    }
    if ((j + 1) % REDUCE_EVERY === 0) reduceAll(acc, q, qinv);
  }
  if (!plan.square) return;
  reduceAll(acc, q, qinv);
  const b2 = k.bias2[pi];
  for (let o = 0; o < outs; o++) {
    for (let p = 0; p < 3; p++) {
      const src = (o * 3 + p) * C;
      const dst = (o * 3 + p) * LN + lane0;
      const add = p === 0 ? b2[o] : 0;
      for (let c = 0; c < C; c++) {
        let x = acc[src + c] + add;
        if (x >= q) x -= q;
        output[dst + c] = x;
      }
    }
  }
}

function reduceAll(acc: Float64Array, q: number, qinv: number): void {
  for (let i = 0; i < acc.length; i++) {
    let x = acc[i] - Math.floor(acc[i] * qinv) * q;
    if (x < 0) x += q;
    else if (x >= q) x -= q;
    acc[i] = x;
  }
}

/**
 * Unit costs of the kernel's three loops on this machine (ns per lane), measured with the
 * kernel's own loop shapes on a working set of the kernel's size (784 inputs x 2 polynomials x
 * one chunk): the cost model multiplies them by batchOpCounts. Median of `rounds` rounds.
 */
export function measureKernelUnits(rounds = 7): { mac: number; square: number; reduce: number } {
  const C = 1024;
  const INPUTS = 784;
  const q = 67043329;
  const qinv = 1 / q;
  const x = Uint32Array.from({ length: INPUTS * 2 * C }, (_, i) => (i * 2654435761) % q);
  const a0 = new Float64Array(C);
  const a1 = new Float64Array(C);
  const s = new Float64Array(3 * C);
  const median = (v: number[]) => v.sort((p, r) => p - r)[v.length >> 1];
  const time = (lanes: number, fn: () => void) => {
    fn();
    const out: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      fn();
      out.push(((performance.now() - t0) * 1e6) / lanes);
    }
    return median(out);
  };
  // 25 taps per row over inputs spread like a convolution's, rows walking the inputs.
  const mac = time(2 * C * 25 * 256, () => {
    for (let j = 0; j < 256; j++) {
      for (let t = 0; t < 25; t++) {
        const w = 12345 - t;
        const base0 = ((j * 3 + (t % 5) + 28 * Math.floor(t / 5)) % INPUTS) * 2 * C;
        const base1 = base0 + C;
        for (let c = 0; c < C; c++) {
          a0[c] += w * x[base0 + c];
          a1[c] += w * x[base1 + c];
        }
      }
    }
  });
  const square = time(C * 64, () => {
    for (let j = 0; j < 64; j++) {
      a0.fill(1e12 + j);
      a1.fill(-1e12 - j);
      for (let c = 0; c < C; c++) {
        let u = a0[c] - Math.floor(a0[c] * qinv) * q;
        if (u < 0) u += q;
        else if (u >= q) u -= q;
        let v = a1[c] - Math.floor(a1[c] * qinv) * q;
        if (v < 0) v += q;
        else if (v >= q) v -= q;
        let z0 = u * u;
        z0 -= Math.floor(z0 * qinv) * q;
        if (z0 < 0) z0 += q;
        else if (z0 >= q) z0 -= q;
        let z1 = 2 * u * v;
        z1 -= Math.floor(z1 * qinv) * q;
        if (z1 < 0) z1 += q;
        else if (z1 >= q) z1 -= q;
        let z2 = v * v;
        z2 -= Math.floor(z2 * qinv) * q;
        if (z2 < 0) z2 += q;
        else if (z2 >= q) z2 -= q;
        s[c] = z0;
        s[C + c] = z1;
        s[2 * C + c] = z2;
      }
    }
  });
  const reduce = time(3 * C * 64, () => {
    for (let j = 0; j < 64; j++) reduceAll(s, q, qinv);
  });
  return { mac, square, reduce };
}
