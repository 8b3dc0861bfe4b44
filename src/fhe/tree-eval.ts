// The encrypted tree-ensemble evaluator of both forms (tree-circuit.ts, tree-factored.ts; design
// in docs/trees.md), and the client's keys for it: relinearization keys and the public key
// circuit privacy uses.
// Pure: no I/O, no threads; the server dispatches a query's batches to it.
import type { Ciphertext, Plaintext, RelinKeys } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import type { CkksSession } from './ckks.ts';
import { constantPlaintext } from './constant.ts';
import { saveKeys } from './keys.ts';
import { loadCiphertext, loadQueryCiphertext } from './load.ts';
import { FLOOD_SECURITY_BITS } from './privacy.ts';
import { precheckKeys } from './seal-precheck.ts';
import { guard, release } from './seal.ts';
import { SinglePrivacy, makePublicKey } from './single-privacy.ts';
import { partInputs, resultScaleBits, usedInputs, type TreeCircuit, type TreePart } from './tree-circuit.ts';
import { factoredDepth, walkFactored, type FactoredAlgebra } from './tree-factored.ts';
import { groupedSums, type TreeRun } from './tree-grouped.ts';

const KEY_HINT = 'make keys for this model with the sealed client (relinearization and public key)';

/** Client side: relinearization keys (seeded, packed) and the public key (seeded, zstd) for `secretKey`. */
export function makeTreeKeys(s: CkksSession, secretKey: Uint8Array): { relinKeys: Uint8Array; publicKey: Uint8Array } {
  const sk = new s.seal.SecretKey();
  guard('bad-keys', 'the secret key', () => sk.loadFromArray(s.context, secretKey));
  const kg = new s.seal.KeyGenerator(s.context, sk);
  const rk = kg.createRelinKeysSerializable();
  try {
    return { relinKeys: saveKeys(s, rk), publicKey: makePublicKey(s, secretKey) };
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
    const { c } = this;
    if (inputs.length !== c.inputs)
      throw new SealedError(
        'bad-query',
        `a batch holds ${inputs.length} ciphertexts, this model reads ${c.inputs} per batch`,
        'encrypt the query with the sealed client for this model',
      );
    const run = this.load(
      this.used.map((i) => [i, inputs[i]]),
      ops,
      onProgress,
    );
    try {
      const one = this.constant(run, 1, c.inputScaleBits);
      const sums = c.factored
        ? walkFactored(c.factored, c.outputs, this.algebra(run, one))
        : groupedSums(this.s, c, this.relin, run, one, (v) => this.constant(run, v, c.leafScaleBits));
      return sums.map((sum, k) => {
        if (typeof sum === 'number') throw new SealedError('bad-bundle', `the tree circuit computes nothing for output ${k}`, 'recompile the model');
        run.owned.add(sum);
        return this.finish(run, sum);
      });
    } finally {
      release(...run.t.values(), ...run.owned);
    }
  }

  /**
   * One part of a batch (treeParts: a sub-trie of the factored form or a range of the grouped
   * form's groups, on another thread than the others): `inputs` are the part's inputs
   * (partInputs, in that order). Returns
   * its sum per output, not relinearized and not flooded (bytes, zstd), or a number where the part
   * reaches an output through constants only; with `masks`, also the flood masks of the batch's
   * outputs (SinglePrivacy.mask), which one part makes while the others compute. combine() adds
   * the parts, relinearizes once and floods: the operations of evaluate(), in another order.
   */
  evaluatePart(part: TreePart, inputs: Uint8Array[], masks: boolean, onProgress?: () => void): { sums: (Uint8Array | number)[]; masks?: Uint8Array[] } {
    const { c, s } = this;
    const used = partInputs(c, part);
    if (inputs.length !== used.length) throw new SealedError('internal', `a part of a batch got ${inputs.length} ciphertexts, it reads ${used.length}`);
    const run = this.load(
      used.map((i, n) => [i, inputs[n]]),
      undefined,
      onProgress,
    );
    try {
      const one = this.constant(run, 1, c.inputScaleBits);
      const walked =
        'factored' in part
          ? walkFactored(part.factored, c.outputs, this.algebra(run, one), factoredDepth(c.factored!))
          : groupedSums(s, { ...c, groups: c.groups.slice(...part.groups) }, this.relin, run, one, (v) => this.constant(run, v, c.leafScaleBits));
      const sums = walked.map((sum) => (typeof sum === 'number' ? sum : (sum.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array)));
      if (!masks || !this.privacy) return { sums };
      const scale = 2 ** resultScaleBits(c);
      return {
        sums,
        masks: Array.from({ length: c.outputs }, () => {
          const mask = this.privacy!.mask(scale);
          try {
            return mask.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
          } finally {
            mask.delete();
          }
        }),
      };
    } finally {
      release(...run.t.values(), ...run.owned);
    }
  }

  /**
   * The parts' sums of one batch (evaluatePart's, in part order) added per output, relinearized
   * once, and flooded with `masks` (one per output, made by a part) when the model floods.
   */
  combine(parts: (Uint8Array | number)[][], masks?: Uint8Array[]): Uint8Array[] {
    const { s, c } = this;
    if (this.privacy && masks?.length !== c.outputs) throw new SealedError('internal', 'the parts of a flooded batch came without its flood masks');
    const scale = 2 ** resultScaleBits(c);
    const run = this.load([], undefined, undefined);
    const load = (bytes: Uint8Array, what: string) => {
      const x = loadCiphertext(s, bytes, what);
      run.owned.add(x);
      if (x.scale() !== scale) throw new SealedError('internal', `${what} is at scale ${x.scale()}, not the circuit's`);
      return x;
    };
    try {
      return Array.from({ length: c.outputs }, (_, k) => {
        let sum: Ciphertext | undefined;
        let constant = 0;
        for (const [p, part] of parts.entries()) {
          const v = part[k];
          if (typeof v === 'number') constant += v;
          else if (!sum) sum = load(v, `part ${p + 1}'s sum for output ${k}`);
          else s.evaluator.addInplace(sum, load(v, `part ${p + 1}'s sum for output ${k}`));
        }
        if (!sum) throw new SealedError('bad-bundle', `the tree circuit computes nothing for output ${k}`, 'recompile the model');
        if (constant !== 0) s.evaluator.addPlainInplace(sum, this.constant(run, constant, c.leafScaleBits, resultScaleBits(c) - c.leafScaleBits));
        if (sum.size() > 2) s.evaluator.relinearizeInplace(sum, this.relin);
        if (!this.privacy) return sum.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
        s.evaluator.addInplace(sum, load(masks![k], `the flood mask of output ${k}`));
        return sum.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
      });
    } finally {
      release(...run.owned);
    }
  }

  /** Loads `inputs` ([input index, bytes]) into a new run. */
  private load(inputs: [number, Uint8Array][], ops?: Record<string, number>, onProgress?: () => void): TreeRun {
    const run: TreeRun = {
      t: new Map(),
      owned: new Set(),
      count: (k, n = 1) => {
        if (ops) ops[k] = (ops[k] ?? 0) + n;
      },
      onProgress,
    };
    try {
      for (const [i, bytes] of inputs) {
        // Packed at the primes' widths (packed-wide.ts) as clients write them now, or zstd as they did before.
        run.t.set(
          i,
          loadQueryCiphertext(this.s, bytes, this.c.inputScaleBits, { what: `ciphertext ${i + 1} of the encrypted query`, compression: ['none', 'zstd'] }),
        );
        run.count('load');
        onProgress?.();
      }
      return run;
    } catch (e) {
      release(...run.t.values());
      throw e;
    }
  }

  /** An output's sum, relinearized and flooded when the model says so, saved (zstd). */
  private finish(run: TreeRun, sum: Ciphertext): Uint8Array {
    const { seal, evaluator } = this.s;
    if (sum.size() > 2) {
      evaluator.relinearizeInplace(sum, this.relin);
      run.count('relinearize');
    }
    if (!this.privacy) return sum.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
    const flooded = this.privacy.apply(sum);
    run.count('flood');
    try {
      return flooded.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
    } finally {
      flooded.delete();
    }
  }

  private constant(run: TreeRun, v: number, scaleBits: number, liftBits = 0): Plaintext {
    run.count('encode');
    const pt = constantPlaintext(this.s, v, scaleBits, liftBits);
    run.owned.add(pt);
    return pt;
  }

  /** The factored form's steps on SEAL ciphertexts (every value made is owned until released). */
  private algebra(run: TreeRun, one: Plaintext): FactoredAlgebra<Ciphertext> {
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

  /** SinglePrivacy.prepareAhead on this key set's re-randomizer (false without circuit privacy). */
  prepareAhead(): boolean {
    return this.privacy?.prepareAhead() ?? false;
  }

  close(): void {
    release(this.relin);
    this.privacy?.close();
  }
}
