// The end of a batch evaluation with two activations (batch-plan.ts): the second layer's
// size-3 values are squared into size-5 ones and summed by the third layer. Per lane, the
// MNIST MLP (784-128-64-10) does ~200,000 first-layer products and 3,200 here, so these are
// plain loops, not SIMD. The exactness argument is kernel-limits.ts's: every product of two
// reduced residues is below 2^53 (2 x y < 2^53 for x, y < 2^26), and the accumulators add
// products w3 x square of at most REDUCE_EVERY rows between reductions.
// thirdLayerLanes and residueAtScale are the same end after a rescale (rescale.ts) of the second
// layer's values, in plans that rescale (batch-plan.ts, second.rescalePrimes); checked by
// test/unit/batch-rescale.test.ts.
import { REDUCE_EVERY } from './kernel-limits.ts';

let squares = new Float64Array(0);
let sums = new Float64Array(0);

/** a mod q for |a| + q <= 2^53 (kernel-limits.ts, reductions): the rounded quotient is off by at most one. */
function mod(a: number, q: number, qinv: number): number {
  const x = a - Math.floor(a * qinv) * q;
  return x < 0 ? x + q : x >= q ? x - q : x;
}

/**
 * `mid`: the second layer's sums for lanes [lane0, lane0 + C) of one prime, [row][poly][lane],
 * reduced and without their bias (bias2, residues). Writes the results, bias3 added, to
 * `output` as the kernel does: [output][poly][prime][coefficient], five polynomials each.
 */
export function squareAndThirdLayer(
  mid: Float64Array,
  bias2: Float64Array,
  w3: Float64Array,
  bias3: Float64Array,
  q: number,
  output: Uint32Array,
  lane0: number,
  LN: number,
  C: number,
): void {
  const rows = bias2.length;
  const outs = bias3.length;
  const qinv = 1 / q;
  if (squares.length < 5 * C) squares = new Float64Array(5 * C);
  if (sums.length < outs * 5 * C) sums = new Float64Array(outs * 5 * C);
  const sq = squares;
  const acc = sums;
  acc.fill(0, 0, outs * 5 * C);
  let sinceReduce = 0;
  for (let k = 0; k < rows; k++) {
    // (x + y s + z s^2)^2 = x^2 + 2xy s + (y^2 + 2xz) s^2 + 2yz s^3 + z^2 s^4
    const at = k * 3 * C;
    const b = bias2[k];
    for (let l = 0; l < C; l++) {
      let x = mid[at + l] + b;
      if (x >= q) x -= q;
      const y = mid[at + C + l];
      const z = mid[at + 2 * C + l];
      sq[l] = mod(x * x, q, qinv);
      sq[C + l] = mod(2 * x * y, q, qinv);
      let u = mod(y * y, q, qinv) + mod(2 * x * z, q, qinv);
      if (u >= q) u -= q;
      sq[2 * C + l] = u;
      sq[3 * C + l] = mod(2 * y * z, q, qinv);
      sq[4 * C + l] = mod(z * z, q, qinv);
    }
    for (let o = 0; o < outs; o++) {
      const w = w3[o * rows + k];
      if (w === 0) continue;
      const dst = o * 5 * C;
      for (let i = 0; i < 5 * C; i++) acc[dst + i] += w * sq[i];
    }
    if (++sinceReduce === REDUCE_EVERY) {
      for (let i = 0; i < outs * 5 * C; i++) acc[i] = mod(acc[i], q, qinv);
      sinceReduce = 0;
    }
  }
  for (let o = 0; o < outs; o++)
    for (let p = 0; p < 5; p++) {
      const src = (o * 5 + p) * C;
      const dst = (o * 5 + p) * LN + lane0;
      const add = p === 0 ? bias3[o] : 0;
      for (let l = 0; l < C; l++) {
        let x = mod(acc[src + l], q, qinv) + add;
        if (x >= q) x -= q;
        output[dst + l] = x;
      }
    }
}

let chunk = new Float64Array(0);
let noBias = new Float64Array(0);

/**
 * The end of a two-activation evaluation whose second-layer values were rescaled first
 * (rescale.ts: divided by one or more of the last primes, so the square and the third layer run
 * over fewer primes): lanes [lane0, lane1) of one prime of that lower level. `mid` holds the
 * rescaled values, bias2 included: row k's three polynomials, [poly][prime][coefficient] over
 * `primes.length` primes, from k * rowStride (the rescale leaves each row at the front of its
 * place: rowStride is 3 x the lanes before it); `bias3` the third layer's biases at the results'
 * exact scale (residueAtScale), [prime][output]. Writes the results as squareAndThirdLayer does,
 * over the lower level's lanes.
 */
export function thirdLayerLanes(
  mid: Uint32Array,
  rowStride: number,
  rows: number,
  w3: Float64Array,
  bias3: Float64Array[],
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
  if (chunk.length < rows * 3 * C) chunk = new Float64Array(rows * 3 * C);
  if (noBias.length < rows) noBias = new Float64Array(rows);
  for (let k = 0; k < rows; k++)
    for (let p = 0; p < 3; p++) {
      const src = k * rowStride + p * LN + lane0;
      const dst = (k * 3 + p) * C;
      for (let l = 0; l < C; l++) chunk[dst + l] = mid[src + l];
    }
  squareAndThirdLayer(chunk, noBias.subarray(0, rows), w3, bias3[pi], primes[pi], output, lane0, LN, C);
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
