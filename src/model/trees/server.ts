// Tree ensembles, server side: a model's SEAL session and the pure evaluation of a query with the
// client's keys (no I/O, no threads), whole or in parts for several threads (query.ts has the wire
// objects and the client).
import { SealedError } from '../../errors.ts';
import { CkksSession } from '../../fhe/ckks.ts';
import { paramsKey } from '../../fhe/params.ts';
import { treeParts, usedInputs, type TreePart } from '../../fhe/tree-circuit.ts';
import { TreeEvaluator } from '../../fhe/tree-eval.ts';
import { LruCache } from '../../util/lru.ts';
import { sha256Hex } from '../../util/sha256.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader, type ResultHeader } from '../../wire/format.ts';
import type { TreeServerPart } from './compile.ts';
import { SingleTreeServer } from './single-server.ts';
import type { SharedMasks } from '../../fhe/gather-kernel.ts';

/** Key sets a TreeServer keeps loaded (relinearization and public key: ~10 MB each at ring 16384). */
const KEPT_EVALUATORS = 2;

/** Server side: a tree model's SEAL session, opened once; `evaluate` is synchronous and pure. */
export class TreeServer {
  readonly part: TreeServerPart;
  /** The model's SEAL instance (a serving worker's health probe uses it too). */
  readonly session: CkksSession;
  /** The single-record form (layout 'slots'), when the bundle has one: its own session and keys. */
  readonly single?: SingleTreeServer;

  private constructor(part: TreeServerPart, s: CkksSession, single?: SingleTreeServer) {
    this.part = part;
    this.session = s;
    this.single = single;
  }

  /** `singleMasks`: the single-record form's masks as a process's threads share them (server/served-model.ts makes them). */
  static async open(part: TreeServerPart, singleMasks?: SharedMasks): Promise<TreeServer> {
    const s = await CkksSession.open(part.circuit.params, { topLevelOnly: true });
    try {
      return new TreeServer(part, s, part.single && (await SingleTreeServer.open(part.model_id, part.single, singleMasks)));
    } catch (e) {
      s.close();
      throw e;
    }
  }

  /**
   * Evaluates a query (wire kind 1) with the client's keys (wire kind 2) and returns the result
   * (wire kind 3). `ops`, when given, counts the operations (benchmarks); `onProgress` is called
   * after each product (a serving worker's heartbeat: a query can run for minutes). `keysId`: the
   * keys' SHA-256, when the caller checked it (the server's KeyStore): the keys loaded into SEAL
   * are then kept for the next query with them (the last KEPT_EVALUATORS key sets). A
   * single-record query (layout 'slots') goes to the single-record form, with its keys.
   */
  evaluate(queryBytes: Uint8Array, keysBytes: Uint8Array, ops?: Record<string, number>, onProgress?: () => void, keysId?: string): Uint8Array {
    const c = this.part.circuit;
    const params = paramsKey(c.params);
    const q = decodeWire<QueryHeader>('query', queryBytes, 'the encrypted query');
    const h = q.header;
    if (h.layout === 'slots' && h.model_id === this.part.model_id) {
      if (!this.single) throw new SealedError('bad-query', 'this model has no single-record form', 'send the record in a batch query');
      return this.single.evaluate(queryBytes, keysBytes, keysId);
    }
    if (h.model_id !== this.part.model_id)
      throw new SealedError(
        'wrong-model',
        'the query was encrypted for another model',
        'encrypt the query with the client part of the model this endpoint serves',
      );
    if (h.params !== params)
      throw new SealedError(
        'bad-query',
        `the query uses parameters ${String(h.params)}, the model uses ${params}`,
        "encrypt the query with this model's client part",
      );
    const slots = c.params.polyModulusDegree / 2;
    const batches = Math.ceil(h.records / slots);
    if (!Number.isInteger(h.records) || h.records < 1 || q.sections.length !== batches * c.inputs) {
      throw new SealedError(
        'bad-query',
        `the query declares ${String(h.records)} records and holds ${q.sections.length} ciphertexts; this model reads ${c.inputs} per batch of ${slots} records`,
        "encrypt the query with this model's client part",
      );
    }
    return this.withEvaluator(keysBytes, keysId, (ev) => {
      const out: Uint8Array[] = [];
      for (let b = 0; b < batches; b++) out.push(...ev.evaluate(q.sections.slice(b * c.inputs, (b + 1) * c.inputs), ops, onProgress));
      const header: ResultHeader = { model_id: h.model_id, params, records: h.records, layout: 'batch', query_sha256: sha256Hex(queryBytes) };
      return encodeWire('result', header, out);
    });
  }

  /**
   * One batch of a query already checked (TreeServer.evaluate's checks, or the server's
   * checkTreeQuery): `inputs` are the ciphertexts the circuit reads (usedInputs, in that order).
   * Returns the batch's result ciphertexts, one per output, flooded when the model says so.
   */
  evaluateBatch(inputs: Uint8Array[], keysBytes: Uint8Array, o: { keysId?: string; onProgress?: () => void } = {}): Uint8Array[] {
    const c = this.part.circuit;
    const used = usedInputs(c);
    if (inputs.length !== used.length) throw new SealedError('internal', `a batch task got ${inputs.length} ciphertexts, the circuit reads ${used.length}`);
    const all = new Array<Uint8Array>(c.inputs);
    used.forEach((i, n) => (all[i] = inputs[n]));
    return this.withEvaluator(keysBytes, o.keysId, (ev) => ev.evaluate(all, undefined, o.onProgress));
  }

  /**
   * Part `index` of treeParts(circuit, `parts`) of one batch: `inputs` are the part's
   * ciphertexts (partInputs), taken from a query already checked (TreeServer.evaluate's checks,
   * or the server's checkTreeQuery). Returns the part's sums, not flooded, and with `masks` the
   * batch's flood masks; combine() adds the parts' sums and floods. Neither leaves the server but
   * through combine.
   */
  evaluatePart(
    index: number,
    parts: number,
    inputs: Uint8Array[],
    keysBytes: Uint8Array,
    o: { masks?: boolean; keysId?: string; onProgress?: () => void } = {},
  ): { sums: (Uint8Array | number)[]; masks?: Uint8Array[] } {
    const part = this.parts(parts)[index];
    if (!part) throw new SealedError('internal', `part ${index} of ${parts}: the circuit has no such part`);
    return this.withEvaluator(keysBytes, o.keysId, (ev) => ev.evaluatePart(part, inputs, o.masks === true, o.onProgress));
  }

  /** One batch's result ciphertexts (one per output) from its parts' sums (in part order) and flood masks. */
  combine(partials: (Uint8Array | number)[][], masks: Uint8Array[] | undefined, keysBytes: Uint8Array, keysId?: string): Uint8Array[] {
    return this.withEvaluator(keysBytes, keysId, (ev) => ev.combine(partials, masks));
  }

  /** The parts a batch is cut into for `parts` threads (fewer when the trie has fewer children). */
  parts(parts: number): TreePart[] {
    return treeParts(this.part.circuit, parts);
  }

  // Room first, so the heap never holds more than KEPT_EVALUATORS key sets.
  private readonly kept = new LruCache<TreeEvaluator>(KEPT_EVALUATORS, (ev) => ev.close());

  /** `fn` with an evaluator of these keys: kept under `keysId` when given, else made and closed. */
  private withEvaluator<T>(keysBytes: Uint8Array, keysId: string | undefined, fn: (ev: TreeEvaluator) => T): T {
    if (keysId === undefined) {
      const ev = this.evaluatorFor(keysBytes);
      try {
        return fn(ev);
      } finally {
        ev.close();
      }
    }
    return fn(this.kept.get(keysId, () => this.evaluatorFor(keysBytes)));
  }

  private evaluatorFor(keysBytes: Uint8Array): TreeEvaluator {
    const c = this.part.circuit;
    const k = decodeWire<KeysHeader>('keys', keysBytes, 'the evaluation keys');
    if (k.header.params !== paramsKey(c.params))
      throw new SealedError('bad-keys', 'the keys were made for other parameters', "make keys with this model's client part");
    const flood = c.privacy === 'flood';
    if (k.sections.length !== (flood ? 2 : 1) || k.header.relin !== true || (flood && k.header.public_key !== true)) {
      throw new SealedError(
        'bad-keys',
        flood ? 'the keys must hold relinearization keys and the public key (circuit privacy)' : 'the keys must hold relinearization keys',
        "make keys with this model's client part",
      );
    }
    return new TreeEvaluator(this.session, c, k.sections[0], flood ? k.sections[1] : undefined);
  }

  /** One flood mask made ahead for a kept key set that used its masks (SinglePrivacy.prepareAhead), the most recent first; whether more is pending. */
  prepareAhead(): boolean {
    if (this.single?.prepareAhead()) return true;
    for (const ev of this.kept.recentFirst()) if (ev.prepareAhead()) return true;
    return false;
  }

  close(): void {
    this.kept.clear();
    this.single?.close();
    this.session.close();
  }
}

/** One-shot form of TreeServer.evaluate (opens and closes a session). */
export async function evaluateTreeQuery(serverPart: TreeServerPart, queryBytes: Uint8Array, keysBytes: Uint8Array): Promise<Uint8Array> {
  const server = await TreeServer.open(serverPart);
  try {
    return server.evaluate(queryBytes, keysBytes);
  } finally {
    server.close();
  }
}
