// Tree ensembles on the wire, client side: keys, queries and result decryption (server.ts has the
// server's pure evaluation). Wire objects (src/wire/format.ts):
//
//   keys:   header { params, galois_steps: [], relin: true, public_key: <flood> },
//           sections [relinearization keys, public key (when flooded)]
//   query:  header { model_id, params, records, layout: 'batch' },
//           sections: per batch of records_per_batch records, the client part's `inputs`
//           thermometer ciphertexts (a record per slot), batch after batch
//   result: the query's header plus query_sha256; per batch, one ciphertext per output
import { SealedError } from '../../errors.ts';
import type { CkksSession } from '../../fhe/ckks.ts';
import { SecretKeyOwner } from '../../fhe/keys.ts';
import { paramsKey } from '../../fhe/params.ts';
import { makeTreeKeys } from '../../fhe/tree-eval.ts';
import { sha256Hex } from '../../util/sha256.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader, type ResultHeader } from '../../wire/format.ts';
import { thermometer } from './circuit.ts';
import type { TreeClientPart } from './compile.ts';
import { predictionOf, probabilitiesOf } from './ensemble.ts';
import { binsOf, inputOffsets } from './quantize.ts';

export interface TreePredictions {
  /** Per record: the scores (margins for XGBoost, probabilities for forests), as decrypted. */
  scores: number[][];
  /** Per record: the class index, or the regression value. */
  predictions: number[];
  probabilities?: number[][];
}

/**
 * A result object for this model (and, given the query's bytes or their SHA-256 in hex, for this
 * query), or why not.
 */
export function readTreeResult(p: TreeClientPart, bytes: Uint8Array, query?: Uint8Array | string): { header: ResultHeader; sections: Uint8Array[] } {
  const r = decodeWire<ResultHeader>('result', bytes, 'the result');
  if (r.header.model_id !== p.model_id)
    throw new SealedError('wrong-model', 'the result was made by another model', 'decrypt results with the client part of the model that answered');
  if (query !== undefined && r.header.query_sha256 !== (typeof query === 'string' ? query : sha256Hex(query)))
    throw new SealedError('bad-query', 'the result answers another query', 'download the result written for this query');
  return r;
}

/** Client side: holds the secret key; no I/O. */
export class TreeClient extends SecretKeyOwner {
  readonly part: TreeClientPart;

  private constructor(part: TreeClientPart, s: CkksSession, secretKey: Uint8Array) {
    super(s, secretKey);
    this.part = part;
  }

  /** `secretKey`: a saved one (SEAL bytes) to reuse, else a fresh key is made. */
  static async open(part: TreeClientPart, secretKey?: Uint8Array): Promise<TreeClient> {
    if (part.model !== 'trees') throw new SealedError('bad-bundle', 'the client part is not a tree-ensemble model');
    return SecretKeyOwner.openWith(part.params, { topLevelOnly: true }, secretKey, (s, key) => new TreeClient(part, s, key));
  }

  /** The evaluation keys object (wire kind 2) the server needs with each query. */
  keys(): Uint8Array {
    const { relinKeys, publicKey } = makeTreeKeys(this.s, this.secretKey);
    const flood = this.part.privacy === 'flood';
    const header: KeysHeader = { params: paramsKey(this.part.params), galois_steps: [], relin: true, public_key: flood };
    return encodeWire('keys', header, flood ? [relinKeys, publicKey] : [relinKeys]);
  }

  /** Quantizes, encodes (thermometer, a record per slot) and encrypts records into a query. */
  encryptQuery(records: ArrayLike<number>[]): Uint8Array {
    const q = this.encryptQuerySections(records);
    return encodeWire('query', q.header, [...q.sections]);
  }

  /**
   * As encryptQuery, with each batch's ciphertexts made by `encryptBatch` (the Node client's
   * encryption pool: every core), which gets the batch's thermometer bits (a row per record)
   * and returns the `inputs` ciphertexts in order, each as SecretKeyHolder.encryptCompact saves it.
   */
  async encryptQueryWith(records: ArrayLike<number>[], encryptBatch: (rows: Uint8Array[]) => Promise<Uint8Array[]>): Promise<Uint8Array> {
    const q = this.encryptQuerySectionsWith(records, encryptBatch);
    const sections: Uint8Array[] = [];
    for await (const s of q.sections) sections.push(s);
    return encodeWire('query', q.header, sections);
  }

  /**
   * The query encryptQuery makes, as its header, section count and sections, each made as it is
   * read: a client that uploads them as they come (putQueryStream) never holds the whole query and
   * its encoding. The records are checked before the first section is made.
   */
  encryptQuerySections(records: ArrayLike<number>[]): { header: QueryHeader; count: number; sections: Generator<Uint8Array> } {
    const batches = this.batchBits(records);
    return { header: this.queryHeader(records.length), count: batches.length * this.part.inputs, sections: this.encryptedInputs(batches) };
  }

  /** As encryptQuerySections, a batch at a time by `encryptBatch` (as encryptQueryWith): one batch held at a time. */
  encryptQuerySectionsWith(
    records: ArrayLike<number>[],
    encryptBatch: (rows: Uint8Array[]) => Promise<Uint8Array[]>,
  ): { header: QueryHeader; count: number; sections: AsyncGenerator<Uint8Array> } {
    const batches = this.batchBits(records);
    const inputs = this.part.inputs;
    const sections = async function* (): AsyncGenerator<Uint8Array> {
      for (const bits of batches) {
        const cts = await encryptBatch(bits);
        if (cts.length !== inputs) throw new SealedError('internal', `a batch was encrypted into ${cts.length} ciphertexts, not ${inputs}`);
        yield* cts;
      }
    };
    return { header: this.queryHeader(records.length), count: batches.length * inputs, sections: sections() };
  }

  /** Each batch's `inputs` ciphertexts, batch after batch, encrypted here one at a time. */
  private *encryptedInputs(batches: Uint8Array[][]): Generator<Uint8Array> {
    const slots = new Float64Array(this.s.slots);
    for (const bits of batches) {
      for (let i = 0; i < this.part.inputs; i++) {
        slots.fill(0);
        bits.forEach((b, r) => (slots[r] = b[i]));
        yield this.holder.encryptCompact(slots, this.part.input_scale_bits);
      }
    }
  }

  /** Thermometer bits per record, a list per batch of records_per_batch records. */
  private batchBits(records: ArrayLike<number>[]): Uint8Array[][] {
    const p = this.part;
    if (records.length === 0) throw new SealedError('bad-data', 'no records to predict', 'pass at least one record');
    const { offsets, inputs } = inputOffsets(p.bins.edges);
    if (inputs !== p.inputs) throw new SealedError('bad-bundle', "the client part's bins do not match its input count");
    const batches: Uint8Array[][] = [];
    const R = p.records_per_batch;
    for (let b0 = 0; b0 < records.length; b0 += R) {
      batches.push(
        records.slice(b0, b0 + R).map((x, i) => {
          if (x.length !== p.features.length)
            throw new SealedError(
              'bad-data',
              `record ${b0 + i} has ${x.length} values, the model has ${p.features.length} features`,
              'give every feature of the model, in its order',
            );
          return thermometer(binsOf(p.bins, x, p.features), p.bins.edges, offsets, inputs);
        }),
      );
    }
    return batches;
  }

  private queryHeader(records: number): QueryHeader {
    const p = this.part;
    return { model_id: p.model_id, params: paramsKey(p.params), records, layout: 'batch' };
  }

  /**
   * Decrypts a result; `query` (the bytes sent, or their SHA-256 in hex) makes it refuse a result
   * of another query.
   */
  decryptResult(bytes: Uint8Array, query?: Uint8Array | string): TreePredictions {
    const p = this.part;
    const { header, sections } = readTreeResult(p, bytes, query);
    const n = header.records;
    const batches = Math.ceil(n / p.records_per_batch);
    if (!Number.isInteger(n) || n < 1 || sections.length !== batches * p.outputs)
      throw new SealedError('bad-query', `the result holds ${sections.length} ciphertexts, expected ${batches * p.outputs}`, 'download the result again');
    const scores: number[][] = Array.from({ length: n }, () => new Array<number>(p.outputs));
    for (let b = 0; b < batches; b++) {
      for (let k = 0; k < p.outputs; k++) {
        const v = this.holder.decrypt(sections[b * p.outputs + k]);
        for (let r = 0; r < p.records_per_batch && b * p.records_per_batch + r < n; r++) scores[b * p.records_per_batch + r][k] = v[r];
      }
    }
    const post = { post: p.post, outputs: p.outputs };
    const probabilities = p.post === 'identity' ? undefined : scores.map((s) => probabilitiesOf(post, s)!);
    return { scores, predictions: scores.map((s) => predictionOf(post, s)), probabilities };
  }
}
