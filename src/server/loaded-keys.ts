// Evaluation keys loaded into SEAL, least recently used first out, bounded by the bytes they take
// in the WASM heap: every key-switching key (one per rotation, one for relinearization) holds,
// for each of the D data primes, a two-polynomial ciphertext over the D + 1 key-level primes.
// Uploaded keys are seeded (half of that, then compressed), so counting serialized bytes would
// let the cache hold twice its budget.
import { SealedError } from '../errors.ts';
import type { CkksSession } from '../fhe/ckks.ts';
import { loadEvaluationKeys, type EvaluationKeys } from '../fhe/load.ts';
import type { Program } from '../fhe/program.ts';
import { MAX_SPARES, SinglePrivacy } from '../fhe/single-privacy.ts';
import type { KeySet } from './key-set.ts';

/** A client's keys as SEAL objects, and (circuit privacy) the re-randomizer built on its public key. */
export interface LoadedKeys {
  keys: EvaluationKeys;
  privacy?: SinglePrivacy;
}

export class LoadedKeyCache {
  private readonly entries = new Map<string, LoadedKeys>();
  private readonly session: CkksSession;
  private readonly program: Program;
  private readonly maxBytes: number;
  /** What one loaded key set takes in the WASM heap. */
  private readonly setBytes: number;
  private readonly floods: boolean;

  constructor(session: CkksSession, program: Program, maxBytes: number) {
    this.session = session;
    this.program = program;
    this.maxBytes = maxBytes;
    this.floods = program.privacy === 'flood';
    const dataPrimes = program.params.coeffModulusBits.length - 1;
    // With circuit privacy, the public key too: two polynomials over the key-level primes, and its
    // encryptor; and the flood masks made ahead (two polynomials each, at most the data primes).
    const switchingKeys = (program.galoisSteps.length + (program.relin ? 1 : 0)) * dataPrimes + (this.floods ? 2 + MAX_SPARES : 0);
    this.setBytes = switchingKeys * 2 * (dataPrimes + 1) * program.params.polyModulusDegree * 8;
  }

  /** The key set `k` loaded (precheck, then SEAL), from the cache when its id was loaded before. */
  get(k: KeySet): LoadedKeys {
    const hit = this.entries.get(k.id);
    if (hit) {
      this.entries.delete(k.id);
      this.entries.set(k.id, hit);
      return hit;
    }
    if (this.floods && !k.publicKey)
      throw new SealedError(
        'bad-keys',
        'the evaluation keys lack a public key: this model re-randomizes its results (circuit privacy)',
        'make keys with a current `sealed keygen` (or SDK), which includes it',
      );
    // Room first: loading before evicting would hold one key set more than the budget while it loads
    // (and grow the WASM heap by one set for good). The newest entry stays even when it alone is over.
    while (this.entries.size > 0 && (this.entries.size + 1) * this.setBytes > this.maxBytes) {
      const [id, old] = this.entries.entries().next().value!;
      old.keys.close();
      old.privacy?.close();
      this.entries.delete(id);
    }
    const p = this.program;
    const keys = loadEvaluationKeys(this.session, k.galois, k.relin, p.galoisSteps, p.relin);
    let privacy: SinglePrivacy | undefined;
    try {
      privacy = this.floods ? new SinglePrivacy(this.session, k.publicKey!, 2 ** p.noiseL2Bits!, p.floodSecurityBits) : undefined;
    } catch (e) {
      keys.close();
      throw e;
    }
    const entry = { keys, privacy };
    this.entries.set(k.id, entry);
    return entry;
  }

  /** Key sets loaded. */
  get size(): number {
    return this.entries.size;
  }

  /** One flood mask made ahead for a loaded key set that used its masks, the most recent first (SinglePrivacy.prepareAhead); whether more is pending. */
  prepareAhead(): boolean {
    for (const e of [...this.entries.values()].reverse()) if (e.privacy?.prepareAhead()) return true;
    return false;
  }

  close(): void {
    for (const e of this.entries.values()) {
      e.keys.close();
      e.privacy?.close();
    }
    this.entries.clear();
  }
}
