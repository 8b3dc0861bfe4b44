// The result rescale (batch-plan.ts, resultRescalePrimes): after the flood, each result is
// divided by the product D of its last primes, so it reaches the client over fewer primes. The
// compiler takes as many primes as keep the flood's noise (over D) 2^RESULT_ROUNDING_MARGIN_BITS
// above the rounding's bound; the client decrypts the smaller results to the plaintext plan, and
// they differ from the same flooded outputs saved whole by no more than that rounding.
import t from 'tap';
import { BatchSession } from '../../src/fhe/batch-io.ts';
import { outputPrimesOf, outputScale, outputsOf, resultPrimesOf, resultRescaleDivisors, resultScale, resultSize } from '../../src/fhe/batch-plan.ts';
import { validateBatchPlan } from '../../src/fhe/batch-plan-check.ts';
import { BatchPrivacy, makeBatchRerandKey } from '../../src/fhe/batch-privacy.ts';
import { floodSigma } from '../../src/fhe/privacy.ts';
import { sealPrimes } from '../../src/fhe/params.ts';
import { readPackedInfo } from '../../src/fhe/raw-ciphertext.ts';
import { rescaleRounding, RESULT_ROUNDING_MARGIN_BITS } from '../../src/model/rescale-rounding.ts';
import { compileBatch, FLOOD_PRECISION_BITS } from '../../src/model/compile-batch.ts';
import type { Network } from '../../src/model/network.ts';
import { simulateBatch } from '../../src/model/simulate-batch.ts';
import { BatchModel } from '../../src/server/batch-model.ts';
import { encryptBatchInput, largestError } from '../helpers/batch-input.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(47);
const INPUTS = 12;
const net: Network = {
  input: { height: 1, width: INPUTS },
  layers: [
    {
      type: 'dense',
      weights: Array.from({ length: 6 }, () => Array.from({ length: INPUTS }, () => r() - 0.5)),
      bias: Array.from({ length: 6 }, () => r() - 0.5),
    },
    { type: 'quadratic', a: 0.5, b: 0.3, c: 0.1 },
    { type: 'dense', weights: Array.from({ length: 3 }, () => Array.from({ length: 6 }, () => r() - 0.5)), bias: [0.2, -0.1, 0.4] },
  ],
};
const xs = Array.from({ length: 60 }, () => Array.from({ length: INPUTS }, () => r() * 2));
const plan = compileBatch(net, xs)!;
const whole = compileBatch(net, xs, { resultRescale: false })!;
const N = plan.params.polyModulusDegree;
const size = resultSize(plan);

t.test('the compiler drops the most primes the flood allows, and nothing else changes', async (t) => {
  t.equal(plan.privacy, 'flood');
  const k = plan.resultRescalePrimes!;
  t.ok(k >= 1, `results are divided by ${k} primes`);
  const rest = { ...plan };
  delete rest.resultRescalePrimes;
  t.same(rest, whole, 'the plan is otherwise the one without the result rescale');
  t.equal(resultPrimesOf(plan), outputPrimesOf(plan) - k);
  t.equal(whole.resultRescalePrimes, undefined, 'resultRescale: false keeps the outputs whole');
  t.equal(compileBatch(net, xs, { privacy: 'none' })!.resultRescalePrimes, undefined, 'without the flood: no result rescale');
  // The rule: flood sigma sqrt(N/2) / D >= 2^margin x the rounding's bound, for k primes and not for k + 1.
  const flood = Math.min(...plan.noiseL2Bits!.map((b) => floodSigma(2 ** b, plan.floodSecurityBits))) * Math.sqrt(N / 2);
  const rounding = rescaleRounding(N, size).can * 2 ** RESULT_ROUNDING_MARGIN_BITS;
  const divisors = resultRescaleDivisors(plan);
  const primes = sealPrimes(N, plan.params.coeffModulusBits);
  t.same(divisors, primes.slice(resultPrimesOf(plan), outputPrimesOf(plan)), "the divisors are the outputs' last primes");
  const D = divisors.reduce((a, q) => a * q, 1);
  t.ok(flood / D >= rounding, `flood / D = 2^${Math.log2(flood / D).toFixed(1)} >= 2^${Math.log2(rounding).toFixed(1)}`);
  t.ok(resultPrimesOf(plan) === 1 || flood / (D * primes[resultPrimesOf(plan) - 1]) < rounding, 'one prime more would pass the margin');
  t.equal(resultScale(plan), outputScale(plan) / D, 'the results come at the scale over D');
});

t.test('the loader checks the field', async (t) => {
  const copy = () => JSON.parse(JSON.stringify(plan));
  t.same(validateBatchPlan(copy()), plan, 'the compiled plan passes');
  for (const [why, edit] of [
    ['no prime left', (p: { resultRescalePrimes?: number }) => (p.resultRescalePrimes = outputPrimesOf(plan))],
    ['a fraction', (p: { resultRescalePrimes?: number }) => (p.resultRescalePrimes = 1.5)],
    ['without the flood', (p: { resultRescalePrimes?: number; privacy?: string }) => (p.privacy = 'none')],
  ] as const) {
    const bad = copy();
    edit(bad);
    t.throws(() => validateBatchPlan(bad), { code: 'bad-bundle', message: /resultRescalePrimes/ }, `refused: ${why}`);
  }
});

t.test('encrypted: smaller results, decrypted to the plaintext plan, within the rounding of the whole ones', async (t) => {
  const { bs, holder, skBytes, input, LN } = await encryptBatchInput(t, plan, xs);
  const bm = await BatchModel.open(plan);
  const full = await BatchSession.open(whole);
  t.teardown(() => {
    bm.close();
    full.close();
  });
  const lanes = bm.outputLanes;
  const output = new Uint32Array(outputsOf(plan) * size * lanes);
  bm.evaluateLanes(input, output, 0, LN);
  const keyBytes = makeBatchRerandKey(bs.session, size, skBytes, outputPrimesOf(plan));
  // A client that makes its key at the results' level (older than the result rescale) is told so.
  t.throws(
    () => bm.rerandKeyFor(makeBatchRerandKey(bs.session, size, skBytes, resultPrimesOf(plan))),
    { code: 'bad-keys', message: new RegExp(`is for ${resultPrimesOf(plan)} primes .* floods its results at ${outputPrimesOf(plan)} primes`) },
    "a key at the results' level is refused with both levels named",
  );

  // The server's phase 3 as it runs (flood, rescale, save).
  const results = bm.encodeResults(output.slice(), 0, outputsOf(plan), bm.rerandKeyFor(keyBytes));
  for (const b of results) t.equal(readPackedInfo(b).primes, resultPrimesOf(plan), `a result has ${resultPrimesOf(plan)} primes`);
  const decrypted = results.map((b) => holder.decrypt(b));
  const { worst, top } = largestError(decrypted, (s) => simulateBatch(plan, xs[s]), xs.length);
  const allowed = 6 * 2 ** -FLOOD_PRECISION_BITS * top;
  t.ok(worst < allowed, `within ${worst.toExponential(2)} of the plaintext plan (documented: ${allowed.toExponential(2)})`);

  // One flood, saved whole and rescaled: the difference is the rescale's rounding alone.
  const flooded = output.slice();
  const privacy = new BatchPrivacy(plan, bs.outputPrimes);
  const key = bm.rerandKeyFor(keyBytes);
  for (let o = 0; o < outputsOf(plan); o++) privacy.apply(key, flooded, o, lanes);
  const bound = rescaleRounding(N, size).can / resultScale(plan);
  let largest = 0;
  for (let o = 0; o < outputsOf(plan); o++) {
    const at = o * size * lanes;
    const wholeBytes = full.encodeResult(flooded, at, size);
    const small = bs.encodeOutput(flooded.slice(), at, size);
    t.ok(
      small.length < wholeBytes.length * (resultPrimesOf(plan) / outputPrimesOf(plan)) + 256,
      `output ${o}: ${small.length} bytes instead of ${wholeBytes.length}`,
    );
    const a = holder.decrypt(small);
    const b = holder.decrypt(wholeBytes);
    for (let s = 0; s < N / 2; s++) largest = Math.max(largest, Math.abs(a[s] - b[s]));
  }
  t.ok(largest > 0, 'the rescale rounds');
  t.ok(largest <= bound, `rescaled and whole differ by at most ${largest.toExponential(2)} (the rounding's bound: ${bound.toExponential(2)})`);
});
