// One tree-ensemble record on the wire, client side (the single-record form, single.ts; the
// server's side is single-server.ts). Its parameters differ from the batch circuit's, so it has
// a secret key and evaluation keys of its own:
//
//   keys:   header { params, galois_steps: the client part's, relin: true, public_key: <flood> },
//           sections [Galois keys, relinearization keys, public key (when flooded)]
//   query:  header { model_id, params, records: 1, layout: 'slots' }, sections: the record's
//           thermometer bits repeated over the slots (each in `stretch` slots), rotated by
//           0 .. copies - 1 positions
//   result: the query's header plus query_sha256; ceil(outputs / stretch) ciphertexts, output k's
//           score in every slot t of ciphertext k / stretch with t mod stretch = k mod stretch
import { SealedError } from '../../errors.ts';
import type { CkksSession } from '../../fhe/ckks.ts';
import { SecretKeyOwner } from '../../fhe/keys.ts';
import { paramsKey } from '../../fhe/params.ts';
import { encryptSlotsQuery, makeSlotsKeys, resultCount, resultSlot, validStretch } from '../../fhe/tree-slots-layout.ts';
import { encodeWire, type KeysHeader, type QueryHeader } from '../../wire/format.ts';
import { thermometer } from './circuit.ts';
import type { TreeClientPart } from './compile.ts';
import { predictionOf, probabilitiesOf } from './ensemble.ts';
import { readTreeResult, type TreePredictions } from './query.ts';
import { binsOf, inputOffsets } from './quantize.ts';
import type { SingleClientPart } from './single.ts';

/** Client side of the single-record form: holds its secret key; no I/O. */
export class SingleTreeClient extends SecretKeyOwner {
  readonly part: TreeClientPart;
  private readonly single: SingleClientPart;

  private constructor(part: TreeClientPart, s: CkksSession, secretKey: Uint8Array) {
    super(s, secretKey);
    this.part = part;
    this.single = part.single!;
  }

  /** `secretKey`: a saved one (SEAL bytes, made for the single form's parameters), else a fresh key. */
  static async open(part: TreeClientPart, secretKey?: Uint8Array): Promise<SingleTreeClient> {
    if (part.model !== 'trees' || !part.single)
      throw new SealedError(
        'bad-bundle',
        'the model has no single-record form',
        'compile it again with a sealed that makes one, or send records in a batch query',
      );
    // The result comes back one level down (the gather rescales): the client needs the whole chain.
    return SecretKeyOwner.openWith(part.single.params, {}, secretKey, (s, key) => new SingleTreeClient(part, s, key));
  }

  /** The evaluation keys object (wire kind 2) the server needs with each single-record query. */
  keys(): Uint8Array {
    const { galois_steps: steps, params } = this.single;
    const { galoisKeys, relinKeys, publicKey } = makeSlotsKeys(this.s, this.secretKey, steps);
    const flood = this.part.privacy === 'flood';
    const header: KeysHeader = { params: paramsKey(params), galois_steps: steps, relin: true, public_key: flood };
    return encodeWire('keys', header, flood ? [galoisKeys, relinKeys, publicKey] : [galoisKeys, relinKeys]);
  }

  /** Slots per position (the layout's stretch), checked. */
  private get stretch(): number {
    const G = this.single.stretch ?? 1;
    if (!validStretch(G, this.single.period, this.s.slots))
      throw new SealedError('bad-bundle', `the client part stretches each position over ${JSON.stringify(G)} slots`, 'compile the model again');
    return G;
  }

  /** Quantizes, encodes (thermometer bits over the period) and encrypts one record into a query. */
  encryptRecord(record: ArrayLike<number>): Uint8Array {
    const p = this.part;
    if (record.length !== p.features.length)
      throw new SealedError(
        'bad-data',
        `the record has ${record.length} values, the model has ${p.features.length} features`,
        'give every feature of the model, in its order',
      );
    const { offsets, inputs } = inputOffsets(p.bins.edges);
    if (inputs !== p.inputs || inputs > this.single.period) throw new SealedError('bad-bundle', "the client part's bins do not match its input count");
    const bits = thermometer(binsOf(p.bins, record, p.features), p.bins.edges, offsets, inputs);
    const shape = { slots: this.s.slots, copies: this.single.copies, period: this.single.period, stretch: this.stretch };
    const sections = encryptSlotsQuery(this.holder, shape, this.single.input_scale_bits, bits);
    const header: QueryHeader = { model_id: p.model_id, params: paramsKey(this.single.params), records: 1, layout: 'slots' };
    return encodeWire('query', header, sections);
  }

  /** Decrypts a single-record result; `query` (the bytes sent, or their SHA-256 in hex) makes it refuse a result of another query. */
  decryptResult(bytes: Uint8Array, query?: Uint8Array | string): TreePredictions {
    const p = this.part;
    const { header, sections } = readTreeResult(p, bytes, query);
    const G = this.stretch;
    const results = resultCount(p.outputs, G);
    if (header.layout !== 'slots' || header.records !== 1 || sections.length !== results)
      throw new SealedError(
        'bad-query',
        `the result is not a single-record result of ${results} ciphertext${results === 1 ? '' : 's'} (${p.outputs} outputs, ${G} in each)`,
        'download the result written for this query',
      );
    const slots = sections.map((c) => this.holder.decrypt(c));
    const score = Array.from({ length: p.outputs }, (_, k) => {
      const [c, t] = resultSlot({ stretch: G }, k);
      return slots[c][t];
    });
    const post = { post: p.post, outputs: p.outputs };
    return {
      scores: [score],
      predictions: [predictionOf(post, score)],
      probabilities: p.post === 'identity' ? undefined : [probabilitiesOf(post, score)!],
    };
  }
}
