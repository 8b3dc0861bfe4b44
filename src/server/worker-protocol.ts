// What the main thread and the evaluation pool's workers send each other. Types only, in a
// module of their own, so the pool and batch.ts do not import the worker (which loads SEAL).
import type { PlainError } from '../errors.ts';
import type { CopyExchangeBuffers } from '../fhe/copy-exchange.ts';

export interface EvaluateTask {
  ciphertext: Uint8Array;
  keys: { id: string; galois: Uint8Array; relin?: Uint8Array; publicKey?: Uint8Array; bytes: number; params: string };
  /** The ciphertext's index in the query, for messages ("ciphertext 3 of the encrypted query"). */
  index?: number;
}

/** Batch mode, in three phases over shared memory (see batch.ts): load, evaluate lanes, save. */
export type BatchTask =
  | { batch: 'decode'; sections: Uint8Array[]; input: SharedArrayBuffer; first: number }
  /**
   * Prime `prime` of seeded ciphertexts first .. first + count - 1, whose sections lie `slot`
   * bytes apart in `arena`; `from`: each ciphertext's keystream position (u32, moved on).
   */
  | {
      batch: 'decode-prime';
      arena: SharedArrayBuffer;
      slot: number;
      first: number;
      count: number;
      prime: number;
      from: SharedArrayBuffer;
      input: SharedArrayBuffer;
    }
  /**
   * With `onePrime`, `input` holds the residues of the lanes' prime only (decode-prime). A plan
   * that rescales writes the values its first rescale divides to `output` (BatchModel.evaluateLanes).
   */
  | { batch: 'evaluate'; input: SharedArrayBuffer; output: SharedArrayBuffer; lane0: number; lane1: number; onePrime?: boolean }
  /** A plan that rescales: rows first .. first + count - 1 of the values rescale `point` divides, in place. */
  | { batch: 'rescale'; values: SharedArrayBuffer; first: number; count: number; point: number }
  /** Then the squares and layers after it over lanes [lane0, lane1) of the level it leaves. */
  | { batch: 'after-rescale'; values: SharedArrayBuffer; output: SharedArrayBuffer; lane0: number; lane1: number; point: number }
  | { batch: 'encode'; output: SharedArrayBuffer; first: number; count: number; rerandKey?: SharedArrayBuffer }
  /** Checks the query's re-randomization key before any work is done on the query. */
  | { batch: 'check-key'; rerandKey?: SharedArrayBuffer };

/**
 * One batch of a tree-ensemble query (src/model/trees): the inputs the circuit reads
 * (usedInputs, in that order), copied out of the query and transferred. The worker returns the
 * batch's result ciphertexts, one per output.
 */
export interface TreeBatchTask {
  treeBatch: true;
  inputs: Uint8Array[];
  keys: TreeKeys;
}

/** A tree model's key set: its sections and its SHA-256 (the worker keeps the last ones loaded). */
export interface TreeKeys {
  id: string;
  relin: Uint8Array;
  publicKey?: Uint8Array;
}

/**
 * One part of a batch of a tree query, for several threads on one batch (invoke-trees.ts): part
 * `index` of treeParts(circuit, `parts`) (which may hold fewer parts than asked), its input
 * ciphertexts copied out of the query (transferred). The worker returns the part's sums, not
 * flooded; with `masks`, also the batch's flood masks (made while the other parts compute).
 */
export interface TreePartTask {
  treePart: true;
  index: number;
  parts: number;
  inputs: Uint8Array[];
  masks: boolean;
  keys: TreeKeys;
}

/** The parts' sums of one batch, added, relinearized and flooded into the batch's result ciphertexts. */
export interface TreeCombineTask {
  treeCombine: true;
  partials: (Uint8Array | number)[][];
  masks?: Uint8Array[];
  keys: TreeKeys;
}

/**
 * A single-record tree query (layout 'slots', src/model/trees/single-server.ts) on several
 * threads: part `part` of `parts` of its gather, the query's sections shared read-only; part 0
 * also makes `masks` of the flood's masks while the other parts compute (any mask serves any
 * result; every part is told, for the cut weighs part 0's share by them); the parts share
 * `exchange` so that each copy is loaded once (src/fhe/copy-exchange.ts).
 * 'finish' adds the parts' gathers and completes the result ciphertexts `results` (with `masks`,
 * one each in that order, or making its own): several finish tasks share a model's results out.
 */
export type TreeRecordTask =
  | { treeRecord: 'part'; part: number; parts: number; sections: Uint8Array[]; masks: number; keys: TreeRecordKeys; exchange?: CopyExchangeBuffers }
  | { treeRecord: 'finish'; partials: Uint8Array[]; masks: Uint8Array[] | 'own'; results: number[]; keys: TreeRecordKeys };

/** A single-record key set's sections and its SHA-256 (the worker keeps the last ones loaded). */
export interface TreeRecordKeys {
  id: string;
  galois: Uint8Array;
  relin: Uint8Array;
  publicKey?: Uint8Array;
}

export interface TreeResult {
  /** A part's sums per output, and the flood masks when asked (TreePartTask). */
  partial?: (Uint8Array | number)[];
  masks?: Uint8Array[];
  /** A batch's result ciphertexts, one per output (TreeBatchTask, TreeCombineTask). */
  results?: Uint8Array[];
  error?: TaskError;
  ms: number;
  retire?: Retirement;
}

/** The health probe: a known-answer computation on a throwaway key (pool.probe()). */
export interface ProbeTask {
  probe: true;
}

/**
 * TEST-ONLY (refused unless the pool was made with `testHooks`): drive this thread's SEAL into
 * the failures the pool must heal from, now that the precheck keeps garbage away from SEAL.
 *   seal-exceptions  `count` SEAL exceptions through guard() (counted, as real ones are); past
 *                    ~3,770 the instance traps, and the trap is seen as a real one would be
 *   break-seal       exceptions bypassing the count until even valid work traps: a corruption
 *                    no counter saw, which only a failing task or the probe can find
 */
export type TestTask = { test: 'seal-exceptions'; count: number } | { test: 'break-seal' };

/** A worker that must go: the pool terminates thread `threadId` (piscina starts a new one). */
export interface Retirement {
  threadId: number;
  reason: string;
}

/** A task's failure, sent back as plain fields; the main thread rebuilds it with reviveError. */
export type TaskError = PlainError;

export interface BatchResult {
  results?: Uint8Array[];
  error?: TaskError;
  ms: number;
  retire?: Retirement;
}

export interface EvaluateResult {
  result?: Uint8Array;
  error?: TaskError;
  ms: { deserialize: number; evaluate: number; serialize: number; keys: number };
  retire?: Retirement;
}

export interface ProbeResult {
  ok: boolean;
  /** Why the probe failed (no caller data in it). */
  why?: string;
  ms: number;
  retire?: Retirement;
}

export interface TestResult {
  exceptions: number;
  error?: TaskError;
  retire?: Retirement;
}

/** Sent once per worker at start-up: answered when SEAL and the model are loaded. */
export interface WarmupTask {
  warmup: true;
}

export type Task = EvaluateTask | BatchTask | TreeBatchTask | TreePartTask | TreeCombineTask | TreeRecordTask | ProbeTask | TestTask | WarmupTask;
export type TaskResult = EvaluateResult | BatchResult | TreeResult | ProbeResult | TestResult;
