// The leaves-in-slots circuit for one tree-ensemble record (docs/trees.md, Not done yet; the
// placement and its noise bound are in src/model/trees/slots.ts). In: the client's thermometer
// bits, replicated with the layout's period, and their rotations by 0 .. copies - 1 (the baby
// steps the client sends). Out: a ciphertext per output whose every slot holds its score, unflooded.
// Pure: no I/O, no threads. Not served yet: scripts/prototype-trees-single.ts and
// test/trees-slots-encrypted.test.ts run it.
import type { Ciphertext, Plaintext } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import type { CkksSession } from './ckks.ts';
import type { SecretKeyHolder } from './keys.ts';
import { loadCiphertext, loadQueryCiphertext, type EvaluationKeys } from './load.ts';
import { guard, release } from './seal.ts';
import { makePublicKey } from './single-privacy.ts';

/** Where the leaves and their factors sit: plain data, made by src/model/trees/slots.ts. */
export interface SlotsLayout {
  /** Ciphertext slots (N / 2); the vectors below repeat over them. */
  slots: number;
  /** Rotated copies of its input the client sends: diagonal d is copy d mod copies, giant step d - (d mod copies). */
  copies: number;
  /** Diagonal d -> its mask over one period. */
  masks: Map<number, Float64Array>;
  /** Added to the gathered factors, over one period (its length is the period: 4 segments). */
  constant: Float64Array;
  /** Per output, each position's leaf value (their length is the segment). */
  leafValues: Float64Array[];
}

export interface SlotsScales {
  inputScaleBits: number;
  /** The masks' scale: the gather rescales by the prime after the data primes, of this size. */
  maskScaleBits: number;
  leafScaleBits: number;
  /** Primes dropped (mod switches) before the folds: the result's level is RESULT_LEVEL + resultDrop. */
  resultDrop?: number;
}

/**
 * Levels (primes dropped) at which the leaf values multiply: the gather's rescale by the mask
 * prime, then one rescale per segment product. One more rescale follows them, so the leaf sum's
 * folds and the result are at RESULT_LEVEL: key switches there cost about a quarter of the top's.
 */
export const LEAF_LEVEL = 3;
export const RESULT_LEVEL = 4;

/** The giant rotation of diagonal d. */
export const giantOf = (layout: Pick<SlotsLayout, 'copies'>, d: number): number => d - (d % layout.copies);

/** Rotation steps the Galois keys must hold: the giant steps, the two segment products, the sum's folds. */
export function slotsRotations(layout: SlotsLayout): number[] {
  const segment = layout.leafValues[0].length;
  const giants = new Set([...layout.masks.keys()].map((d) => giantOf(layout, d)).filter((g) => g > 0));
  const folds = Array.from({ length: Math.log2(segment) }, (_, j) => 2 ** j);
  return [...new Set([...giants, 2 * segment, segment, ...folds])].sort((a, b) => a - b);
}

const repeat = (v: ArrayLike<number>, slots: number, shift = 0) =>
  Float64Array.from({ length: slots }, (_, t) => v[(((t + shift) % v.length) + v.length) % v.length]);

/**
 * Client side: the evaluation keys a layout's queries need, from a secret key: seeded, not
 * zstd-compressed (118 MB instead of 105 for breast cancer's 17 rotations, but a worker loads
 * them in ~0.7 s instead of ~1-1.6 s plus ~0.7 s of checking the decompressed bytes).
 */
export function makeSlotsKeys(
  s: CkksSession,
  secretKey: Uint8Array,
  steps: number[],
): { galoisKeys: Uint8Array; relinKeys: Uint8Array; publicKey: Uint8Array } {
  const sk = new s.seal.SecretKey();
  guard('bad-keys', 'the secret key', () => sk.loadFromArray(s.context, secretKey));
  const kg = new s.seal.KeyGenerator(s.context, sk);
  const gk = kg.createGaloisKeysSerializableWithSteps(Int32Array.from(steps));
  const rk = kg.createRelinKeysSerializable();
  try {
    const none = s.seal.ComprModeType.none;
    return { galoisKeys: gk.saveToArray(none) as Uint8Array, relinKeys: rk.saveToArray(none) as Uint8Array, publicKey: makePublicKey(s, secretKey) };
  } finally {
    release(gk, rk, kg, sk);
  }
}

/** What the client knows of a layout: the slots, the copies it sends, the period of its bits. */
export interface SlotsShape {
  slots: number;
  copies: number;
  period: number;
}

/** Client side: the query, `copies` ciphertexts: the bits replicated with the period, rotated by 0 .. copies - 1. */
export function encryptSlotsQuery(holder: SecretKeyHolder, shape: SlotsShape, inputScaleBits: number, bits: ArrayLike<number>): Uint8Array[] {
  const { period, slots, copies } = shape;
  if (bits.length > period) throw new SealedError('bad-data', `${bits.length} bits: the layout's period holds ${period}`);
  const x = Float64Array.from({ length: period }, (_, i) => (i < bits.length ? bits[i] : 0));
  // Uncompressed (seeded): each part of the gather loads most copies, and zstd was ~60% of a load.
  return Array.from({ length: copies }, (_, j) => holder.encryptUncompressed(repeat(x, slots, j), inputScaleBits));
}

/** Server side: a layout's plaintexts, encoded once, and its evaluation. */
export class SlotsEvaluator {
  private readonly s: CkksSession;
  private readonly layout: SlotsLayout;
  private readonly scales: SlotsScales;
  /** Per giant rotation, its diagonals: the copy each reads and its mask, pre-rotated by -rotation. */
  private readonly groups = new Map<number, { copy: number; pt: Plaintext }[]>();
  private readonly constant: Plaintext;
  /** Per output. */
  private readonly leafValues: Plaintext[];

  constructor(s: CkksSession, layout: SlotsLayout, scales: SlotsScales) {
    this.s = s;
    this.layout = layout;
    this.scales = scales;
    const { slots } = layout;
    for (const [d, mask] of layout.masks) {
      const g = giantOf(layout, d);
      const list = this.groups.get(g) ?? [];
      list.push({ copy: d - g, pt: this.encode(repeat(mask, slots, -g), 2 ** scales.maskScaleBits) });
      this.groups.set(g, list);
    }
    this.constant = this.encode(repeat(layout.constant, slots), 2 ** (scales.inputScaleBits + scales.maskScaleBits));
    this.leafValues = layout.leafValues.map((v) => this.encode(repeat(v, slots), 2 ** scales.leafScaleBits));
    // The leaf values multiply the products three levels down: after the gather's rescale and
    // each segment product's (LEAF_LEVEL).
    let data = s.context.firstContextData();
    for (let j = 0; j < LEAF_LEVEL; j++) {
      const next = data.nextContextData();
      release(data);
      data = next;
    }
    const pid = data.parmsId();
    for (const pt of this.leafValues) s.evaluator.plainModSwitchToInplace(pt, pid);
    release(pid, data);
  }

  /** The outputs: a result ciphertext each. */
  get outputs(): number {
    return this.leafValues.length;
  }

  private encode(values: Float64Array, scale: number): Plaintext {
    const pt = new this.s.seal.Plaintext();
    this.s.encoder.encode(values, scale, pt);
    return pt;
  }

  /** Evaluates the layout on the client's copies (bytes, as it saved them): a result per output, unflooded. */
  run(copies: Uint8Array[], keys: EvaluationKeys): Ciphertext[] {
    const F = this.gather(copies, keys, [...this.groups.keys()]);
    try {
      return this.finish(F, keys);
    } finally {
      release(F);
    }
  }

  /**
   * The giant groups of part `part` of `parts` (dealt largest first to the lightest part, a
   * rotation weighing as much as 11 mask products), for threads that share one record. Part 0
   * starts with `firstLoad` (other work its thread does, in mask products: the flood's mask).
   */
  partGroups(part: number, parts: number, firstLoad = 0): number[] {
    const load = new Array<number>(parts).fill(0);
    load[0] = firstLoad;
    const owner = new Map<number, number>();
    const cost = (g: number) => this.groups.get(g)!.length + (g ? 11 : 0);
    for (const g of [...this.groups.keys()].sort((x, y) => cost(y) - cost(x) || x - y)) {
      const k = load.indexOf(Math.min(...load));
      owner.set(g, k);
      load[k] += cost(g);
    }
    return [...owner].filter(([, k]) => k === part).map(([g]) => g);
  }

  /** One part's gather, unrescaled (bytes): finishParts adds the parts' and completes the circuit. */
  runPart(copies: Uint8Array[], keys: EvaluationKeys, part: number, parts: number, firstLoad = 0): Uint8Array {
    const F = this.gather(copies, keys, this.partGroups(part, parts, firstLoad));
    try {
      return F.saveToArray(this.s.seal.ComprModeType.none) as Uint8Array;
    } finally {
      release(F);
    }
  }

  /**
   * The circuit from the parts' gathers (as runPart saved them): what run computes, in another
   * order; only the results of `outputs` (default all: threads may share them out).
   */
  finishParts(partials: Uint8Array[], keys: EvaluationKeys, outputs?: number[]): Ciphertext[] {
    const [F, ...rest] = partials.map((b, k) => loadCiphertext(this.s, b, `part ${k}'s sum`));
    try {
      for (const r of rest) this.s.evaluator.addInplace(F, r);
      return this.finish(F, keys, outputs);
    } finally {
      release(F, ...rest);
    }
  }

  /** sum over `groups` of rot(sum over their diagonals of mask x copy, giant): scale 2^(a + mask), top level. */
  private gather(copies: Uint8Array[], keys: EvaluationKeys, groups: number[]): Ciphertext {
    const { s, layout } = this;
    if (copies.length !== layout.copies) throw new SealedError('bad-query', `the query holds ${copies.length} ciphertexts, this layout reads ${layout.copies}`);
    const owned: Ciphertext[] = [];
    const fresh = () => {
      const c = new s.seal.Ciphertext();
      owned.push(c);
      return c;
    };
    try {
      const x = new Map<number, Ciphertext>();
      for (const g of groups)
        for (const { copy } of this.groups.get(g)!)
          if (!x.has(copy)) {
            const c = loadQueryCiphertext(s, copies[copy], this.scales.inputScaleBits, {
              what: `ciphertext ${copy} of the encrypted query`,
              compression: ['none'],
            });
            owned.push(c);
            x.set(copy, c);
          }
      const ev = s.evaluator;
      return guard('bad-query', 'evaluation', () => {
        const term = fresh();
        let F: Ciphertext | undefined;
        for (const g of groups) {
          const inner = fresh();
          this.groups.get(g)!.forEach(({ copy, pt }, n) => {
            if (n === 0) ev.multiplyPlain(x.get(copy)!, pt, inner);
            else {
              ev.multiplyPlain(x.get(copy)!, pt, term);
              ev.addInplace(inner, term);
            }
          });
          if (g) ev.rotateVectorInplace(inner, g, keys.galois);
          if (!F) F = inner;
          else ev.addInplace(F, inner);
        }
        if (!F) throw new SealedError('bad-bundle', 'no diagonals to gather');
        owned.splice(owned.indexOf(F), 1);
        return F;
      });
    } finally {
      release(...owned);
    }
  }

  /**
   * The constants, the rescale, the two segment products, then per output its leaf values and
   * their sum, each product rescaled (new ciphertexts, for `outputs`, default all).
   */
  private finish(gathered: Ciphertext, keys: EvaluationKeys, outputs = this.leafValues.map((_, k) => k)): Ciphertext[] {
    const { s } = this;
    if (!keys.relin) throw new SealedError('bad-keys', 'relinearization keys are missing');
    const relin = keys.relin;
    const ev = s.evaluator;
    const P = new s.seal.Ciphertext();
    const rotated = new s.seal.Ciphertext();
    const results: Ciphertext[] = [];
    try {
      return guard('bad-query', 'evaluation', () => {
        ev.addPlain(gathered, this.constant, P);
        ev.rescaleToNextInplace(P);
        const segment = this.layout.leafValues[0].length;
        for (const step of [2 * segment, segment]) {
          ev.rotateVector(P, step, keys.galois, rotated);
          ev.multiplyInplace(P, rotated);
          ev.relinearizeInplace(P, relin);
          ev.rescaleToNextInplace(P);
        }
        for (const k of outputs) {
          const pt = this.leafValues[k];
          if (!pt) throw new SealedError('internal', `output ${k} of ${this.leafValues.length}`);
          const out = new s.seal.Ciphertext();
          results.push(out);
          ev.multiplyPlain(P, pt, out);
          ev.rescaleToNextInplace(out);
          for (let d = 0; d < (this.scales.resultDrop ?? 0); d++) ev.cipherModSwitchToNextInplace(out);
          for (let step = 1; step < segment; step *= 2) {
            ev.rotateVector(out, step, keys.galois, rotated);
            ev.addInplace(out, rotated);
          }
        }
        return results;
      });
    } catch (e) {
      release(...results);
      throw e;
    } finally {
      release(P, rotated);
    }
  }

  close(): void {
    for (const list of this.groups.values()) release(...list.map((t) => t.pt));
    release(this.constant, ...this.leafValues);
  }
}
