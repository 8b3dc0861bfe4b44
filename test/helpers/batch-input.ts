// Batch-mode kernel tests' pieces: a session and a fresh secret key for a plan, records (one per
// slot) encrypted into the kernel's input layout, [feature][poly][prime][coefficient], and the
// comparisons and modular arithmetic the tests check results with.
import { BatchSession } from '../../src/fhe/batch-io.ts';
import { mulmod } from '../../src/fhe/ntt.ts';
import { recordsPerBatch, type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';

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
