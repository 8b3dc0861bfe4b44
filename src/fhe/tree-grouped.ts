// The grouped form of the tree circuit (tree-circuit.ts) on SEAL ciphertexts: per output, the sum
// over groups of P(top) times the group's sum of leaf values times P(bottom). tree-eval.ts runs it.
import type { Ciphertext, Plaintext, RelinKeys } from 'node-seal/throws';
import type { CkksSession } from './ckks.ts';
import { release } from './seal.ts';
import type { TreeCircuit } from './tree-circuit.ts';

/** One batch's evaluation state: loaded inputs, values to free, operation counts, heartbeat. */
export interface TreeRun {
  t: Map<number, Ciphertext>;
  owned: Set<Ciphertext | Plaintext>;
  count: (op: string, n?: number) => void;
  onProgress?: () => void;
}

/**
 * Per output, its sum (owned by `run`), or 0 when no leaf reaches it. `one`: the constant 1 at
 * the input scale; `constant(v)`: a leaf value's plaintext at 2^S, owned by `run`.
 */
export function groupedSums(
  s: CkksSession,
  c: TreeCircuit,
  relin: RelinKeys,
  run: TreeRun,
  one: Plaintext,
  constant: (v: number) => Plaintext,
): (Ciphertext | number)[] {
  const { seal, evaluator } = s;
  const { t, count } = run;
  const neg = new Map<number, Ciphertext>();
  const sums: (Ciphertext | number)[] = new Array<number>(c.outputs).fill(0);
  const made = () => {
    const x = new seal.Ciphertext();
    run.owned.add(x);
    return x;
  };
  const literal = (l: number): Ciphertext => {
    const i = Math.abs(l) - 1;
    if (l > 0) return t.get(i)!;
    let n = neg.get(i);
    if (!n) {
      n = made();
      evaluator.negate(t.get(i)!, n);
      evaluator.addPlainInplace(n, one);
      neg.set(i, n);
      count('negate');
    }
    return n;
  };
  let top: Ciphertext | undefined;
  let topKey = '';
  for (const g of c.groups) {
    const key = g.top.join(',');
    if (key !== topKey) {
      if (top) {
        run.owned.delete(top);
        top.delete();
      }
      top = made();
      evaluator.multiply(literal(g.top[0]), literal(g.top[1]), top);
      evaluator.relinearizeInplace(top, relin);
      count('multiply');
      count('relinearize');
      topKey = key;
    }
    const groups: (Ciphertext | undefined)[] = Array.from({ length: c.outputs }, () => undefined);
    const prod = new seal.Ciphertext();
    const term = new seal.Ciphertext();
    try {
      for (const leaf of g.leaves) {
        evaluator.multiply(literal(leaf.bottom[0]), literal(leaf.bottom[1]), prod);
        count('multiply');
        if (c.relinearize === 'leaf') {
          evaluator.relinearizeInplace(prod, relin);
          count('relinearize');
        }
        leaf.values.forEach((v, k) => {
          if (v === 0) return;
          const pt = constant(v);
          try {
            evaluator.multiplyPlain(prod, pt, term);
          } finally {
            run.owned.delete(pt);
            pt.delete();
          }
          count('multiplyPlain');
          const acc = groups[k];
          if (!acc) groups[k] = term.copy();
          else {
            evaluator.addInplace(acc, term);
            count('add');
          }
        });
      }
      groups.forEach((group, k) => {
        if (!group) return;
        if (c.relinearize !== 'leaf') {
          evaluator.relinearizeInplace(group, relin);
          count('relinearize');
        }
        evaluator.multiplyInplace(group, top!);
        count('multiply');
        const acc = sums[k];
        if (typeof acc === 'number') {
          sums[k] = group;
          run.owned.add(group);
          groups[k] = undefined;
        } else {
          evaluator.addInplace(acc, group);
          count('add');
        }
      });
    } finally {
      release(prod, term, ...groups);
    }
    run.onProgress?.();
  }
  return sums;
}
