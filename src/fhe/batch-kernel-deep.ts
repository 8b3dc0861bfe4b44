// The end of a batch evaluation with two or more activations (batch-plan.ts): the second layer's
// size-3 values are squared into size-5 ones and summed by the third layer, those squared into
// size 9 by the next, and so on. Per lane, the MNIST MLP (784-128-64-10) does ~200,000
// first-layer products and 3,200 here, so these are plain loops, not SIMD. The exactness argument is kernel-limits.ts's: every product of two
// reduced residues is below 2^53 (2 x y < 2^53 for x, y < 2^26), and the accumulators add
// products w3 x square of at most REDUCE_EVERY rows between reductions.
// layersAfterRescale and residueAtScale are the same end after a rescale (rescale.ts) of a
// layer's values, in plans that rescale (batch-plan.ts, rescalePrimes); checked by
// test/unit/batch-rescale.test.ts.
import { REDUCE_EVERY } from './kernel-limits.ts';

/** a mod q for |a| + q <= 2^53 (kernel-limits.ts, reductions): the rounded quotient is off by at most one. */
function mod(a: number, q: number, qinv: number): number {
  const x = a - Math.floor(a * qinv) * q;
  return x < 0 ? x + q : x >= q ? x - q : x;
}

/** A dense layer over the squares of the values before it, for one prime: its bias residues. */
export interface SquareLayer {
  rows: number;
  w: Float64Array;
  bias: Float64Array;
}

// Scratch, grown as needed: the squares of four rows, and two accumulators the stages alternate.
let squares = new Float64Array(0);
const pingPong = [new Float64Array(0), new Float64Array(0)];

/**
 * `values`: a lane chunk's values of `rows` rows, [row][poly][lane], `size` polynomials each,
 * reduced, bias included. Squares them (size -> 2 size - 1: the tensor product of the
 * polynomials in s, (sum_i x_i s^i)^2 = sum_m (sum_(i+j=m) x_i x_j) s^m) and applies each layer
 * in turn, the next squaring the one before. Returns the last layer's values in the same form
 * (a scratch buffer, valid until the next call) with their row count and size.
 */
export function squareLayers(
  values: Float64Array,
  rows: number,
  size: number,
  layers: readonly SquareLayer[],
  q: number,
  C: number,
): { values: Float64Array; rows: number; size: number } {
  const qinv = 1 / q;
  let x = values;
  layers.forEach((layer, li) => {
    const out = 2 * size - 1;
    const n = layer.rows * out * C;
    const which = li % 2;
    if (pingPong[which].length < n) pingPong[which] = new Float64Array(n);
    const acc = pingPong[which];
    // Squares of four rows at a time: each accumulator is then read and written once per four
    // rows (the loop is bound by memory traffic: LeNet's third layer, 12,288 weights on size-5
    // values, took 66 us per lane one row at a time).
    const span = out * C;
    if (squares.length < 4 * span) squares = new Float64Array(4 * span);
    const sq = squares;
    acc.fill(0, 0, n);
    let sinceReduce = 0;
    for (let k0 = 0; k0 < rows; k0 += 4) {
      const group = Math.min(4, rows - k0);
      sq.fill(0, 0, 4 * span);
      for (let r = 0; r < group; r++) {
        const at = (k0 + r) * size * C;
        const to = r * span;
        for (let i = 0; i < size; i++)
          for (let j = i; j < size; j++) {
            // 2 x y < 2^53: exact (kernel-limits.ts).
            const f = i === j ? 1 : 2;
            const a = at + i * C;
            const b = at + j * C;
            const m = to + (i + j) * C;
            for (let l = 0; l < C; l++) {
              let v = sq[m + l] + mod(f * x[a + l] * x[b + l], q, qinv);
              if (v >= q) v -= q;
              sq[m + l] = v;
            }
          }
      }
      // Rows past the last weigh 0 (their squares are the zeros left by fill).
      const w = layer.w;
      for (let o = 0; o < layer.rows; o++) {
        const base = o * rows + k0;
        const wa = w[base];
        const wb = group > 1 ? w[base + 1] : 0;
        const wc = group > 2 ? w[base + 2] : 0;
        const wd = group > 3 ? w[base + 3] : 0;
        if (wa === 0 && wb === 0 && wc === 0 && wd === 0) continue;
        const dst = o * span;
        for (let i = 0; i < span; i++) acc[dst + i] += wa * sq[i] + wb * sq[span + i] + wc * sq[2 * span + i] + wd * sq[3 * span + i];
      }
      // REDUCE_EVERY is a multiple of four (kernel-limits.ts): the count stays exact.
      if ((sinceReduce += 4) >= REDUCE_EVERY) {
        for (let i = 0; i < n; i++) acc[i] = mod(acc[i], q, qinv);
        sinceReduce = 0;
      }
    }
    for (let o = 0; o < layer.rows; o++) {
      const b = layer.bias[o];
      for (let p = 0; p < out; p++) {
        const at = (o * out + p) * C;
        const add = p === 0 ? b : 0;
        for (let l = 0; l < C; l++) {
          let v = mod(acc[at + l], q, qinv) + add;
          if (v >= q) v -= q;
          acc[at + l] = v;
        }
      }
    }
    x = acc;
    rows = layer.rows;
    size = out;
  });
  return { values: x, rows, size };
}

/** Chunk values (rows x size x C, squareLayers's form) into `dst`, [row][poly][prime][coefficient] over LN lanes, at lane0. */
export function writeChunk(values: Float64Array, rows: number, size: number, C: number, dst: Uint32Array, LN: number, lane0: number): void {
  for (let r = 0; r < rows * size; r++) {
    const src = r * C;
    const at = r * LN + lane0;
    for (let l = 0; l < C; l++) dst[at + l] = values[src + l];
  }
}

let chunk = new Float64Array(0);

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
  if (chunk.length < rows * size * C) chunk = new Float64Array(rows * size * C);
  for (let k = 0; k < rows; k++)
    for (let p = 0; p < size; p++) {
      const src = k * rowStride + p * LN + lane0;
      const dst = (k * size + p) * C;
      for (let l = 0; l < C; l++) chunk[dst + l] = values[src + l];
    }
  const last = squareLayers(
    chunk,
    rows,
    size,
    layers.map((l) => ({ rows: l.rows, w: l.w, bias: l.bias[pi] })),
    primes[pi],
    C,
  );
  writeChunk(last.values, last.rows, last.size, C, output, LN, lane0);
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
