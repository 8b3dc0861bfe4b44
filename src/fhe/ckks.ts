// CKKS operations over node-seal: one session per thread and parameter set; keys, symmetric
// (seeded, half-size) encryption, decryption, and loading of untrusted objects with checks.
import type { Ciphertext, GaloisKeys, RelinKeys, SEALContext, CKKSEncoder, Evaluator } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import { createContext, paramsKey, type CkksParams } from './params.ts';
import { guard, loadSeal, release, type Seal } from './seal.ts';
import { isPacked, packResidues, unpackResidues } from './raw-ciphertext.ts';
import { precheckCiphertext, precheckKeys, type CiphertextRule, type ComprMode, type SealLevel, type SealShape } from './seal-precheck.ts';

/**
 * SEAL's read-only objects for one parameter set. node-seal builds a context in seconds at ring
 * 16384 (params.ts), so a thread shares them between its sessions: a client opening the same
 * model twice, or a test process serving and querying it, builds them once. Instances nobody
 * uses are kept, the IDLE_KEPT most recently released, then freed.
 */
interface SealInstance {
  key: string;
  context: SEALContext;
  encoder: CKKSEncoder;
  evaluator: Evaluator;
  shape: SealShape;
  users: number;
}

const IDLE_KEPT = 2;
const instances = new Map<string, SealInstance>();
/** Instances with no users, least recently released first. */
const idle: SealInstance[] = [];

function acquire(seal: Seal, params: CkksParams, chain: boolean): SealInstance {
  const key = `${paramsKey(params)}${chain ? '' : '-top'}`;
  let inst = instances.get(key);
  if (!inst) {
    const context = createContext(seal, params, chain);
    inst = {
      key,
      context,
      encoder: new seal.CKKSEncoder(context),
      evaluator: new seal.Evaluator(context),
      shape: readShape(context, params.polyModulusDegree),
      users: 0,
    };
    instances.set(key, inst);
  }
  if (inst.users++ === 0) {
    const at = idle.indexOf(inst);
    if (at >= 0) idle.splice(at, 1);
  }
  return inst;
}

function unuse(inst: SealInstance): void {
  if (--inst.users > 0) return;
  idle.push(inst);
  while (idle.length > IDLE_KEPT) {
    const old = idle.shift()!;
    instances.delete(old.key);
    release(old.encoder, old.evaluator, old.context);
  }
}

export class CkksSession {
  readonly seal: Seal;
  readonly params: CkksParams;
  readonly context: SEALContext;
  readonly encoder: CKKSEncoder;
  readonly evaluator: Evaluator;
  /** The chain's parms_ids and primes, against which untrusted objects are checked before loading. */
  readonly shape: SealShape;
  private instance: SealInstance | undefined;

  private constructor(seal: Seal, params: CkksParams, chain: boolean) {
    this.seal = seal;
    this.params = params;
    this.instance = acquire(seal, params, chain);
    ({ context: this.context, encoder: this.encoder, evaluator: this.evaluator, shape: this.shape } = this.instance);
  }

  /**
   * `topLevelOnly`: for circuits that never leave the top level (batch mode, tree ensembles):
   * the context is built without the levels below it, which takes half the time or less.
   */
  static async open(params: CkksParams, o: { topLevelOnly?: boolean } = {}): Promise<CkksSession> {
    return new CkksSession(await loadSeal(), params, !o.topLevelOnly);
  }

  get slots(): number {
    return this.encoder.slotCount();
  }

  /** Number of data primes (levels + 1) at the top of the chain. */
  get dataPrimes(): number {
    return this.params.coeffModulusBits.length - 1;
  }

  /** Ends this session; SEAL's objects stay for the thread's next session of the same parameters. */
  close(): void {
    if (this.instance) unuse(this.instance);
    this.instance = undefined;
  }
}

/** Every level of the context's chain, key level first, as SEAL names it (parms_id) and its primes. */
function readShape(context: SEALContext, degree: number): SealShape {
  const levels: SealLevel[] = [];
  let data = context.keyContextData();
  for (;;) {
    const pid = data.parmsId();
    const words = pid.values() as ArrayLike<bigint>;
    const parmsId = new Uint8Array(32);
    const view = new DataView(parmsId.buffer);
    for (let i = 0; i < 4; i++) view.setBigUint64(8 * i, BigInt(words[i]), true);
    const parms = data.parms();
    const mods = parms.coeffModulus();
    const primes: bigint[] = [];
    for (let i = 0; i < mods.size(); i++) primes.push(mods.get(i)!.value());
    levels.push({ parmsId, primes });
    // The chain ends at index 0; the next "context data" past it is an empty handle, not null.
    const last = data.chainIndex() === 0;
    const next = last ? undefined : data.nextContextData();
    release(mods, parms, pid, data);
    if (!next) break;
    data = next;
  }
  return { degree, key: levels[0], data: levels.slice(1) };
}

const QUERY_HINT = 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves';

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

/**
 * Loads a ciphertext after checking it in TypeScript (seal-precheck.ts): SEAL sees only bytes
 * that fit `rule`. Packed sections (raw-ciphertext.ts) are unpacked first.
 */
function loadChecked(s: CkksSession, bytes: Uint8Array, rule: CiphertextRule): Ciphertext {
  const widest = Math.max(...rule.levels.map((l) => l.primes.length));
  const raw = isPacked(bytes) ? unpackResidues(bytes, rule.what, rule.maxPolys * s.params.polyModulusDegree * widest) : bytes;
  const checked = precheckCiphertext(raw, s.shape, rule);
  const ct = new s.seal.Ciphertext();
  try {
    guard(rule.code, rule.what, () => ct.loadFromArray(s.context, checked));
    return ct;
  } catch (e) {
    ct.delete();
    throw e;
  }
}

/** Any ciphertext of this context's data levels (results, batch results), zstd or uncompressed. */
export function loadCiphertext(s: CkksSession, bytes: Uint8Array, what: string): Ciphertext {
  return loadChecked(s, bytes, { what, code: 'bad-query', hint: QUERY_HINT, levels: s.shape.data, minPolys: 2, maxPolys: 16, compression: ['none', 'zstd'] });
}

export interface QueryOptions {
  /** Names the ciphertext in messages; "ciphertext 3 of the encrypted query" when the caller knows its index. */
  what?: string;
  /** What the model's client writes: zstd (single layout); batch mode also packed sections. */
  compression?: readonly ComprMode[];
}

/** Server side: a query ciphertext must be fresh (top level, size 2) at the expected scale. */
export function loadQueryCiphertext(s: CkksSession, bytes: Uint8Array, scaleBits: number, o: QueryOptions = {}): Ciphertext {
  const what = o.what ?? 'the encrypted query';
  const ct = loadChecked(s, bytes, {
    what,
    code: 'bad-query',
    hint: QUERY_HINT,
    levels: [s.shape.data[0]],
    minPolys: 2,
    maxPolys: 2,
    compression: o.compression ?? ['zstd'],
    scale: 2 ** scaleBits,
  });
  // The precheck has refused all of this already; kept as SEAL's own word on what it loaded.
  const fail = (why: string) => {
    ct.delete();
    return new SealedError('bad-query', `${what} ${why}`, QUERY_HINT);
  };
  if (ct.polyModulusDegree() !== s.params.polyModulusDegree)
    throw fail(`has ring degree ${ct.polyModulusDegree()}, the model uses ${s.params.polyModulusDegree}`);
  if (ct.coeffModulusSize() !== s.dataPrimes) throw fail(`is at the wrong level (${ct.coeffModulusSize()} primes, expected ${s.dataPrimes})`);
  if (ct.size() !== 2) throw fail(`has ${ct.size()} polynomials, expected 2`);
  const scale = ct.scale();
  if (!Number.isFinite(scale) || scale !== 2 ** scaleBits)
    throw fail(`has scale ${Number.isFinite(scale) ? `2^${Math.log2(scale).toFixed(2)}` : 'that is not a number'}, expected 2^${scaleBits}`);
  if (!ct.isNttForm()) throw fail('is not in NTT form');
  return ct;
}

export interface EvaluationKeys {
  galois: GaloisKeys;
  relin?: RelinKeys;
  close(): void;
}

/** Loads and checks evaluation keys: every rotation the program needs must be present. */
export function loadEvaluationKeys(
  s: CkksSession,
  galoisBytes: Uint8Array,
  relinBytes: Uint8Array | undefined,
  steps: number[],
  needRelin: boolean,
): EvaluationKeys {
  const { seal } = s;
  const degree = s.params.polyModulusDegree;
  // Beyond the model's own rotations, as many keys as SEAL's default set (every power-of-two
  // step both ways): room for clients that make more, a bound on what a key object may claim.
  const maxKeys = Math.max(steps.length, 1) + 2 * Math.log2(degree);
  const required = steps.map((step) => ({ step, element: galoisElement(step, degree) }));
  const galoisChecked = precheckKeys(galoisBytes, s.shape, { what: 'the Galois keys', kind: 'galois', required, maxKeys });
  const relinChecked = needRelin && relinBytes ? precheckKeys(relinBytes, s.shape, { what: 'the relinearization keys', kind: 'relin' }) : undefined;
  const galois = new seal.GaloisKeys();
  let relin: RelinKeys | undefined;
  try {
    guard('bad-keys', 'the Galois keys', () => galois.loadFromArray(s.context, galoisChecked));
    for (const step of steps) {
      if (!galois.hasKey(galoisElement(step, s.params.polyModulusDegree))) {
        throw new SealedError('bad-keys', `the evaluation keys lack the rotation by ${step} this model needs`, 'make keys for this model with `sealed keygen`');
      }
    }
    if (needRelin) {
      if (!relinChecked)
        throw new SealedError(
          'bad-keys',
          'the evaluation keys lack relinearization keys, which this model needs',
          'make keys for this model with `sealed keygen`',
        );
      relin = new seal.RelinKeys();
      const r = relin;
      guard('bad-keys', 'the relinearization keys', () => r.loadFromArray(s.context, relinChecked));
    }
  } catch (e) {
    release(galois, relin);
    throw e;
  }
  return { galois, relin, close: () => release(galois, relin) };
}
