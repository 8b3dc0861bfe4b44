// The honest noise of batch results from real encryptions under a real secret key, against the
// bound the flood is sized from (batch-noise.ts). The other honest-noise tests run the plan on
// trivial ciphertexts (c1 = 0), whose rescales round c0 only; a real size-5 ciphertext's rescale
// also rounds c1 .. c4, and their roundings reach the phase times s .. s^4 (rescaleRounding).
// Here: each rescale's rounding nu, exactly (D nu = phase before - D phase after, modulo the
// primes before it, lifted by the CRT), and each result's whole noise (its phase minus the plan's
// result on trivial ciphertexts of the same encoded messages without noise).
import t from 'tap';
import { outputPrimesOf, outputsOf, rescalesOf, resultSize, type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { NegacyclicNtt, mulmod } from '../../src/fhe/ntt.ts';
import { secretKeyResidues } from '../../src/fhe/rerand-key.ts';
import { rescaleRounding } from '../../src/model/rescale-rounding.ts';
import { compileBatch } from '../../src/model/compile-batch.ts';
import type { Network } from '../../src/model/network.ts';
import { BatchModel } from '../../src/server/batch-model.ts';
import { differenceL2Bits, encryptBatchInput, serverSteps, trivialInputs } from '../helpers/batch-input.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(53);
const INPUTS = 10;
const matrix = (rows: number, cols: number, scale: number) => Array.from({ length: rows }, () => Array.from({ length: cols }, () => (r() - 0.5) * scale));
const vector = (n: number, scale: number) => Array.from({ length: n }, () => (r() - 0.5) * scale);
// Three squares: the compiler rescales size-3 values and size-5 ones (ring 16384).
const three: Network = {
  input: { height: 1, width: INPUTS },
  layers: [
    { type: 'dense', weights: matrix(6, INPUTS, 1), bias: vector(6, 0.6) },
    { type: 'quadratic', a: 0.5, b: 0.3, c: 0.1 },
    { type: 'dense', weights: matrix(5, 6, 1), bias: vector(5, 0.6) },
    { type: 'quadratic', a: 0.4, b: -0.2, c: 0.05 },
    { type: 'dense', weights: matrix(4, 5, 1), bias: vector(4, 0.6) },
    { type: 'quadratic', a: 0.3, b: 0.1, c: 0.02 },
    { type: 'dense', weights: matrix(3, 4, 1.2), bias: vector(3, 0.8) },
  ],
};
const xs = Array.from({ length: 300 }, () => Array.from({ length: INPUTS }, () => r() * 2 - 0.5));
const plan = compileBatch(three, xs, { resultRescale: false })!;
const N = plan.params.polyModulusDegree;

/** phase = sum_i c_i s^i for the `size` polynomials at `at(i, p)` (NTT form), per prime. */
function phase(values: Uint32Array, size: number, primes: readonly number[], s: Uint32Array, at: (i: number, p: number) => number): Uint32Array {
  const out = new Uint32Array(primes.length * N);
  primes.forEach((q, p) => {
    for (let c = 0; c < N; c++) {
      const sp = s[p * N + c];
      let acc = 0;
      for (let i = size - 1; i >= 0; i--) acc = (mulmod(acc, sp, q) + values[at(i, p) + c]) % q;
      out[p * N + c] = acc;
    }
  });
  return out;
}

async function encrypted(t: { teardown(fn: () => void): void }, p: BatchPlan) {
  const enc = await encryptBatchInput(t, p, xs);
  const { seal, context } = enc.bs.session;
  const sk = new seal.SecretKey();
  sk.loadFromArray(context, enc.skBytes);
  const raw = sk.saveToArray(seal.ComprModeType.none) as Uint8Array;
  sk.delete();
  const primes = enc.bs.primes;
  const s = secretKeyResidues(raw, N, primes.length + 1, primes.length);
  const bm = await BatchModel.open(p);
  t.teardown(() => bm.close());
  return { ...enc, s, bm, primes, ntts: primes.map((q) => new NegacyclicNtt(q, N)) };
}

t.test("each rescale's rounding, with a real key: below rescaleRounding's |nu|_2, which is well below the worst case", async (t) => {
  const { input, s, bm, primes, ntts } = await encrypted(t, plan);
  const points = rescalesOf(plan);
  t.same(
    points.map((p) => p.size),
    [3, 5],
    'size-3 and size-5 values are rescaled',
  );
  let values = new Uint32Array(bm.valuesAt(0));
  bm.evaluateLanes(input, values, 0, bm.lanes);
  for (const [j, point] of points.entries()) {
    const { size, primesBefore, primesAfter } = point;
    const before = values.slice();
    bm.rescaleRows(values, 0, point.rows, j);
    const dropped = primes.slice(primesAfter, primesBefore);
    const log2D = dropped.reduce((a, q) => a + Math.log2(q), 0);
    const D = dropped.reduce((a, q) => a * BigInt(q), 1n);
    const stride = size * primesBefore * N;
    const bound = rescaleRounding(N, size);
    const worst = (Math.sqrt(N) / 2) * Array.from({ length: size }, (_, i) => (6 * Math.sqrt(2 * N)) ** i).reduce((a, b) => a + b, 0);
    for (const row of [0, point.rows - 1]) {
      const pb = phase(before, size, primes.slice(0, primesBefore), s, (i, p) => row * stride + (i * primesBefore + p) * N);
      const pa = phase(values, size, primes.slice(0, primesAfter), s, (i, p) => row * stride + (i * primesAfter + p) * N);
      // D times the phase after, over the primes before (0 modulo the dropped ones).
      const scaled = new Uint32Array(primesBefore * N);
      primes.slice(0, primesAfter).forEach((q, p) => {
        const d = Number(D % BigInt(q));
        for (let c = 0; c < N; c++) scaled[p * N + c] = mulmod(pa[p * N + c], d, q);
      });
      const nu = differenceL2Bits(pb, scaled, primes.slice(0, primesBefore), ntts.slice(0, primesBefore), (p) => p * N) - log2D;
      t.ok(
        nu <= Math.log2(bound.l2),
        `rescale ${j} (size ${size}, row ${row}): |nu|_2 = 2^${nu.toFixed(2)} <= 2^${Math.log2(bound.l2).toFixed(2)} (the worst case: 2^${Math.log2(worst).toFixed(2)})`,
      );
      t.ok(nu > Math.log2(bound.l2) - 4, `rescale ${j}, row ${row}: the rounding was measured (within 2^4 of its bound)`);
    }
    if (j + 1 < points.length) {
      const next = new Uint32Array(bm.valuesAt(j + 1));
      bm.evaluateAfter(values, next, 0, bm.lanesAfter(j), j);
      values = next;
    }
  }
});

t.test("a result's whole honest noise, with a real key: below the compiler's bound for every output", async (t) => {
  const { input, s, bm, primes, ntts } = await encrypted(t, plan);
  const real = serverSteps(bm, plan, input);
  const { without } = trivialInputs(plan, xs, primes);
  const exact = serverSteps(bm, plan, without);
  const size = resultSize(plan);
  const kept = primes.slice(0, outputPrimesOf(plan));
  const lanes = bm.outputLanes;
  for (let o = 0; o < outputsOf(plan); o++) {
    const ph = phase(real, size, kept, s, (i, p) => (o * size + i) * lanes + p * N);
    const c0 = exact.subarray(o * size * lanes, o * size * lanes + kept.length * N);
    const honest = differenceL2Bits(ph, c0, kept, ntts.slice(0, kept.length), (p) => p * N);
    t.ok(honest <= plan.noiseL2Bits![o], `output ${o}: honest |v|_2 = 2^${honest.toFixed(1)} <= the bound 2^${plan.noiseL2Bits![o].toFixed(1)}`);
    t.ok(honest > plan.inputScaleBits, 'the noise was measured (it grows past the input scale)');
  }
});
