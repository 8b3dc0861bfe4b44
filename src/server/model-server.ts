// The model server's core: one model loaded into one SEAL instance, evaluating queries in
// process with no I/O and no threads. It is the server-side twin of ClientSession:
//
//   const server = await ModelServer.open(part, { recordsPerCiphertext });
//   const result = server.evaluate(query, evaluationKeys);   // single layout
//   const result = server.evaluateBatch(query);              // batch mode (no keys)
//
// Queries, keys and results are wire-format bytes (docs/wire-format.md). Every worker thread of
// the evaluation pool holds one ModelServer and calls its per-ciphertext and per-batch-phase
// methods (worker.ts); the whole-query methods run the same steps one after the other, for
// tests, benchmarks and tools that want `evaluate(query, keys) -> result` without a server.
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { BatchSession } from '../fhe/batch-io.ts';
import { evaluateLanes, prepareKernel, type BatchKernel } from '../fhe/batch-kernel.ts';
import { outputsOf, resultSize } from '../fhe/batch-plan.ts';
import { BatchPrivacy } from '../fhe/batch-privacy.ts';
import { CkksSession } from '../fhe/ckks.ts';
import { loadQuerySection } from '../fhe/load.ts';
import { Engine } from '../fhe/engine.ts';
import { loadRerandKey, type RerandKey } from '../fhe/privacy.ts';
import { isSeededSection } from '../fhe/seeded-batch.ts';
import type { ServerPart } from '../model/bundle.ts';
import { decodeWire, encodeWire, type QueryHeader, type ResultHeader } from '../wire/format.ts';
import { CHUNK } from './batch-constants.ts';
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
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

/** Batch mode's SEAL instance, exact kernel and re-randomizer. */
interface BatchMode {
  io: BatchSession;
  kernel: BatchKernel;
  privacy: BatchPrivacy;
}

export class ModelServer {
  readonly model: ServingModel;
  /** The single layout's SEAL instance (the health probe and test hooks use it too). */
  readonly session: CkksSession;
  private readonly engine: Engine;
  private readonly keys: LoadedKeyCache;
  private readonly batchMode: BatchMode | undefined;
  /**
   * The last re-randomization key parsed, with the bytes it came from. A request's key reaches
   * this worker with every encode task of every batch (and the check before them); parsing it
   * copies and range-checks one result's worth of residues, so it is parsed once per key, and
   * later tasks only compare bytes (a native memcmp).
   */
  private lastRerandKey: { bytes: Uint8Array; key: RerandKey } | undefined;

  private constructor(model: ServingModel, session: CkksSession, engine: Engine, keys: LoadedKeyCache, batchMode: BatchMode | undefined) {
    this.model = model;
    this.session = session;
    this.engine = engine;
    this.keys = keys;
    this.batchMode = batchMode;
  }

  /** Loads SEAL for the model's parameters and pre-encodes every mask of its program. */
  static async open(part: ServerPart, o: ModelServerOptions): Promise<ModelServer> {
    const session = await CkksSession.open(part.program.params);
    const engine = new Engine(session, part.program, part.masks);
    let batchMode: BatchMode | undefined;
    if (part.batch) {
      const io = await BatchSession.open(part.batch);
      batchMode = { io, kernel: prepareKernel(io.plan, io.primes), privacy: new BatchPrivacy(io.plan, io.primes) };
    }
    const model: ServingModel = { modelId: part.modelId, program: part.program, recordsPerCiphertext: o.recordsPerCiphertext, batch: part.batch };
    return new ModelServer(model, session, engine, new LoadedKeyCache(session, part.program, o.keyCacheBytes ?? 256 * 1024 * 1024), batchMode);
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

  private get batch(): BatchMode {
    if (!this.batchMode) throw new SealedError('bad-query', 'this model has no batch plan', 'encrypt with the single layout');
    return this.batchMode;
  }

  /** Residues of one polynomial set over the batch primes (primes x degree). */
  get batchLanes(): number {
    return this.batch.io.lanes;
  }

  /**
   * The query's re-randomization key, checked against the batch parameters; undefined for a
   * model without circuit privacy (which ignores it). Refused when the model floods and it is missing.
   */
  rerandKeyFor(bytes: Uint8Array | undefined): RerandKey | undefined {
    const { io, privacy } = this.batch;
    if (!privacy.enabled) return undefined;
    if (!bytes)
      throw new SealedError(
        'bad-query',
        'the query carries no re-randomization key: this model re-randomizes its batch results (circuit privacy)',
        'encrypt with a current `sealed predict` (or SDK), which sends it',
      );
    const last = this.lastRerandKey;
    if (last && sameBytes(last.bytes, bytes)) return last.key;
    const key = loadRerandKey(bytes, io.primes, io.plan.params.polyModulusDegree, resultSize(io.plan));
    this.lastRerandKey = { bytes: bytes.slice(), key };
    return key;
  }

  /** Phase 1: loads ciphertexts `first`, `first + 1`, ... of a batch, as residues, into `input`. */
  decodeBatchInputs(sections: Uint8Array[], input: Uint32Array, first: number): void {
    const { io } = this.batch;
    sections.forEach((bytes, i) => io.decodeInto(bytes, input, (first + i) * 2 * io.lanes, `ciphertext ${first + i} of a batch of the encrypted query`));
  }

  /**
   * Phase 1 a prime at a time, for seeded sections (what clients send): prime `p` of ciphertexts
   * `first`, `first + 1`, ... of a batch into `input` ([feature][poly][coefficient], that prime
   * only). `from[i]`: where ciphertext i's keystream words for this prime start (0 for prime 0),
   * moved on to the next prime's. A batch evaluated this way holds one prime's residues, 1/k of
   * what decodeBatchInputs fills.
   */
  decodeBatchPrime(sections: readonly Uint8Array[], first: number, p: number, from: Uint32Array, input: Uint32Array): void {
    const { io } = this.batch;
    const degree = io.plan.params.polyModulusDegree;
    sections.forEach((bytes, j) => {
      const i = first + j;
      from[i] = io.decodePrimeInto(bytes, p, input, i * 2 * degree, from[i], `ciphertext ${i} of a batch of the encrypted query`);
    });
  }

  /**
   * Phase 2: the exact kernel over lanes [lane0, lane1) of `input` into `output`, CHUNK lanes
   * within one prime at a time; with `onePrime`, `input` holds only the lanes' prime (decodeBatchPrime).
   */
  evaluateBatchLanes(input: Uint32Array, output: Uint32Array, lane0: number, lane1: number, onePrime = false): void {
    const { io, kernel } = this.batch;
    const degree = io.plan.params.polyModulusDegree;
    if (onePrime && Math.floor(lane0 / degree) !== Math.floor((lane1 - 1) / degree)) throw new RangeError('lanes of one prime only');
    for (let l = lane0; l < lane1;) {
      const end = Math.min(l + CHUNK, lane1, (Math.floor(l / degree) + 1) * degree);
      evaluateLanes(kernel, input, output, l, end, onePrime);
      l = end;
    }
  }

  /** Phase 3: outputs `first` .. `first + count - 1` re-randomized, flooded and saved as result ciphertexts. */
  encodeBatchResults(output: Uint32Array, first: number, count: number, rerandKey: RerandKey | undefined): Uint8Array[] {
    const { io, privacy } = this.batch;
    const size = resultSize(io.plan);
    const results: Uint8Array[] = [];
    for (let o = first; o < first + count; o++) {
      privacy.apply(rerandKey, output, o, io.lanes);
      results.push(io.encodeResult(output, o * size * io.lanes, size, io.plan.outputScaleBits));
    }
    return results;
  }

  /** A batch-mode query (wire format; no evaluation keys) -> the result. */
  evaluateBatch(query: Uint8Array): Uint8Array {
    const msg = decodeWire<QueryHeader>('query', query, 'the encrypted query');
    const h = msg.header;
    if (checkQueryHeader(this.model, h) === 'single')
      throw new SealedError('bad-query', 'the query uses the single layout', 'evaluate it with evaluate (and evaluation keys)');
    const { plan, rerandKey } = checkBatchQuery(this.model, h, msg.sections.length);
    const sections = msg.sections.slice(rerandKey ? 1 : 0);
    const key = plan.privacy === 'flood' ? this.rerandKeyFor(rerandKey ? msg.sections[0] : undefined) : undefined;
    const lanes = this.batchLanes;
    const degree = plan.params.polyModulusDegree;
    const output = new Uint32Array(outputsOf(plan) * resultSize(plan) * lanes);
    const results: Uint8Array[] = [];
    let onePrime: Uint32Array | undefined, all: Uint32Array | undefined;
    for (let b = 0; b < batchCount(plan, h.records); b++) {
      const batch = sections.slice(b * plan.inputs, (b + 1) * plan.inputs);
      // Seeded sections a prime at a time (as the server's pool does: batch.ts); SEAL's forms whole.
      if (isSeededSection(batch[0])) {
        onePrime ??= new Uint32Array(plan.inputs * 2 * degree);
        const from = new Uint32Array(plan.inputs);
        for (let p = 0; p < lanes / degree; p++) {
          this.decodeBatchPrime(batch, 0, p, from, onePrime);
          this.evaluateBatchLanes(onePrime, output, p * degree, (p + 1) * degree, true);
        }
      } else {
        all ??= new Uint32Array(plan.inputs * 2 * lanes);
        this.decodeBatchInputs(batch, all, 0);
        this.evaluateBatchLanes(all, output, 0, lanes);
      }
      results.push(...this.encodeBatchResults(output, 0, outputsOf(plan), key));
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
    this.lastRerandKey = undefined;
    this.keys.close();
    this.session.close();
    this.batchMode?.io.session.close();
  }
}
