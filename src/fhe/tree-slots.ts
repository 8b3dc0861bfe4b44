// The leaves-in-slots circuit for one tree-ensemble record (docs/trees.md; the layout is
// tree-slots-layout.ts, its placement and noise bound src/model/trees/slots.ts and
// slots-chain.ts). In: the client's copies of its thermometer bits. Out: the result ciphertexts,
// every slot holding one output's score (the layout's stretch says which), unflooded.
// Pure: no I/O, no threads; src/model/trees/single-server.ts serves it.
import type { Ciphertext, Plaintext } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import type { CkksSession } from './ckks.ts';
import type { CopyExchange } from './copy-exchange.ts';
import { GatherKernel, type SharedMasks } from './gather-kernel.ts';
import { loadCiphertext, loadQueryCiphertext } from './load.ts';
import type { EvaluationKeys } from './load-keys.ts';
import { guard, release } from './seal.ts';
import { LEAF_LEVEL, giantOf, resultsOf, spread, stretchOf, stretchedLeafValues, type SlotsLayout, type SlotsScales } from './tree-slots-layout.ts';

/** Server side: a layout's plaintexts, encoded once, and its evaluation. */
export class SlotsEvaluator {
  private readonly s: CkksSession;
  private readonly layout: SlotsLayout;
  private readonly scales: SlotsScales;
  /** Per giant rotation, its diagonals: the copy each reads and its mask (pre-rotated by -rotation, in the kernel). */
  private readonly groups = new Map<number, { copy: number; mask: number }[]>();
  /** The masks and, during a gather, the query's copies: the mask products run there (gather-kernel.ts). */
  private readonly kernel: GatherKernel;
  private readonly constant: Plaintext;
  /** Per result ciphertext (stretchedLeafValues). */
  private readonly leafValues: Plaintext[];
  /** Slots per position. */
  private readonly G: number;

  /** `masks`: where the threads of a process keep the masks (built by the first to claim them). */
  constructor(s: CkksSession, layout: SlotsLayout, scales: SlotsScales, masks?: SharedMasks) {
    this.s = s;
    this.layout = layout;
    this.scales = scales;
    const { slots } = layout;
    const G = (this.G = stretchOf(layout));
    const top = s.shape.data[0];
    const kernel = (this.kernel = new GatherKernel(2 * slots, top.primes, layout.masks.size, layout.copies, masks));
    let k = 0;
    try {
      for (const [d, mask] of layout.masks) {
        const g = giantOf(layout, d);
        const list = this.groups.get(g) ?? [];
        // Encoded by SEAL (its rounding is the model's, as before), then held by the kernel only.
        if (kernel.buildsMasks) {
          const pt = this.encode(spread(mask, slots, -g, G), 2 ** scales.maskScaleBits);
          try {
            kernel.setMask(k, pt.saveToArray(s.seal.ComprModeType.none) as Uint8Array);
          } finally {
            release(pt);
          }
        }
        list.push({ copy: d - g, mask: k++ });
        this.groups.set(g, list);
      }
    } catch (e) {
      kernel.masksFailed();
      throw e;
    }
    kernel.masksBuilt();
    this.constant = this.encode(spread(layout.constant, slots, 0, G), 2 ** (scales.inputScaleBits + scales.maskScaleBits));
    this.leafValues = Array.from({ length: resultsOf(layout) }, (_, c) => this.encode(stretchedLeafValues(layout, c), 2 ** scales.leafScaleBits));
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

  /** The result ciphertexts (resultsOf). */
  get results(): number {
    return this.leafValues.length;
  }

  private encode(values: Float64Array, scale: number): Plaintext {
    const pt = new this.s.seal.Plaintext();
    this.s.encoder.encode(values, scale, pt);
    return pt;
  }

  /** Evaluates the layout on the client's copies (bytes, as it saved them): the result ciphertexts, unflooded. */
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

  /** The rotations part `part` of `parts` makes: its groups' giant steps (partGroups). */
  partSteps(part: number, parts: number, firstLoad = 0): number[] {
    return this.partGroups(part, parts, firstLoad)
      .filter((g) => g !== 0)
      .map((g) => g * this.G);
  }

  /** The rotations finish makes: the two segment products' and the leaf sums'. */
  finishSteps(): number[] {
    const segment = this.layout.leafValues[0].length;
    const steps = [2 * segment, segment];
    for (let step = 1; step < segment; step *= 2) steps.push(step);
    return steps.map((step) => step * this.G);
  }

  /**
   * One part's gather, unrescaled (bytes): finishParts adds the parts' and completes the circuit.
   * With an exchange shared by the parts, each copy is loaded by one of them (copy-exchange.ts).
   */
  runPart(copies: Uint8Array[], keys: EvaluationKeys, part: number, parts: number, firstLoad = 0, exchange?: CopyExchange): Uint8Array {
    const F = this.gather(copies, keys, this.partGroups(part, parts, firstLoad), exchange, part % 2 === 1);
    try {
      return F.saveToArray(this.s.seal.ComprModeType.none) as Uint8Array;
    } finally {
      release(F);
    }
  }

  /**
   * The circuit from the parts' gathers (as runPart saved them): what run computes, in another
   * order; only the result ciphertexts `results` (default all: threads may share them out).
   */
  finishParts(partials: Uint8Array[], keys: EvaluationKeys, results?: number[]): Ciphertext[] {
    const [F, ...rest] = partials.map((b, k) => loadCiphertext(this.s, b, `part ${k}'s sum`));
    try {
      for (const r of rest) this.s.evaluator.addInplace(F, r);
      return this.finish(F, keys, results);
    } finally {
      release(F, ...rest);
    }
  }

  /** Copy `j` loaded and checked by SEAL, its seed expanded: uncompressed bytes. */
  private expand(copies: Uint8Array[], j: number): Uint8Array {
    const c = loadQueryCiphertext(this.s, copies[j], this.scales.inputScaleBits, { what: `ciphertext ${j} of the encrypted query`, compression: ['none'] });
    try {
      return c.saveToArray(this.s.seal.ComprModeType.none) as Uint8Array;
    } finally {
      release(c);
    }
  }

  /**
   * The kernel takes the residues of each copy the groups read: loaded here (SEAL checks it and
   * expands its seed), or, with an exchange, here if this thread claims it first and from the
   * thread that did otherwise. `backwards`: claim from the last copy (a second thread meets the
   * first in the middle).
   */
  private loadCopies(copies: Uint8Array[], groups: number[], exchange?: CopyExchange, backwards = false): void {
    const needed = [...new Set(groups.flatMap((g) => this.groups.get(g)!.map((d) => d.copy)))].sort((x, y) => (backwards ? y - x : x - y));
    const later: number[] = [];
    for (const j of needed) {
      if (!exchange) this.kernel.setCopy(j, this.expand(copies, j));
      else if (!exchange.claim(j)) later.push(j);
      else {
        let raw: Uint8Array;
        try {
          raw = this.expand(copies, j);
        } catch (e) {
          exchange.fail(j);
          throw e;
        }
        this.kernel.setCopy(j, raw);
        exchange.publish(j, raw);
      }
    }
    for (const j of later) this.kernel.setCopy(j, exchange!.take(j) ?? this.expand(copies, j));
  }

  /** sum over `groups` of rot(sum over their diagonals of mask x copy, giant): scale 2^(a + mask), top level. */
  private gather(copies: Uint8Array[], keys: EvaluationKeys, groups: number[], exchange?: CopyExchange, backwards = false): Ciphertext {
    const { s, layout } = this;
    if (copies.length !== layout.copies) throw new SealedError('bad-query', `the query holds ${copies.length} ciphertexts, this layout reads ${layout.copies}`);
    if (exchange && exchange.copies !== layout.copies)
      throw new SealedError('internal', `an exchange of ${exchange.copies} copies for a layout of ${layout.copies}`);
    const owned: Ciphertext[] = [];
    try {
      this.loadCopies(copies, groups, exchange, backwards);
      const ev = s.evaluator;
      // What SEAL's multiplyPlain gives a product: the copy's scale (loadQueryCiphertext checks
      // it is 2^a exactly) times the mask's.
      const scale = 2 ** (this.scales.inputScaleBits + this.scales.maskScaleBits);
      return guard('bad-query', 'evaluation', () => {
        let F: Ciphertext | undefined;
        for (const g of groups) {
          const inner = loadCiphertext(s, this.kernel.sum(this.groups.get(g)!, scale), `the gather's group ${g}`);
          owned.push(inner);
          if (g) ev.rotateVectorInplace(inner, g * this.G, keys.rotation(g * this.G));
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
   * The constants, the rescale, the two segment products, then per result ciphertext its leaf
   * values and their sums, each product rescaled (new ciphertexts, for `which`, default all).
   */
  private finish(gathered: Ciphertext, keys: EvaluationKeys, which = this.leafValues.map((_, c) => c)): Ciphertext[] {
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
          ev.rotateVector(P, step * this.G, keys.rotation(step * this.G), rotated);
          ev.multiplyInplace(P, rotated);
          ev.relinearizeInplace(P, relin);
          ev.rescaleToNextInplace(P);
        }
        for (const c of which) {
          const pt = this.leafValues[c];
          if (!pt) throw new SealedError('internal', `result ${c} of ${this.leafValues.length}`);
          const out = new s.seal.Ciphertext();
          results.push(out);
          ev.multiplyPlain(P, pt, out);
          ev.rescaleToNextInplace(out);
          for (let d = 0; d < (this.scales.resultDrop ?? 0); d++) ev.cipherModSwitchToNextInplace(out);
          for (let step = 1; step < segment; step *= 2) {
            ev.rotateVector(out, step * this.G, keys.rotation(step * this.G), rotated);
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
    release(this.constant, ...this.leafValues);
  }
}
