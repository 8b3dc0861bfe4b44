// One tree-ensemble record, server side: the single-record form's SEAL session and the pure
// evaluation of a query (wire layout 'slots') with the client's keys, whole or in parts for
// several threads (no I/O, no threads here). single-query.ts has the wire objects.
import type { ParmsIdType } from 'node-seal/throws';
import { SealedError } from '../../errors.ts';
import { CkksSession } from '../../fhe/ckks.ts';
import type { CopyExchange } from '../../fhe/copy-exchange.ts';
import type { SharedMasks } from '../../fhe/gather-kernel.ts';
import { loadCiphertext } from '../../fhe/load.ts';
import { KeysOnDemand } from '../../fhe/load-keys.ts';
import { paramsKey } from '../../fhe/params.ts';
import { release } from '../../fhe/seal.ts';
import { SinglePrivacy } from '../../fhe/single-privacy.ts';
import { SlotsEvaluator } from '../../fhe/tree-slots.ts';
import { RESULT_LEVEL } from '../../fhe/tree-slots-layout.ts';
import { LruCache } from '../../util/lru.ts';
import { sha256Hex } from '../../util/sha256.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader, type ResultHeader } from '../../wire/format.ts';
import { singleLayout, type SingleServerPart } from './single.ts';

const KEYS_HINT = "make the single-record keys with this model's client part (SingleTreeClient.keys)";
const QUERY_HINT = "encrypt the record with this model's client part (SingleTreeClient.encryptRecord)";
/** Key sets kept loaded: one (Galois keys for 17 rotations: ~250 MB of SEAL memory at ring 16384, when all are loaded; single.ts singleWorkerBytes counts it). */
const KEPT_KEYS = 1;
/** The flood's mask in mask products (~2 ms each): 28-53 ms on the AMD VM; 31 ms since flood-wide.ts (~9 would balance: unmeasured, unchanged). */
const FLOOD_MASK_LOAD = 13; // per result ciphertext

/** A client's single-record keys as sections (a wire object's, or a server's key set), and their SHA-256 when known. */
export interface SingleKeys {
  id?: string;
  galois: Uint8Array;
  relin: Uint8Array;
  publicKey?: Uint8Array;
}

interface LoadedSingleKeys {
  /** Loaded as tasks need them (KeysOnDemand): a thread that runs one part loads its part's rotations. */
  keys: KeysOnDemand;
  privacy?: SinglePrivacy;
  close(): void;
}

export class SingleTreeServer {
  readonly modelId: string;
  readonly part: SingleServerPart;
  readonly session: CkksSession;
  readonly params: string;
  private readonly evaluator: SlotsEvaluator;
  // Room first: the worker's budget (singleWorkerBytes) holds one loaded set, and loading before
  // evicting would grow SEAL's heap by a second (~300 MB for the digits forest).
  private readonly kept = new LruCache<LoadedSingleKeys>(KEPT_KEYS, (k) => k.close());
  /** The result's scale and level (resultLevel), where the flood's mask is made. */
  private readonly resultAt: { scale: number; pid: ParmsIdType };

  private constructor(modelId: string, part: SingleServerPart, s: CkksSession, masks?: SharedMasks) {
    this.modelId = modelId;
    this.part = part;
    this.session = s;
    this.params = paramsKey(part.params);
    const scales = { inputScaleBits: part.inputScaleBits, maskScaleBits: part.maskScaleBits, leafScaleBits: part.leafScaleBits, resultDrop: part.resultDrop };
    this.evaluator = new SlotsEvaluator(s, singleLayout(part, 'the single-record form'), scales, masks);
    this.resultAt = this.resultLevel();
  }

  /** `masks`: the gather's masks as the threads of a process share them (server/served-model.ts makes them), else this server's own. */
  static async open(modelId: string, part: SingleServerPart, masks?: SharedMasks): Promise<SingleTreeServer> {
    const s = await CkksSession.open(part.params);
    try {
      return new SingleTreeServer(modelId, part, s, masks);
    } catch (e) {
      s.close();
      throw e;
    }
  }

  /** The query's ciphertexts, its header checked: this model, its parameters, one record, `copies` sections. */
  checkQuery(queryBytes: Uint8Array): { header: QueryHeader; sections: Uint8Array[] } {
    const q = decodeWire<QueryHeader>('query', queryBytes, 'the encrypted query');
    const h = q.header;
    if (h.model_id !== this.modelId)
      throw new SealedError(
        'wrong-model',
        'the query was encrypted for another model',
        'encrypt the query with the client part of the model this endpoint serves',
      );
    if (h.layout !== 'slots') throw new SealedError('bad-query', 'the query is not a single-record (slots) query', QUERY_HINT);
    if (h.params !== this.params)
      throw new SealedError('bad-query', `the query uses parameters ${String(h.params)}, the single-record form uses ${this.params}`, QUERY_HINT);
    if (h.records !== 1 || q.sections.length !== this.part.copies)
      throw new SealedError(
        'bad-query',
        `the query declares ${String(h.records)} record${h.records === 1 ? '' : 's'} in ${q.sections.length} ciphertexts; a single-record query holds 1 record in ${this.part.copies}`,
        QUERY_HINT,
      );
    return q;
  }

  /** The sections of a keys object (wire kind 2) made for this form, its header checked. */
  keysOf(keysBytes: Uint8Array, id?: string): SingleKeys {
    const k = decodeWire<KeysHeader>('keys', keysBytes, 'the evaluation keys');
    if (k.header.params !== this.params) throw new SealedError('bad-keys', 'the keys were made for other parameters than the single-record form', KEYS_HINT);
    const flood = this.part.privacy === 'flood';
    if (k.sections.length !== (flood ? 3 : 2) || k.header.relin !== true || (flood && k.header.public_key !== true))
      throw new SealedError(
        'bad-keys',
        flood
          ? 'single-record keys must hold Galois keys, relinearization keys and the public key (circuit privacy)'
          : 'single-record keys must hold Galois and relinearization keys',
        KEYS_HINT,
      );
    return { id, galois: k.sections[0], relin: k.sections[1], publicKey: flood ? k.sections[2] : undefined };
  }

  /** The result ciphertexts (stretch outputs in each). */
  get results(): number {
    return this.evaluator.results;
  }

  /** A whole query with a keys object (wire kind 2) -> the result (wire kind 3), flooded when the model says so. */
  evaluate(queryBytes: Uint8Array, keysBytes: Uint8Array, keysId?: string): Uint8Array {
    const q = this.checkQuery(queryBytes);
    return this.withKeys(this.keysOf(keysBytes, keysId), this.part.galoisSteps, true, (k) => {
      const outs = this.evaluator.run(q.sections, k.keys);
      try {
        return this.resultOf(
          queryBytes,
          outs.map((out) => {
            const flooded = k.privacy ? k.privacy.apply(out) : out;
            try {
              return flooded.saveToArray(this.session.seal.ComprModeType.zstd) as Uint8Array;
            } finally {
              if (flooded !== out) release(flooded);
            }
          }),
        );
      } finally {
        release(...outs);
      }
    });
  }

  /**
   * Part `part` of `parts` of a checked query's gather (bytes; finish adds the parts'). A
   * flooding model's part 0 also makes `masks` of the flood's masks (floodMasks; default one per
   * result), so it gathers less: every part must be given the same `masks` (the cut depends on
   * it). Parts that share an exchange load each copy once between them (copy-exchange.ts).
   */
  evaluatePart(sections: Uint8Array[], part: number, parts: number, keys: SingleKeys, exchange?: CopyExchange, masks = this.results): Uint8Array {
    const firstLoad = this.part.privacy === 'flood' ? FLOOD_MASK_LOAD * masks : 0;
    const steps = this.evaluator.partSteps(part, parts, firstLoad);
    return this.withKeys(keys, steps, false, (k) => this.evaluator.runPart(sections, k.keys, part, parts, firstLoad, exchange));
  }

  /**
   * The flood's masks (bytes; see SinglePrivacy.mask), one per result ciphertext of `results`
   * (default all), made while the parts run; none without flooding.
   */
  floodMasks(keys: SingleKeys, results = this.results): Uint8Array[] {
    return this.withKeys(keys, [], false, (k) => {
      const privacy = k.privacy;
      if (!privacy) return [];
      return Array.from({ length: results }, () => {
        const mask = privacy.mask(this.resultAt.scale, this.resultAt.pid);
        try {
          return mask.saveToArray(this.session.seal.ComprModeType.none) as Uint8Array;
        } finally {
          release(mask);
        }
      });
    });
  }

  /**
   * The parts' gathers (in any order) and a flood mask per result ciphertext -> the result
   * ciphertexts (bytes, zstd); only those of `results` (default all, a mask each, in that order).
   * `masks` 'own': a flooded model's masks are made here (a finisher with fewer results than
   * another has the time; invoke-tree-record.ts).
   */
  finish(partials: Uint8Array[], masks: Uint8Array[] | 'own', keys: SingleKeys, results?: number[]): Uint8Array[] {
    return this.withKeys(keys, this.evaluator.finishSteps(), true, (k) => {
      const outs = this.evaluator.finishParts(partials, k.keys, results);
      try {
        if (k.privacy && masks !== 'own' && masks.length !== outs.length)
          throw new SealedError('internal', `a flooded model finished ${outs.length} results with ${masks.length} flood masks`);
        return outs.map((out, j) => {
          if (k.privacy) {
            const m = masks === 'own' ? k.privacy.mask(this.resultAt.scale, this.resultAt.pid) : loadCiphertext(this.session, masks[j], 'the flood mask');
            try {
              this.session.evaluator.addInplace(out, m);
            } finally {
              release(m);
            }
          }
          return out.saveToArray(this.session.seal.ComprModeType.zstd) as Uint8Array;
        });
      } finally {
        release(...outs);
      }
    });
  }

  /** The result object of a query from its result ciphertexts (bytes). */
  resultOf(queryBytes: Uint8Array, ciphertexts: Uint8Array[]): Uint8Array {
    const header: ResultHeader = { model_id: this.modelId, params: this.params, records: 1, layout: 'slots', query_sha256: sha256Hex(queryBytes) };
    return encodeWire('result', header, ciphertexts);
  }

  /**
   * The result's scale and level, computed as SEAL does: the gather's 2^(a + mask) rescaled by
   * the mask prime, squared and rescaled by the next prime down twice (the segment products),
   * times the leaf values' 2^leaf and rescaled once more (tree-slots.ts, RESULT_LEVEL).
   */
  private resultLevel(): { scale: number; pid: ParmsIdType } {
    const p = this.part;
    const primes = this.session.shape.data[0].primes.map(Number); // top level, the mask prime last
    const q = (j: number) => primes[primes.length - 1 - j];
    let scale = 2 ** (p.inputScaleBits + p.maskScaleBits) / q(0);
    scale = (scale * scale) / q(1);
    scale = (scale * scale) / q(2);
    scale = (scale * 2 ** p.leafScaleBits) / q(3);
    let data = this.session.context.firstContextData();
    for (let j = 0; j < RESULT_LEVEL + (p.resultDrop ?? 0); j++) {
      const next = data.nextContextData();
      release(data);
      data = next;
    }
    const pid = data.parmsId();
    release(data);
    return { scale, pid };
  }

  /**
   * `fn` with the rotations by `steps` (and the relinearization keys when `relin`) of these keys
   * loaded: kept under their id when given (the last KEPT_KEYS sets, each loading more keys as
   * tasks ask for them), else loaded for `fn` alone.
   */
  private withKeys<T>(keys: SingleKeys, steps: number[], relin: boolean, fn: (k: LoadedSingleKeys) => T): T {
    const keysId = keys.id;
    if (keysId === undefined) {
      const k = this.open(keys);
      try {
        k.keys.load(keys.galois, keys.relin, steps, relin);
        return fn(k);
      } finally {
        k.close();
      }
    }
    const k = this.kept.get(keysId, () => this.open(keys));
    try {
      k.keys.load(keys.galois, keys.relin, steps, relin);
    } catch (e) {
      // Keys that fail to load are not kept, as whole sets were not when they loaded at once.
      this.kept.delete(keysId);
      throw e;
    }
    return fn(k);
  }

  /** A key set's loader (no key loaded yet) and the flood's state from its public key. */
  private open(k: SingleKeys): LoadedSingleKeys {
    const flood = this.part.privacy === 'flood';
    if (flood && !k.publicKey) throw new SealedError('bad-keys', 'this model floods its results (circuit privacy) and the keys carry no public key', KEYS_HINT);
    // Packed as the clients write them (keys.ts saveKeys), or uncompressed or zstd as they did before.
    const keys = new KeysOnDemand(this.session, this.part.galoisSteps, ['none', 'zstd']);
    let privacy: SinglePrivacy | undefined;
    try {
      if (flood) privacy = new SinglePrivacy(this.session, k.publicKey!, 2 ** this.part.noiseL2Bits, this.part.floodSecurityBits);
    } catch (e) {
      keys.close();
      throw e;
    }
    return { keys, privacy, close: () => (privacy?.close(), keys.close()) };
  }

  /** Key sets held loaded (tests). */
  get keptKeySets(): number {
    return this.kept.size;
  }

  /** Galois keys loaded into SEAL for the most recently used kept set (tests). */
  get loadedKeys(): number {
    return this.kept.recentFirst()[0]?.keys.loaded ?? 0;
  }

  /** One flood mask made ahead for a kept key set (SinglePrivacy.prepareAhead), the most recent first; whether more is pending. */
  prepareAhead(): boolean {
    for (const k of this.kept.recentFirst()) if (k.privacy?.prepareAhead()) return true;
    return false;
  }

  close(): void {
    this.kept.clear();
    this.evaluator.close();
    release(this.resultAt.pid);
    this.session.close();
  }
}
