// The client's cryptography for one model: key generation, encryption of records into a query,
// decryption of a result into predictions. No I/O here, so it runs in browsers too.
import { SealedError } from '../errors.ts';
import { makeBatchRerandKey } from '../fhe/batch-privacy.ts';
import { CkksSession } from '../fhe/ckks.ts';
import { SecretKeyHolder, generateKeys, generateSecretKey } from '../fhe/keys.ts';
import { makePublicKey } from '../fhe/single-privacy.ts';
import { paramsKey, type CkksParams } from '../fhe/params.ts';
import type { ClientPart } from '../model/client-part.ts';
import { packRecords, unpackOutputs, withRotations } from '../model/layout.ts';
import { boxedInputs } from '../model/input-box.ts';
import { postprocess, preprocessColumnsInto, preprocessRecord, type Prediction } from '../model/postprocess.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import { sha256Hex } from '../util/sha256.ts';
import { batchPart, batchScores, type BatchDecryptor } from './batch-scores.ts';

export interface Keys {
  /** Never leaves the client. */
  secretKey: Uint8Array;
  /** The evaluation keys in wire format: uploaded, shared with the server. */
  evaluationKeys: Uint8Array;
  /** SHA-256 of evaluationKeys: names the uploaded object, so it is uploaded once. */
  evaluationKeysId: string;
  /** Batch mode's secret key (its own parameters); never leaves the client either. */
  batchSecretKey?: Uint8Array;
  /**
   * A tree ensemble's single-record form has its own parameters, so its own key set (made the
   * first time one record is predicted). The set above is the tree model's batch circuit's.
   */
  singleRecord?: Pick<Keys, 'secretKey' | 'evaluationKeys' | 'evaluationKeysId'>;
}

export type Layout = 'single' | 'batch';

export function keysId(evaluationKeys: Uint8Array): string {
  return sha256Hex(evaluationKeys);
}

/** What a client knows about the result it waits for. */
export interface ResultExpectation {
  /** SHA-256 (hex) of the query object it uploaded; the result's header must name it. */
  querySha256?: string;
}

/** Refuses a result for another model, or (when the query's hash is known) for another query. */
export function checkResultHeader(h: ResultHeader, modelId: string, expect: ResultExpectation): void {
  const show = (v: unknown) => (typeof v === 'string' && /^[0-9a-f]{1,64}$/.test(v) ? v : 'none');
  if (h.model_id !== modelId)
    throw new SealedError(
      'wrong-model',
      `the result is for model ${show(h.model_id)}, not ${modelId}`,
      'ask the endpoint that serves this model; if it does, the result object was replaced: predict again',
    );
  const want = expect.querySha256;
  if (want !== undefined && h.query_sha256 !== want) {
    throw new SealedError(
      'bad-data',
      `the result answers another query: its header names query SHA-256 ${show(h.query_sha256)}, the query sent has ${want}`,
      'the result object was replaced after the server wrote it (or by a request naming it as output_uri): do not use it; predict again, and restrict who can write the results prefix (--allow-write, tenant prefixes, IAM)',
    );
  }
}

export class ClientSession {
  readonly modelId: string;
  readonly part: ClientPart;
  private readonly s: CkksSession;
  private holder: SecretKeyHolder | undefined;
  private readonly batchS: CkksSession | undefined;
  private batchHolder: SecretKeyHolder | undefined;
  private batchKeyBytes: Uint8Array | undefined;

  private constructor(modelId: string, part: ClientPart, s: CkksSession, batchS: CkksSession | undefined) {
    this.modelId = modelId;
    this.part = part;
    this.s = s;
    this.batchS = batchS;
  }

  static async open(modelId: string, part: ClientPart): Promise<ClientSession> {
    return new ClientSession(
      modelId,
      part,
      await CkksSession.open(part.params),
      // Results of a plan that rescales come back lower in the chain, which SEAL then needs.
      part.batch ? await CkksSession.open(part.batch.params, { topLevelOnly: part.batch.result_primes === undefined }) : undefined,
    );
  }

  generateKeys(): Keys {
    const k = generateKeys(this.s, this.part.galois_steps, this.part.relin);
    // The public key goes with the evaluation keys: the server re-randomizes results with it
    // (circuit privacy); it lets anyone encrypt, nothing more.
    const header: KeysHeader = { params: paramsKey(this.part.params), galois_steps: this.part.galois_steps, relin: this.part.relin, public_key: true };
    const publicKey = makePublicKey(this.s, k.secretKey);
    const evaluationKeys = encodeWire('keys', header, k.relinKeys ? [k.galoisKeys, k.relinKeys, publicKey] : [k.galoisKeys, publicKey]);
    this.useSecretKey(k.secretKey);
    const batchSecretKey = this.generateBatchKey();
    return { secretKey: k.secretKey, evaluationKeys, evaluationKeysId: keysId(evaluationKeys), batchSecretKey };
  }

  /**
   * Evaluation keys made before circuit privacy lack the public key: the same keys with it
   * added (made from the secret key); keys that have it come back unchanged.
   */
  withPublicKey(evaluationKeys: Uint8Array, secretKey: Uint8Array): Uint8Array {
    const msg = decodeWire<KeysHeader>('keys', evaluationKeys, 'the evaluation keys');
    if (msg.header.public_key === true) return evaluationKeys;
    return encodeWire<KeysHeader>('keys', { ...msg.header, public_key: true }, [...msg.sections, makePublicKey(this.s, secretKey)]);
  }

  /** A batch-mode secret key (undefined when the model has no batch mode); also loaded. */
  generateBatchKey(): Uint8Array | undefined {
    if (!this.batchS) return undefined;
    const sk = generateSecretKey(this.batchS);
    this.useBatchSecretKey(sk);
    return sk;
  }

  useBatchSecretKey(secretKey: Uint8Array): void {
    if (!this.batchS) throw new SealedError('bad-keys', 'this model has no batch mode');
    this.batchHolder?.close();
    this.batchHolder = new SecretKeyHolder(this.batchS, secretKey);
    this.batchKeyBytes = secretKey;
  }

  /** The layout that costs less for this many records: batch from the model's measured crossover on. */
  layoutFor(records: number): Layout {
    const b = this.part.batch;
    return b && records >= b.crossover ? 'batch' : 'single';
  }

  private get batchKey(): SecretKeyHolder {
    if (!this.batchHolder) throw new SealedError('bad-keys', 'no batch-mode secret key loaded', 'generate keys again (`sealed keygen`) for this model');
    return this.batchHolder;
  }

  useSecretKey(secretKey: Uint8Array): void {
    this.holder?.close();
    this.holder = new SecretKeyHolder(this.s, secretKey);
  }

  private get key(): SecretKeyHolder {
    if (!this.holder) throw new SealedError('bad-keys', 'no secret key loaded', 'generate keys first (`sealed keygen`) or load them');
    return this.holder;
  }

  private checkRows(rows: ArrayLike<number>[]): void {
    const p = this.part;
    if (rows.length === 0) throw new SealedError('bad-data', 'no records to encrypt');
    rows.forEach((r, i) => {
      if (r.length !== p.features.length)
        throw new SealedError(
          'bad-data',
          `record ${i + 1} has ${r.length} values, the model takes ${p.features.length} (${p.features.slice(0, 5).join(', ')}…)`,
        );
      for (let j = 0; j < r.length; j++)
        if (!Number.isFinite(r[j])) throw new SealedError('bad-data', `record ${i + 1}, feature "${p.features[j]}" is not a finite number`);
    });
  }

  /**
   * Batch mode: the query header and its ciphertexts, made one at a time as they are consumed
   * (a query of 10,000 images is hundreds of megabytes: it is streamed, never whole).
   */
  encryptBatch(rows: ArrayLike<number>[]): { header: QueryHeader; count: number; sections: Generator<Uint8Array> } {
    const { b, batches, inputs, header, rerandKey, batchValues } = this.prepareBatch(rows);
    const key = this.batchKey;
    const S = b.records_per_batch;
    function* sections(): Generator<Uint8Array> {
      yield rerandKey;
      const values = new Float64Array(S * inputs);
      for (let bi = 0; bi < batches; bi++) {
        const records = batchValues(bi, values);
        for (let i = 0; i < inputs; i++) yield key.encryptPacked(values.subarray(i * S, i * S + records), b.input_scale_bits);
      }
    }
    return { header, count: 1 + batches * inputs, sections: sections() };
  }

  /**
   * encryptBatch on every core: `pool` is the Node client's encryption pool (encrypt-pool.ts).
   * `recycle`: the caller is done with each section once it asks for the next (a streamed upload,
   * which copies it into its part), so the pool may write later ones into the same memory
   * (EncryptPool.encryptColumns). Leave it off to keep the sections.
   */
  encryptBatchWith(
    rows: ArrayLike<number>[],
    pool: {
      encryptColumns(
        values: Float64Array<SharedArrayBuffer>,
        records: number,
        features: number,
        o: { params: CkksParams; secretKey: Uint8Array; scaleBits: number; slots: number },
        recycle?: boolean,
      ): AsyncGenerator<Uint8Array>;
    },
    recycle = false,
  ): { header: QueryHeader; count: number; sections: AsyncGenerator<Uint8Array> } {
    const { b, batches, inputs, header, rerandKey, batchValues } = this.prepareBatch(rows);
    const o = { params: b.params, secretKey: this.batchKeyBytes!, scaleBits: b.input_scale_bits, slots: b.records_per_batch };
    async function* sections(): AsyncGenerator<Uint8Array> {
      yield rerandKey;
      for (let bi = 0; bi < batches; bi++) {
        // Shared, so that the pool's tasks read it without a copy each; one per batch, as the
        // workers may still read the last one's.
        const values = new Float64Array(new SharedArrayBuffer(o.slots * inputs * 8));
        yield* pool.encryptColumns(values, batchValues(bi, values), inputs, o, recycle);
      }
    }
    return { header, count: 1 + batches * inputs, sections: sections() };
  }

  private prepareBatch(rows: ArrayLike<number>[]) {
    const b = this.part.batch;
    if (!b) throw new SealedError('bad-data', 'this model has no batch mode', 'use the single layout');
    this.checkRows(rows);
    void this.batchKey; // throws when no key is loaded
    const S = b.records_per_batch;
    /** Batch `bi`'s records, preprocessed, into `values` (inputs x S: input i of record r at i S + r); how many there are. */
    const batchValues = (bi: number, values: Float64Array): number => {
      const batch = rows.slice(bi * S, (bi + 1) * S);
      preprocessColumnsInto(batch, this.part, b.input_factors, values, S, b.input_box);
      return batch.length;
    };
    // The first section: the re-randomization key for circuit privacy (fresh per query, from the
    // batch secret key; a server whose model does not flood ignores it).
    const header: QueryHeader = { model_id: this.modelId, params: paramsKey(b.params), records: rows.length, layout: 'batch', rerand_key: true };
    const rerandKey = makeBatchRerandKey(this.batchS!, b.result_size, this.batchKeyBytes!, b.flood_primes ?? b.result_primes);
    // One ciphertext per feature, or per box sum (input-box.ts).
    const inputs = b.input_box ? boxedInputs(b.input_box) : this.part.features.length;
    return { b, batches: Math.ceil(rows.length / S), inputs, header, rerandKey, batchValues };
  }

  /** Raw feature rows (as in the training CSV, without the target) -> encrypted query. */
  encrypt(rows: ArrayLike<number>[], layout: Layout = 'single'): Uint8Array {
    const p = this.part;
    if (layout === 'batch') {
      const q = this.encryptBatch(rows);
      return encodeWire<QueryHeader>('query', q.header, [...q.sections]);
    }
    this.checkRows(rows);
    const vectors = packRecords(
      p.input,
      rows.map((r) => preprocessRecord(r, p)),
    );
    const sections = vectors.map((v) => this.key.encryptSection(withRotations(p.input, v), p.input_scale_bits));
    return encodeWire<QueryHeader>('query', { model_id: this.modelId, params: paramsKey(p.params), records: rows.length }, sections);
  }

  /**
   * Encrypted result -> raw scores per record (before post-processing). `expect.querySha256`:
   * the SHA-256 of the query this client uploaded; a result whose header names another query
   * (or none) is refused, so a result written over this client's output by anyone else, even
   * through the server from their own query, is never decrypted into wrong predictions.
   */
  decryptScores(result: Uint8Array, expect: ResultExpectation = {}): number[][] {
    const msg = decodeWire<ResultHeader>('result', result, 'the encrypted result');
    checkResultHeader(msg.header, this.modelId, expect);
    if (msg.header.layout === 'batch') return this.decryptBatch(msg.sections, msg.header.records);
    const decoded = msg.sections.map((b) => this.key.decrypt(b));
    return unpackOutputs(this.part.output, this.part.input.recordsPerCiphertext, decoded, msg.header.records);
  }

  /**
   * decryptScores with a batch-mode result's ciphertexts decrypted on the encryption pool's
   * threads (encrypt-pool.ts): on this thread they were ~1.2 s of one core per LeNet batch, the
   * other idle. Other results are decrypted here.
   */
  async decryptScoresWith(result: Uint8Array, pool: BatchDecryptor, expect: ResultExpectation = {}): Promise<number[][]> {
    const msg = decodeWire<ResultHeader>('result', result, 'the encrypted result');
    checkResultHeader(msg.header, this.modelId, expect);
    if (msg.header.layout !== 'batch') return this.decryptScores(result, expect);
    const b = batchPart(this.part, msg.sections.length, msg.header.records);
    void this.batchKey; // throws when no key is loaded
    const outs = await pool.decryptAll(msg.sections, { params: b.params, secretKey: this.batchKeyBytes! });
    return batchScores(b, (i) => outs[i], msg.header.records);
  }

  private decryptBatch(sections: Uint8Array[], records: number): number[][] {
    const b = batchPart(this.part, sections.length, records);
    return batchScores(b, (i) => this.batchKey.decrypt(sections[i]), records);
  }

  decrypt(result: Uint8Array, expect: ResultExpectation = {}): Prediction[] {
    return this.decryptScores(result, expect).map((s) => postprocess(this.part, s));
  }

  close(): void {
    this.holder?.close();
    this.batchHolder?.close();
    this.s.close();
    this.batchS?.close();
  }
}
