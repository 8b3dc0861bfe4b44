// Circuit privacy in the single layout: what the worker calls on a result before saving it
// (design and bound in privacy.ts). The client uploads a SEAL PublicKey (seeded, zstd) with its
// evaluation keys; the server re-randomizes with it and floods c0.
import type { Ciphertext, Encryptor, ParmsIdType, Plaintext, PublicKey } from 'node-seal/throws';
import type { CkksSession } from './ckks.ts';
import { loadCiphertext } from './load.ts';
import { FLOOD_SECURITY_BITS, NegacyclicNttBig, floodRawCiphertext, floodSigma } from './privacy.ts';
import { precheckCiphertext } from './seal-precheck.ts';
import { guard, release } from './seal.ts';

/** Client side: the public key to upload (seeded: half the size). */
export function makePublicKey(s: CkksSession, secretKey: Uint8Array): Uint8Array {
  const sk = new s.seal.SecretKey();
  guard('bad-keys', 'the secret key', () => sk.loadFromArray(s.context, secretKey));
  const kg = new s.seal.KeyGenerator(s.context, sk);
  const pk = kg.createPublicKeySerializable();
  try {
    return pk.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
  } finally {
    release(pk, kg, sk);
  }
}

/** Masks made ahead per shape (scale and level), at most: a digits record's finisher needs 2. */
export const MAX_SPARES = 2;

/** A result shape the masks were made for: its scale, its level, how many were taken since the last prepareAhead. */
interface Demand {
  scale: number;
  pid?: ParmsIdType;
  taken: number;
}

export class SinglePrivacy {
  private readonly s: CkksSession;
  private readonly pk: PublicKey;
  private readonly encryptor: Encryptor;
  private readonly ntts = new Map<number, NegacyclicNttBig[]>();
  private readonly zeros = new Map<string, Plaintext>();
  /**
   * Masks made ahead, while the thread had nothing else to do (prepareAhead), by shape. A mask
   * does not depend on the result, so making it is the offline half of apply: ~70 ms at ring
   * 16384 that a request then does not wait for. Each is taken once and never leaves the
   * server except added to one result.
   */
  private readonly spares = new Map<string, Ciphertext[]>();
  private readonly demand = new Map<string, Demand>();
  readonly sigma: number;

  /** `noiseL2`: the program's bound on its results' honest noise |v|_2 (coefficient domain). */
  constructor(s: CkksSession, publicKey: Uint8Array, noiseL2: number, lambda = FLOOD_SECURITY_BITS) {
    this.s = s;
    // A PublicKey is saved as its ciphertext: two polynomials at the key level, scale 1.
    const checked = precheckCiphertext(publicKey, s.shape, {
      what: 'the public key',
      code: 'bad-keys',
      hint: 'make keys for this model with `sealed keygen`',
      levels: [s.shape.key],
      minPolys: 2,
      maxPolys: 2,
      compression: ['zstd'],
      scale: 1,
    });
    this.pk = new s.seal.PublicKey();
    guard('bad-keys', 'the public key', () => this.pk.loadFromArray(s.context, checked));
    this.encryptor = new s.seal.Encryptor(s.context, this.pk);
    this.sigma = floodSigma(noiseL2, lambda);
  }

  private tables(primes: number): NegacyclicNttBig[] {
    let t = this.ntts.get(primes);
    if (!t) {
      const level = this.s.shape.data.find((l) => l.primes.length === primes)!;
      t = level.primes.map((q) => NegacyclicNttBig.of(q, this.s.params.polyModulusDegree));
      this.ntts.set(primes, t);
    }
    return t;
  }

  /** A re-randomized, flooded copy of `ct` (size 2). `ct` is left as it was. */
  apply(ct: Ciphertext): Ciphertext {
    const pid = ct.parmsId();
    const mask = this.mask(ct.scale(), pid);
    pid.delete();
    try {
      const sum = new this.s.seal.Ciphertext();
      this.s.evaluator.add(ct, mask, sum);
      return sum;
    } finally {
      mask.delete();
    }
  }

  /**
   * What apply adds: a fresh encryption of zero under the client's public key with c0 flooded,
   * at `scale` (at the top level, or at `parmsId`'s). It does not depend on the result, so a
   * result evaluated in parts on several threads has its mask made on one of them while the
   * others compute (tree-eval.ts). It is the flood's secret: it never leaves the server except
   * added to a result.
   */
  mask(scale: number, parmsId?: ParmsIdType): Ciphertext {
    const key = this.shapeKey(scale, parmsId);
    const d = this.demand.get(key);
    if (d) d.taken++;
    else this.demand.set(key, { scale, pid: parmsId && new this.s.seal.ParmsIdType(parmsId), taken: 1 });
    const spare = this.spares.get(key)?.pop();
    return spare ?? this.freshMask(scale, parmsId);
  }

  /**
   * Makes one mask ahead for a shape that masks were taken for since (up to as many as were
   * taken, at most MAX_SPARES waiting): the offline work a thread does between its tasks.
   * Returns whether there is more to make.
   */
  prepareAhead(): boolean {
    for (const [key, d] of this.demand) {
      const waiting = this.spares.get(key) ?? [];
      if (d.taken > 0 && waiting.length < MAX_SPARES) {
        waiting.push(this.freshMask(d.scale, d.pid));
        this.spares.set(key, waiting);
        d.taken--;
        return true;
      }
      d.taken = 0;
    }
    return false;
  }

  /** Masks waiting (tests). */
  get spareCount(): number {
    let n = 0;
    for (const w of this.spares.values()) n += w.length;
    return n;
  }

  private freshMask(scale: number, parmsId?: ParmsIdType): Ciphertext {
    const { seal } = this.s;
    const zero = new seal.Ciphertext();
    try {
      this.encryptor.encrypt(this.zeroPlaintext(scale, parmsId), zero);
      const raw = zero.saveToArray(seal.ComprModeType.none) as Uint8Array;
      floodRawCiphertext(raw, this.tables(zero.coeffModulusSize()), this.sigma);
      return loadCiphertext(this.s, raw, 'a flood mask');
    } finally {
      release(zero);
    }
  }

  /** The encoding of zero at `scale` and `parmsId`'s level: the same every time, so encoded once (~5 ms a mask at ring 16384). */
  private zeroPlaintext(scale: number, parmsId?: ParmsIdType): Plaintext {
    const key = this.shapeKey(scale, parmsId);
    let pt = this.zeros.get(key);
    if (!pt) {
      pt = new this.s.seal.Plaintext();
      this.s.encoder.encode(new Float64Array(this.s.slots), scale, pt);
      if (parmsId) this.s.evaluator.plainModSwitchToInplace(pt, parmsId);
      this.zeros.set(key, pt);
    }
    return pt;
  }

  private shapeKey(scale: number, parmsId?: ParmsIdType): string {
    return `${scale}:${parmsId ? Array.from(parmsId.values() as ArrayLike<bigint>).join(',') : 'top'}`;
  }

  close(): void {
    release(this.encryptor, this.pk, ...this.zeros.values(), ...[...this.spares.values()].flat(), ...[...this.demand.values()].map((d) => d.pid));
    this.zeros.clear();
    this.spares.clear();
    this.demand.clear();
  }
}
