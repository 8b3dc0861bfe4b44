// Batch-mode evaluation on RNS residues: the hot loop of batch mode. Residues, integer weights
// and the number of products per sum stay within the limits of kernel-limits.ts, so products
// and their sums are exact in float64 (below 2^53) and reduction modulo q happens once per sum,
// not once per product. Nothing here checks a plan (validateBatchPlan does, when it is loaded).
// A chunk of lanes (coefficients of one prime) is independent of every other chunk: that is
// how one batch is split across the workers of the pool, with no merge step.
/* eslint-disable max-lines -- Over 300 lines on purpose: measureKernelUnits (the cost model's
   probe) times the kernel's own private loops, so it lives with them rather than widening their
   interface. */
import { residueAtScale, squareLayers, writeChunk, type SquareLayer } from './batch-kernel-deep.ts';
import { laterLayers, layerScales, outputsOf, resultSize, type BatchPlan } from './batch-plan.ts';
import { REDUCE_EVERY } from './kernel-limits.ts';
import { accumulateRows, simdWithMemory, type Simd } from './kernel-simd.ts';

/** Where a chunk's data lives in the SIMD memory (byte offsets) and typed views of it. */
interface Scratch {
  simd: Simd;
  input: Uint32Array;
  /** Row accumulators: four rows x two polynomials, and their byte offsets. */
  A0: Float64Array[];
  A1: Float64Array[];
  a0: number[];
  a1: number[];
  sqAt: number;
  acc: Float64Array;
  accAt: number;
  /** accumulateRows' room: the outputs a group of rows reaches, and their weights. */
  active: Int32Array;
  weights: Float64Array;
}

function scratchFor(inputs: number, outs: number, C: number): Scratch {
  const align = (x: number) => Math.ceil(x / 16) * 16;
  const aAt = align(inputs * 2 * C * 4);
  const sqAt = aAt + 8 * C * 8;
  const accAt = sqAt + 12 * C * 8;
  const s = simdWithMemory(accAt + outs * 3 * C * 8);
  const buf = s.memory.buffer;
  const a0 = [0, 1, 2, 3].map((r) => aAt + r * C * 8);
  const a1 = [0, 1, 2, 3].map((r) => aAt + (4 + r) * C * 8);
  return {
    simd: s,
    input: new Uint32Array(buf, 0, inputs * 2 * C),
    A0: a0.map((at) => new Float64Array(buf, at, C)),
    A1: a1.map((at) => new Float64Array(buf, at, C)),
    a0,
    a1,
    sqAt,
    acc: new Float64Array(buf, accAt, outs * 3 * C),
    accAt,
    active: new Int32Array(outs),
    weights: new Float64Array(4 * outs),
  };
}

/** The plan as typed arrays, with its biases as residues modulo each prime. */
export interface BatchKernel {
  plan: BatchPlan;
  primes: number[];
  degree: number;
  start: Int32Array;
  index: Int32Array;
  w1: Float64Array;
  w2?: Float64Array;
  /**
   * Absent (or left out of a copy), evaluateLanes stops at the second layer's values, bias2
   * added, size 3: what a rescale before the second square starts from (batch-kernel-deep.ts).
   */
  w3?: Float64Array;
  /** [prime][row]; bias3 over the primes a rescale leaves (all without one). */
  bias1: Float64Array[];
  bias2: Float64Array[];
  bias3: Float64Array[];
  /** The layers after the third (three or more activations), their biases over the primes their level has. */
  deeper: { rows: number; w: Float64Array; bias: Float64Array[] }[];
  /**
   * Per prime, the layers evaluateLanes runs after the second, up to the first rescale (none
   * with one square, or when the second layer's values are rescaled): made once, at load.
   */
  afterSecond: SquareLayer[][];
  /**
   * Rows in evaluation order, in groups of up to four that read the same inputs (a convolution's
   * filters at one position): each input residue is then loaded once for the whole group. The
   * order is free: every sum is exact modulo q.
   */
  groups: RowGroup[];
}

/** Rows sharing their taps, with where each row's taps start and how many there are. */
interface RowGroup {
  rows: number[];
  starts: number[];
  taps: number;
}

function groupRows(start: Int32Array, index: Int32Array): RowGroup[] {
  const byTaps = new Map<string, number[]>();
  for (let j = 0; j + 1 < start.length; j++) {
    const key = index.subarray(start[j], start[j + 1]).join(',');
    const list = byTaps.get(key);
    if (list) list.push(j);
    else byTaps.set(key, [j]);
  }
  const groups: RowGroup[] = [];
  for (const same of byTaps.values()) {
    for (let i = 0; i < same.length; i += 4) {
      const rows = same.slice(i, i + 4);
      groups.push({ rows, starts: rows.map((j) => start[j]), taps: start[rows[0] + 1] - start[rows[0]] });
    }
  }
  return groups;
}

/** round(value * 2^bits) mod q, exactly (the product can exceed 2^53). */
export function residue(value: number, bits: number, q: number): number {
  const big = BigInt(Math.round(value * 2 ** bits));
  const Q = BigInt(q);
  return Number(((big % Q) + Q) % Q);
}

export function prepareKernel(plan: BatchPlan, primes: number[]): BatchKernel {
  const scales = layerScales(plan);
  // Biases at their layer's scale, over the primes its level has: after a rescale (batch-plan.ts)
  // the layers run over the primes left, at 2^bits over the dropped primes (each square squares them).
  const biases = (bias: number[], i: number) => {
    const { bits, divisors, primes: n } = scales[i].values;
    return primes.slice(0, n).map((q) => Float64Array.from(bias, (b) => (divisors.length ? residueAtScale(b, bits, divisors, q) : residue(b, bits, q))));
  };
  const later = laterLayers(plan);
  const kernel: BatchKernel = {
    plan,
    primes,
    degree: plan.params.polyModulusDegree,
    start: Int32Array.from(plan.first.start),
    index: Int32Array.from(plan.first.index),
    w1: Float64Array.from(plan.first.weight),
    w2: plan.second ? Float64Array.from(plan.second.weight) : undefined,
    w3: plan.third ? Float64Array.from(plan.third.weight) : undefined,
    bias1: biases(plan.first.bias, 0),
    bias2: later[0] ? biases(later[0].bias, 1) : primes.map(() => new Float64Array(0)),
    bias3: later[1] ? biases(later[1].bias, 2) : primes.map(() => new Float64Array(0)),
    deeper: later.slice(2).map((l, i) => ({ rows: l.rows, w: Float64Array.from(l.weight), bias: biases(l.bias, i + 3) })),
    afterSecond: [],
    groups: groupRows(Int32Array.from(plan.first.start), Int32Array.from(plan.first.index)),
  };
  const to = later.length > 1 && !later[0].rescalePrimes ? segmentsOf(plan)[0].to : 0;
  const layers = squareLayersOf(kernel, 1, to);
  kernel.afterSecond = primes.map((_, pi) => layers.map((l) => ({ rows: l.rows, w: l.w, bias: l.bias[pi] })));
  return kernel;
}

/**
 * Later layers [from, to] (index 1 is the third: the second is the SIMD kernel's) as
 * squareLayers / layersAfterRescale take them, with their biases for every prime of their level.
 */
export function squareLayersOf(k: BatchKernel, from: number, to: number): { rows: number; w: Float64Array; bias: Float64Array[] }[] {
  const later = laterLayers(k.plan);
  const out = [];
  for (let i = from; i <= to; i++) {
    if (i === 1) out.push({ rows: later[1].rows, w: k.w3!, bias: k.bias3 });
    else out.push(k.deeper[i - 2]);
  }
  return out;
}

/** The later layers evaluated in one pass (no rescale between them): [0, the first that rescales or the last], then on from each rescale. */
export function segmentsOf(plan: BatchPlan): { from: number; to: number }[] {
  const later = laterLayers(plan);
  const segments: { from: number; to: number }[] = [];
  let from = 0;
  later.forEach((l, i) => {
    if (l.rescalePrimes || i === later.length - 1) {
      segments.push({ from, to: i });
      from = i + 1;
    }
  });
  return segments;
}

/**
 * Evaluates lanes [lane0, lane1) (within one prime) of one batch. `input` holds the batch's
 * ciphertexts as u32 residues, [feature][poly][prime][coefficient], or with `onePrime` only those
 * of the lanes' prime, [feature][poly][coefficient]; `output` receives the results as
 * [output][poly][prime][coefficient].
 */
export function evaluateLanes(k: BatchKernel, input: Uint32Array, output: Uint32Array, lane0: number, lane1: number, onePrime = false): void {
  const { plan, degree } = k;
  const LN = k.primes.length * degree;
  const pi = Math.floor(lane0 / degree);
  if (lane1 <= lane0 || Math.floor((lane1 - 1) / degree) !== pi) throw new RangeError('a lane chunk must lie within one prime');
  const q = k.primes[pi];
  const qinv = 1 / q;
  const C = lane1 - lane0;
  const rows = plan.first.rows;
  // The second layer's sums: the outputs, or the values the third layer squares.
  const outs = plan.second ? plan.second.rows : outputsOf(plan);
  const size = resultSize(plan);
  if (C % 2) throw new RangeError('a lane chunk must have an even number of lanes');
  const b1 = k.bias1[pi];
  // The chunk's residues are copied into the SIMD memory once, [feature][poly][lane]; then
  // every row reads them there.
  const x = scratchFor(plan.inputs, outs, C);
  const [stride, at] = onePrime ? [degree, lane0 - pi * degree] : [LN, lane0];
  for (let i = 0; i < 2 * plan.inputs; i++) x.input.set(input.subarray(i * stride + at, i * stride + at + C), i * C);
  const { A0, A1, acc } = x;
  // Second-layer sums stay exact for REDUCE_EVERY rows; the accumulators are reduced that often.
  acc.fill(0);
  // Squares of up to four rows wait in sq, so each output accumulator is read and written
  // once per four rows instead of once per row (fewer loads and stores, which the loops are bound by).
  const pending: number[] = [];
  let sinceReduce = 0;
  for (const { rows: group, starts, taps } of k.groups) {
    group.forEach((j, r) => {
      A0[r].fill(b1[j]);
      A1[r].fill(0);
    });
    if (group.length === 4) macGroup(x, k.index, k.w1, starts, taps, C);
    else group.forEach((j, r) => macRow(A0[r], A1[r], x.input, k.index, k.w1, starts[r], starts[r] + taps, C));
    for (let r = 0; r < group.length; r++) {
      const j = group[r];
      if (!plan.square) {
        // Linear model: the row is the output.
        reduceInto(A0[r], output, j * size * LN + lane0, q, qinv);
        reduceInto(A1[r], output, (j * size + 1) * LN + lane0, q, qinv);
        continue;
      }
      x.simd.squareRow(x.a0[r], x.a1[r], x.sqAt + pending.length * 3 * C * 8, C, q);
      pending.push(j);
      if (pending.length === 4) {
        accumulate(x, k.w2!, rows, outs, C, pending);
        pending.length = 0;
        if ((sinceReduce += 4) >= REDUCE_EVERY) {
          x.simd.reduceAdd(x.accAt, outs * 3 * C, q, 0);
          sinceReduce = 0;
        }
      }
    }
  }
  if (pending.length) accumulate(x, k.w2!, rows, outs, C, pending);
  if (!plan.square) return;
  const b2 = k.bias2[pi];
  // Reduced, bias added (to the first polynomial): the results, or squared by the layers after it
  // up to the first rescale (without w3, where the caller stops: a rescale before the second square).
  for (let o = 0; o < outs; o++) {
    x.simd.reduceAdd(x.accAt + o * 3 * C * 8, C, q, b2[o]);
    x.simd.reduceAdd(x.accAt + (o * 3 + 1) * C * 8, 2 * C, q, 0);
  }
  if (!k.w3 || plan.second?.rescalePrimes) {
    if (k.w3) throw new Error('a rescaled batch plan: evaluateLanes stops at the second layer (kernel without w3)');
    return writeChunk(x.accAt, outs, 3, C, output, LN, lane0);
  }
  const last = squareLayers(x.accAt, outs, 3, k.afterSecond[pi], q, C, x.accAt + outs * 3 * C * 8);
  writeChunk(last.at, last.rows, last.size, C, output, LN, lane0);
}

/** a0 += sum_t w[t] * poly0(input index[t]), a1 likewise for poly 1, over taps [t0, t1); `input` is the chunk copy, [feature][poly][lane]. */
function macRow(a0: Float64Array, a1: Float64Array, input: Uint32Array, index: Int32Array, w: Float64Array, t0: number, t1: number, C: number): void {
  let t = t0;
  // Four taps per pass over the accumulators (memory traffic, as for the squares).
  for (; t + 4 <= t1; t += 4) {
    const wa = w[t],
      wb = w[t + 1],
      wc = w[t + 2],
      wd = w[t + 3];
    const pa = index[t] * 2 * C,
      pb = index[t + 1] * 2 * C,
      pc = index[t + 2] * 2 * C,
      pd = index[t + 3] * 2 * C;
    for (let c = 0; c < C; c++) {
      a0[c] += wa * input[pa + c] + wb * input[pb + c] + wc * input[pc + c] + wd * input[pd + c];
      a1[c] += wa * input[pa + C + c] + wb * input[pb + C + c] + wc * input[pc + C + c] + wd * input[pd + C + c];
    }
  }
  for (; t < t1; t++) {
    const wt = w[t];
    const base0 = index[t] * 2 * C;
    const base1 = base0 + C;
    for (let c = 0; c < C; c++) {
      a0[c] += wt * input[base0 + c];
      a1[c] += wt * input[base1 + c];
    }
  }
}

/**
 * macRow for four rows with the same taps (different weights), in SIMD: each input residue is
 * loaded once for the four rows, two taps per pass. Inputs are the chunk copy, [feature][poly][lane].
 */
function macGroup(x: Scratch, index: Int32Array, w: Float64Array, starts: number[], taps: number, C: number): void {
  const { simd: s, a0, a1 } = x;
  const [s0, s1, s2, s3] = starts;
  for (let t = 0; t < taps; t += 2) {
    const pa = index[s0 + t] * 2 * C * 4;
    // An odd last tap pairs with itself at weight 0.
    const last = t + 1 >= taps;
    const pb = last ? pa : index[s0 + t + 1] * 2 * C * 4;
    const wb = (si: number) => (last ? 0 : w[si + t + 1]);
    s.mac4(a0[0], a0[1], a0[2], a0[3], pa, pb, w[s0 + t], wb(s0), w[s1 + t], wb(s1), w[s2 + t], wb(s2), w[s3 + t], wb(s3), C);
    s.mac4(a1[0], a1[1], a1[2], a1[3], pa + C * 4, pb + C * 4, w[s0 + t], wb(s0), w[s1 + t], wb(s1), w[s2 + t], wb(s2), w[s3 + t], wb(s3), C);
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
function accumulate(x: Scratch, w2: Float64Array, rows: number, outs: number, C: number, pending: number[]): void {
  const { simd: s, sqAt, accAt } = x;
  const n = pending.length;
  // Fewer than four pending rows (the last group): the missing ones weigh 0 (and read the last).
  // A convolution's second layer is mostly zeros, and its four pending rows (the filters at
  // one position) share them: LeNet's 576 -> 192 has 27,648 nonzero weights of 110,592.
  const src = [0, 1, 2, 3].map((r) => sqAt + Math.min(r, n - 1) * 3 * C * 8);
  const weight = (o: number, r: number) => (r < n ? w2[o * rows + pending[r]] : 0);
  accumulateRows(s, outs, weight, (o) => accAt + o * 3 * C * 8, src, C, 3, C * 8, x.active, x.weights);
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
  const x = scratchFor(INPUTS, OUTS, C);
  for (let i = 0; i < x.input.length; i++) x.input[i] = (i * 2654435761) % q;
  // Rows of 25 taps spread over the inputs like a 5x5 convolution's (four filters per window).
  const index = Int32Array.from({ length: ROWS * 25 }, (_, i) => (Math.floor(i / 100) * 3 + (i % 5) + 28 * Math.floor((i % 25) / 5)) % INPUTS);
  const w = Float64Array.from({ length: ROWS * 25 }, (_, i) => (i % 2000) - 1000);
  const w2 = Float64Array.from({ length: OUTS * ROWS }, (_, i) => (i % 3000) - 1500);
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
  const macFirst = time(ROWS * 25 * 2 * C, () => {
    for (let j = 0; j < ROWS; j += 4) macGroup(x, index, w, [j * 25, (j + 1) * 25, (j + 2) * 25, (j + 3) * 25], 25, C);
  });
  x.A0[0].fill(1e12);
  x.A1[0].fill(-1e12);
  const square = time(ROWS * C, () => {
    for (let j = 0; j < ROWS; j++) x.simd.squareRow(x.a0[0], x.a1[0], x.sqAt + (j % 4) * 3 * C * 8, C, q);
  });
  const pending = [0, 1, 2, 3];
  const macSecond = time((ROWS / 4) * 4 * OUTS * 3 * C, () => {
    for (let j = 0; j < ROWS; j += 4) {
      for (let r = 0; r < 4; r++) pending[r] = j + r;
      accumulate(x, w2, ROWS, OUTS, C, pending);
    }
  });
  const reduce = time(64 * OUTS * 3 * C, () => {
    for (let j = 0; j < 64; j++) x.simd.reduceAdd(x.accAt, OUTS * 3 * C, q, 0);
  });
  return { macFirst, macSecond, square, reduce };
}
