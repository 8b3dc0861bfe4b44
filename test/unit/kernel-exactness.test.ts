// The batch kernel against BigInt at its exactness limits (src/fhe/kernel-limits.ts): plans
// with weights of +-32,767, rows of exactly 2,048 taps, residues q - 1, second-layer rows that
// span two reductions, random sparse index patterns, several seeds. The real kernel runs
// (prepareKernel, evaluateLanes: the SIMD loops for groups of four rows with the same taps, the
// JavaScript loops for the others, as in production) on Uint32Array residues, and every output
// lane must equal sum-of-products mod q computed in BigInt. Then past the limits: what
// validateBatchPlan refuses, and where the raw kernel really starts to round.
import t from 'tap';
import { evaluateLanes, prepareKernel } from '../../src/fhe/batch-kernel.ts';
import { BATCH_DEGREE, outputsOf, resultSize, type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { validateBatchPlan } from '../../src/fhe/batch-plan-check.ts';
import { EXACT_BOUND, MAX_INT_WEIGHT, MAX_TAPS, PRIME_BITS, REDUCE_EVERY } from '../../src/fhe/kernel-limits.ts';
import { seededRandom } from '../../src/train/augment.ts';

const SEEDS = [1, 2, 3, 4, 5, 6];
/** SEAL's first 26-bit prime for ring 8192, and the largest prime below 2^26 that is 1 mod 4 (so -1 has a square root: squares can be q - 1). */
const PRIMES = [67043329, 67108837];
const DEGREE = BATCH_DEGREE;
const LN = PRIMES.length * DEGREE;
/** Lanes checked: the start of prime 0 and the end of prime 1 (lanes are independent). */
const CHUNKS: [number, number][] = [
  [0, 32],
  [LN - 16, LN],
];
const INPUT_BITS = 20;
/** Biases are m / 2^BIAS_SHIFT for integers m, so m 2^(scale - BIAS_SHIFT) is their exact integer at any scale. */
const BIAS_SHIFT = 6;
const W = MAX_INT_WEIGHT;

const modpow = (b: bigint, e: bigint, m: bigint) => {
  let r = 1n;
  b %= m;
  for (; e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
  return r;
};
const mod = (x: bigint, q: bigint) => ((x % q) + q) % q;
const isPrime = (n: number) => {
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return n > 1;
};
/** r with r^2 = -1 mod q (q = 1 mod 4): from a quadratic non-residue a, r = a^((q-1)/4). */
function sqrtMinusOne(q: number): number {
  const Q = BigInt(q);
  for (let a = 2n; ; a++) if (modpow(a, (Q - 1n) / 2n, Q) === Q - 1n) return Number(modpow(a, (Q - 1n) / 4n, Q));
}

interface Row {
  index: number[];
  weight: number[];
  /** The bias is m / 2^BIAS_SHIFT. */
  m: number;
}

function planOf(inputs: number, rows: Row[], second?: { rows: number; weight: number[]; m: number[] }): BatchPlan {
  const start = [0];
  const index: number[] = [];
  const weight: number[] = [];
  for (const r of rows) {
    for (let i = 0; i < r.index.length; i++) {
      index.push(r.index[i]);
      weight.push(r.weight[i]);
    }
    start.push(index.length);
  }
  return {
    params: { scheme: 'ckks', polyModulusDegree: DEGREE, coeffModulusBits: [PRIME_BITS, PRIME_BITS, PRIME_BITS], securityLevel: 128 },
    inputScaleBits: INPUT_BITS,
    inputs,
    first: { rows: rows.length, start, index, weight, weightScaleBits: 0, bias: rows.map((r) => r.m / 2 ** BIAS_SHIFT) },
    square: second !== undefined,
    second: second && { rows: second.rows, weight: second.weight, weightScaleBits: 0, bias: second.m.map((m) => m / 2 ** BIAS_SHIFT) },
    outputScaleBits: second ? 2 * INPUT_BITS : INPUT_BITS,
  };
}

/** Runs the kernel on the checked chunks; returns the number of output values that differ from BigInt, and the first difference. */
function compare(plan: BatchPlan, input: Uint32Array): { checked: number; wrong: number; first?: string } {
  const size = resultSize(plan);
  const outs = outputsOf(plan);
  const output = new Uint32Array(outs * size * LN);
  const k = prepareKernel(plan, PRIMES);
  for (const [l0, l1] of CHUNKS) evaluateLanes(k, input, output, l0, l1);
  const f = plan.first;
  let checked = 0;
  let wrong = 0;
  let first: string | undefined;
  for (const [l0, l1] of CHUNKS) {
    const q = BigInt(PRIMES[Math.floor(l0 / DEGREE)]);
    const biasAt = (m: number, scale: number) => mod(BigInt(m) << BigInt(scale - BIAS_SHIFT), q);
    for (let lane = l0; lane < l1; lane++) {
      const x = (i: number, p: number) => BigInt(input[(i * 2 + p) * LN + lane]);
      const hidden: bigint[][] = [];
      for (let j = 0; j < f.rows; j++) {
        const h = [biasAt(f.bias[j] * 2 ** BIAS_SHIFT, INPUT_BITS), 0n];
        for (let s = f.start[j]; s < f.start[j + 1]; s++) {
          const w = BigInt(f.weight[s]);
          h[0] += w * x(f.index[s], 0);
          h[1] += w * x(f.index[s], 1);
        }
        hidden.push([mod(h[0], q), mod(h[1], q)]);
      }
      let expected: bigint[][];
      if (!plan.second) expected = hidden;
      else {
        const sec = plan.second;
        const sq = hidden.map(([a, b]) => [(a * a) % q, (2n * a * b) % q, (b * b) % q]);
        expected = [];
        for (let o = 0; o < sec.rows; o++) {
          const acc = [biasAt(sec.bias[o] * 2 ** BIAS_SHIFT, plan.outputScaleBits), 0n, 0n];
          for (let j = 0; j < f.rows; j++) {
            const w = BigInt(sec.weight[o * f.rows + j]);
            for (let p = 0; p < 3; p++) acc[p] += w * sq[j][p];
          }
          expected.push(acc.map((v) => mod(v, q)));
        }
      }
      expected.forEach((polys, o) =>
        polys.forEach((want, p) => {
          checked++;
          const got = output[(o * size + p) * LN + lane];
          if (BigInt(got) !== want) {
            wrong++;
            first ??= `output ${o} poly ${p} lane ${lane}: kernel ${got}, BigInt ${want}`;
          }
        }),
      );
    }
  }
  return { checked, wrong, first };
}

/** Residues of `inputs` features on the checked lanes; `pick(q, i, p)` gives feature i's residue for poly p. */
function residues(inputs: number, pick: (q: number, i: number, p: number) => number): Uint32Array {
  const input = new Uint32Array(inputs * 2 * LN);
  for (const [l0, l1] of CHUNKS) {
    const q = PRIMES[Math.floor(l0 / DEGREE)];
    for (let i = 0; i < inputs; i++) for (let p = 0; p < 2; p++) for (let lane = l0; lane < l1; lane++) input[(i * 2 + p) * LN + lane] = pick(q, i, p);
  }
  return input;
}

t.test('the limits keep every sum below 2^53 (checked in BigInt)', async (t) => {
  const r = 2n ** BigInt(PRIME_BITS) - 1n;
  const bound = BigInt(EXACT_BOUND);
  t.equal(bound, 2n ** 53n);
  t.ok(r + BigInt(MAX_TAPS) * BigInt(W) * r <= bound, `first layer: bias + ${MAX_TAPS} taps x ${W} x (2^26 - 1) <= 2^53`);
  t.ok(r + BigInt(REDUCE_EVERY) * BigInt(W) * r <= bound, `second layer: reduced value + ${REDUCE_EVERY} rows x ${W} x (2^26 - 1) <= 2^53`);
  t.ok(2n * r * r <= bound, 'squares: 2 x y <= 2 (2^26 - 1)^2 <= 2^53');
  t.equal(REDUCE_EVERY % 4, 0, 'the kernel counts rows between reductions four at a time');
  t.ok(
    PRIMES.every((q) => isPrime(q) && q < 2 ** PRIME_BITS && q % 4 === 1),
    'test primes: 26-bit, 1 mod 4',
  );
});

t.test('first layer at the limits: 2,048-tap rows, weights +-32,767, residues q - 1 and random, matches BigInt', async (t) => {
  const INPUTS = 300;
  for (const seed of SEEDS) {
    const rand = seededRandom(seed);
    const int = (n: number) => Math.floor(rand() * n);
    // Weights: all +max, all -max, +-max at random, or anything within the limit.
    const weights = (n: number, mode: number) => Array.from({ length: n }, () => [W, -W, rand() < 0.5 ? W : -W, int(2 * W + 1) - W][mode]);
    const taps = (n: number) => Array.from({ length: n }, () => int(INPUTS));
    // A sparse row: distinct inputs, in random order.
    const sparse = (n: number) => [...new Set(taps(n))];
    const bias = () => int(2 ** 44) - 2 ** 43;
    const rows: Row[] = [];
    // Four rows with the same taps: the SIMD loop (an even and an odd tap count).
    for (const n of [MAX_TAPS, MAX_TAPS - 1]) {
      const index = taps(n);
      for (let mode = 0; mode < 4; mode++) rows.push({ index, weight: weights(n, mode), m: bias() });
    }
    // Rows alone: the JavaScript loop, with and without a remainder of taps.
    for (let mode = 0; mode < 4; mode++) rows.push({ index: taps(MAX_TAPS - (mode % 3)), weight: weights(MAX_TAPS - (mode % 3), mode), m: bias() });
    const s = sparse(40);
    rows.push({ index: s, weight: weights(s.length, 3), m: bias() }, { index: [], weight: [], m: bias() });
    const plan = planOf(INPUTS, rows);
    t.doesNotThrow(() => validateBatchPlan(plan), 'within the limits: the plan is valid');
    // Seed by seed: every residue q - 1 (largest products), q - 1 and q - 2 (odd and even), or random.
    const kind = seed % 3;
    const input = residues(INPUTS, (q) => (kind === 0 ? q - 1 : kind === 1 ? q - 1 - int(2) : int(q)));
    const { checked, wrong, first } = compare(plan, input);
    t.equal(wrong, 0, `seed ${seed} (${['q - 1', 'q - 1 or q - 2', 'random'][kind]} residues): ${checked} values equal BigInt${first ? `; ${first}` : ''}`);
  }
});

t.test('square and second layer at the limits: squares near q, weights +-32,767, rows spanning two reductions, matches BigInt', async (t) => {
  const INPUTS = 64;
  const ROOT = INPUTS - 1;
  // Two full reductions and a partial group of pending squares after them.
  const ROWS = 2 * REDUCE_EVERY + 6;
  const OUTS = 3;
  const roots = PRIMES.map(sqrtMinusOne);
  for (const seed of SEEDS.slice(0, 4)) {
    const rand = seededRandom(100 + seed);
    const int = (n: number) => Math.floor(rand() * n);
    // Most rows read the square root of -1 with weight 1: their squares are q - 1, -2 = q - 2
    // and q - 1, the largest a second-layer product can meet. The rest are random sparse rows.
    const rows: Row[] = Array.from({ length: ROWS }, () => {
      if (rand() < 0.8) return { index: [ROOT], weight: [1], m: 0 };
      const index = Array.from({ length: 1 + int(3) }, () => int(ROOT));
      return { index, weight: index.map(() => int(2 * W + 1) - W), m: int(2 ** 40) - 2 ** 39 };
    });
    const mode = seed % 4;
    const weight = Array.from({ length: OUTS * ROWS }, (_, i) => [W, -W, i % 3 === 0 ? -W : W, int(2 * W + 1) - W][mode]);
    const plan = planOf(INPUTS, rows, { rows: OUTS, weight, m: Array.from({ length: OUTS }, () => int(2 ** 44) - 2 ** 43) });
    t.doesNotThrow(() => validateBatchPlan(plan), 'within the limits: the plan is valid');
    const input = residues(INPUTS, (q, i) => (i === ROOT ? roots[PRIMES.indexOf(q)] : int(q)));
    const { checked, wrong, first } = compare(plan, input);
    t.equal(
      wrong,
      0,
      `seed ${seed} (second-layer weights ${['+max', '-max', '+-max', 'random'][mode]}): ${checked} values over ${ROWS} rows equal BigInt${first ? `; ${first}` : ''}`,
    );
  }
});

t.test('past the limits: validateBatchPlan refuses the plan; the raw kernel has a factor 2 of margin, then rounds', async (t) => {
  const INPUTS = 300;
  const rand = seededRandom(7);
  const int = (n: number) => Math.floor(rand() * n);
  const row = (n: number, w: number): Row => ({ index: Array.from({ length: n }, () => int(INPUTS)), weight: new Array<number>(n).fill(w), m: 0 });
  const four = (n: number, w: number) => {
    const r = row(n, w);
    return [r, r, r, r];
  };
  const max = residues(INPUTS, (q, _i, p) => q - 1 - p);
  const high = residues(INPUTS, (q) => q - 1 - int(q >> 1));

  const heavy = planOf(INPUTS, four(MAX_TAPS, 2 ** 15));
  t.throws(
    () => validateBatchPlan(heavy),
    { code: 'bad-bundle', message: /first\.weight\[0\] is 32768, outside \[-32767, 32767\]/ },
    'a weight of 2^15 is refused',
  );
  t.equal(compare(heavy, max).wrong, 0, 'the raw kernel is still exact at weight 2^15 x 2,048 taps (2^52 < 2^53: the margin)');

  const long = planOf(INPUTS, four(MAX_TAPS + 1, W));
  t.throws(() => validateBatchPlan(long), { code: 'bad-bundle', message: /first row 0 has 2049 taps/ }, 'a row of 2,049 taps is refused');
  t.equal(compare(planOf(INPUTS, four(2 * MAX_TAPS, W)), max).wrong, 0, 'the raw kernel is still exact at 4,096 taps of 32,767 x (q - 1): just below 2^53');

  // Far past: sums around 2^53.5, where a float64 can only hold even integers.
  const wide = compare(planOf(INPUTS, [...four(4 * MAX_TAPS, W), row(4 * MAX_TAPS + 1, W)]), high);
  t.ok(wide.wrong > 0, `8,192 taps at 32,767: ${wide.wrong} of ${wide.checked} values differ from BigInt (${wide.first})`);
  const big = compare(planOf(INPUTS, [...four(MAX_TAPS, 2 ** 17 - 1), row(MAX_TAPS, 2 ** 17 - 1)]), high);
  t.ok(big.wrong > 0, `weights of 2^17 - 1 on 2,048 taps: ${big.wrong} of ${big.checked} values differ from BigInt (${big.first})`);
});
