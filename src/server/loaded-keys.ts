// Evaluation keys loaded into SEAL, least recently used first out, bounded by the bytes they take
// in the WASM heap: every key-switching key (one per rotation, one for relinearization) holds,
// for each of the D data primes, a two-polynomial ciphertext over the D + 1 key-level primes.
// Uploaded keys are seeded (half of that, then compressed), so counting serialized bytes would
// let the cache hold twice its budget.
import { SealedError } from '../errors.ts';
import type { CkksSession } from '../fhe/ckks.ts';
import { loadEvaluationKeys, type EvaluationKeys } from '../fhe/load-keys.ts';
import type { Program } from '../fhe/program.ts';
import { MAX_SPARES, SinglePrivacy } from '../fhe/single-privacy.ts';
import { LruCache } from '../util/lru.ts';
import type { KeySet } from './key-set.ts';

/** A client's keys as SEAL objects, and (circuit privacy) the re-randomizer built on its public key. */
export interface LoadedKeys {
  keys: EvaluationKeys;
  privacy?: SinglePrivacy;
}

export class LoadedKeyCache {
  private readonly entries: LruCache<LoadedKeys>;
  private readonly session: CkksSession;
  private readonly program: Program;
  private readonly floods: boolean;

  constructor(session: CkksSession, program: Program, maxBytes: number) {
    this.session = session;
    this.program = program;
    this.floods = program.privacy === 'flood';
    const dataPrimes = program.params.coeffModulusBits.length - 1;
    // With circuit privacy, the public key too: two polynomials over the key-level primes, and its
    // encryptor; and the flood masks made ahead (two polynomials each, at most the data primes).
    const switchingKeys = (program.galoisSteps.length + (program.relin ? 1 : 0)) * dataPrimes + (this.floods ? 2 + MAX_SPARES : 0);
    const setBytes = switchingKeys * 2 * (dataPrimes + 1) * program.params.polyModulusDegree * 8;
    // The newest set stays even when it alone is over the budget.
    this.entries = new LruCache(maxBytes / setBytes, (e) => (e.keys.close(), e.privacy?.close()));
  }

  /** The key set `k` loaded (precheck, then SEAL), from the cache when its id was loaded before. */
  get(k: KeySet): LoadedKeys {
    // Before the cache: a set refused this cheaply evicts nothing.
    if (this.floods && !k.publicKey)
      throw new SealedError(
        'bad-keys',
        'the evaluation keys lack a public key: this model re-randomizes its results (circuit privacy)',
        'make keys with a current `sealed keygen` (or SDK), which includes it',
      );
    return this.entries.get(k.id, () => this.load(k));
  }

  private load(k: KeySet): LoadedKeys {
    const p = this.program;
    const keys = loadEvaluationKeys(this.session, k.galois, k.relin, p.galoisSteps, p.relin);
    let privacy: SinglePrivacy | undefined;
    try {
      privacy = this.floods ? new SinglePrivacy(this.session, k.publicKey!, 2 ** p.noiseL2Bits!, p.floodSecurityBits) : undefined;
    } catch (e) {
      keys.close();
      throw e;
    }
    return { keys, privacy };
  }

  /** Key sets loaded. */
  get size(): number {
    return this.entries.size;
  }

  /** One flood mask made ahead for a loaded key set that used its masks, the most recent first (SinglePrivacy.prepareAhead); whether more is pending. */
  prepareAhead(): boolean {
    for (const e of this.entries.recentFirst()) if (e.privacy?.prepareAhead()) return true;
    return false;
  }

  close(): void {
    this.entries.clear();
  }
}
