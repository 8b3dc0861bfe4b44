// The flood's integers (noise.ts floodNoise): a chain of Gaussians, each smoothing the float grid
// of the one before, down to unit granularity. Checks the chain's shape (each width far above the
// previous grid, the last grid below 1, as few terms as that allows) and the samples: their
// standard deviation and uniform low bits (a chain that stopped short of unit granularity, e.g. a
// step of 2^-60, leaves sigma 2^55's low bits zero).
import t from 'tap';
import { FLOOD_SMOOTHING_STEP, SEAL_NOISE_SIGMA, floodNoise, floodScales, smallNoise } from '../../src/fhe/noise.ts';

/** The largest |z| standardNormals makes (Box-Muller from a uniform of at least 2^-54). */
const Z_MAX = Math.sqrt(-2 * Math.log(2 ** -54));

t.test('the chain: each Gaussian at least 2^8.8 times the grid of the one before, the last below 2^49', async (t) => {
  for (const sigma of [2 ** 30, 2 ** 60, 2 ** 83, 2 ** 140, 2 ** 271]) {
    const s = floodScales(sigma);
    t.equal(s[0], sigma, `sigma 2^${Math.log2(sigma)}: the first term is the flood's`);
    t.ok(s.at(-1)! < 2 ** 49, `the last, 2^${Math.log2(s.at(-1)!).toFixed(0)}, lies on a grid below 1 (|x| < 2^53)`);
    for (let k = 1; k < s.length; k++) {
      const grid = Z_MAX * s[k - 1] * 2 ** -52;
      if (s[k] < 2 ** 8.8 * grid) t.fail(`term ${k}: width ${s[k]} against the grid ${grid}`);
    }
    t.equal(s.length, Math.max(1, 1 + Math.ceil((Math.log2(sigma) - 49) / -Math.log2(FLOOD_SMOOTHING_STEP))), `${s.length} terms`);
  }
  t.equal(floodScales(2 ** 83).length, 2, "a single-record mask's flood (sigma ~2^83): two terms per integer");
  t.equal(floodScales(2 ** 271).length, 7, "a tree batch's (~2^271): seven");
});

t.test('the samples: the standard deviation asked, uniform low bits', async (t) => {
  const n = 16384;
  const uniform = (counts: number[], what: string) => {
    const expect = n / counts.length;
    const worst = Math.max(...counts.map((c) => Math.abs(c - expect) / expect));
    t.ok(worst < 0.2, `${what}: ${counts.length} values, each within ${(100 * worst).toFixed(1)}% of ${expect}`);
  };
  for (const sigma of [2 ** 20, 2 ** 55, 2 ** 100]) {
    const f = floodNoise(n, sigma);
    let s2 = 0;
    const low = Array<number>(16).fill(0);
    for (const x of f) {
      s2 += Number(x) ** 2;
      low[Number(((x % 16n) + 16n) % 16n)]++;
    }
    t.ok(Math.abs(Math.sqrt(s2 / n) / sigma - 1) < 0.05, `sigma 2^${Math.log2(sigma)}: measured 2^${Math.log2(Math.sqrt(s2 / n)).toFixed(3)}`);
    uniform(low, `sigma 2^${Math.log2(sigma)}: the low 4 bits`);
  }
});

t.test("the fresh noise (smallNoise) is SEAL's centered binomial: variance 21/2, within 21, its exact point masses", async (t) => {
  const n = 1 << 20;
  const e = smallNoise(n);
  t.equal(SEAL_NOISE_SIGMA, Math.sqrt(21 / 2), "the width the noise bounds use is the sampler's");
  let sum = 0;
  let squares = 0;
  const count = new Map<number, number>();
  for (const x of e) {
    sum += x;
    squares += x * x;
    count.set(x, (count.get(x) ?? 0) + 1);
  }
  t.ok(Math.abs(sum / n) < 0.02, `mean ${(sum / n).toFixed(4)} (0)`);
  t.ok(Math.abs(squares / n - 10.5) < 0.1, `variance ${(squares / n).toFixed(3)} (10.5; a rounded Gaussian of 3.2 gives 10.32)`);
  t.ok(
    e.every((x) => Number.isInteger(x) && Math.abs(x) <= 21),
    'integers within 21',
  );
  // P(e = k) = C(42, 21 + k) / 2^42 (the difference of two Binomial(21, 1/2)).
  const choose = (m: number, k: number) => Array.from({ length: k }, (_, i) => (m - i) / (i + 1)).reduce((a, b) => a * b, 1);
  for (const k of [0, 1, -1, 3, -5, 8]) {
    const p = choose(42, 21 + k) / 2 ** 42;
    const got = (count.get(k) ?? 0) / n;
    t.ok(Math.abs(got - p) < 5 * Math.sqrt(p / n), `P(${k}) ${got.toFixed(5)} against ${p.toFixed(5)}`);
  }
});
