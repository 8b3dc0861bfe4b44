// Keys and the client's encryption and decryption (CKKS over node-seal): fresh secret keys,
// the evaluation keys a program needs, and symmetric (seeded, half-size) encryption.
import { SealedError } from '../errors.ts';
import { concatBytes } from '../util/bytes.ts';
import { CkksSession } from './ckks.ts';
import { primes as chainPrimes, type CkksParams } from './params.ts';
import { inKeyOrder, PackedGaloisWriter } from './packed-galois.ts';
import { packKeys } from './packed-keys.ts';
import { packWide, primeWidth } from './packed-wide.ts';
import { loadCiphertext } from './load.ts';
import { secretKeyResidues } from './rerand-key.ts';
import { SeededBatchEncryptor } from './seeded-batch.ts';
import { PackedResultDecryptor } from './packed-decrypt.ts';
import { isPacked } from './raw-ciphertext.ts';
import { guard, release, type Seal } from './seal.ts';

export interface KeyMaterial {
  secretKey: Uint8Array;
  relinKeys?: Uint8Array;
  galoisKeys: Uint8Array;
}

/** Makes a fresh secret key and the evaluation keys a program needs (seeded, packed: packed-keys.ts). */
export function generateKeys(s: CkksSession, galoisSteps: number[], relin: boolean): KeyMaterial {
  const { seal } = s;
  const kg = new seal.KeyGenerator(s.context);
  const sk = kg.secretKey();
  try {
    const secretKey = sk.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
    let relinKeys: Uint8Array | undefined;
    if (relin) {
      const rk = kg.createRelinKeysSerializable();
      relinKeys = saveKeys(s, rk);
      rk.delete();
    }
    const galoisKeys = saveGaloisKeys(s, kg, galoisSteps.length ? galoisSteps : [1]);
    return { secretKey, relinKeys, galoisKeys };
  } finally {
    release(sk, kg);
  }
}

/**
 * Evaluation keys as the client sends them: SEAL's uncompressed bytes packed at the primes'
 * widths (packed-keys.ts), or zstd should they ever not be in the layout the packer reads.
 */
export function saveKeys(s: CkksSession, keys: { saveToArray(mode: Seal['ComprModeType']['none'] | Seal['ComprModeType']['zstd']): unknown }): Uint8Array {
  const raw = keys.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  return packKeys(raw, s.shape.key.primes.map(primeWidth)) ?? (keys.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
}

/**
 * The Galois keys for `steps` as the client sends them (saveKeys), made and saved one key at a
 * time, each packed into its place (packed-galois.ts): SEAL then never holds more than one key
 * and its saved bytes, where all at once it held every key unseeded and then their bytes. The
 * keys are made in the order SEAL keeps them, by Galois element.
 */
export function saveGaloisKeys(s: CkksSession, kg: InstanceType<Seal['KeyGenerator']>, steps: number[]): Uint8Array {
  const ordered = inKeyOrder(steps, s.shape.degree);
  const writer = new PackedGaloisWriter(s.shape.key.primes.map(primeWidth), ordered.length);
  for (const step of ordered) {
    const gk = kg.createGaloisKeysSerializableWithSteps(Int32Array.of(step));
    try {
      if (!writer.add(gk.saveToArray(s.seal.ComprModeType.none) as Uint8Array)) break;
    } finally {
      gk.delete();
    }
  }
  const packed = writer.result();
  if (packed) return packed;
  const gk = kg.createGaloisKeysSerializableWithSteps(Int32Array.from(steps));
  try {
    return saveKeys(s, gk);
  } finally {
    gk.delete();
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
  /** The data primes' widths in bits, for encryptCompact. */
  private widths: number[] | undefined;
  private seeded: SeededBatchEncryptor | undefined;
  private unpacker: PackedResultDecryptor | undefined;
  private unpackable: boolean | undefined;

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
   * As encrypt, saved seeded but uncompressed: ~14% larger, and the server checks and loads it
   * without decompressing (zstd was ~60% of loading a ciphertext at ring 16384, seven primes).
   */
  encryptUncompressed(values: Float64Array, scaleBits: number): Uint8Array {
    return this.encryptSaved(values, scaleBits, this.s.seal.ComprModeType.none);
  }

  /**
   * As encryptUncompressed, with each residue in as many bits as its prime has (packed-wide.ts):
   * smaller than zstd makes SEAL's words, and loaded without decompressing. Tree batch queries.
   */
  encryptCompact(values: Float64Array, scaleBits: number): Uint8Array {
    const raw = this.encryptSaved(values, scaleBits, this.s.seal.ComprModeType.none);
    this.widths ??= chainPrimes(this.s.seal, this.s.context).slice(0, -1).map(primeWidth);
    return packWide(raw, this.widths) ?? raw;
  }

  /**
   * A query section: each vector encrypted as by encrypt, back to back (the input and its
   * rotated copies; the server splits them at the sizes their headers declare).
   */
  encryptSection(vectors: Float64Array[], scaleBits: number): Uint8Array {
    if (vectors.length === 1) return this.encrypt(vectors[0], scaleBits);
    return concatBytes(vectors.map((v) => this.encrypt(v, scaleBits)));
  }

  /**
   * Batch mode's query ciphertexts (primes below 2^26): encoded, encrypted and packed by our
   * own code, with the uniform half sent as a seed (seeded-batch.ts: a third faster to make than
   * SEAL's, and the server needs no SEAL to read it).
   */
  encryptPacked(values: Float64Array, scaleBits: number, into?: Uint8Array): Uint8Array {
    this.seeded ??= this.seededEncryptor();
    return this.seeded.encrypt(values, 2 ** scaleBits, into);
  }

  /** Bytes of one encryptPacked ciphertext: the same for every one under these parameters. */
  packedBytes(): number {
    this.seeded ??= this.seededEncryptor();
    return this.seeded.bytes;
  }

  private seededEncryptor(): SeededBatchEncryptor {
    const { primes, degree, s } = this.secretResidues();
    try {
      return new SeededBatchEncryptor({ parmsId: this.s.shape.data[0].parmsId, primes, degree }, s);
    } finally {
      s.fill(0);
    }
  }

  /** The secret key's residues over the data primes, in NTT form (the caller zeroes them); refused unless every data prime is below 2^26. */
  private secretResidues(): { primes: number[]; degree: number; s: Uint32Array } {
    const { seal } = this.s;
    const all = chainPrimes(seal, this.s.context).map(Number);
    const k = this.s.dataPrimes;
    const degree = this.s.params.polyModulusDegree;
    if (all.slice(0, k).some((q) => q >= 2 ** 26)) throw new SealedError('insecure-parameters', 'packed encryption needs primes of at most 26 bits');
    const raw = this.sk.saveToArray(seal.ComprModeType.none) as Uint8Array;
    const s = secretKeyResidues(raw, degree, all.length, k);
    raw.fill(0);
    return { primes: all.slice(0, k), degree, s };
  }

  /** Our own decryption of packed results (packed-decrypt.ts) where the data primes are batch mode's, else undefined (SEAL's then). */
  private packedDecryptor(): PackedResultDecryptor | undefined {
    if (this.unpackable === undefined) {
      this.unpackable = this.s.params.coeffModulusBits.slice(0, this.s.dataPrimes).every((b) => b <= 26);
      if (this.unpackable) {
        const { primes, degree, s } = this.secretResidues();
        try {
          this.unpacker = new PackedResultDecryptor(primes, degree, s);
        } finally {
          s.fill(0);
        }
      }
    }
    return this.unpacker;
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

  /** Batch results (packed, primes below 2^26) by our own code (packed-decrypt.ts); others by SEAL. */
  decrypt(bytes: Uint8Array): Float64Array {
    if (isPacked(bytes)) {
      const own = this.packedDecryptor();
      if (own) return own.decrypt(bytes);
    }
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
    this.seeded?.close();
    this.unpacker?.close();
    release(this.encryptor, this.decryptor, this.pk, this.sk);
  }
}

/**
 * A client's secret key for one parameter set, and the holder that encrypts and decrypts with
 * it; the key can be swapped (a saved one, or a fresh one) and exported to the client's key
 * files. Closing it closes the session it was opened with.
 */
export class SecretKeyOwner {
  protected readonly s: CkksSession;
  protected secretKey: Uint8Array;
  protected holder: SecretKeyHolder;

  protected constructor(s: CkksSession, secretKey: Uint8Array) {
    this.s = s;
    this.secretKey = secretKey;
    this.holder = new SecretKeyHolder(s, secretKey);
  }

  /** `make` given a session of `params` and a secret key (`secretKey`, else a fresh one); the session is closed if it throws. */
  protected static async openWith<T>(
    params: CkksParams,
    o: { topLevelOnly?: boolean },
    secretKey: Uint8Array | undefined,
    make: (s: CkksSession, key: Uint8Array) => T,
  ): Promise<T> {
    const s = await CkksSession.open(params, o);
    try {
      return make(s, secretKey ?? generateSecretKey(s));
    } catch (e) {
      s.close();
      throw e;
    }
  }

  /** Uses another secret key (a saved one, or a fresh one when none is given) from now on. */
  useSecretKey(secretKey: Uint8Array = generateSecretKey(this.s)): void {
    const holder = new SecretKeyHolder(this.s, secretKey);
    this.holder.close();
    this.holder = holder;
    this.secretKey = secretKey;
  }

  /** The secret key's bytes, to keep with the client's key files (never sent). */
  exportSecretKey(): Uint8Array {
    return this.secretKey.slice();
  }

  close(): void {
    this.holder.close();
    this.s.close();
  }
}
