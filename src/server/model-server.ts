// The model server's core: one model loaded into one SEAL instance, evaluating queries in
// process with no I/O and no threads. It is the server-side twin of ClientSession:
//
//   const server = await ModelServer.open(part, { recordsPerCiphertext });
//   const result = server.evaluate(query, evaluationKeys);   // single layout
//   const result = server.evaluateBatch(query);              // batch mode (no keys)
//
// Queries, keys and results are wire-format bytes (docs/wire-format.md). Every worker thread of
// the evaluation pool holds one ModelServer and calls its per-ciphertext methods and its batch
// mode's phases (batch-model.ts; worker.ts); the whole-query methods run the same steps one after the other, for
// tests, benchmarks and tools that want `evaluate(query, keys) -> result` without a server.
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { outputsOf, resultSize } from '../fhe/batch-plan.ts';
import { CkksSession } from '../fhe/ckks.ts';
import { loadQuerySection } from '../fhe/load.ts';
import { Engine } from '../fhe/engine.ts';
import { isSeededSection } from '../fhe/seeded-batch.ts';
import type { ServerPart } from '../model/bundle.ts';
import { decodeWire, encodeWire, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import { BatchModel } from './batch-model.ts';
import { parseKeySet, type KeySet } from './key-set.ts';
import { LoadedKeyCache } from './loaded-keys.ts';
import { batchCount, checkBatchQuery, checkQueryHeader, checkSingleQuery, type ServingModel } from './query-checks.ts';

export interface ModelServerOptions {
  /** Records packed per single-layout ciphertext (the client part's input layout). */
  recordsPerCiphertext: number;
  /** WASM heap for loaded evaluation keys (least recently used out); default 256 MiB. */
  keyCacheBytes?: number;
}

/** Milliseconds spent on one ciphertext, by step. */
export interface CiphertextTimings {
  keys: number;
  deserialize: number;
  evaluate: number;
  serialize: number;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export class ModelServer {
  readonly model: ServingModel;
  /** The single layout's SEAL instance (the health probe and test hooks use it too). */
  readonly session: CkksSession;
  private readonly engine: Engine;
  private readonly keys: LoadedKeyCache;
  private readonly batchModel: BatchModel | undefined;

  private constructor(model: ServingModel, session: CkksSession, engine: Engine, keys: LoadedKeyCache, batchModel: BatchModel | undefined) {
    this.model = model;
    this.session = session;
    this.engine = engine;
    this.keys = keys;
    this.batchModel = batchModel;
  }

  /** Loads SEAL for the model's parameters and pre-encodes every mask of its program. */
  static async open(part: ServerPart, o: ModelServerOptions): Promise<ModelServer> {
    const session = await CkksSession.open(part.program.params);
    const engine = new Engine(session, part.program, part.masks);
    const batchModel = part.batch ? await BatchModel.open(part.batch) : undefined;
    const model: ServingModel = { modelId: part.modelId, program: part.program, recordsPerCiphertext: o.recordsPerCiphertext, batch: part.batch };
    return new ModelServer(model, session, engine, new LoadedKeyCache(session, part.program, o.keyCacheBytes ?? 256 * 1024 * 1024), batchModel);
  }

  // --- Single layout -------------------------------------------------------------------------

  /**
   * One query ciphertext through the program: load it (precheck; fresh, top level, size 2, the
   * model's scale), evaluate it, re-randomize and flood it (circuit privacy), save it with zstd.
   * `index`: its place in the query, for messages.
   */
  evaluateCiphertext(
    ciphertext: Uint8Array,
    keySet: KeySet,
    index?: number,
    ms: CiphertextTimings = { keys: 0, deserialize: 0, evaluate: 0, serialize: 0 },
  ): Uint8Array {
    let t = performance.now();
    const lap = () => {
      const now = performance.now();
      const d = now - t;
      t = now;
      return d;
    };
    const { keys, privacy } = this.keys.get(keySet);
    ms.keys = lap();
    const what = index === undefined ? 'the encrypted query' : `ciphertext ${index} of the encrypted query`;
    const cts = loadQuerySection(this.session, ciphertext, this.engine.inputCiphertexts, this.model.program.inputScaleBits, { what });
    ms.deserialize = lap();
    let out;
    try {
      out = this.engine.run(cts, keys);
    } finally {
      for (const ct of cts) ct.delete();
    }
    if (privacy) {
      const plain = out;
      try {
        out = privacy.apply(plain);
      } finally {
        plain.delete();
      }
    }
    ms.evaluate = lap();
    try {
      return out.saveToArray(this.session.seal.ComprModeType.zstd) as Uint8Array;
    } finally {
      out.delete();
      ms.serialize = lap();
    }
  }

  /** Evaluation key sets loaded in SEAL (tests). */
  get loadedKeySets(): number {
    return this.keys.size;
  }

  /** A single-layout query with the client's evaluation keys (wire format both) -> the result. */
  evaluate(query: Uint8Array, evaluationKeys: Uint8Array): Uint8Array {
    const msg = decodeWire<QueryHeader>('query', query, 'the encrypted query');
    const h = msg.header;
    if (checkQueryHeader(this.model, h) === 'batch') throw new SealedError('bad-query', 'the query uses batch mode', 'evaluate it with evaluateBatch');
    checkSingleQuery(this.model, h, msg.sections.length);
    const keySet = parseKeySet(evaluationKeys, sha256(evaluationKeys), this.model.program);
    const results = msg.sections.map((c, i) => this.evaluateCiphertext(c, keySet, i));
    return encodeWire<ResultHeader>('result', { model_id: this.model.modelId, params: h.params, records: h.records, query_sha256: sha256(query) }, results);
  }

  // --- Batch mode ----------------------------------------------------------------------------

  /** The model's batch mode (batch-model.ts: the phases the pool's workers run); refused when it has none. */
  get batch(): BatchModel {
    if (!this.batchModel) throw new SealedError('bad-query', 'this model has no batch plan', 'encrypt with the single layout');
    return this.batchModel;
  }

  /** A batch-mode query (wire format; no evaluation keys) -> the result. */
  evaluateBatch(query: Uint8Array): Uint8Array {
    const msg = decodeWire<QueryHeader>('query', query, 'the encrypted query');
    const h = msg.header;
    if (checkQueryHeader(this.model, h) === 'single')
      throw new SealedError('bad-query', 'the query uses the single layout', 'evaluate it with evaluate (and evaluation keys)');
    const { plan, rerandKey } = checkBatchQuery(this.model, h, msg.sections.length);
    const sections = msg.sections.slice(rerandKey ? 1 : 0);
    const bm = this.batch;
    const key = plan.privacy === 'flood' ? bm.rerandKeyFor(rerandKey ? msg.sections[0] : undefined) : undefined;
    const degree = plan.params.polyModulusDegree;
    const output = new Uint32Array(outputsOf(plan) * resultSize(plan) * bm.outputLanes);
    // A plan that rescales: the kernel writes the values the first rescale divides; each rescale's
    // layers write the next's, the last's the results.
    const points = bm.rescalePoints;
    const values = Array.from({ length: points }, (_, j) => new Uint32Array(bm.valuesAt(j)));
    const results: Uint8Array[] = [];
    let onePrime: Uint32Array | undefined, all: Uint32Array | undefined;
    for (let b = 0; b < batchCount(plan, h.records); b++) {
      const batch = sections.slice(b * plan.inputs, (b + 1) * plan.inputs);
      // Seeded sections a prime at a time (as the server's pool does: batch.ts); SEAL's forms whole.
      if (isSeededSection(batch[0])) {
        onePrime ??= new Uint32Array(plan.inputs * 2 * degree);
        const from = new Uint32Array(plan.inputs);
        for (let p = 0; p < bm.lanes / degree; p++) {
          bm.decodePrime(batch, 0, p, from, onePrime);
          bm.evaluateLanes(onePrime, values[0] ?? output, p * degree, (p + 1) * degree, true);
        }
      } else {
        all ??= new Uint32Array(plan.inputs * 2 * bm.lanes);
        bm.decodeInputs(batch, all, 0);
        bm.evaluateLanes(all, values[0] ?? output, 0, bm.lanes);
      }
      for (let j = 0; j < points; j++) {
        bm.rescaleRows(values[j], 0, bm.rowsAt(j), j);
        bm.evaluateAfter(values[j], values[j + 1] ?? output, 0, bm.lanesAfter(j), j);
      }
      results.push(...bm.encodeResults(output, 0, outputsOf(plan), key));
    }
    return encodeWire<ResultHeader>(
      'result',
      { model_id: this.model.modelId, params: h.params, records: h.records, layout: 'batch', query_sha256: sha256(query) },
      results,
    );
  }

  /** One flood mask made ahead for a loaded key set (SinglePrivacy.prepareAhead): offline work between tasks; whether more is pending. */
  prepareAhead(): boolean {
    return this.keys.prepareAhead();
  }

  close(): void {
    this.keys.close();
    this.session.close();
    this.batchModel?.close();
  }
}
