// What SealedClient needs of a model's cryptography, whichever kind of model: keys, the layout
// for a number of records, records -> query, result -> scores -> predictions. Two kinds:
// networks and linear models (NetworkCodec, over ClientSession) and tree ensembles (TreeCodec,
// tree-codec.ts). Browser-safe: no I/O.
import type { ClientPart } from '../model/client-part.ts';
import { postprocess, type Prediction } from '../model/postprocess.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { keysId, type ClientSession, type Keys, type Layout, type ResultExpectation } from './session.ts';
import type { EvaluationKeys } from './transport.ts';

/** Keys a caller made earlier: what useKeys takes. */
export type KeysInput = Pick<Keys, 'secretKey' | 'evaluationKeys'> & Partial<Pick<Keys, 'batchSecretKey' | 'singleRecord'>>;

export interface ModelCodec {
  readonly modelId: string;
  readonly part: ClientPart | TreeClientPart;
  /** The key set in use, if any. */
  readonly keys: Keys | undefined;
  /** Makes a fresh key set and uses it from now on. */
  generateKeys(): Keys;
  /** Uses keys made earlier for this model; returns the set as used. */
  useKeys(keys: KeysInput): Keys;
  /** The layout for this many records; `transportBatches`: whether the transport can carry a batch query. */
  layoutFor(records: number, transportBatches: boolean): Layout;
  /** Rows (feature values in the model's order) -> query (wire kind 1). Makes keys when it has none. */
  encrypt(rows: ArrayLike<number>[], layout: Layout): Uint8Array;
  /** The evaluation keys a query of this layout needs (made when missing), or undefined when it needs none. */
  evaluationKeys(layout: Layout): EvaluationKeys | undefined;
  /** Result (wire kind 3) -> raw scores per record, refused unless it answers this model (and `expect`'s query). */
  decryptScores(result: Uint8Array, expect?: ResultExpectation): number[][];
  /** Raw scores -> predictions (the sigmoid, softmax or scaling of the model). */
  predictions(scores: number[][]): Prediction[];
  /** Waits for work the codec started on its own (a tree model saving the keys it made); rejects with its error. */
  settle?(): Promise<void>;
  close(): void;
}

/** A network's or linear model's cryptography: ClientSession, with its key set. */
export class NetworkCodec implements ModelCodec {
  readonly modelId: string;
  readonly part: ClientPart;
  readonly session: ClientSession;
  private keySet: Keys | undefined;

  constructor(session: ClientSession) {
    this.session = session;
    this.modelId = session.modelId;
    this.part = session.part;
  }

  get keys(): Keys | undefined {
    return this.keySet;
  }

  generateKeys(): Keys {
    this.keySet = this.session.generateKeys();
    return this.keySet;
  }

  useKeys(keys: KeysInput): Keys {
    this.session.useSecretKey(keys.secretKey);
    const batchSecretKey = keys.batchSecretKey ?? this.session.generateBatchKey();
    if (keys.batchSecretKey) this.session.useBatchSecretKey(keys.batchSecretKey);
    // Keys saved before circuit privacy get their public key added (the id changes with it).
    const evaluationKeys = this.session.withPublicKey(keys.evaluationKeys, keys.secretKey);
    this.keySet = { secretKey: keys.secretKey, evaluationKeys, evaluationKeysId: keysId(evaluationKeys), batchSecretKey };
    return this.keySet;
  }

  /** Batch mode (no evaluation keys, record per slot) from the model's crossover on, when the transport carries it. */
  layoutFor(records: number, transportBatches: boolean): Layout {
    return transportBatches ? this.session.layoutFor(records) : 'single';
  }

  encrypt(rows: ArrayLike<number>[], layout: Layout): Uint8Array {
    if (!this.keySet) this.generateKeys();
    return this.session.encrypt(rows, layout);
  }

  /** Batch mode needs none: its query is encrypted under its own secret key and evaluated with plaintext weights. */
  evaluationKeys(layout: Layout): EvaluationKeys | undefined {
    if (layout === 'batch') return undefined;
    const k = this.keySet ?? this.generateKeys();
    return { id: k.evaluationKeysId, bytes: k.evaluationKeys };
  }

  decryptScores(result: Uint8Array, expect?: ResultExpectation): number[][] {
    return this.session.decryptScores(result, expect);
  }

  predictions(scores: number[][]): Prediction[] {
    return scores.map((s) => postprocess(this.part, s));
  }

  close(): void {
    this.session.close();
    this.keySet = undefined;
  }
}
