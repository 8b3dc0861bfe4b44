// Loading untrusted evaluation keys: each key object is checked in TypeScript first
// (seal-precheck.ts), so SEAL sees only bytes that fit the model's parameters. Packed Galois keys
// (packed-keys.ts, as clients write them) load one key at a time: all of them at once
// (loadEvaluationKeys), or each when an evaluation first needs it (KeysOnDemand).
import type { GaloisKeys, RelinKeys } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import { ByteArena } from './byte-arena.ts';
import type { CkksSession } from './ckks.ts';
import { oneGaloisKey, packedGaloisLayout, type PackedGaloisLayout } from './packed-galois.ts';
import { isPackedKeys } from './packed-keys.ts';
import { galoisElement } from './params.ts';
import { precheckKeys, type ComprMode } from './seal-precheck.ts';
import { guard, release } from './seal.ts';

export interface EvaluationKeys {
  /** The Galois keys that hold the rotation by `step` (any step the keys were loaded for). */
  rotation(step: number): GaloisKeys;
  relin?: RelinKeys;
  close(): void;
}

/**
 * Where this thread unpacks the evaluation keys it loads (byte-arena.ts): a worker loading the
 * digits forest's single-record keys for a new client spent ~0.45 s of ~1.1 s faulting in a
 * fresh 149 MB array. Packed Galois keys go through it one key at a time (a few MB), the
 * relinearization key after them.
 */
const keyArena = new ByteArena();
const room = (n: number) => (keyArena.reset(), keyArena.take(n));

const KEYS_HINT = 'make keys for this model with `sealed keygen`';
const failGalois = (why: string) => new SealedError('bad-keys', `the Galois keys ${why}`, KEYS_HINT);
const ONE_KEY = { what: 'the Galois keys', kind: 'galois' as const, required: [], maxKeys: 1, compression: ['none'] as ComprMode[], arena: keyArena };

/**
 * Evaluation keys loaded into SEAL as evaluations need them, from the bytes of one key set (the
 * caller keeps this object under the set's SHA-256, so every `load` reads the same bytes). The
 * single-record tree form cuts a record's work in parts for two threads: each part rotates by its
 * own giant steps, the finish by the others, so a thread that loaded every key for every task
 * expanded the seeds of ~twice the keys it used (digits forest: 27 keys, ~0.6 s a thread).
 * The first `load` checks the set whole as far as that costs no SEAL work: its layout, its key
 * count, every rotation the model needs present; each key is checked whole (seal-precheck.ts)
 * and loaded when first asked for. Keys not packed (zstd or uncompressed, older clients) load
 * whole on the first call.
 */
export class KeysOnDemand implements EvaluationKeys {
  relin?: RelinKeys;
  private readonly s: CkksSession;
  /** The model's rotations (every one must be in the set) and how many keys a set may hold. */
  private readonly steps: number[];
  private readonly maxKeys: number;
  private readonly compression?: readonly ComprMode[];
  /** Loaded keys by Galois element (one GaloisKeys per key, or one for all of an unpacked set). */
  private readonly galois = new Map<number, GaloisKeys>();
  private checked = false;

  constructor(s: CkksSession, steps: number[], compression?: readonly ComprMode[]) {
    this.s = s;
    this.steps = steps;
    // Beyond the model's own rotations, as many keys as SEAL's default set (every power-of-two
    // step both ways): room for clients that make more, a bound on what a key object may claim.
    this.maxKeys = Math.max(steps.length, 1) + 2 * Math.log2(s.params.polyModulusDegree);
    this.compression = compression;
  }

  /**
   * Loads the rotations by `steps` and the relinearization keys (`relin`) that are not loaded yet;
   * `steps` 'all': every key the set holds, the model's or not.
   */
  load(galoisBytes: Uint8Array, relinBytes: Uint8Array | undefined, steps: number[] | 'all', relin: boolean): this {
    const degree = this.s.params.polyModulusDegree;
    if (isPackedKeys(galoisBytes)) {
      const layout = packedGaloisLayout(galoisBytes, degree, failGalois);
      if (!this.checked) this.checkLayout(layout);
      const wanted =
        steps === 'all' ? layout.keys.map((k) => ({ element: k.element, step: 0 })) : steps.map((step) => ({ element: galoisElement(step, degree), step }));
      for (const { element, step } of wanted) {
        if (this.galois.has(element)) continue;
        const key = layout.keys.find((k) => k.element === element);
        if (!key) throw this.lacks(step);
        this.loadOne(element, oneGaloisKey(galoisBytes, layout, key, room));
      }
    } else if (!this.checked) {
      keyArena.reset();
      const required = this.steps.map((step) => ({ step, element: galoisElement(step, degree) }));
      const rule = { what: 'the Galois keys', kind: 'galois' as const, required, maxKeys: this.maxKeys, compression: this.compression, arena: keyArena };
      const checked = precheckKeys(galoisBytes, this.s.shape, rule);
      const all = new this.s.seal.GaloisKeys();
      try {
        guard('bad-keys', 'the Galois keys', () => all.loadFromArray(this.s.context, checked));
        for (const { step, element } of required) if (!all.hasKey(element)) throw this.lacks(step);
      } catch (e) {
        release(all);
        throw e;
      }
      for (const { element } of required) this.galois.set(element, all);
    }
    this.checked = true;
    if (relin && !this.relin) this.relin = loadRelin(this.s, relinBytes, this.compression);
    return this;
  }

  rotation(step: number): GaloisKeys {
    const gk = this.galois.get(galoisElement(step, this.s.params.polyModulusDegree));
    if (!gk) throw new SealedError('internal', `no Galois key was loaded for the rotation by ${step}`);
    return gk;
  }

  /** Keys loaded into SEAL (tests). */
  get loaded(): number {
    return new Set(this.galois.values()).size;
  }

  close(): void {
    release(...new Set(this.galois.values()), this.relin);
    this.galois.clear();
    this.relin = undefined;
  }

  private checkLayout(layout: PackedGaloisLayout): void {
    if (layout.keys.length > this.maxKeys) throw failGalois(`hold more than ${this.maxKeys} keys, more than this model can use`);
    const degree = this.s.params.polyModulusDegree;
    for (const step of this.steps) if (!layout.keys.some((k) => k.element === galoisElement(step, degree))) throw this.lacks(step);
  }

  private loadOne(element: number, one: Uint8Array): void {
    const checked = precheckKeys(one, this.s.shape, ONE_KEY);
    const gk = new this.s.seal.GaloisKeys();
    try {
      guard('bad-keys', 'the Galois keys', () => gk.loadFromArray(this.s.context, checked));
      if (!gk.hasKey(element)) throw failGalois('are not what their layout says');
    } catch (e) {
      release(gk);
      throw e;
    }
    this.galois.set(element, gk);
  }

  private lacks(step: number): SealedError {
    return new SealedError('bad-keys', `the evaluation keys lack the rotation by ${step} this model needs`, KEYS_HINT);
  }
}

function loadRelin(s: CkksSession, relinBytes: Uint8Array | undefined, compression?: readonly ComprMode[]): RelinKeys {
  if (!relinBytes) throw new SealedError('bad-keys', 'the evaluation keys lack relinearization keys, which this model needs', KEYS_HINT);
  keyArena.reset();
  const checked = precheckKeys(relinBytes, s.shape, { what: 'the relinearization keys', kind: 'relin', compression, arena: keyArena });
  const relin = new s.seal.RelinKeys();
  try {
    guard('bad-keys', 'the relinearization keys', () => relin.loadFromArray(s.context, checked));
    return relin;
  } catch (e) {
    release(relin);
    throw e;
  }
}

/**
 * Loads and checks evaluation keys: every rotation the program needs must be present, and every
 * key the set holds is loaded (packed ones one at a time: neither this thread nor SEAL ever holds
 * the whole set's unpacked bytes).
 */
export function loadEvaluationKeys(
  s: CkksSession,
  galoisBytes: Uint8Array,
  relinBytes: Uint8Array | undefined,
  steps: number[],
  needRelin: boolean,
  compression?: readonly ComprMode[],
): EvaluationKeys {
  const keys = new KeysOnDemand(s, steps, compression);
  try {
    return keys.load(galoisBytes, relinBytes, 'all', needRelin);
  } catch (e) {
    keys.close();
    throw e;
  }
}
