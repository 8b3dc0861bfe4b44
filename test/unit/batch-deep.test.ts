// Batch mode with two activations (batch-plan.ts): dense -> square -> dense -> square -> dense,
// size-5 results at ring 16384, no evaluation keys. The compiler's plan, the kernel on real
// ciphertexts (SEAL decrypts the size-5 results), the flood, and the noise bound it is sized from.
// These plans do not rescale (`rescale: false`): the compiler's default plans for two activations
// divide the second layer's values by some primes, which test/unit/batch-rescale.test.ts checks.
import t from 'tap';
import { BatchSession } from '../../src/fhe/batch-io.ts';
import { evaluateLanes, prepareKernel } from '../../src/fhe/batch-kernel.ts';
import { BATCH_DEGREE_DEEP, outputsOf, resultSize, type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { validateBatchPlan } from '../../src/fhe/batch-plan-check.ts';
import { BatchPrivacy, makeBatchRerandKey } from '../../src/fhe/batch-privacy.ts';
import { MAX_BITS_128 } from '../../src/fhe/params.ts';
import { loadRerandKey, mulmod } from '../../src/fhe/privacy.ts';
import { FLOOD_PRECISION_BITS, batchUnsupported, compileBatch } from '../../src/model/compile-batch.ts';
import { forward, type Network } from '../../src/model/network.ts';
import { simulateBatch } from '../../src/model/simulate-batch.ts';
import { batchMemory } from '../../src/server/batch-memory.ts';
import { seededBytes } from '../../src/fhe/seeded-batch.ts';
import { differenceL2Bits, encryptBatchInput, largestError, scaleBitsOf, trivialInputs } from '../helpers/batch-input.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(23);
const INPUTS = 12;
const matrix = (rows: number, cols: number, scale: number) => Array.from({ length: rows }, () => Array.from({ length: cols }, () => r() * scale));
const vector = (n: number, scale: number) => Array.from({ length: n }, () => r() * scale);
const deep: Network = {
  input: { height: 1, width: INPUTS },
  layers: [
    { type: 'dense', weights: matrix(8, INPUTS, 0.6), bias: vector(8, 0.4) },
    { type: 'quadratic', a: 0.5, b: 0.3, c: 0.1 },
    { type: 'dense', weights: matrix(6, 8, 0.5), bias: vector(6, 0.4) },
    { type: 'quadratic', a: 0.4, b: -0.2, c: 0.05 },
    { type: 'dense', weights: matrix(3, 6, 0.7), bias: vector(3, 0.6) },
  ],
};
const records = (n: number) => Array.from({ length: n }, () => Array.from({ length: INPUTS }, () => r() + 0.5));
const N = BATCH_DEGREE_DEEP;

t.test('the compiler folds both quadratics into a plan at ring 16384 with size-5 results', async (t) => {
  const xs = records(200);
  const plan = compileBatch(deep, xs, { rescale: false })!;
  t.ok(plan, 'two activations have a batch plan');
  t.equal(plan.params.polyModulusDegree, N, 'ring 16384: four squarings of the input scale need ~400 bits');
  t.ok(plan.third, 'a third layer');
  t.equal(resultSize(plan), 5, 'results of five polynomials (two squares, no relinearization)');
  t.equal(outputsOf(plan), 3);
  const bits = plan.params.coeffModulusBits;
  t.ok(bits.reduce((a, b) => a + b, 0) <= MAX_BITS_128[N], `modulus ${bits.join('+')} within the 128-bit bound (${MAX_BITS_128[N]})`);
  const s = scaleBitsOf(plan);
  t.equal(s.square2, 2 * s.mid);
  t.equal(plan.outputScaleBits, s.square2 + plan.third!.weightScaleBits);
  t.equal(plan.privacy, 'flood');
  let worst = 0,
    top = 1;
  for (const x of xs) {
    const want = forward(deep, x);
    simulateBatch(plan, x).forEach((v, o) => {
      worst = Math.max(worst, Math.abs(v - want[o]));
      top = Math.max(top, Math.abs(want[o]));
    });
  }
  t.ok(worst < 2 ** -10 * top, `the quantized plan follows the network (worst |diff| ${worst.toExponential(2)}, outputs up to ${top.toFixed(1)})`);
  t.same(validateBatchPlan(JSON.parse(JSON.stringify(plan))), plan, 'the plan passes the loader');
  const sections = plan.inputs * seededBytes(bits.length - 1, N);
  t.equal(batchMemory(plan, 2) - batchMemory(plan, 1), sections, "a one-batch request holds one batch's sections, not two");
  t.equal(batchMemory(plan, 5), batchMemory(plan, 2), 'and any longer one two');
  t.equal(batchUnsupported({ ...deep, layers: deep.layers.slice(0, 4) })?.includes('batch mode handles'), true, 'a plan cannot end in a square');
});

t.test('the loader refuses a third layer it cannot evaluate exactly', async (t) => {
  const plan = compileBatch(deep, records(50), { privacy: 'none' })!;
  type Raw = { second?: unknown; third: { weight: number[]; weightScaleBits: number; bias: number[] }; square: boolean };
  const cases: [string, (p: Raw) => void, string][] = [
    ['a third layer without a second', (p) => ((p.square = false), delete p.second), 'second|third'],
    ['a third-layer weight past the kernel limit', (p) => (p.third.weight[0] = 2 ** 15), 'third.weight\\[0\\]'],
    ['one third-layer weight too few', (p) => p.third.weight.pop(), 'third.weight'],
    ['results past the modulus', (p) => (p.third.weightScaleBits += 60), 'third.weightScaleBits'],
    ['a third-layer bias that is not finite', (p) => (p.third.bias[1] = Number.NaN), 'third.bias\\[1\\]'],
  ];
  for (const [why, edit, field] of cases) {
    const bad = JSON.parse(JSON.stringify(plan));
    edit(bad);
    t.throws(() => validateBatchPlan(bad), { code: 'bad-bundle', message: new RegExp(field) }, why);
  }
});

/** Encrypts xs (one record per slot) as batch-mode clients do, runs the kernel over every lane in uneven chunks. */
async function evaluate(t: { teardown(fn: () => void): void }, plan: BatchPlan, xs: number[][]) {
  const { bs, holder, skBytes, input, LN } = await encryptBatchInput(t, plan, xs);
  const size = resultSize(plan);
  const output = new Uint32Array(outputsOf(plan) * size * LN);
  const k = prepareKernel(plan, bs.primes);
  const chunks = [1000, 24, 3000, 4096, 8192];
  for (let lane = 0, c = 0; lane < LN; c++) {
    const end = Math.min(lane + chunks[c % chunks.length], (Math.floor(lane / N) + 1) * N);
    evaluateLanes(k, input, output, lane, end);
    lane = end;
  }
  const decrypt = (out: Uint32Array) =>
    Array.from({ length: outputsOf(plan) }, (_, o) => holder.decrypt(bs.encodeResult(out, o * size * LN, size, plan.outputScaleBits)));
  return { bs, skBytes, input, output, LN, decrypt };
}

t.test('encrypted: SEAL decrypts the size-5 results to the plaintext plan', async (t) => {
  const xs = records(60);
  const plan = compileBatch(deep, xs, { privacy: 'none' })!;
  const { output, decrypt } = await evaluate(t, plan, xs);
  const { worst, top } = largestError(decrypt(output), (s) => simulateBatch(plan, xs[s]), xs.length);
  t.ok(worst < 1e-6 * top, `worst |encrypted - plaintext| = ${worst.toExponential(2)} over ${xs.length} records x 3 outputs`);
});

/**
 * What a client can compute from its own query and a guess of the weights: the result's last
 * polynomial, s^4's coefficient, in lane c of the first prime. c1 of the query's ciphertexts is
 * all it needs (the biases only touch c0): y_j = sum w1 c1_t, z_k = sum w2 y_j^2, c4 = sum w3 z_k^2.
 */
function predictedC4(plan: BatchPlan, input: Uint32Array, LN: number, q: number, o: number, lane: number): number {
  const f = plan.first;
  const y = Array.from({ length: f.rows }, (_, j) => {
    let acc = 0;
    for (let tp = f.start[j]; tp < f.start[j + 1]; tp++) acc = (acc + mulmod((f.weight[tp] + q) % q, input[(f.index[tp] * 2 + 1) * LN + lane], q)) % q;
    return acc;
  });
  const sec = plan.second!;
  const z = Array.from({ length: sec.rows }, (_, k) => {
    let acc = 0;
    for (let j = 0; j < f.rows; j++) acc = (acc + mulmod((sec.weight[k * f.rows + j] + q) % q, mulmod(y[j], y[j], q), q)) % q;
    return acc;
  });
  let c4 = 0;
  for (let k = 0; k < sec.rows; k++) c4 = (c4 + mulmod((plan.third!.weight[o * sec.rows + k] + q) % q, mulmod(z[k], z[k], q), q)) % q;
  return c4;
}

t.test('flood: a guess of the weights is confirmed by an unflooded result, not by a flooded one; outputs stay exact enough', async (t) => {
  const xs = records(300);
  // The flood read at the outputs' level: the result rescale after it has its own test (result-rescale.test.ts).
  const plan = compileBatch(deep, xs, { rescale: false, resultRescale: false })!;
  const { bs, skBytes, input, output, LN, decrypt } = await evaluate(t, plan, xs);
  const q = bs.primes[0];
  const lanes = 64;
  const confirmed = (out: Uint32Array) => {
    let hits = 0;
    for (let c = 0; c < lanes; c++) if (out[(0 * 5 + 4) * LN + c] === predictedC4(plan, input, LN, q, 0, c)) hits++;
    return hits;
  };
  t.equal(confirmed(output), lanes, 'unflooded: the right weights predict the result exactly in every lane (the attack works without the flood)');
  const size = resultSize(plan);
  const key = loadRerandKey(makeBatchRerandKey(bs.session, size, skBytes), bs.primes, N, size);
  const privacy = new BatchPrivacy(plan, bs.primes);
  t.ok(privacy.enabled);
  const flooded = output.slice();
  for (let o = 0; o < outputsOf(plan); o++) privacy.apply(key, flooded, o, LN);
  t.ok(confirmed(flooded) <= 1, `flooded: the same prediction matches ${confirmed(flooded)} of ${lanes} lanes`);
  const { worst, top: largest } = largestError(decrypt(flooded), (s) => simulateBatch(plan, xs[s]), xs.length);
  // The flood's standard deviation is at most 2^-FLOOD_PRECISION_BITS of the largest output (or 1).
  const allowed = 6 * 2 ** -FLOOD_PRECISION_BITS * largest;
  t.ok(worst < allowed, `flooded outputs within ${worst.toExponential(2)} of the plaintext plan (documented: ${allowed.toExponential(2)})`);
  t.ok(worst > 0, 'the flood is there');
});

t.test("honest noise: below the compiler's bound for every output", async (t) => {
  // The result's phase is the plan applied to the inputs' phases m_t + e_t (decryption with the
  // powers of s is a ring homomorphism), so its noise is kernel(m + e) - kernel(m), computed on
  // trivial ciphertexts (c1 = 0), exact in every prime, then lifted to integers by the CRT.
  const xs = records(400);
  const plan = compileBatch(deep, xs, { rescale: false })!;
  const bs = await BatchSession.open(plan);
  t.teardown(() => bs.close());
  const { primes, lanes: LN } = bs;
  const { withNoise, without, ntts } = trivialInputs(plan, xs, primes);
  const size = resultSize(plan);
  const run = (input: Uint32Array) => {
    const out = new Uint32Array(outputsOf(plan) * size * LN);
    const k = prepareKernel(plan, primes);
    for (let lane = 0; lane < LN; lane += 4096) evaluateLanes(k, input, out, lane, lane + 4096);
    return out;
  };
  const a = run(withNoise);
  const b = run(without);
  for (let o = 0; o < outputsOf(plan); o++) {
    const honest = differenceL2Bits(a, b, primes, ntts, (p) => o * size * LN + p * N);
    t.ok(honest <= plan.noiseL2Bits![o], `output ${o}: honest |v|_2 = 2^${honest.toFixed(1)} <= the bound 2^${plan.noiseL2Bits![o].toFixed(1)}`);
    t.ok(honest > plan.inputScaleBits, 'the noise was measured (it grows past the input scale)');
  }
});
