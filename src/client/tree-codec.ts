// A tree ensemble's cryptography for SealedClient (docs/trees.md): its batch circuit (a record per
// slot; keys of a few MB: relinearization and public keys) for any number of records, and its
// single-record form (one record in all slots; 126-243 MB of Galois keys for the fixtures, made
// the first time one record is predicted) when the model has one. The two forms have their own parameters, so their
// own secret keys. Browser-safe: no I/O.
import { SealedError } from '../errors.ts';
import type { Prediction } from '../model/postprocess.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { predictionOf, probabilitiesOf } from '../model/trees/ensemble.ts';
import { TreeClient } from '../model/trees/query.ts';
import { SingleTreeClient } from '../model/trees/single-query.ts';
import { decodeWire, type ResultHeader } from '../wire/format.ts';
import type { KeysInput, ModelCodec } from './codec.ts';
import { checkResultHeader, keysId, type Keys, type Layout, type ResultExpectation } from './session.ts';
import type { EvaluationKeys } from './transport.ts';

type SingleKeys = NonNullable<Keys['singleRecord']>;

export class TreeCodec implements ModelCodec {
  readonly modelId: string;
  readonly part: TreeClientPart;
  private readonly batch: TreeClient;
  private readonly single: SingleTreeClient | undefined;
  private keySet: Keys | undefined;
  /** Called with the single-record key set when this codec makes one (the Node SDK saves it beside the batch set). */
  onSingleKeys: ((keys: SingleKeys) => Promise<void>) | undefined;
  private saving: Promise<void> | undefined;

  private constructor(part: TreeClientPart, batch: TreeClient, single: SingleTreeClient | undefined) {
    this.part = part;
    this.modelId = part.model_id;
    this.batch = batch;
    this.single = single;
  }

  static async open(part: TreeClientPart): Promise<TreeCodec> {
    const batch = await TreeClient.open(part);
    try {
      return new TreeCodec(part, batch, part.single ? await SingleTreeClient.open(part) : undefined);
    } catch (e) {
      batch.close();
      throw e;
    }
  }

  get keys(): Keys | undefined {
    return this.keySet;
  }

  /** A fresh batch-circuit key set (the single-record set follows when first needed). */
  generateKeys(): Keys {
    this.batch.useSecretKey();
    const evaluationKeys = this.batch.keys();
    this.keySet = { secretKey: this.batch.exportSecretKey(), evaluationKeys, evaluationKeysId: keysId(evaluationKeys) };
    return this.keySet;
  }

  useKeys(keys: KeysInput): Keys {
    this.batch.useSecretKey(keys.secretKey);
    const set: Keys = { secretKey: keys.secretKey, evaluationKeys: keys.evaluationKeys, evaluationKeysId: keysId(keys.evaluationKeys) };
    if (keys.singleRecord) {
      if (!this.single)
        throw new SealedError('bad-keys', 'single-record keys were given for a tree model without a single-record form', 'pass only the batch key set');
      this.single.useSecretKey(keys.singleRecord.secretKey);
      set.singleRecord = { ...keys.singleRecord, evaluationKeysId: keysId(keys.singleRecord.evaluationKeys) };
    }
    this.keySet = set;
    return set;
  }

  /**
   * One record goes through the single-record form when the model has one (~1 s of server time
   * against a batch's fixed cost); more records, or a model without the form, through the batch
   * circuit. Both send evaluation keys, so any transport carries either.
   */
  layoutFor(records: number): Layout {
    return records === 1 && this.single ? 'single' : 'batch';
  }

  encrypt(rows: ArrayLike<number>[], layout: Layout): Uint8Array {
    if (layout === 'batch') {
      if (!this.keySet) this.generateKeys();
      return this.batch.encryptQuery(rows);
    }
    if (rows.length !== 1)
      throw new SealedError('bad-request', `the single-record form encrypts one record, not ${rows.length}`, 'send several records in the batch layout');
    const single = this.singleForm();
    this.singleKeys();
    return single.encryptRecord(rows[0]);
  }

  evaluationKeys(layout: Layout): EvaluationKeys {
    const k = layout === 'batch' ? (this.keySet ?? this.generateKeys()) : this.singleKeys();
    return { id: k.evaluationKeysId, bytes: k.evaluationKeys };
  }

  decryptScores(result: Uint8Array, expect: ResultExpectation = {}): number[][] {
    const { header } = decodeWire<ResultHeader>('result', result, 'the encrypted result');
    checkResultHeader(header, this.modelId, expect);
    return (header.layout === 'slots' ? this.singleForm() : this.batch).decryptResult(result).scores;
  }

  /** The class's label (or index) and probabilities, or the regression value, per record. */
  predictions(scores: number[][]): Prediction[] {
    const p = this.part;
    return scores.map((s) => {
      const value = predictionOf(p, s);
      const probabilities = p.post === 'identity' ? undefined : probabilitiesOf(p, s);
      return { label: probabilities ? (p.labels?.[value] ?? value) : value, scores: s, ...(probabilities ? { probabilities } : {}) };
    });
  }

  async settle(): Promise<void> {
    const saving = this.saving;
    this.saving = undefined;
    await saving;
  }

  close(): void {
    this.batch.close();
    this.single?.close();
    this.keySet = undefined;
  }

  private singleForm(): SingleTreeClient {
    if (!this.single) throw new SealedError('bad-request', 'this tree model has no single-record form', 'send records in the batch layout');
    return this.single;
  }

  /** The single-record key set, made (and handed to onSingleKeys) the first time it is needed: seconds, and 126-243 MB for the fixtures. */
  private singleKeys(): SingleKeys {
    const set = this.keySet ?? this.generateKeys();
    if (set.singleRecord) return set.singleRecord;
    const single = this.singleForm();
    single.useSecretKey();
    const evaluationKeys = single.keys();
    set.singleRecord = { secretKey: single.exportSecretKey(), evaluationKeys, evaluationKeysId: keysId(evaluationKeys) };
    const saving = this.onSingleKeys?.(set.singleRecord);
    if (saving) {
      saving.catch(() => undefined); // reported by settle()
      this.saving = saving;
    }
    return set.singleRecord;
  }
}
