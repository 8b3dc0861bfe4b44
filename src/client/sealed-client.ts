// SealedClient: a model's cryptography (a ModelCodec: codec.ts for networks and linear models,
// tree-codec.ts for tree ensembles) plus a Transport (the way to a server). It turns records into
// rows, picks the layout, sends the keys the layout needs, and checks that a result answers the
// query sent. Browser-safe.
import { SealedError } from '../errors.ts';
import type { ClientPart } from '../model/client-part.ts';
import type { Prediction } from '../model/postprocess.ts';
import { isTreeClientPart } from '../model/trees/client-part.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { sha256Hex } from '../util/sha256.ts';
import type { KeysInput, ModelCodec } from './codec.ts';
import { decryptOrRetry } from './result-range.ts';
import type { Keys, Layout, ResultExpectation } from './session.ts';
import type { Transport } from './transport.ts';

/** A record: the feature values in the model's order, or an object keyed by feature name. */
export type RecordInput = ArrayLike<number> | Readonly<Record<string, number>>;

export interface PredictStats {
  /**
   * Networks: single (records packed per ciphertext, evaluation keys) or batch (record per slot,
   * no keys). Tree ensembles: single (the single-record form) or batch (the batch circuit).
   */
  layout: Layout;
  records: number;
  /** Bytes of the encrypted query, the evaluation keys and the encrypted result. */
  query_bytes: number;
  keys_bytes: number;
  result_bytes: number;
  keys_uploaded: boolean;
  /**
   * Milliseconds: keygen (0 when the client already had keys), encrypt, evaluate (upload,
   * server evaluation and download: the transport's round trip), decrypt, total.
   */
  ms: { keygen: number; encrypt: number; evaluate: number; decrypt: number; total: number };
  /** The transport's breakdown of `evaluate`. */
  transport_ms: Record<string, number>;
  /** How the query travelled (`s3`, `body`, `proxy`), when the transport says. */
  via?: string;
  server?: unknown;
  /** Set when a corrupt batch result was refused and the query evaluated once more. */
  retries?: number;
}

export interface PredictOutcome {
  predictions: Prediction[];
  /** Decrypted raw scores per record, before the sigmoid/softmax/scaling. */
  scores: number[][];
  stats: PredictStats;
}

const now = () => performance.now();
const round = (v: number) => Math.round(v * 100) / 100;

/** An encrypting client for one model. Make it with `createClient`. */
export class SealedClient {
  /** The model's id (32 hex digits); the server refuses queries for another model. */
  readonly modelId: string;
  /** The model's client part: a network's or linear model's, or a tree ensemble's (`model: 'trees'`). */
  readonly model: ClientPart | TreeClientPart;
  private readonly codec: ModelCodec;
  private transport: Transport | undefined;
  private readonly ownsTransport: boolean;

  /** @internal use createClient */
  constructor(codec: ModelCodec, transport: Transport | undefined, ownsTransport: boolean) {
    this.codec = codec;
    this.modelId = codec.modelId;
    this.model = codec.part;
    this.transport = transport;
    this.ownsTransport = ownsTransport;
  }

  /** Names of the features a record holds, in order. */
  get features(): string[] {
    return this.model.features;
  }

  /** Class names (classification models), in the order of `probabilities`. */
  get labels(): string[] | undefined {
    return this.model.labels;
  }

  /** The current keys, if any; `secretKey` must stay with the caller. */
  get keys(): Keys | undefined {
    return this.codec.keys;
  }

  /** Makes a fresh key set (secret key and evaluation keys) and uses it from now on. */
  generateKeys(): Keys {
    return this.codec.generateKeys();
  }

  /** Uses keys made earlier for this model. */
  useKeys(keys: KeysInput): void {
    this.codec.useKeys(keys);
  }

  /**
   * The layout for this many records. Networks: batch mode (no evaluation keys, record per slot)
   * from the model's crossover on, when the model and the transport support it; else single.
   * Tree ensembles: single for one record when the model has a single-record form, else batch.
   */
  layoutFor(records: number): Layout {
    return this.codec.layoutFor(records, !this.transport || this.transport.batch === true);
  }

  /**
   * Records -> encrypted query (wire format, kind 1). Makes keys first if there are none.
   * `layout`: networks default to single; tree ensembles to layoutFor(records.length).
   */
  encrypt(records: readonly RecordInput[], layout: Layout = isTreeClientPart(this.model) ? this.layoutFor(records.length) : 'single'): Uint8Array {
    return this.codec.encrypt(
      records.map((r, i) => this.row(r, i)),
      layout,
    );
  }

  /**
   * Encrypted result (wire format, kind 3) -> one prediction per record. `expect.querySha256`
   * (the SHA-256 of the query sent, e.g. `sha256Hex(query)`): refuse a result for another query.
   */
  decrypt(result: Uint8Array, expect?: ResultExpectation): Prediction[] {
    return this.codec.predictions(this.codec.decryptScores(result, expect));
  }

  /** Encrypted result -> raw scores per record (before the sigmoid, softmax or scaling). */
  decryptScores(result: Uint8Array, expect?: ResultExpectation): number[][] {
    return this.codec.decryptScores(result, expect);
  }

  /** Encrypts the records, has the server evaluate them, decrypts: one prediction per record. */
  async predict(records: readonly RecordInput[]): Promise<Prediction[]> {
    return (await this.predictWithStats(records)).predictions;
  }

  /** As `predict`, with the sizes and the time of each stage. */
  async predictWithStats(records: readonly RecordInput[]): Promise<PredictOutcome> {
    const transport = this.transport;
    if (!transport)
      throw new SealedError('bad-request', 'this client has no server to send queries to', 'pass `endpoint` (Node), `proxy` or `transport` to createClient');
    const t0 = now();
    const layout = this.layoutFor(records.length);
    // Keys are made here when missing (a tree model's single-record set too), so that their time is keygen's, not encrypt's.
    const before = this.codec.keys;
    const hadSingle = before?.singleRecord !== undefined;
    if (!before) this.codec.generateKeys();
    const keys = this.codec.evaluationKeys(layout);
    await this.codec.settle?.();
    const madeKeys = !before || (!hadSingle && this.codec.keys?.singleRecord !== undefined);
    const t1 = now();
    const query = this.encrypt(records, layout);
    const querySha256 = sha256Hex(query);
    const t2 = now();
    const first = await transport.evaluate(query, keys, { querySha256 });
    const t3 = now();
    // Whatever carried it, the result must answer this query (its header names the query's hash).
    // A corrupt batch result ciphertext: the query is evaluated once more (result-range.ts).
    const {
      scores,
      result: ev,
      retries,
      retryMs,
    } = await decryptOrRetry(
      first,
      (e) => this.codec.decryptScores(e.result, { querySha256 }),
      () => transport.evaluate(query, keys, { querySha256 }),
    );
    const predictions = this.codec.predictions(scores);
    const t4 = now();
    return {
      predictions,
      scores,
      stats: {
        layout,
        records: records.length,
        query_bytes: query.length,
        keys_bytes: keys?.bytes.length ?? 0,
        result_bytes: ev.result.length,
        keys_uploaded: first.keysUploaded || ev.keysUploaded,
        ms: {
          keygen: madeKeys ? round(t1 - t0) : 0,
          encrypt: round(t2 - t1),
          evaluate: round(t3 - t2 + retryMs),
          decrypt: round(t4 - t3 - retryMs),
          total: round(t4 - t0),
        },
        transport_ms: ev.ms,
        via: ev.via,
        server: ev.server,
        ...(retries ? { retries } : {}),
      },
    };
  }

  /** Frees the WASM memory holding the keys; closes the transport this client made. */
  async close(): Promise<void> {
    try {
      await this.codec.settle?.();
    } finally {
      this.codec.close();
    }
    const t = this.transport;
    this.transport = undefined;
    if (t && this.ownsTransport) await t.close?.();
  }

  private row(r: RecordInput, i: number): ArrayLike<number> {
    if (typeof (r as ArrayLike<number>).length === 'number') return r as ArrayLike<number>;
    const o = r as Readonly<Record<string, number>>;
    return this.features.map((f) => {
      const v = o[f];
      if (typeof v !== 'number')
        throw new SealedError(
          'bad-data',
          `record ${i + 1} has no number for feature "${f}"`,
          `give all ${this.features.length} features: ${this.features.slice(0, 4).join(', ')}…`,
        );
      return v;
    });
  }
}
