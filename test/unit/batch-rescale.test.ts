// Batch mode with a rescale between the second layer and its square (the step toward fewer
// primes, issue 13): the kernel evaluates a two-activation plan up to the second layer's values
// (size 3), ProductRescale divides them by the last prime, once or twice, and the square and third
// layer run over the primes left, with the third layer's biases at the exact scale that leaves
// (2^(2 mid + w3) over the dropped primes squared). SEAL loads the size-5 results at that lower
// level of its chain and decrypts them to the plaintext plan. Then the plans the compiler makes
// that way (fewer primes), through the server's steps with the flood at the lower level.
import t from 'tap';
import { evaluateLanes, prepareKernel } from '../../src/fhe/batch-kernel.ts';
import { layersAfterRescale, residueAtScale } from '../../src/fhe/batch-kernel-deep.ts';
import { dataPrimesOf, outputsOf, outputPrimesOf, type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { validateBatchPlan } from '../../src/fhe/batch-plan-check.ts';
import { BatchPrivacy, makeBatchRerandKey } from '../../src/fhe/batch-privacy.ts';
import { loadRerandKey, mulmod } from '../../src/fhe/privacy.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { paramsKey, primes, sealPrimes } from '../../src/fhe/params.ts';
import { SecretKeyHolder } from '../../src/fhe/keys.ts';
import { buildRaw } from '../../src/fhe/raw-ciphertext.ts';
import { ProductRescale } from '../../src/fhe/rescale.ts';
import { compileBatch, FLOOD_PRECISION_BITS } from '../../src/model/compile-batch.ts';
import type { Network } from '../../src/model/network.ts';
import { simulateBatch, simulateBatchTrace } from '../../src/model/simulate-batch.ts';
import { encryptBatchInput, largestError, scaleBitsOf } from '../helpers/batch-input.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(31);
const INPUTS = 10;
const matrix = (rows: number, cols: number, scale: number) => Array.from({ length: rows }, () => Array.from({ length: cols }, () => r() * scale));
const vector = (n: number, scale: number) => Array.from({ length: n }, () => r() * scale);
const deep: Network = {
  input: { height: 1, width: INPUTS },
  layers: [
    { type: 'dense', weights: matrix(6, INPUTS, 0.6), bias: vector(6, 0.4) },
    { type: 'quadratic', a: 0.5, b: 0.3, c: 0.1 },
    { type: 'dense', weights: matrix(5, 6, 0.5), bias: vector(5, 0.4) },
    { type: 'quadratic', a: 0.4, b: -0.2, c: 0.05 },
    { type: 'dense', weights: matrix(3, 5, 0.7), bias: vector(3, 0.6) },
  ],
};
const xs = Array.from({ length: 40 }, () => Array.from({ length: INPUTS }, () => r() + 0.5));

t.test('residueAtScale: round(v 2^bits / product) mod q, exactly', async (t) => {
  const q = 67043329;
  const Q = BigInt(q);
  const want = (num: bigint, den: bigint) => {
    // Round half away from zero, then mod q: the reference written with BigInt only.
    const neg = num < 0n;
    const a = neg ? -num : num;
    let r = a / den;
    if (2n * (a - r * den) >= den) r += 1n;
    return Number((((neg ? -r : r) % Q) + Q) % Q);
  };
  const d = [67043329 - 2 * 16384 * 3, 66813953];
  const D = BigInt(d[0]) * BigInt(d[1]);
  t.equal(residueAtScale(0.75, 100, d, q), want(3n << 98n, D), '0.75 at 2^100 / (d1 d2)');
  t.equal(residueAtScale(-1.3, 120, d, q), want(-BigInt(Math.round(1.3 * 2 ** 52)) << 68n, D), '-1.3 (a float: m 2^-52) at 2^120 / (d1 d2)');
  t.equal(residueAtScale(5, 3, [], q), 40, 'no divisors: v 2^bits');
  t.equal(residueAtScale(3, 0, [2], q), 2, '1.5 rounds away from zero');
  t.equal(residueAtScale(-3, 0, [2], q), q - 2, '-1.5 too');
  t.throws(() => residueAtScale(Number.NaN, 10, [], q), /not a finite number/);
});

for (const drop of [1, 2])
  t.test(`a rescale by ${drop} prime(s) between the second layer and its square: SEAL decrypts the results to the plan`, async (t) => {
    const plan = compileBatch(deep, xs, { privacy: 'none' })!;
    const N = plan.params.polyModulusDegree;
    const { bs, skBytes, input, LN } = await encryptBatchInput(t, plan, xs);
    const primes = bs.primes;
    const L = primes.length;
    const rows = plan.second!.rows;
    // The kernel up to the second layer's values (bias2 added): size 3, every prime.
    const k = prepareKernel(plan, primes);
    let mid = new Uint32Array(rows * 3 * LN);
    // Without w3 the kernel stops there (BatchKernel.w3).
    for (let lane = 0; lane < LN; lane += N / 2) evaluateLanes({ ...k, w3: undefined }, input, mid, lane, lane + N / 2);
    // Divided by the last prime, `drop` times; each row a size-3 ciphertext.
    const dropped: number[] = [];
    for (let level = L; level > L - drop; level--) {
      const rescale = new ProductRescale(primes.slice(0, level), N, 1);
      const next = new Uint32Array(rows * 3 * (level - 1) * N);
      for (let row = 0; row < rows; row++) rescale.ciphertext(mid.subarray(row * 3 * level * N), next.subarray(row * 3 * (level - 1) * N), 3);
      mid = next;
      dropped.push(primes[level - 1]);
    }
    const kept = primes.slice(0, L - drop);
    const lanes = kept.length * N;
    const { mid: midBits } = scaleBitsOf(plan);
    const third = plan.third!;
    const outBits = 2 * midBits + third.weightScaleBits;
    const twice = [...dropped, ...dropped];
    const bias3 = kept.map((q) => Float64Array.from(third.bias, (b) => residueAtScale(b, outBits, twice, q)));
    const output = new Uint32Array(outputsOf(plan) * 5 * lanes);
    for (let lane = 0; lane < lanes; lane += N / 4)
      layersAfterRescale(mid, 3 * lanes, rows, 3, [{ rows: third.rows, w: Float64Array.from(third.weight), bias: bias3 }], kept, N, output, lane, lane + N / 4);
    // SEAL at the level `drop` below the top, with the chain (the batch session has only the top).
    const chain = await CkksSession.open(plan.params);
    const holder = new SecretKeyHolder(chain, skBytes);
    t.teardown(() => {
      holder.close();
      chain.close();
    });
    const level = chain.shape.data[drop];
    t.same(level.primes.map(Number), kept, 'the primes left are those of SEAL level `drop` below the top');
    const scale = 2 ** outBits / twice.reduce((a, q) => a * q, 1);
    const decrypted = Array.from({ length: outputsOf(plan) }, (_, o) =>
      holder.decrypt(buildRaw({ parmsId: level.parmsId, degree: N, primes: kept.length, scale }, 5, output, o * 5 * lanes)),
    );
    const { worst, top } = largestError(decrypted, (s) => simulateBatch(plan, xs[s]), xs.length);
    t.ok(worst < 1e-6 * top, `worst |encrypted - plaintext| = ${worst.toExponential(2)} over ${xs.length} records x 3 outputs`);
    // What the rescale adds: against the same evaluation without it (the kernel's whole path at
    // the top level), the difference is the rounding's, rho_0 + rho_1 s + rho_2 s^2 with the rho_i
    // uniform in [-1/2, 1/2] per coefficient. In a slot, |rho_i|^2 and |s|^2 are about exponential
    // with means N/12 and 2N/3 (s ternary), so each stays below 37 times its mean but with
    // probability e^-37 per slot. At the second layer's scale 2^mid / (dropped primes), doubled by
    // the square, that moves an output by the ratio times 2 sum_k |w3_k mid_k|.
    const whole = new Uint32Array(outputsOf(plan) * 5 * LN);
    for (let lane = 0; lane < LN; lane += N / 2) evaluateLanes(k, input, whole, lane, lane + N / 2);
    const unrescaled = Array.from({ length: outputsOf(plan) }, (_, o) => holder.decrypt(bs.encodeResult(whole, o * 5 * LN, 5, plan.outputScaleBits)));
    const { worst: diff } = largestError(decrypted, (s) => unrescaled.map((v) => v[s]), xs.length);
    let reach = 0;
    for (const x of xs) {
      const { mid: values } = simulateBatchTrace(plan, x);
      for (let o = 0; o < outputsOf(plan); o++) {
        let sum = 0;
        values.forEach((v, j) => (sum += Math.abs(third.weight[o * rows + j] * 2 ** -third.weightScaleBits * v)));
        reach = Math.max(reach, 2 * sum);
      }
    }
    // Plus float64's own error in decoding (~2^-40 of the outputs): one prime leaves the rounding below it.
    const rho = Math.sqrt((37 * N) / 12);
    const sNorm = Math.sqrt((37 * 2 * N) / 3);
    const rounding = rho * (1 + sNorm + sNorm ** 2);
    const bound = (rounding / (2 ** midBits / dropped.reduce((a, q) => a * q, 1))) * reach + 2 ** -40 * top;
    t.ok(diff <= bound, `rescaled against unrescaled: ${diff.toExponential(2)}, within the rounding's bound ${bound.toExponential(2)}`);
    t.ok(diff > 0, 'and not zero: the results did go through the rescale');
  });

t.test("sealPrimes: SEAL's primes for batch parameters, in its order, without SEAL", async (t) => {
  for (const params of [
    { scheme: 'ckks' as const, polyModulusDegree: 16384, coeffModulusBits: [...new Array<number>(16).fill(26), 22], securityLevel: 128 as const },
    { scheme: 'ckks' as const, polyModulusDegree: 8192, coeffModulusBits: [26, 26, 26, 26, 26, 26, 26, 26], securityLevel: 128 as const },
  ]) {
    const s = await CkksSession.open(params, { topLevelOnly: true });
    t.same(sealPrimes(params.polyModulusDegree, params.coeffModulusBits), primes(s.seal, s.context).map(Number), paramsKey(params));
    s.close();
  }
  t.throws(() => sealPrimes(16384, [40]), /outside 2..32 bits/);
});

t.test('the compiler rescales the two-activation plans it floods: fewer primes, and flooded results as precise as documented', async (t) => {
  const many = Array.from({ length: 300 }, () => Array.from({ length: INPUTS }, () => r() + 0.5));
  const flat = compileBatch(deep, many, { rescale: false })!;
  // The flood read at the outputs' level: the result rescale after it has its own test (result-rescale.test.ts).
  const plan = compileBatch(deep, many, { resultRescale: false })!;
  const drop = plan.second!.rescalePrimes!;
  t.ok(drop >= 1, `the second layer's values drop ${drop} prime(s)`);
  t.ok(dataPrimesOf(plan) < dataPrimesOf(flat), `${dataPrimesOf(plan)} data primes against ${dataPrimesOf(flat)} without the rescale`);
  t.equal(outputPrimesOf(plan), dataPrimesOf(plan) - drop, 'results keep the primes the rescale leaves');
  t.same(validateBatchPlan(JSON.parse(JSON.stringify(plan))), plan, 'the plan passes the loader');
  for (const [why, edit, field] of [
    ['a rescale without a third layer', (p: BatchPlan) => delete p.third, 'rescalePrimes|third'],
    ['a rescale of every data prime', (p: BatchPlan) => (p.second!.rescalePrimes = dataPrimesOf(p)), 'second.rescalePrimes'],
    ['a rescale of half a prime', (p: BatchPlan) => (p.second!.rescalePrimes = 1.5), 'second.rescalePrimes'],
  ] as const) {
    const bad = JSON.parse(JSON.stringify(plan)) as BatchPlan;
    edit(bad);
    t.throws(() => validateBatchPlan(bad), { code: 'bad-bundle', message: new RegExp(field) }, `the loader refuses ${why}`);
  }

  // The server's steps (BatchModel: evaluateLanes, rescaleRows, evaluateAfter, encodeResults).
  const { bs, holder, skBytes, input, LN } = await encryptBatchInput(t, plan, many);
  const N = plan.params.polyModulusDegree;
  const rows = plan.second!.rows;
  const k = prepareKernel(plan, bs.primes);
  t.throws(
    () => evaluateLanes(k, input, new Uint32Array(outputsOf(plan) * 5 * LN), 0, 1024),
    /stops at the second layer/,
    'the kernel will not square before the rescale',
  );
  const values = new Uint32Array(rows * 3 * LN);
  for (let lane = 0; lane < LN; lane += N / 2) evaluateLanes({ ...k, w3: undefined }, input, values, lane, lane + N / 2);
  new ProductRescale(bs.primes, N, drop).rows(values, 3, 0, rows);
  const lanes = bs.outputLanes;
  const output = new Uint32Array(outputsOf(plan) * 5 * lanes);
  for (let lane = 0; lane < lanes; lane += N / 4)
    layersAfterRescale(values, 3 * LN, rows, 3, [{ rows: outputsOf(plan), w: k.w3!, bias: k.bias3 }], bs.outputPrimes, N, output, lane, lane + N / 4);
  const decrypt = (out: Uint32Array) => Array.from({ length: outputsOf(plan) }, (_, o) => holder.decrypt(bs.encodeResult(out, o * 5 * lanes, 5)));
  const exact = largestError(decrypt(output), (s) => simulateBatch(plan, many[s]), many.length);
  t.ok(exact.worst < 1e-9 * exact.top, `unflooded: within ${exact.worst.toExponential(2)} of the plaintext plan`);
  const key = loadRerandKey(makeBatchRerandKey(bs.session, 5, skBytes, outputPrimesOf(plan)), bs.outputPrimes, N, 5);
  const privacy = new BatchPrivacy(plan, bs.outputPrimes);
  const flooded = output.slice();
  for (let o = 0; o < outputsOf(plan); o++) privacy.apply(key, flooded, o, lanes);

  // The attack the flood stops (batch-deep.test.ts), through the rescale: from its own query's
  // c1 and a guess of the weights, a client computes every second-layer value's s^2 polynomial
  // (z_k = sum_j w2 y_j^2, y_j = sum_t w1 c1_t), rescales it as the server does (a rescale treats
  // each polynomial alone), and predicts the result's s^4 polynomial, sum_k w3 z'_k^2.
  const f = plan.first;
  const z = new Uint32Array(rows * LN);
  bs.primes.forEach((q, p) => {
    const y = new Float64Array(f.rows);
    for (let c = 0; c < N; c++) {
      for (let j = 0; j < f.rows; j++) {
        let acc = 0;
        for (let tp = f.start[j]; tp < f.start[j + 1]; tp++) acc = (acc + mulmod((f.weight[tp] + q) % q, input[(f.index[tp] * 2 + 1) * LN + p * N + c], q)) % q;
        y[j] = acc;
      }
      for (let kk = 0; kk < rows; kk++) {
        let acc = 0;
        for (let j = 0; j < f.rows; j++) acc = (acc + mulmod((plan.second!.weight[kk * f.rows + j] + q) % q, mulmod(y[j], y[j], q), q)) % q;
        z[kk * LN + p * N + c] = acc;
      }
    }
  });
  new ProductRescale(bs.primes, N, drop).rows(z, 1, 0, rows);
  const q0 = bs.primes[0];
  const probes = 64;
  const confirmed = (out: Uint32Array) => {
    let hits = 0;
    for (let c = 0; c < probes; c++) {
      let c4 = 0;
      for (let kk = 0; kk < rows; kk++) c4 = (c4 + mulmod((plan.third!.weight[kk] + q0) % q0, mulmod(z[kk * LN + c], z[kk * LN + c], q0), q0)) % q0;
      if (out[4 * lanes + c] === c4) hits++;
    }
    return hits;
  };
  t.equal(confirmed(output), probes, 'unflooded: the right weights predict the rescaled result exactly in every lane (the attack works without the flood)');
  t.ok(confirmed(flooded) <= 1, `flooded: the same prediction matches ${confirmed(flooded)} of ${probes} lanes`);
  const { worst, top } = largestError(decrypt(flooded), (s) => simulateBatch(plan, many[s]), many.length);
  // As for the plans without a rescale (batch-deep.test.ts): the flood's deviation is at most
  // 2^-FLOOD_PRECISION_BITS of the largest output (or 1).
  const allowed = 6 * 2 ** -FLOOD_PRECISION_BITS * top;
  t.ok(worst < allowed, `flooded outputs within ${worst.toExponential(2)} of the plaintext plan (documented: ${allowed.toExponential(2)})`);
  t.ok(worst > 100 * exact.worst, 'the flood is there');
});
