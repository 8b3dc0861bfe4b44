// The end of a batch evaluation with two or more activations (batch-plan.ts): the second layer's
// size-3 values are squared into size-5 ones and summed by the third layer, those squared into
// size 9 by the next, and so on. The loops are kernel.wat's (squareAdd, acc4x4 and acc4, reduceAdd), on
// its memory: LeNet's third layer alone is 12,288 weights on size-5 values per lane. The
// exactness argument is kernel-limits.ts's: every product of two reduced residues is below 2^53
// (2 x y < 2^53 for x, y < 2^26), and the accumulators add products w3 x square of at most
// REDUCE_EVERY rows between reductions.
// layersAfterRescale and residueAtScale are the same end after a rescale (rescale.ts) of a
// layer's values, in plans that rescale (batch-plan.ts, rescalePrimes); checked by
// test/unit/batch-rescale.test.ts.
import { REDUCE_EVERY } from './kernel-limits.ts';
import { accumulateRows, simdWithMemory } from './kernel-simd.ts';

/** A dense layer over the squares of the values before it, for one prime: its bias residues. */
export interface SquareLayer {
  rows: number;
  w: Float64Array;
  bias: Float64Array;
}

const align = (bytes: number) => Math.ceil(bytes / 16) * 16;

/**
 * Values of `rows` rows at byte `at` of the SIMD memory, [row][poly][lane] over a chunk of C
 * lanes, `size` polynomials each, float64 residues in [0, q), bias included. Squares them (size
 * -> 2 size - 1: the tensor product of the polynomials in s, (sum_i x_i s^i)^2 =
 * sum_m (sum_(i+j=m) x_i x_j) s^m) and applies each layer in turn, the next squaring the one
 * before. Works from byte `free` on (past the values) and returns where the last layer's values
 * are, in the same form, with their row count and size.
 */
export function squareLayers(
  at: number,
  rows: number,
  size: number,
  layers: readonly SquareLayer[],
  q: number,
  C: number,
  free: number,
): { at: number; rows: number; size: number } {
  let maxSpan = 0,
    maxValues = 0;
  for (let l = 0, s = size; l < layers.length; l++) {
    s = 2 * s - 1;
    maxSpan = Math.max(maxSpan, s * C * 8);
    maxValues = Math.max(maxValues, layers[l].rows * s * C * 8);
  }
  // The squares of four rows, then two accumulators the layers alternate.
  const sqAt = align(free);
  const accAt = [sqAt + 4 * maxSpan, sqAt + 4 * maxSpan + maxValues];
  const simd = simdWithMemory(accAt[1] + maxValues);
  const mem = new Float64Array(simd.memory.buffer);
  let x = at;
  layers.forEach((layer, li) => {
    const out = 2 * size - 1;
    const span = out * C;
    const acc = accAt[li % 2];
    mem.fill(0, acc / 8, acc / 8 + layer.rows * span);
    let sinceReduce = 0;
    const active = new Int32Array(layer.rows);
    const weights = new Float64Array(4 * layer.rows);
    const src = [0, 1, 2, 3].map((r) => sqAt + r * span * 8);
    // Squares of four rows at a time: each accumulator is then read and written once per four
    // rows (fewer loads and stores: the loop is bound by its instructions).
    for (let k0 = 0; k0 < rows; k0 += 4) {
      const group = Math.min(4, rows - k0);
      mem.fill(0, sqAt / 8, sqAt / 8 + 4 * span);
      for (let r = 0; r < group; r++) {
        const row = x + (k0 + r) * size * C * 8;
        const to = sqAt + r * span * 8;
        // 2 x y < 2^53: exact (kernel-limits.ts).
        for (let i = 0; i < size; i++)
          for (let j = i; j < size; j++) simd.squareAdd(to + (i + j) * C * 8, row + i * C * 8, row + j * C * 8, i === j ? 1 : 2, C, q);
      }
      // Rows past the last weigh 0 (their squares are the zeros left by fill).
      const w = layer.w;
      const weight = (o: number, r: number) => (r < group ? w[o * rows + k0 + r] : 0);
      accumulateRows(simd, layer.rows, weight, (o) => acc + o * span * 8, src, span, 1, 0, active, weights);
      // REDUCE_EVERY is a multiple of four (kernel-limits.ts): the count stays exact.
      if ((sinceReduce += 4) >= REDUCE_EVERY) {
        simd.reduceAdd(acc, layer.rows * span, q, 0);
        sinceReduce = 0;
      }
    }
    for (let o = 0; o < layer.rows; o++) {
      simd.reduceAdd(acc + o * span * 8, C, q, layer.bias[o]);
      simd.reduceAdd(acc + (o * span + C) * 8, span - C, q, 0);
    }
    x = acc;
    rows = layer.rows;
    size = out;
  });
  return { at: x, rows, size };
}

/** Chunk values at byte `at` of the SIMD memory (rows x size x C, squareLayers's form) into `dst`, [row][poly][prime][coefficient] over LN lanes, at lane0. */
export function writeChunk(at: number, rows: number, size: number, C: number, dst: Uint32Array, LN: number, lane0: number): void {
  // Each row's C lanes to u32 after the values (kernel.wat f64ToU32), then copied out: residues
  // are integers in [0, q), the conversion is exact.
  const stage = align(at + rows * size * C * 8);
  const simd = simdWithMemory(stage + C * 4);
  const staged = new Uint32Array(simd.memory.buffer, stage, C);
  for (let r = 0; r < rows * size; r++) {
    simd.f64ToU32(at + r * C * 8, stage, C);
    dst.set(staged, r * LN + lane0);
  }
}

/**
 * The layers after a rescale (rescale.ts: values divided by one or more of the last primes, so
 * the squares and layers after run over fewer primes): lanes [lane0, lane1) of one prime of that
 * lower level. `values` holds the rescaled values: row k's `size` polynomials, [poly][prime]
 * [coefficient] over `primes.length` primes, from k * rowStride (the rescale leaves each row at
 * the front of its place: rowStride is size x the lanes before it); `layers[i].bias` has one
 * entry per prime of the level (SquareLayer's bias for each). Writes the last layer's values to
 * `output` as the kernel does, over the level's lanes.
 */
export function layersAfterRescale(
  values: Uint32Array,
  rowStride: number,
  rows: number,
  size: number,
  layers: readonly { rows: number; w: Float64Array; bias: Float64Array[] }[],
  primes: readonly number[],
  degree: number,
  output: Uint32Array,
  lane0: number,
  lane1: number,
): void {
  const LN = primes.length * degree;
  const pi = Math.floor(lane0 / degree);
  if (lane1 <= lane0 || Math.floor((lane1 - 1) / degree) !== pi) throw new RangeError('a lane chunk must lie within one prime');
  const C = lane1 - lane0;
  if (C % 2) throw new RangeError('a lane chunk must have an even number of lanes');
  // The chunk's values at the start of the SIMD memory, as float64: each row's C lanes copied in
  // as u32 after them, then converted in place (kernel.wat u32ToF64).
  const bytes = rows * size * C * 8;
  const simd = simdWithMemory(bytes + C * 4);
  const staged = new Uint32Array(simd.memory.buffer, bytes, C);
  for (let k = 0; k < rows; k++)
    for (let p = 0; p < size; p++) {
      const src = k * rowStride + p * LN + lane0;
      staged.set(values.subarray(src, src + C));
      simd.u32ToF64(bytes, (k * size + p) * C * 8, C);
    }
  const last = squareLayers(
    0,
    rows,
    size,
    layers.map((l) => ({ rows: l.rows, w: l.w, bias: l.bias[pi] })),
    primes[pi],
    C,
    bytes,
  );
  writeChunk(last.at, last.rows, last.size, C, output, LN, lane0);
}

/**
 * round(value 2^bits / (d_1 d_2 ...)) mod q, exactly: a bias at a scale that rescaling made a
 * power of two over a product of primes. A float64 is m 2^e with m an integer, so the quotient
 * is one of integers (BigInt), rounded half away from zero.
 */
export function residueAtScale(value: number, bits: number, divisors: readonly number[], q: number): number {
  if (!Number.isFinite(value)) throw new RangeError(`residueAtScale: ${value} is not a finite number`);
  let m = value;
  let e = 0;
  while (!Number.isInteger(m)) {
    m *= 2;
    e--;
  }
  let num = BigInt(m);
  let den = divisors.reduce((a, d) => a * BigInt(d), 1n);
  const shift = bits + e;
  if (shift >= 0) num <<= BigInt(shift);
  else den <<= BigInt(-shift);
  const negative = num < 0n;
  const r = ((negative ? -num : num) * 2n + den) / (2n * den);
  const Q = BigInt(q);
  return Number((((negative ? -r : r) % Q) + Q) % Q);
}
