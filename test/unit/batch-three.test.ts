// Batch mode with three activations (batch-plan.ts, `deeper`): dense -> square -> dense ->
// square -> dense -> square -> dense, size-9 results at ring 16384, no evaluation keys. The
// compiler rescales after the second and the third layer; the server's steps (BatchModel:
// evaluateLanes, then rescaleRows and evaluateAfter per rescale) on real ciphertexts, which SEAL
// decrypts with the powers of s up to s^8; the flood, the attack it stops, and the noise bound
// it is sized from.
import t from 'tap';
import {
  BATCH_DEGREE_DEEP,
  BATCH_DEGREE_WIDE,
  dataPrimesOf,
  layerScales,
  outputsOf,
  rescalesOf,
  outputPrimesOf,
  resultSize,
  type BatchPlan,
} from '../../src/fhe/batch-plan.ts';
import { validateBatchPlan } from '../../src/fhe/batch-plan-check.ts';
import { BatchPrivacy, makeBatchRerandKey } from '../../src/fhe/batch-privacy.ts';
import { MAX_BITS_128 } from '../../src/fhe/params.ts';
import { loadRerandKey, mulmod } from '../../src/fhe/privacy.ts';
import { ProductRescale } from '../../src/fhe/rescale.ts';
import { FLOOD_PRECISION_BITS, compileBatch } from '../../src/model/compile-batch.ts';
import { forward, type Network } from '../../src/model/network.ts';
import { simulateBatch } from '../../src/model/simulate-batch.ts';
import { BatchModel } from '../../src/server/batch-model.ts';
import { differenceL2Bits, encryptBatchInput, largestError, serverSteps, trivialInputs } from '../helpers/batch-input.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(41);
const INPUTS = 10;
const matrix = (rows: number, cols: number, scale: number) => Array.from({ length: rows }, () => Array.from({ length: cols }, () => r() * scale));
const vector = (n: number, scale: number) => Array.from({ length: n }, () => r() * scale);
const three: Network = {
  input: { height: 1, width: INPUTS },
  layers: [
    { type: 'dense', weights: matrix(6, INPUTS, 0.5), bias: vector(6, 0.3) },
    { type: 'quadratic', a: 0.5, b: 0.3, c: 0.1 },
    { type: 'dense', weights: matrix(5, 6, 0.5), bias: vector(5, 0.3) },
    { type: 'quadratic', a: 0.4, b: -0.2, c: 0.05 },
    { type: 'dense', weights: matrix(4, 5, 0.5), bias: vector(4, 0.3) },
    { type: 'quadratic', a: 0.3, b: 0.1, c: 0.02 },
    { type: 'dense', weights: matrix(3, 4, 0.6), bias: vector(3, 0.4) },
  ],
};
const xs = Array.from({ length: 200 }, () => Array.from({ length: INPUTS }, () => r() + 0.5));
const N = BATCH_DEGREE_DEEP;
/** Ring 32768: where 16384 holds no plan with the flood (LeNet), the compiler goes on to it. */
// The flood read at the outputs' level: the result rescale after it has its own test (result-rescale.test.ts).
const wide = compileBatch(three, xs, { degree: BATCH_DEGREE_WIDE, resultRescale: false })!;
const plans = { none: compileBatch(three, xs, { privacy: 'none' })!, flood: compileBatch(three, xs, { resultRescale: false })! };

t.test('the compiler folds three quadratics into a plan with size-9 results, rescaled twice', async (t) => {
  for (const [privacy, plan] of Object.entries(plans)) {
    t.ok(plan, `${privacy}: three activations have a batch plan`);
    t.equal(plan.params.polyModulusDegree, N);
    t.equal(plan.deeper?.length, 1, 'a fourth layer');
    t.equal(resultSize(plan), 9, 'results of nine polynomials (three squares, no relinearization)');
    t.equal(outputsOf(plan), 3);
    t.equal(plan.privacy, privacy);
    const bits = plan.params.coeffModulusBits;
    t.ok(bits.reduce((a, b) => a + b, 0) <= MAX_BITS_128[N], `${privacy}: modulus ${bits.length - 1} data primes within the 128-bit bound`);
    const rescales = rescalesOf(plan);
    t.same(
      rescales.map((s) => [s.layer, s.size]),
      [
        [0, 3],
        [1, 5],
      ],
      `${privacy}: the second layer's size-3 values and the third's size-5 ones are rescaled (${rescales.map((s) => s.primesBefore - s.primesAfter).join(' and ')} primes)`,
    );
    t.equal(outputPrimesOf(plan), rescales[1].primesAfter);
    const scales = layerScales(plan);
    t.equal(plan.outputScaleBits, scales[3].values.log2, 'the results at the scale the layers give');
    let worst = 0,
      top = 1;
    for (const x of xs) {
      const want = forward(three, x);
      simulateBatch(plan, x).forEach((v, o) => {
        worst = Math.max(worst, Math.abs(v - want[o]));
        top = Math.max(top, Math.abs(want[o]));
      });
    }
    t.ok(worst < 2 ** -10 * top, `${privacy}: the quantized plan follows the network (worst |diff| ${worst.toExponential(2)})`);
    t.same(validateBatchPlan(JSON.parse(JSON.stringify(plan))), plan, `${privacy}: the plan passes the loader`);
  }
  t.ok(dataPrimesOf(plans.flood) > dataPrimesOf(plans.none), 'the flood takes more primes');
});

t.test('the loader refuses a deeper layer it cannot evaluate exactly', async (t) => {
  const plan = plans.none;
  const cases: [string, (p: BatchPlan) => void, string][] = [
    ['a rescale of the results', (p) => (p.deeper![0].rescalePrimes = 1), 'deeper\\[0\\]\\.rescalePrimes'],
    ['deeper layers without a third', (p) => delete p.third, 'deeper'],
    ['one deeper weight too few', (p) => p.deeper![0].weight.pop(), 'deeper\\[0\\]\\.weight'],
    ['a deeper weight past the kernel limit', (p) => (p.deeper![0].weight[1] = -(2 ** 15)), 'deeper\\[0\\]\\.weight\\[1\\]'],
    ['rescales that leave no prime', (p) => (p.third!.rescalePrimes = dataPrimesOf(p) - p.second!.rescalePrimes!), 'third\\.rescalePrimes'],
    ['results past the primes left', (p) => (p.deeper![0].weightScaleBits += 80), 'deeper\\[0\\]\\.weightScaleBits'],
    ['an empty list', (p) => (p.deeper = []), 'deeper'],
  ];
  for (const [why, edit, field] of cases) {
    const bad = JSON.parse(JSON.stringify(plan)) as BatchPlan;
    edit(bad);
    t.throws(() => validateBatchPlan(bad), { code: 'bad-bundle', message: new RegExp(field) }, why);
  }
});

async function run(t: { teardown(fn: () => void): void }, plan: BatchPlan, records: number[][]) {
  const enc = await encryptBatchInput(t, plan, records);
  const bm = await BatchModel.open(plan);
  t.teardown(() => bm.close());
  const output = serverSteps(bm, plan, enc.input);
  const lanes = bm.outputLanes;
  const decrypt = (out: Uint32Array) => Array.from({ length: outputsOf(plan) }, (_, o) => enc.holder.decrypt(bm.io.encodeResult(out, o * 9 * lanes, 9)));
  return { ...enc, bm, output, lanes, decrypt };
}

t.test('encrypted: SEAL decrypts the size-9 results of the server steps to the plaintext plan', async (t) => {
  const plan = plans.none;
  const { output, decrypt } = await run(t, plan, xs);
  const { worst, top } = largestError(decrypt(output), (s) => simulateBatch(plan, xs[s]), xs.length);
  // The compiler keeps the honest noise's deviation within 2^-FLOOD_PRECISION_BITS of the largest output.
  const allowed = 6 * 2 ** -FLOOD_PRECISION_BITS * top;
  t.ok(
    worst < allowed,
    `worst |encrypted - plaintext| = ${worst.toExponential(2)} over ${xs.length} records x 3 outputs (documented: ${allowed.toExponential(2)})`,
  );
});

t.test('flood: a guess of the weights is confirmed by an unflooded size-9 result, not by a flooded one; outputs stay exact enough', async (t) => {
  const plan = plans.flood;
  const { bs, skBytes, input, LN, bm, output, lanes, decrypt } = await run(t, plan, xs);
  // From its own query's c1 and the weights, a client computes each layer's top polynomial
  // through both rescales (a rescale treats each polynomial alone): y = sum w1 c1 (s^1),
  // z = sum w2 y^2 (s^2), rescaled; u = sum w3 z^2 (s^4), rescaled; the result's s^8: sum w4 u^2.
  const f = plan.first;
  const later = [plan.second!, plan.third!, plan.deeper![0]];
  const [r1, r2] = rescalesOf(plan);
  const top = (rows: number, lanesOf: number) => new Uint32Array(rows * lanesOf);
  const z = top(later[0].rows, LN);
  bs.primes.forEach((q, p) => {
    for (let c = 0; c < N; c++) {
      const y = Array.from({ length: f.rows }, (_, j) => {
        let acc = 0;
        for (let tp = f.start[j]; tp < f.start[j + 1]; tp++) acc = (acc + mulmod((f.weight[tp] + q) % q, input[(f.index[tp] * 2 + 1) * LN + p * N + c], q)) % q;
        return acc;
      });
      for (let k = 0; k < later[0].rows; k++) {
        let acc = 0;
        for (let j = 0; j < f.rows; j++) acc = (acc + mulmod((later[0].weight[k * f.rows + j] + q) % q, mulmod(y[j], y[j], q), q)) % q;
        z[k * LN + p * N + c] = acc;
      }
    }
  });
  new ProductRescale(bs.primes, N, r1.primesBefore - r1.primesAfter).rows(z, 1, 0, later[0].rows);
  const mid = r1.primesAfter * N;
  const u = top(later[1].rows, mid);
  bs.primes.slice(0, r1.primesAfter).forEach((q, p) => {
    for (let c = 0; c < N; c++)
      for (let k = 0; k < later[1].rows; k++) {
        let acc = 0;
        for (let j = 0; j < later[0].rows; j++) {
          const v = z[j * LN + p * N + c];
          acc = (acc + mulmod((later[1].weight[k * later[0].rows + j] + q) % q, mulmod(v, v, q), q)) % q;
        }
        u[k * mid + p * N + c] = acc;
      }
  });
  new ProductRescale(bs.primes.slice(0, r1.primesAfter), N, r2.primesBefore - r2.primesAfter).rows(u, 1, 0, later[1].rows);
  const q0 = bs.primes[0];
  const probes = 64;
  const confirmed = (out: Uint32Array) => {
    let hits = 0;
    for (let c = 0; c < probes; c++) {
      let s8 = 0;
      for (let k = 0; k < later[1].rows; k++) s8 = (s8 + mulmod((later[2].weight[k] + q0) % q0, mulmod(u[k * mid + c], u[k * mid + c], q0), q0)) % q0;
      if (out[8 * lanes + c] === s8) hits++;
    }
    return hits;
  };
  t.equal(confirmed(output), probes, 'unflooded: the right weights predict the result exactly in every lane (the attack works without the flood)');
  const key = loadRerandKey(makeBatchRerandKey(bs.session, 9, skBytes, outputPrimesOf(plan)), bm.io.outputPrimes, N, 9);
  const privacy = new BatchPrivacy(plan, bm.io.outputPrimes);
  t.ok(privacy.enabled);
  const flooded = output.slice();
  for (let o = 0; o < outputsOf(plan); o++) privacy.apply(key, flooded, o, lanes);
  t.ok(confirmed(flooded) <= 1, `flooded: the same prediction matches ${confirmed(flooded)} of ${probes} lanes`);
  const exact = largestError(decrypt(output), (s) => simulateBatch(plan, xs[s]), xs.length);
  const { worst, top: largest } = largestError(decrypt(flooded), (s) => simulateBatch(plan, xs[s]), xs.length);
  const allowed = 6 * 2 ** -FLOOD_PRECISION_BITS * largest;
  t.ok(worst < allowed, `flooded outputs within ${worst.toExponential(2)} of the plaintext plan (documented: ${allowed.toExponential(2)})`);
  t.ok(worst > 100 * exact.worst, `the flood is there (unflooded: within ${exact.worst.toExponential(2)})`);
});

t.test("honest noise through three squares and two rescales: below the compiler's bound for every output", async (t) => {
  // As in batch-deep.test.ts: the plan on trivial ciphertexts (c1 = 0) of m + e and of m, exact
  // in every prime; their difference, lifted to integers by the CRT, is the noise e becomes
  // (here with the rescales' roundings of c0).
  const plan = plans.flood;
  const bm = await BatchModel.open(plan);
  t.teardown(() => bm.close());
  const primes = bm.io.primes;
  const { withNoise, without, ntts } = trivialInputs(plan, xs, primes);
  const a = serverSteps(bm, plan, withNoise);
  const b = serverSteps(bm, plan, without);
  const kept = bm.io.outputPrimes;
  const lanes = bm.outputLanes;
  for (let o = 0; o < outputsOf(plan); o++) {
    const honest = differenceL2Bits(a, b, kept, ntts, (p) => o * 9 * lanes + p * N);
    t.ok(honest <= plan.noiseL2Bits![o], `output ${o}: honest |v|_2 = 2^${honest.toFixed(1)} <= the bound 2^${plan.noiseL2Bits![o].toFixed(1)}`);
    t.ok(honest > plan.inputScaleBits, 'the noise was measured (it grows past the input scale)');
  }
});

t.test('ring 32768: the same network, its plan at the wider ring (16,384 records per batch), decrypted through the flood', async (t) => {
  t.equal(wide.params.polyModulusDegree, BATCH_DEGREE_WIDE);
  t.equal(wide.privacy, 'flood');
  t.ok(dataPrimesOf(wide) <= dataPrimesOf(plans.flood) + 2, `${dataPrimesOf(wide)} data primes (${dataPrimesOf(plans.flood)} at ring 16384)`);
  t.same(validateBatchPlan(JSON.parse(JSON.stringify(wide))), wide, 'the plan passes the loader');
  const records = Array.from({ length: 300 }, (_, i) => xs[i % xs.length].map((v, j) => v * (0.9 + 0.002 * ((i + j) % 50))));
  const { skBytes, bs, bm, output, lanes, decrypt } = await run(t, wide, records);
  const key = loadRerandKey(makeBatchRerandKey(bs.session, 9, skBytes, outputPrimesOf(wide)), bm.io.outputPrimes, BATCH_DEGREE_WIDE, 9);
  const privacy = new BatchPrivacy(wide, bm.io.outputPrimes);
  for (let o = 0; o < outputsOf(wide); o++) privacy.apply(key, output, o, lanes);
  const { worst, top } = largestError(decrypt(output), (s) => simulateBatch(wide, records[s]), records.length);
  const allowed = 6 * 2 ** -FLOOD_PRECISION_BITS * top;
  t.ok(
    worst < allowed,
    `flooded outputs within ${worst.toExponential(2)} of the plaintext plan over ${records.length} records (documented: ${allowed.toExponential(2)})`,
  );
  t.ok(worst > 0, 'the flood is there');
});
