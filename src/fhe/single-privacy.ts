// Circuit privacy in the single layout: what the worker calls on a result before saving it
// (design and bound in privacy.ts). The client uploads a SEAL PublicKey (seeded, zstd) with its
// evaluation keys; the server re-randomizes with it and floods c0.
import type { Ciphertext, Encryptor, PublicKey } from 'node-seal/throws';
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

export class SinglePrivacy {
  private readonly s: CkksSession;
  private readonly pk: PublicKey;
  private readonly encryptor: Encryptor;
  private readonly ntts = new Map<number, NegacyclicNttBig[]>();
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
    const { seal, encoder, evaluator } = this.s;
    const pt = new seal.Plaintext();
    const zero = new seal.Ciphertext();
    const sum = new seal.Ciphertext();
    try {
      encoder.encode(new Float64Array(this.s.slots), ct.scale(), pt);
      const pid = ct.parmsId();
      evaluator.plainModSwitchToInplace(pt, pid);
      pid.delete();
      this.encryptor.encrypt(pt, zero);
      evaluator.add(ct, zero, sum);
      const raw = sum.saveToArray(seal.ComprModeType.none) as Uint8Array;
      floodRawCiphertext(raw, this.tables(sum.coeffModulusSize()), this.sigma);
      return loadCiphertext(this.s, raw, 'a flooded result');
    } finally {
      release(pt, zero, sum);
    }
  }

  close(): void {
    release(this.encryptor, this.pk);
  }
}
