// Batch mode's engine: SEAL's raw ciphertext layout, the compiler's plan, and the kernel on
// real ciphertexts (encrypted by SEAL, evaluated on residues, decrypted by SEAL).
import t from 'tap';
import { evaluateLanes, prepareKernel, residue } from '../../src/fhe/batch-kernel.ts';
import { setRelaxedSimd, useRelaxedSimd } from '../../src/fhe/kernel-simd.ts';
import { outputsOf, resultSize, type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { batchOpCounts } from '../../src/fhe/batch-cost.ts';
import { buildRaw, copyResidues, isPacked, packResidues, RAW_DATA_OFFSET, readRawInfo, unpackResidues } from '../../src/fhe/raw-ciphertext.ts';
import { batchUnsupported, compileBatch } from '../../src/model/compile-batch.ts';
import { simulateBatch } from '../../src/model/simulate-batch.ts';
import { forward, type Network } from '../../src/model/network.ts';
import { F, rng, side, smallCnn } from '../helpers/networks.ts';
import { encryptBatchInput, openBatch, scaleBitsOf } from '../helpers/batch-input.ts';
import { sameBytes } from '../helpers/same-bytes.ts';

const r = rng(11);
const linear: Network = {
  input: { height: 1, width: 6 },
  layers: [{ type: 'dense', weights: Array.from({ length: 3 }, () => Array.from({ length: 6 }, () => r() * 4)), bias: [0.5, -1, 2] }],
};
// The kernel's outputs saved whole (encodeResult at the outputs' level): the result rescale after
// the flood has its own test (result-rescale.test.ts).
const whole = { resultRescale: false };
const samples = (n: number, features: number) => Array.from({ length: n }, () => Array.from({ length: features }, () => r() + 0.5));

t.test('the compiler folds the quadratic, quantizes weights, and sizes the modulus', async (t) => {
  const xs = samples(50, side * side);
  const plan = compileBatch(smallCnn, xs, whole)!;
  t.ok(plan, 'the network has a batch plan');
  t.equal(plan.first.rows, 4 * 4 * F);
  t.equal(plan.first.index.length, 4 * 4 * F * 25, '25 taps per convolution output');
  t.ok(
    plan.first.weight.every((w) => Number.isInteger(w) && Math.abs(w) < 2 ** 15),
    'integer weights below 2^15',
  );
  t.equal(plan.outputScaleBits, scaleBitsOf(plan).out);
  t.ok(
    plan.params.coeffModulusBits.every((b) => b === 26),
    '26-bit primes',
  );
  const worst = Math.max(...xs.map((x) => Math.max(...forward(smallCnn, x).map((v, i) => Math.abs(v - simulateBatch(plan, x)[i])))));
  t.ok(worst < 1e-2, `the quantized plan follows the network (worst |diff| ${worst.toExponential(2)})`);
  const counts = batchOpCounts(plan);
  t.equal(counts.decode, side * side, 'one ciphertext per input feature');
  t.equal(counts.square, plan.first.rows * counts.lanes);
  t.match(batchUnsupported({ input: { height: 2, width: 2 }, layers: [{ type: 'quadratic', a: 1, b: 0, c: 0 }] }), /batch mode handles/);
  const wide: Network = { input: { height: 1, width: 3000 }, layers: [{ type: 'dense', weights: [new Array<number>(3000).fill(0.01)], bias: [0] }] };
  t.equal(compileBatch(wide, [new Array<number>(3000).fill(1)]), undefined, 'rows of more than 2,048 inputs would not sum exactly: no batch plan');
});

t.test('bias residues are exact beyond 2^53', async (t) => {
  const q = 67043329;
  t.equal(residue(-1.5, 80, q), Number((((-3n * 2n ** 79n) % BigInt(q)) + BigInt(q)) % BigInt(q)));
  t.equal(residue(0.25, 10, q), 256);
});

async function runPlan(t: { teardown(fn: () => void): void }, plan: BatchPlan, xs: number[][], chunks: number[]) {
  const { bs, holder, input, LN } = await encryptBatchInput(t, plan, xs); // as batch-mode clients send
  const size = resultSize(plan);
  const output = new Uint32Array(outputsOf(plan) * size * LN);
  const k = prepareKernel(plan, bs.primes);
  // Uneven chunks: lanes are independent, so any split gives the same result.
  for (let lane = 0, c = 0; lane < LN; c++) {
    const prime = Math.floor(lane / plan.params.polyModulusDegree);
    const end = Math.min(lane + chunks[c % chunks.length], (prime + 1) * plan.params.polyModulusDegree);
    evaluateLanes(k, input, output, lane, end);
    lane = end;
  }
  const decrypted = Array.from({ length: outputsOf(plan) }, (_, o) => holder.decrypt(bs.encodeResult(output, o * size * LN, size, plan.outputScaleBits)));
  return { decrypted, bs, output };
}

t.test('encrypted batch evaluation (size-3 results, no keys) equals the plaintext plan', async (t) => {
  const xs = samples(40, side * side);
  const plan = compileBatch(smallCnn, xs, whole)!;
  const { decrypted } = await runPlan(t, plan, xs, [1000, 24, 3000, 4096]);
  let worst = 0;
  xs.forEach((x, s) => simulateBatch(plan, x).forEach((v, o) => (worst = Math.max(worst, Math.abs(decrypted[o][s] - v)))));
  t.ok(worst < 1e-3, `worst |encrypted - plaintext| = ${worst.toExponential(2)} over ${xs.length} records x 10 outputs`);
  t.ok(Math.abs(decrypted[0][xs.length + 3]) < 1e6, 'empty slots decrypt to bounded values');
});

t.test("a second layer of zero blocks (a convolution's): four rows of zeros skipped, three of four not", async (t) => {
  const xs = samples(40, side * side);
  const plan = structuredClone(compileBatch(smallCnn, xs, whole)!) as BatchPlan;
  const rows = plan.first.rows;
  const sec = plan.second!;
  // Rows 4p .. 4p + 3 are the F = 4 filters at position p: the kernel's groups of four.
  let zeroed = 0;
  for (let o = 0; o < sec.rows; o++)
    for (let p = 0; p < rows / 4; p++)
      for (let f = 0; f < (p % 2 ? 3 : 4); f++) {
        sec.weight[o * rows + 4 * p + f] = 0;
        zeroed++;
      }
  const { decrypted } = await runPlan(t, plan, xs, [1024, 2048]);
  let worst = 0,
    top = 0;
  xs.forEach((x, s) =>
    simulateBatch(plan, x).forEach((v, o) => {
      worst = Math.max(worst, Math.abs(decrypted[o][s] - v));
      top = Math.max(top, Math.abs(v));
    }),
  );
  t.ok(top > 0.1, `the rows left carry the outputs (up to ${top.toFixed(2)})`);
  t.ok(worst < 1e-3, `worst |encrypted - plaintext| = ${worst.toExponential(2)} with ${zeroed} of ${sec.weight.length} weights zero`);
  t.equal(batchOpCounts(plan).macSecond, (sec.weight.length - zeroed) * 3 * batchOpCounts(plan).lanes, 'the cost model counts the nonzero weights');
});

t.test("the first layer's fused multiply-adds (kernel-relaxed.wat) give the unfused loop's residues", async (t) => {
  t.ok(useRelaxedSimd, 'Node >= 22 has relaxed SIMD: the server runs the fused loop');
  const plan = compileBatch(smallCnn, samples(40, side * side), whole)!;
  const N = plan.params.polyModulusDegree;
  // Residues up to the largest below each prime (the worst case for the exactness bound).
  const primes = Array.from({ length: plan.params.coeffModulusBits.length - 1 }, (_, i) => 67043329 - 2 * N * 3 * i);
  const LN = primes.length * N;
  const input = Uint32Array.from({ length: plan.inputs * 2 * LN }, (_, i) =>
    i % 7 === 0 ? primes[Math.floor((i % LN) / N)] - 1 : (i * 2654435761) % primes[Math.floor((i % LN) / N)],
  );
  const k = prepareKernel(plan, primes);
  const run = (fused: boolean) => {
    setRelaxedSimd(fused);
    const output = new Uint32Array(outputsOf(plan) * resultSize(plan) * LN);
    // The first and the last prime's lanes (the largest and the smallest prime).
    for (const first of [0, LN - N]) for (let lane = first; lane < first + N; lane += 1024) evaluateLanes(k, input, output, lane, lane + 1024);
    return output;
  };
  try {
    const unfused = run(false);
    const fused = run(true);
    sameBytes(t, fused, unfused, 'every output residue equal');
    t.ok(
      unfused.some((x) => x !== 0),
      'and not all zero',
    );
  } finally {
    setRelaxedSimd(true);
  }
});

t.test('a linear model in batch mode (size-2 results)', async (t) => {
  const xs = samples(30, 6);
  const plan = compileBatch(linear, xs, whole)!;
  t.equal(plan.square, false);
  const { decrypted } = await runPlan(t, plan, xs, [8192]);
  let worst = 0;
  xs.forEach((x, s) => forward(linear, x).forEach((v, o) => (worst = Math.max(worst, Math.abs(decrypted[o][s] - v)))));
  t.ok(worst < 1e-3, `worst |encrypted - plaintext| = ${worst.toExponential(2)}`);
});

t.test('raw ciphertext layout: SEAL bytes -> residues -> SEAL bytes', async (t) => {
  const plan = compileBatch(linear, samples(5, 6), whole)!;
  const { bs, holder } = await openBatch(t, plan);
  const v = Float64Array.from({ length: 4096 }, (_, i) => Math.cos(i));
  const lanes = new Uint32Array(2 * bs.lanes);
  bs.decodeInto(holder.encrypt(v, plan.inputScaleBits), lanes, 0);
  t.ok(
    lanes.every((x, i) => x < bs.primes[Math.floor((i % bs.lanes) / 8192)]),
    'every residue is below its prime',
  );
  const back = holder.decrypt(bs.encodeResult(lanes, 0, 2, plan.inputScaleBits));
  t.ok(Math.max(...back.map((x, i) => Math.abs(x - v[i]))) < 1e-4, 'decrypts to what was encrypted');
  const raw = buildRaw({ parmsId: new Uint8Array(32), degree: 8192, primes: bs.primes.length, scale: 2 ** 20 }, 2, lanes, 0);
  const info = readRawInfo(raw);
  t.same([info.size, info.degree, info.primes, info.scale], [2, 8192, bs.primes.length, 2 ** 20]);
  const copy = new Uint32Array(lanes.length);
  copyResidues(raw, copy, 0);
  sameBytes(t, copy, lanes, 'residues survive the round trip');
  const high = raw.slice();
  high[RAW_DATA_OFFSET + 8 * 1000 + 4] = 1;
  t.throws(() => copyResidues(high, copy, 0), /residue above 32 bits/, 'a residue with high bits set is refused');
  // copyResidues and unpackResidues share a scratch buffer: the refused copy left a high bit in it.
  // SEAL's bytes packed in 26 bits (P26): what clients sent before seeded sections (seeded-batch.ts).
  const packed = packResidues(holder.encryptUncompressed(v, plan.inputScaleBits))!;
  sameBytes(t, packResidues(unpackResidues(packed)), packed, 'an unpack after it writes every high half (zero)');
  t.throws(() => readRawInfo(raw.subarray(0, 200)), /ciphertext has an unexpected layout|truncated/);
  const bad = raw.slice();
  bad[0] = 0;
  t.throws(() => readRawInfo(bad), /not an uncompressed SEAL ciphertext/);
  t.throws(
    () =>
      bs.encodeResult(
        lanes.map(() => 2 ** 31),
        0,
        2,
        20,
      ),
    /SEAL|result/,
    'residues above the prime are refused by SEAL',
  );
});

t.test('packed sections: 26-bit residues, 13 bytes per 4, round trip and hostile input', async (t) => {
  const plan = compileBatch(linear, samples(5, 6), whole)!;
  const { bs, holder } = await openBatch(t, plan);
  const v = Float64Array.from({ length: 4096 }, (_, i) => Math.sin(i) * 2);
  // SEAL's bytes packed in 26 bits (P26): what clients sent before seeded sections, still read.
  const packed = packResidues(holder.encryptUncompressed(v, plan.inputScaleBits))!;
  const zstd = holder.encrypt(v, plan.inputScaleBits);
  t.ok(isPacked(packed) && !isPacked(zstd));
  t.ok(packed.length < 0.85 * zstd.length, `packed ${packed.length} bytes < SEAL's zstd ${zstd.length}`);
  const raw = unpackResidues(packed);
  sameBytes(t, packResidues(raw), packed, 'unpack then pack gives the same bytes');
  const lanes = new Uint32Array(2 * bs.lanes);
  bs.decodeInto(packed, lanes, 0);
  const back = holder.decrypt(bs.encodeResult(lanes, 0, 2, plan.inputScaleBits));
  t.ok(Math.max(...back.map((x, i) => Math.abs(x - v[i]))) < 1e-4, 'a packed query ciphertext loads and decrypts');
  t.throws(() => unpackResidues(packed.subarray(0, 5000)), /truncated/);
  const huge = packed.slice();
  new DataView(huge.buffer).setUint32(8, 2 ** 31, true);
  t.throws(() => unpackResidues(huge), /too many residues/);
  const flipped = packed.slice();
  flipped[200] ^= 0xff;
  t.doesNotThrow(() => unpackResidues(flipped), 'a flipped residue still unpacks (SEAL or the result catches it)');
  const wide = raw.slice();
  new DataView(wide.buffer).setUint32(113, 2 ** 27, true);
  t.equal(packResidues(wide), undefined, 'residues above 26 bits are not packed');
});

t.test('the committed SIMD kernel binary is kernel.wat compiled', async (t) => {
  const { compileKernel } = await import('../../scripts/build-kernel.ts');
  const { readFile } = await import('node:fs/promises');
  const committed = await readFile(new URL('../../src/fhe/kernel-wasm.ts', import.meta.url), 'utf8');
  t.equal(committed, await compileKernel(), 'src/fhe/kernel-wasm.ts is up to date (node scripts/build-kernel.ts)');
});
