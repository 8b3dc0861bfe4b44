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
  /**
   * Rows in evaluation order, in groups of up to four that read the same inputs (a convolution's
   * filters at one position): each input residue is then loaded once for the whole group. The
   * order is free: every sum is exact modulo q.
   */
  groups: number[][];
}

function groupRows(start: Int32Array, index: Int32Array): number[][] {
  const byTaps = new Map<string, number[]>();
  for (let j = 0; j + 1 < start.length; j++) {
    const key = index.subarray(start[j], start[j + 1]).join(',');
    const list = byTaps.get(key);
    if (list) list.push(j);
    else byTaps.set(key, [j]);
  }
  const groups: number[][] = [];
  for (const rows of byTaps.values()) for (let i = 0; i < rows.length; i += 4) groups.push(rows.slice(i, i + 4));
  return groups;
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
    groups: groupRows(Int32Array.from(plan.first.start), Int32Array.from(plan.first.index)),
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
  const b1 = k.bias1[pi];
  const A0 = [0, 1, 2, 3].map(() => new Float64Array(C));
  const A1 = [0, 1, 2, 3].map(() => new Float64Array(C));
  // |w2 * s| < 2^41: 2^11 of them sum exactly; the accumulators are reduced that often.
  const acc = new Float64Array(outs * 3 * C);
  // Squares of up to four rows wait here, so each output accumulator is read and written
  // once per four rows instead of once per row (the loops are bound by memory traffic).
  const sq = new Float64Array(4 * 3 * C);
  const pending: number[] = [];
  let sinceReduce = 0;
  for (const group of k.groups) {
    group.forEach((j, r) => {
      A0[r].fill(b1[j]);
      A1[r].fill(0);
    });
    if (group.length === 4) macGroup(A0, A1, input, k.index, k.w1, group.map((j) => k.start[j]), k.start[group[0] + 1] - k.start[group[0]], LN, lane0, C);
    else group.forEach((j, r) => macRow(A0[r], A1[r], input, k.index, k.w1, k.start[j], k.start[j + 1], LN, lane0, C));
    for (let r = 0; r < group.length; r++) {
      const j = group[r];
      if (!plan.square) {
        // Linear model: the row is the output.
        reduceInto(A0[r], output, (j * size) * LN + lane0, q, qinv);
        reduceInto(A1[r], output, (j * size + 1) * LN + lane0, q, qinv);
        continue;
      }
      squareRow(A0[r], A1[r], sq, pending.length * 3 * C, q, qinv);
      pending.push(j);
      if (pending.length === 4) {
        accumulate(acc, sq, k.w2!, rows, outs, C, pending);
        pending.length = 0;
        if ((sinceReduce += 4) >= REDUCE_EVERY) {
          reduceAll(acc, q, qinv);
          sinceReduce = 0;
        }
      }
    }
  }
  if (pending.length) accumulate(acc, sq, k.w2!, rows, outs, C, pending);
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

/** a0 += sum_t w[t] * poly0(input index[t]), a1 likewise for poly 1, over taps [t0, t1). */
function macRow(a0: Float64Array, a1: Float64Array, input: Uint32Array, index: Int32Array, w: Float64Array, t0: number, t1: number, LN: number, lane0: number, C: number): void {
  let t = t0;
  // Four taps per pass over the accumulators (memory traffic, as for the squares).
  for (; t + 4 <= t1; t += 4) {
    const wa = w[t], wb = w[t + 1], wc = w[t + 2], wd = w[t + 3];
    const pa = index[t] * 2 * LN + lane0, pb = index[t + 1] * 2 * LN + lane0, pc = index[t + 2] * 2 * LN + lane0, pd = index[t + 3] * 2 * LN + lane0;
    for (let c = 0; c < C; c++) {
      a0[c] += wa * input[pa + c] + wb * input[pb + c] + wc * input[pc + c] + wd * input[pd + c];
      a1[c] += wa * input[pa + LN + c] + wb * input[pb + LN + c] + wc * input[pc + LN + c] + wd * input[pd + LN + c];
    }
  }
  for (; t < t1; t++) {
    const wt = w[t];
    const base0 = index[t] * 2 * LN + lane0;
    const base1 = base0 + LN;
    for (let c = 0; c < C; c++) {
      a0[c] += wt * input[base0 + c];
      a1[c] += wt * input[base1 + c];
    }
  }
}

/** macRow for four rows with the same taps (different weights): one load of each input residue. */
function macGroup(A0: Float64Array[], A1: Float64Array[], input: Uint32Array, index: Int32Array, w: Float64Array, starts: number[], taps: number, LN: number, lane0: number, C: number): void {
  const [a0, b0, c0, d0] = A0;
  const [a1, b1, c1, d1] = A1;
  const [s0, s1, s2, s3] = starts;
  let t = 0;
  for (; t + 2 <= taps; t += 2) {
    const pa = index[s0 + t] * 2 * LN + lane0, pb = index[s0 + t + 1] * 2 * LN + lane0;
    const wa0 = w[s0 + t], wb0 = w[s0 + t + 1], wa1 = w[s1 + t], wb1 = w[s1 + t + 1];
    const wa2 = w[s2 + t], wb2 = w[s2 + t + 1], wa3 = w[s3 + t], wb3 = w[s3 + t + 1];
    for (let c = 0; c < C; c++) {
      const xa = input[pa + c], xb = input[pb + c];
      a0[c] += wa0 * xa + wb0 * xb;
      b0[c] += wa1 * xa + wb1 * xb;
      c0[c] += wa2 * xa + wb2 * xb;
      d0[c] += wa3 * xa + wb3 * xb;
    }
    for (let c = 0; c < C; c++) {
      const xa = input[pa + LN + c], xb = input[pb + LN + c];
      a1[c] += wa0 * xa + wb0 * xb;
      b1[c] += wa1 * xa + wb1 * xb;
      c1[c] += wa2 * xa + wb2 * xb;
      d1[c] += wa3 * xa + wb3 * xb;
    }
  }
  for (; t < taps; t++) {
    const pa = index[s0 + t] * 2 * LN + lane0;
    const wa0 = w[s0 + t], wa1 = w[s1 + t], wa2 = w[s2 + t], wa3 = w[s3 + t];
    for (let c = 0; c < C; c++) {
      const x = input[pa + c];
      a0[c] += wa0 * x;
      b0[c] += wa1 * x;
      c0[c] += wa2 * x;
      d0[c] += wa3 * x;
    }
    for (let c = 0; c < C; c++) {
      const x = input[pa + LN + c];
      a1[c] += wa0 * x;
      b1[c] += wa1 * x;
      c1[c] += wa2 * x;
      d1[c] += wa3 * x;
    }
  }
}

/** (x + y s)^2 = x^2 + 2xy s + y^2 s^2 with x = a0 mod q, y = a1 mod q; each product < 2^53. */
function squareRow(a0: Float64Array, a1: Float64Array, sq: Float64Array, slot: number, q: number, qinv: number): void {
  const C = a0.length;
  for (let c = 0; c < C; c++) {
    let x = a0[c] - Math.floor(a0[c] * qinv) * q;
    if (x < 0) x += q;
    else if (x >= q) x -= q;
    let y = a1[c] - Math.floor(a1[c] * qinv) * q;
    if (y < 0) y += q;
    else if (y >= q) y -= q;
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
    sq[slot + c] = u;
    sq[slot + C + c] = v;
    sq[slot + 2 * C + c] = z;
  }
}

function reduceInto(a: Float64Array, out: Uint32Array, at: number, q: number, qinv: number): void {
  for (let c = 0; c < a.length; c++) {
    let x = a[c] - Math.floor(a[c] * qinv) * q;
    if (x < 0) x += q;
    else if (x >= q) x -= q;
    out[at + c] = x;
  }
}

/** acc[o] += sum over the pending rows r of w2[o, r] * square(r), all three polynomials. */
function accumulate(acc: Float64Array, sq: Float64Array, w2: Float64Array, rows: number, outs: number, C: number, pending: number[]): void {
  if (pending.length === 4) {
    const [ja, jb, jc, jd] = pending;
    for (let o = 0; o < outs; o++) {
      const wa = w2[o * rows + ja], wb = w2[o * rows + jb], wc = w2[o * rows + jc], wd = w2[o * rows + jd];
      for (let p = 0; p < 3; p++) {
        const dst = (o * 3 + p) * C;
        const sa = p * C, sb = 3 * C + p * C, sc = 6 * C + p * C, sd = 9 * C + p * C;
        for (let c = 0; c < C; c++) acc[dst + c] += wa * sq[sa + c] + wb * sq[sb + c] + wc * sq[sc + c] + wd * sq[sd + c];
      }
    }
    return;
  }
  pending.forEach((j, r) => {
    for (let o = 0; o < outs; o++) {
      const w = w2[o * rows + j];
      if (w === 0) continue;
      for (let p = 0; p < 3; p++) {
        const dst = (o * 3 + p) * C;
        const src = (r * 3 + p) * C;
        for (let c = 0; c < C; c++) acc[dst + c] += w * sq[src + c];
      }
    }
  });
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
 * Unit costs of the kernel's loops on this machine, in ns per lane: the kernel's own functions
 * on a working set of the kernel's size (784 inputs x 2 polynomials x one chunk of 1024 lanes).
 * The cost model multiplies them by batchOpCounts. Median of `rounds` rounds.
 */
export function measureKernelUnits(rounds = 7): { macFirst: number; macSecond: number; square: number; reduce: number } {
  const C = 1024;
  const INPUTS = 784;
  const ROWS = 256;
  const OUTS = 10;
  const q = 67043329;
  const qinv = 1 / q;
  const input = Uint32Array.from({ length: INPUTS * 2 * C }, (_, i) => (i * 2654435761) % q);
  // Rows of 25 taps spread over the inputs like a 5x5 convolution's (four filters per window).
  const index = Int32Array.from({ length: ROWS * 25 }, (_, i) => (Math.floor(i / 100) * 3 + (i % 5) + 28 * Math.floor((i % 25) / 5)) % INPUTS);
  const w = Float64Array.from({ length: ROWS * 25 }, (_, i) => (i % 2000) - 1000);
  const w2 = Float64Array.from({ length: OUTS * ROWS }, (_, i) => (i % 3000) - 1500);
  const a0 = new Float64Array(C);
  const a1 = new Float64Array(C);
  const sq = new Float64Array(4 * 3 * C);
  const acc = new Float64Array(OUTS * 3 * C);
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
  // Rows in groups of four sharing their taps, as the kernel orders a convolution's filters.
  const A0 = [0, 1, 2, 3].map(() => new Float64Array(C));
  const A1 = [0, 1, 2, 3].map(() => new Float64Array(C));
  const macFirst = time(ROWS * 25 * 2 * C, () => {
    for (let j = 0; j < ROWS; j += 4) macGroup(A0, A1, input, index, w, [j * 25, (j + 1) * 25, (j + 2) * 25, (j + 3) * 25], 25, C, 0, C);
  });
  a0.fill(1e12);
  a1.fill(-1e12);
  const square = time(ROWS * C, () => {
    for (let j = 0; j < ROWS; j++) squareRow(a0, a1, sq, (j % 4) * 3 * C, q, qinv);
  });
  const pending = [0, 1, 2, 3];
  const macSecond = time((ROWS / 4) * 4 * OUTS * 3 * C, () => {
    for (let j = 0; j < ROWS; j += 4) {
      for (let r = 0; r < 4; r++) pending[r] = j + r;
      accumulate(acc, sq, w2, ROWS, OUTS, C, pending);
    }
  });
  const reduce = time(64 * OUTS * 3 * C, () => {
    for (let j = 0; j < 64; j++) reduceAll(acc, q, qinv);
  });
  return { macFirst, macSecond, square, reduce };
}
