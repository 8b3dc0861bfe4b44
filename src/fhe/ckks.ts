// CKKS operations over node-seal: one session per thread and parameter set; keys, symmetric
// (seeded, half-size) encryption, decryption, and loading of untrusted objects with checks.
import type { Ciphertext, GaloisKeys, RelinKeys, SEALContext, CKKSEncoder, Evaluator } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import { createContext, type CkksParams } from './params.ts';
import { guard, loadSeal, release, type Seal } from './seal.ts';
import { isPacked, packResidues, unpackResidues } from './raw-ciphertext.ts';

export class CkksSession {
  readonly seal: Seal;
  readonly params: CkksParams;
  readonly context: SEALContext;
  readonly encoder: CKKSEncoder;
  readonly evaluator: Evaluator;

  private constructor(seal: Seal, params: CkksParams) {
    this.seal = seal;
    this.params = params;
    this.context = createContext(seal, params);
    this.encoder = new seal.CKKSEncoder(this.context);
    this.evaluator = new seal.Evaluator(this.context);
  }

  static async open(params: CkksParams): Promise<CkksSession> {
    return new CkksSession(await loadSeal(), params);
  }

  get slots(): number {
    return this.encoder.slotCount();
  }

  /** Number of data primes (levels + 1) at the top of the chain. */
  get dataPrimes(): number {
    return this.params.coeffModulusBits.length - 1;
  }

  close(): void {
    release(this.encoder, this.evaluator, this.context);
  }
}

/** SEAL's Galois element for a left rotation by `step` (generator 3, as GaloisTool). */
export function galoisElement(step: number, degree: number): number {
  const m = 2 * degree;
  let k = step < 0 ? degree / 2 + step : step;
  let elt = 1;
  while (k-- > 0) elt = (elt * 3) % m;
  return elt;
}

export interface KeyMaterial {
  secretKey: Uint8Array;
  relinKeys?: Uint8Array;
  galoisKeys: Uint8Array;
}

/** Makes a fresh secret key and the evaluation keys a program needs (seeded, zstd). */
export function generateKeys(s: CkksSession, galoisSteps: number[], relin: boolean): KeyMaterial {
  const { seal } = s;
  const kg = new seal.KeyGenerator(s.context);
  const sk = kg.secretKey();
  try {
    const secretKey = sk.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
    let relinKeys: Uint8Array | undefined;
    if (relin) {
      const rk = kg.createRelinKeysSerializable();
      relinKeys = rk.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
      rk.delete();
    }
    const gk = kg.createGaloisKeysSerializableWithSteps(Int32Array.from(galoisSteps.length ? galoisSteps : [1]));
    const galoisKeys = gk.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
    gk.delete();
    return { secretKey, relinKeys, galoisKeys };
  } finally {
    release(sk, kg);
  }
}

/** A fresh secret key only (batch mode needs no evaluation keys). */
export function generateSecretKey(s: CkksSession): Uint8Array {
  const kg = new s.seal.KeyGenerator(s.context);
  const sk = kg.secretKey();
  try {
    return sk.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
  } finally {
    release(sk, kg);
  }
}

/** Client side: holds the secret key in WASM memory for encryption and decryption. */
export class SecretKeyHolder {
  private readonly s: CkksSession;
  private readonly sk;
  private readonly pk;
  private readonly encryptor;
  private readonly decryptor;

  constructor(s: CkksSession, secretKey: Uint8Array) {
    this.s = s;
    const { seal } = s;
    this.sk = new seal.SecretKey();
    guard('bad-keys', 'the secret key', () => this.sk.loadFromArray(s.context, secretKey));
    const kg = new seal.KeyGenerator(s.context, this.sk);
    this.pk = kg.createPublicKey(); // required by the Encryptor constructor; never leaves memory
    kg.delete();
    this.encryptor = new seal.Encryptor(s.context, this.pk, this.sk);
    this.decryptor = new seal.Decryptor(s.context, this.sk);
  }

  /** Symmetric encryption, serialized seeded: about half the size of a public-key ciphertext. */
  encrypt(values: Float64Array, scaleBits: number): Uint8Array {
    return this.encryptSaved(values, scaleBits, this.s.seal.ComprModeType.zstd);
  }

  /**
   * As encrypt, saved uncompressed with the residues packed in 26 bits (raw-ciphertext.ts):
   * for parameters whose primes all have at most 26 bits (batch mode).
   */
  encryptPacked(values: Float64Array, scaleBits: number): Uint8Array {
    const packed = packResidues(this.encryptSaved(values, scaleBits, this.s.seal.ComprModeType.none));
    if (!packed) throw new SealedError('insecure-parameters', 'packed encryption needs primes of at most 26 bits');
    return packed;
  }

  private encryptSaved(values: Float64Array, scaleBits: number, mode: Seal['ComprModeType']['none'] | Seal['ComprModeType']['zstd']): Uint8Array {
    const { seal, encoder } = this.s;
    const pt = new seal.Plaintext();
    try {
      encoder.encode(values, 2 ** scaleBits, pt);
      const ser = this.encryptor.encryptSymmetricSerializable(pt);
      const bytes = ser.saveToArray(mode) as Uint8Array;
      ser.delete();
      return bytes;
    } finally {
      pt.delete();
    }
  }

  decrypt(bytes: Uint8Array): Float64Array {
    const { seal, encoder } = this.s;
    const ct = loadCiphertext(this.s, bytes, 'the encrypted result');
    const pt = new seal.Plaintext();
    try {
      this.decryptor.decrypt(ct, pt);
      return encoder.decodeFloat64(pt) as Float64Array;
    } finally {
      release(pt, ct);
    }
  }

  close(): void {
    release(this.encryptor, this.decryptor, this.pk, this.sk);
  }
}

export function loadCiphertext(s: CkksSession, bytes: Uint8Array, what: string): Ciphertext {
  const ct = new s.seal.Ciphertext();
  try {
    const raw = isPacked(bytes) ? unpackResidues(bytes) : bytes;
    guard('bad-query', what, () => ct.loadFromArray(s.context, raw));
    return ct;
  } catch (e) {
    ct.delete();
    throw e;
  }
}

/** Server side: a query ciphertext must be fresh (top level, size 2) at the expected scale. */
export function loadQueryCiphertext(s: CkksSession, bytes: Uint8Array, scaleBits: number): Ciphertext {
  const ct = loadCiphertext(s, bytes, 'the encrypted query');
  const fail = (why: string) => {
    ct.delete();
    return new SealedError('bad-query', `the encrypted query ${why}`, 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves');
  };
  if (ct.polyModulusDegree() !== s.params.polyModulusDegree) throw fail(`has ring degree ${ct.polyModulusDegree()}, the model uses ${s.params.polyModulusDegree}`);
  if (ct.coeffModulusSize() !== s.dataPrimes) throw fail(`is at the wrong level (${ct.coeffModulusSize()} primes, expected ${s.dataPrimes})`);
  if (ct.size() !== 2) throw fail(`has ${ct.size()} polynomials, expected 2`);
  const scale = ct.scale();
  if (!Number.isFinite(scale) || scale !== 2 ** scaleBits) throw fail(`has scale ${Number.isFinite(scale) ? `2^${Math.log2(scale).toFixed(2)}` : 'that is not a number'}, expected 2^${scaleBits}`);
  if (!ct.isNttForm()) throw fail('is not in NTT form');
  return ct;
}

export interface EvaluationKeys {
  galois: GaloisKeys;
  relin?: RelinKeys;
  close(): void;
}

/** Loads and checks evaluation keys: every rotation the program needs must be present. */
export function loadEvaluationKeys(s: CkksSession, galoisBytes: Uint8Array, relinBytes: Uint8Array | undefined, steps: number[], needRelin: boolean): EvaluationKeys {
  const { seal } = s;
  const galois = new seal.GaloisKeys();
  let relin: RelinKeys | undefined;
  try {
    guard('bad-keys', 'the Galois keys', () => galois.loadFromArray(s.context, galoisBytes));
    for (const step of steps) {
      if (!galois.hasKey(galoisElement(step, s.params.polyModulusDegree))) {
        throw new SealedError('bad-keys', `the evaluation keys lack the rotation by ${step} this model needs`, 'make keys for this model with `sealed keygen`');
      }
    }
    if (needRelin) {
      if (!relinBytes) throw new SealedError('bad-keys', 'the evaluation keys lack relinearization keys, which this model needs', 'make keys for this model with `sealed keygen`');
      relin = new seal.RelinKeys();
      const r = relin;
      guard('bad-keys', 'the relinearization keys', () => r.loadFromArray(s.context, relinBytes));
    }
  } catch (e) {
    release(galois, relin);
    throw e;
  }
  return { galois, relin, close: () => release(galois, relin) };
}
