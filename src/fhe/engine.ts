// Runs a Program on a ciphertext. All plaintext masks are encoded once, at model load, at the
// level and scale each step needs; the request path only multiplies, rotates and adds.
import type { Ciphertext, Plaintext, ParmsIdType } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import type { CkksSession } from './ckks.ts';
import type { EvaluationKeys } from './load-keys.ts';
import { inputCiphertexts, rotationRoutes, type LinearStep, type Program, type RotationRoutes } from './program.ts';
import { guard, release } from './seal.ts';

interface EncodedLinear {
  step: LinearStep;
  groups: { giant: number; terms: { baby: number; pt: Plaintext }[] }[];
  routes: RotationRoutes;
  bias?: { values: Float64Array; pt: Plaintext; scale: number };
}

export class Engine {
  private readonly s: CkksSession;
  readonly program: Program;
  private readonly encoded: (EncodedLinear | null)[] = [];
  private readonly parms: ParmsIdType[] = [];
  private readonly primes: number[] = [];

  constructor(s: CkksSession, program: Program, masks: Float64Array[]) {
    this.s = s;
    this.program = program;
    this.collectChain();
    const keySteps = new Set(program.galoisSteps);
    let level = 0; // levels consumed so far
    let scale = 2 ** program.inputScaleBits;
    for (const st of program.steps) {
      if (st.op === 'square') {
        this.encoded.push(null);
        scale = (scale * scale) / this.primes[level];
        level++;
        continue;
      }
      if (st.op === 'rescale') {
        this.encoded.push(null);
        scale = scale / this.primes[level];
        level++;
        continue;
      }
      const ptScale = st.rescale ? this.primes[level] : 2 ** (st.weightScaleBits ?? 20);
      const byGiant = new Map<number, { baby: number; pt: Plaintext }[]>();
      for (const t of st.terms) {
        const list = byGiant.get(t.giant) ?? [];
        list.push({ baby: t.baby, pt: this.encode(masks[t.mask], ptScale, level) });
        byGiant.set(t.giant, list);
      }
      scale = scale * ptScale;
      const afterLevel = st.rescale ? level + 1 : level;
      if (st.rescale) scale = scale / this.primes[level];
      const enc: EncodedLinear = {
        step: st,
        groups: [...byGiant].map(([giant, terms]) => ({ giant, terms })),
        routes: rotationRoutes(st, keySteps),
      };
      if (st.bias !== undefined) enc.bias = { values: masks[st.bias], pt: this.encode(masks[st.bias], scale, afterLevel), scale };
      this.encoded.push(enc);
      level = afterLevel;
    }
  }

  /** parms ids and the value of the prime each rescale drops, top level first. */
  private collectChain(): void {
    let data = this.s.context.firstContextData();
    for (let i = 0; i < this.s.dataPrimes; i++) {
      this.parms.push(data.parmsId());
      const parms = data.parms();
      const mods = parms.coeffModulus();
      this.primes.push(Number(mods.get(mods.size() - 1)!.value()));
      release(mods, parms);
      const next = i + 1 < this.s.dataPrimes ? data.nextContextData() : undefined;
      data.delete();
      if (next) data = next;
    }
  }

  private encode(values: Float64Array, scale: number, level: number): Plaintext {
    const { seal, encoder, evaluator } = this.s;
    const pt = new seal.Plaintext();
    encoder.encode(values, scale, pt);
    if (level > 0) evaluator.plainModSwitchToInplace(pt, this.parms[level]);
    return pt;
  }

  /** Ciphertexts a query section holds: the input, then the client's rotated copies of it. */
  get inputCiphertexts(): number {
    return inputCiphertexts(this.program);
  }

  /**
   * Evaluates the program on the input (and its rotated copies, inputCiphertexts in all). The
   * inputs may be changed in place: use them for nothing else after (but release them).
   */
  run(input: Ciphertext | Ciphertext[], keys: EvaluationKeys): Ciphertext {
    const inputs = Array.isArray(input) ? input : [input];
    if (inputs.length !== this.inputCiphertexts)
      throw new SealedError('bad-query', `the program reads ${this.inputCiphertexts} ciphertexts per input, ${inputs.length} were given`);
    return guard('bad-query', 'evaluation', () => this.runUnguarded(inputs, keys));
  }

  private runUnguarded(inputs: Ciphertext[], keys: EvaluationKeys): Ciphertext {
    const { seal, evaluator: ev } = this.s;
    // clone() makes a second handle to the same SEAL object (embind), not a copy: the steps may
    // update x in place, which is fine because the caller does not use the inputs afterwards.
    let x = inputs[0].clone();
    for (let i = 0; i < this.program.steps.length; i++) {
      const st = this.program.steps[i];
      if (st.op === 'square') {
        if (!keys.relin) throw new SealedError('bad-keys', 'relinearization keys are missing');
        ev.squareInplace(x);
        ev.relinearizeInplace(x, keys.relin);
        ev.rescaleToNextInplace(x);
        continue;
      }
      if (st.op === 'rescale') {
        ev.rescaleToNextInplace(x);
        continue;
      }
      const enc = this.encoded[i]!;
      const rotated = new Map<number, Ciphertext>([[0, x]]);
      // The client's copies (first step only, bundle.ts checks): rot(input, b) for each b given.
      (st.inputRotations ?? []).forEach((b, k) => rotated.set(b, inputs[k + 1].clone()));
      for (const { to, from } of enc.routes.babies) {
        const r = new seal.Ciphertext();
        ev.rotateVector(rotated.get(from)!, to - from, keys.rotation(to - from), r);
        rotated.set(to, r);
      }
      let acc: Ciphertext | undefined;
      const tmp = new seal.Ciphertext();
      const horner = new Map<number, Ciphertext>();
      for (const g of enc.groups) {
        let inner: Ciphertext | undefined;
        for (const t of g.terms) {
          if (!inner) {
            inner = new seal.Ciphertext();
            ev.multiplyPlain(rotated.get(t.baby)!, t.pt, inner);
          } else {
            ev.multiplyPlain(rotated.get(t.baby)!, t.pt, tmp);
            ev.addInplace(inner, tmp);
          }
        }
        // Rescaling commutes with rotation: rescale each group first, so its giant-step
        // rotation runs one level lower, where it costs about a third (one prime fewer).
        if (st.rescale) ev.rescaleToNextInplace(inner!);
        if (enc.routes.horner !== undefined) {
          horner.set(g.giant, inner!);
          continue;
        }
        if (g.giant !== 0) ev.rotateVectorInplace(inner!, g.giant, keys.rotation(g.giant));
        if (!acc) acc = inner;
        else {
          ev.addInplace(acc, inner!);
          inner!.delete();
        }
      }
      const B = enc.routes.horner;
      if (B !== undefined) {
        // Horner's rule over the giant steps 0, B, 2B, ..: one key (compactRotations).
        const top = Math.max(...horner.keys());
        acc = horner.get(top)!;
        for (let k = top - B; k >= 0; k -= B) {
          ev.rotateVectorInplace(acc, B, keys.rotation(B));
          const inner = horner.get(k);
          if (inner) {
            ev.addInplace(acc, inner);
            inner.delete();
          }
        }
      }
      for (const r of rotated.values()) r.delete(); // includes x
      for (const f of st.folds) {
        ev.rotateVector(acc!, f, keys.rotation(f), tmp);
        ev.addInplace(acc!, tmp);
      }
      tmp.delete();
      if (enc.bias) {
        if (acc!.scale() !== enc.bias.scale) {
          // Our scale bookkeeping and SEAL's disagree by rounding: re-encode once at SEAL's.
          enc.bias.pt.delete();
          enc.bias.scale = acc!.scale();
          enc.bias.pt = this.encode(enc.bias.values, enc.bias.scale, this.levelOf(acc!));
        }
        ev.addPlainInplace(acc!, enc.bias.pt);
      }
      x = acc!;
    }
    // Results travel at the lowest level that holds them (one prime unless the program says
    // more, as flooded programs do): fewer primes, smaller download.
    const keep = Math.max(1, Math.min(this.program.resultPrimes ?? 1, this.parms.length));
    if (x.coeffModulusSize() > keep) ev.cipherModSwitchToInplace(x, this.parms[this.parms.length - keep]);
    return x;
  }

  private levelOf(ct: Ciphertext): number {
    return this.s.dataPrimes - ct.coeffModulusSize();
  }

  close(): void {
    for (const e of this.encoded) {
      if (!e) continue;
      for (const g of e.groups) for (const t of g.terms) t.pt.delete();
      e.bias?.pt.delete();
    }
    release(...this.parms);
  }
}
