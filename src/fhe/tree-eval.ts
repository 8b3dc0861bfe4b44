// The encrypted tree-ensemble evaluator of both forms (tree-circuit.ts, tree-factored.ts; design
// in docs/trees.md), and the client's keys for it: relinearization keys and the public key
// circuit privacy uses.
// Pure: no I/O, no threads; the server dispatches a query's batches to it.
import type { Ciphertext, Plaintext, RelinKeys } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import type { CkksSession } from './ckks.ts';
import { constantPlaintext } from './constant.ts';
import { loadQueryCiphertext } from './load.ts';
import { FLOOD_SECURITY_BITS } from './privacy.ts';
import { precheckKeys } from './seal-precheck.ts';
import { guard, release } from './seal.ts';
import { SinglePrivacy, makePublicKey } from './single-privacy.ts';
import { usedInputs, type TreeCircuit } from './tree-circuit.ts';
import { walkFactored, type FactoredAlgebra } from './tree-factored.ts';

/** One batch's evaluation state: loaded inputs, values to free, operation counts, heartbeat. */
interface Run {
  t: Map<number, Ciphertext>;
  owned: Set<Ciphertext | Plaintext>;
  count: (op: string, n?: number) => void;
  onProgress?: () => void;
}

const KEY_HINT = 'make keys for this model with the sealed client (relinearization and public key)';

/** Client side: relinearization keys and the public key (both seeded, zstd) for `secretKey`. */
export function makeTreeKeys(s: CkksSession, secretKey: Uint8Array): { relinKeys: Uint8Array; publicKey: Uint8Array } {
  const sk = new s.seal.SecretKey();
  guard('bad-keys', 'the secret key', () => sk.loadFromArray(s.context, secretKey));
  const kg = new s.seal.KeyGenerator(s.context, sk);
  const rk = kg.createRelinKeysSerializable();
  try {
    return { relinKeys: rk.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array, publicKey: makePublicKey(s, secretKey) };
  } finally {
    release(rk, kg, sk);
  }
}

/** Server side: a model's circuit with a client's keys, loaded once and reused for its batches. */
export class TreeEvaluator {
  private readonly s: CkksSession;
  private readonly c: TreeCircuit;
  private readonly relin: RelinKeys;
  private readonly privacy?: SinglePrivacy;
  private readonly used: number[];

  constructor(s: CkksSession, c: TreeCircuit, relinKeys: Uint8Array, publicKey?: Uint8Array) {
    this.s = s;
    this.c = c;
    this.used = usedInputs(c);
    if (c.privacy === 'flood' && !publicKey)
      throw new SealedError('bad-keys', 'this model floods its results (circuit privacy) and the keys carry no public key', KEY_HINT);
    const checked = precheckKeys(relinKeys, s.shape, { what: 'the relinearization keys', kind: 'relin' });
    this.relin = new s.seal.RelinKeys();
    try {
      guard('bad-keys', 'the relinearization keys', () => this.relin.loadFromArray(s.context, checked));
      if (c.privacy === 'flood') this.privacy = new SinglePrivacy(s, publicKey!, 2 ** c.noiseL2Bits!, c.floodSecurityBits ?? FLOOD_SECURITY_BITS);
    } catch (e) {
      release(this.relin);
      throw e;
    }
  }

  /**
   * One batch: `inputs` holds the circuit's `inputs` ciphertexts (bytes, as the client saved
   * them); returns one result ciphertext per output (bytes, zstd), flooded when the model says so.
   * `ops` counts what was done, for the benchmark's unit-cost check; `onProgress` is called after
   * every ciphertext loaded and every product (group of leaves, in the grouped form): milliseconds
   * to tens of milliseconds apart.
   */
  evaluate(inputs: Uint8Array[], ops?: Record<string, number>, onProgress?: () => void): Uint8Array[] {
    const { s, c } = this;
    const { seal, evaluator } = s;
    if (inputs.length !== c.inputs)
      throw new SealedError(
        'bad-query',
        `a batch holds ${inputs.length} ciphertexts, this model reads ${c.inputs} per batch`,
        'encrypt the query with the sealed client for this model',
      );
    const run: Run = {
      t: new Map(),
      owned: new Set(),
      count: (k, n = 1) => {
        if (ops) ops[k] = (ops[k] ?? 0) + n;
      },
      onProgress,
    };
    let sums: (Ciphertext | number)[] = [];
    try {
      for (const i of this.used) {
        run.t.set(i, loadQueryCiphertext(s, inputs[i], c.inputScaleBits, { what: `ciphertext ${i + 1} of the encrypted query` }));
        run.count('load');
        onProgress?.();
      }
      const one = this.constant(run, 1, c.inputScaleBits);
      sums = c.factored ? walkFactored(c.factored, c.outputs, this.algebra(run, one)) : this.grouped(run, one);
      const out: Uint8Array[] = [];
      for (const [k, sum] of sums.entries()) {
        if (typeof sum === 'number') throw new SealedError('bad-bundle', `the tree circuit computes nothing for output ${k}`, 'recompile the model');
        if (sum.size() > 2) {
          evaluator.relinearizeInplace(sum, this.relin);
          run.count('relinearize');
        }
        if (this.privacy) {
          const flooded = this.privacy.apply(sum);
          run.count('flood');
          try {
            out.push(flooded.saveToArray(seal.ComprModeType.zstd) as Uint8Array);
          } finally {
            flooded.delete();
          }
        } else out.push(sum.saveToArray(seal.ComprModeType.zstd) as Uint8Array);
      }
      return out;
    } finally {
      release(...run.t.values(), ...run.owned, ...sums.filter((x) => typeof x !== 'number'));
    }
  }

  private constant(run: Run, v: number, scaleBits: number, liftBits = 0): Plaintext {
    run.count('encode');
    const pt = constantPlaintext(this.s, v, scaleBits, liftBits);
    run.owned.add(pt);
    return pt;
  }

  /** The factored form's steps on SEAL ciphertexts (every value made is owned until released). */
  private algebra(run: Run, one: Plaintext): FactoredAlgebra<Ciphertext> {
    const { seal, evaluator } = this.s;
    const { c } = this;
    const inputs = new Set(run.t.values());
    const made = () => {
      const x = new seal.Ciphertext();
      run.owned.add(x);
      return x;
    };
    const free = (x: Ciphertext | Plaintext) => {
      run.owned.delete(x);
      x.delete();
    };
    return {
      input: (i) => run.t.get(i)!,
      factor: (lo, hi) => {
        if (hi < 0) return run.t.get(lo)!;
        const x = made();
        if (lo >= 0) {
          evaluator.sub(run.t.get(lo)!, run.t.get(hi)!, x);
          run.count('add');
        } else {
          evaluator.negate(run.t.get(hi)!, x);
          evaluator.addPlainInplace(x, one);
          run.count('negate');
        }
        return x;
      },
      scaleConst: (x, v, lift) => {
        const pt = this.constant(run, v, c.leafScaleBits, lift * c.inputScaleBits);
        const y = made();
        evaluator.multiplyPlain(x, pt, y);
        free(pt);
        run.count('multiplyPlain');
        return y;
      },
      addConst: (x, v, lift) => {
        const pt = this.constant(run, v, c.leafScaleBits, lift * c.inputScaleBits);
        evaluator.addPlainInplace(x, pt);
        free(pt);
        run.count('add');
      },
      multiply: (x, y) => {
        const z = made();
        evaluator.multiply(x, y, z);
        run.count('multiply');
        run.onProgress?.();
        return z;
      },
      relinearize: (x) => {
        evaluator.relinearizeInplace(x, this.relin);
        run.count('relinearize');
      },
      add: (acc, x) => {
        evaluator.addInplace(acc, x);
        run.count('add');
      },
      size: (x) => x.size(),
      release: (x) => {
        if (!inputs.has(x)) free(x);
      },
    };
  }

  /** The grouped form (tree-circuit.ts): per output, the sum over groups; top products are owned by `run`. */
  private grouped(run: Run, one: Plaintext): (Ciphertext | number)[] {
    const { s, c } = this;
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
        evaluator.relinearizeInplace(top, this.relin);
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
            evaluator.relinearizeInplace(prod, this.relin);
            count('relinearize');
          }
          leaf.values.forEach((v, k) => {
            if (v === 0) return;
            const pt = this.constant(run, v, c.leafScaleBits);
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
            evaluator.relinearizeInplace(group, this.relin);
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

  close(): void {
    release(this.relin);
    this.privacy?.close();
  }
}
