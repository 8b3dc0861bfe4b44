// The tree evaluator's cost model: each operation it performs timed at a circuit's parameters on
// this machine; times the circuit's operation counts (treeOpCounts) they estimate a batch's
// server time. The compile report prints the estimate and the benchmark sets it against the
// measured time.
import { CkksSession } from './ckks.ts';
import { constantPlaintext } from './constant.ts';
import { SecretKeyHolder, generateSecretKey } from './keys.ts';
import { loadQueryCiphertext } from './load.ts';
import { precheckKeys } from './seal-precheck.ts';
import { release } from './seal.ts';
import { SinglePrivacy } from './single-privacy.ts';
import { treeOpCounts, type TreeCircuit, type TreeShape } from './tree-circuit.ts';
import { makeTreeKeys } from './tree-eval.ts';

/** Milliseconds per call of each operation the evaluator performs (and the client's `encrypt`). */
export type TreeUnitCosts = Record<string, number>;

export async function measureTreeUnitCosts(c: TreeCircuit, reps = 5): Promise<TreeUnitCosts> {
  const s = await CkksSession.open(c.params);
  const sk = generateSecretKey(s);
  const holder = new SecretKeyHolder(s, sk);
  const { relinKeys, publicKey } = makeTreeKeys(s, sk);
  const { seal, evaluator } = s;
  const a = c.inputScaleBits;
  // As clients write query ciphertexts: packed at the primes' widths (packed-wide.ts).
  const bytes = holder.encryptCompact(new Float64Array(s.slots).fill(1), a);
  const rk = new seal.RelinKeys();
  rk.loadFromArray(s.context, precheckKeys(relinKeys, s.shape, { what: 'the relinearization keys', kind: 'relin' }));
  const privacy = c.privacy === 'flood' ? new SinglePrivacy(s, publicKey, 2 ** c.noiseL2Bits!) : undefined;
  const out: TreeUnitCosts = {};
  const time = (name: string, fn: () => void) => {
    fn(); // warm
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    out[name] = (performance.now() - t0) / reps;
  };
  const x = loadQueryCiphertext(s, bytes, a, { compression: ['none'] });
  const y = new seal.Ciphertext();
  const z = new seal.Ciphertext();
  const pt = constantPlaintext(s, 0.25, c.leafScaleBits);
  try {
    time('load', () => loadQueryCiphertext(s, bytes, a, { compression: ['none'] }).delete());
    // What the evaluator does for a leaf constant (constant.ts), not the encoder's full encode.
    time('encode', () => constantPlaintext(s, 0.25, c.leafScaleBits).delete());
    time('multiply', () => evaluator.multiply(x, x, y)); // size 2 x 2 -> 3
    // The grouped form multiplies products (3 polynomials) by leaf constants, the factored form bits (2).
    time('multiplyPlain', () => evaluator.multiplyPlain(c.factored ? x : y, pt, z));
    time('add', () => evaluator.add(y, y, z));
    time('negate', () => evaluator.negate(x, z));
    time('relinearize', () => evaluator.relinearize(y, rk, z));
    if (privacy) {
      evaluator.relinearize(y, rk, z);
      time('flood', () => privacy.apply(z).delete());
    }
    time('encrypt', () => holder.encryptCompact(new Float64Array(s.slots).fill(1), a));
  } finally {
    release(x, y, z, pt, rk);
    privacy?.close();
    holder.close();
    s.close();
  }
  return out;
}

/** A batch's server time from the circuit's operation counts (one flood per output) and `unit`. */
export function estimateTreeBatchMs(
  c: TreeShape & Partial<Pick<TreeCircuit, 'privacy'>>,
  unit: TreeUnitCosts,
): { total: number; byOp: Record<string, number> } {
  const counts: Record<string, number> = { ...treeOpCounts(c), ...(c.privacy === 'flood' ? { flood: c.outputs } : {}) };
  const byOp: Record<string, number> = {};
  for (const [op, n] of Object.entries(counts)) byOp[op] = n * (unit[op] ?? 0);
  return { total: Object.values(byOp).reduce((x, y) => x + y, 0), byOp };
}
