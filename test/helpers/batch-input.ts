// Batch-mode kernel tests' pieces: a session and a fresh secret key for a plan, records (one per
// slot) encrypted into the kernel's input layout, [feature][poly][prime][coefficient], and the
// comparisons and modular arithmetic the tests check results with.
import { BatchSession } from '../../src/fhe/batch-io.ts';
import { mulmod, NegacyclicNtt } from '../../src/fhe/ntt.ts';
import { CkksEncoder } from '../../src/fhe/ckks-encode.ts';
import { smallNoise } from '../../src/fhe/privacy.ts';
import { layerScales, outputsOf, recordsPerBatch, resultSize, type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';
import type { BatchModel } from '../../src/server/batch-model.ts';

/** A batch session and a fresh secret key for `plan`, closed when the test ends. */
export async function openBatch(t: { teardown(fn: () => void): void }, plan: BatchPlan) {
  const bs = await BatchSession.open(plan);
  const skBytes = generateSecretKey(bs.session);
  const holder = new SecretKeyHolder(bs.session, skBytes);
  t.teardown(() => {
    holder.close();
    bs.close();
  });
  return { bs, holder, skBytes };
}

/**
 * openBatch, and `xs` encrypted one feature per ciphertext as batch-mode clients send them
 * (`seeded`: our seeded sections) or as SEAL's Encryptor makes them (`seal`), loaded as the server
 * loads them.
 */
export async function encryptBatchInput(t: { teardown(fn: () => void): void }, plan: BatchPlan, xs: number[][], how: 'seeded' | 'seal' = 'seeded') {
  const opened = await openBatch(t, plan);
  const { bs, holder } = opened;
  const LN = bs.lanes;
  const input = new Uint32Array(plan.inputs * 2 * LN);
  for (let i = 0; i < plan.inputs; i++) {
    const v = new Float64Array(recordsPerBatch(plan));
    xs.forEach((x, s) => (v[s] = x[i]));
    const section = how === 'seal' ? holder.encrypt(v, plan.inputScaleBits) : holder.encryptPacked(v, plan.inputScaleBits);
    bs.decodeInto(section, input, i * 2 * LN);
  }
  return { ...opened, input, LN };
}

/** The largest |decrypted - want| over records and outputs, and the largest |want| (at least 1). */
export function largestError(decrypted: ArrayLike<number>[], want: (s: number) => ArrayLike<number>, records: number) {
  let worst = 0,
    top = 1;
  for (let s = 0; s < records; s++) {
    const w = want(s);
    for (let o = 0; o < w.length; o++) {
      worst = Math.max(worst, Math.abs(decrypted[o][s] - w[o]));
      top = Math.max(top, Math.abs(w[o]));
    }
  }
  return { worst, top };
}

/** a^-1 mod q for a prime q (Fermat: a^(q-2)). */
export function modInverse(a: number, q: number): number {
  let result = 1,
    e = q - 2;
  while (e > 0) {
    if (e & 1) result = mulmod(result, a, q);
    a = mulmod(a, a, q);
    e = Math.floor(e / 2);
  }
  return result;
}

/**
 * The records `xs` as the plan's inputs, trivial ciphertexts (c1 = 0) of the encoded m and of
 * m + e (SEAL's fresh noise), in the kernel's layout over `primes`: the plan's results on the two
 * differ by exactly the noise e becomes (decryption with the powers of s is a ring homomorphism).
 */
export function trivialInputs(plan: BatchPlan, xs: number[][], primes: readonly number[]) {
  const N = plan.params.polyModulusDegree;
  const LN = primes.length * N;
  const ntts = primes.map((q) => new NegacyclicNtt(q, N));
  const encoder = CkksEncoder.of(N);
  const withNoise = new Uint32Array(plan.inputs * 2 * LN);
  const without = new Uint32Array(plan.inputs * 2 * LN);
  const m = new Float64Array(N);
  for (let i = 0; i < plan.inputs; i++) {
    encoder.encode(
      xs.map((x) => x[i]),
      2 ** plan.inputScaleBits,
      m,
    );
    const e = smallNoise(N);
    primes.forEach((q, p) => {
      const Q = BigInt(q);
      const mq = Float64Array.from(m, (v) => Number(((BigInt(v) % Q) + Q) % Q));
      const me = Float64Array.from(mq, (v, c) => (v + e[c] + q) % q);
      ntts[p].forward(mq);
      ntts[p].forward(me);
      without.set(mq, i * 2 * LN + p * N);
      withNoise.set(me, i * 2 * LN + p * N);
    });
  }
  return { withNoise, without, ntts };
}

/**
 * log2 of |a - b|_2 for the polynomial whose residues modulo primes[p] start at at(p) (NTT form,
 * N each), lifted to integers by the CRT: a result's honest noise, from trivialInputs.
 */
export function differenceL2Bits(a: Uint32Array, b: Uint32Array, primes: readonly number[], ntts: NegacyclicNtt[], at: (p: number) => number): number {
  const N = ntts[0].n;
  const Q = primes.reduce((acc, q) => acc * BigInt(q), 1n);
  const crt = primes.map((q) => {
    const rest = Q / BigInt(q);
    return (rest * BigInt(modInverse(Number(rest % BigInt(q)), q))) % Q;
  });
  const diff = primes.map((q, p) => {
    const d = Float64Array.from({ length: N }, (_, c) => (a[at(p) + c] - b[at(p) + c] + q) % q);
    ntts[p].inverse(d);
    return d;
  });
  let sum2 = 0;
  for (let c = 0; c < N; c++) {
    let x = 0n;
    primes.forEach((_, p) => (x += BigInt(diff[p][c]) * crt[p]));
    x %= Q;
    if (x > Q / 2n) x -= Q;
    sum2 += Number(x) ** 2;
  }
  return Math.log2(Math.sqrt(sum2));
}

/** log2 of each stage's scale (layerScales): `mid` the second layer's, `rescaled` after its rescale, `square2` its square, `out` the results'. */
export function scaleBitsOf(p: BatchPlan): { first: number; square: number; mid: number; rescaled: number; square2: number; out: number } {
  const s = layerScales(p);
  const first = s[0].values.log2;
  const square = p.square ? 2 * first : first;
  const mid = s[1]?.values.log2 ?? square;
  const rescaled = p.third ? s[1].rescaled.log2 : mid;
  const square2 = p.third ? 2 * rescaled : mid;
  return { first, square, mid, rescaled, square2, out: s[s.length - 1].values.log2 };
}

/** The server's steps on `input`: the kernel, then each rescale and the layers after it; the results' residues. */
export function serverSteps(bm: BatchModel, plan: BatchPlan, input: Uint32Array): Uint32Array {
  const values = Array.from({ length: bm.rescalePoints }, (_, j) => new Uint32Array(bm.valuesAt(j)));
  const output = new Uint32Array(outputsOf(plan) * resultSize(plan) * bm.outputLanes);
  const N = plan.params.polyModulusDegree;
  // Uneven chunks within each prime, as the pool's tasks split them.
  const chunks = [1000, 24, 3000, 4096, 8192];
  for (let lane = 0, c = 0; lane < bm.lanes; c++) {
    const end = Math.min(lane + chunks[c % chunks.length], (Math.floor(lane / N) + 1) * N);
    bm.evaluateLanes(input, values[0], lane, end);
    lane = end;
  }
  for (let j = 0; j < bm.rescalePoints; j++) {
    // Rows in two tasks, lanes after in three.
    const rows = bm.rowsAt(j);
    bm.rescaleRows(values[j], 0, 2, j);
    bm.rescaleRows(values[j], 2, rows - 2, j);
    const lanes = bm.lanesAfter(j);
    for (const [a, b] of [
      [0, N / 2],
      [N / 2, N],
      [N, lanes],
    ])
      bm.evaluateAfter(values[j], values[j + 1] ?? output, a, b, j);
  }
  return output;
}
