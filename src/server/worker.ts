// Worker thread of the evaluation pool: a thin adapter from the pool's tasks to one ModelServer
// (its own SEAL instance, the model's program with every mask pre-encoded, a small cache of
// loaded evaluation keys). The main thread never runs SEAL, so /ping answers while evaluations
// run here.
//
// A SEAL instance wears out: every C++ exception leaks WASM stack, and a WASM trap leaves it
// corrupt (src/fhe/seal.ts). After each task the worker checks its instance; when it must go,
// it marks itself in shared memory (the pool's balancer then gives it no further task) before
// its result is posted, and the result names it, so the pool terminates the thread and piscina
// starts a fresh one. No task is lost: a retiring worker finishes the task it has and gets no
// other.
import { threadId, workerData } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { SEAL_EXCEPTION_BUDGET, sealExceptionCount, sealFault } from '../fhe/seal.ts';
import { CopyExchange } from '../fhe/copy-exchange.ts';
import type { SharedMasks } from '../fhe/gather-kernel.ts';
import { SealedError } from '../errors.ts';
import { readClientPart, readManifest, readServerPart } from '../model/bundle.ts';
import { isTreeBundle, readTreeBundle } from '../model/trees/bundle.ts';
import { TreeServer } from '../model/trees/server.ts';
import { paramsKey } from '../fhe/params.ts';
import { encodeWire, type KeysHeader } from '../wire/format.ts';
import { KnownAnswer } from './known-answer.ts';
import { ModelServer } from './model-server.ts';
import { plainError, RETRY } from './worker-errors.ts';
import type {
  BatchResult,
  BatchTask,
  EvaluateResult,
  EvaluateTask,
  ProbeResult,
  Task,
  TaskError,
  TaskResult,
  TreeBatchTask,
  TreeCombineTask,
  TreeRecordTask,
  TreePartTask,
  TreeResult,
} from './worker-protocol.ts';
import { runTest } from './worker-test-hooks.ts';

export type * from './worker-protocol.ts';

const { modelDir, keyCacheBytes, retiring, heartbeat, testHooks, singleMasks } = workerData as {
  modelDir: string;
  singleMasks?: SharedMasks;
  keyCacheBytes: number;
  retiring: SharedArrayBuffer;
  heartbeat: SharedArrayBuffer;
  testHooks?: boolean;
};
const retiringFlags = new Int32Array(retiring);
// Long tasks beat here as they progress, so /ping tells a long evaluation from a stuck one (pool.ts).
const beats = new Int32Array(heartbeat);
const beat = () => void Atomics.add(beats, 0, 1);
// A tree-ensemble bundle is served by a TreeServer (whole queries), any other by a ModelServer.
const manifest = await readManifest(modelDir);
const trees = manifest && isTreeBundle(manifest) ? await TreeServer.open((await readTreeBundle(modelDir)).server, singleMasks) : undefined;
const networkServer = trees
  ? undefined
  : await ModelServer.open(await readServerPart(modelDir), {
      recordsPerCiphertext: (await readClientPart(modelDir)).client.input.recordsPerCiphertext,
      keyCacheBytes,
    });
const session = trees ? trees.session : networkServer!.session;
const knownAnswer = new KnownAnswer(session, trees ? trees.part.circuit.inputScaleBits : networkServer!.model.program.inputScaleBits);

/** The network model's server; a task of the network paths sent to a tree model's worker is refused. */
function network(): ModelServer {
  if (!networkServer)
    throw new SealedError(
      'bad-query',
      'this endpoint serves a tree ensemble, which takes whole queries only',
      "encrypt with the tree model's client part (`sealed predict`)",
    );
  return networkServer;
}

/** Why this worker must be replaced (set once; the thread is then terminated by the pool). */
let retireReason: string | undefined;
let probeFailure: string | undefined;

function evaluateOne(task: EvaluateTask): EvaluateResult {
  const ms = { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 };
  try {
    return { result: network().evaluateCiphertext(task.ciphertext, task.keys, task.index, ms), ms };
  } catch (e) {
    // Errors cross the thread boundary as plain data; SealedErrors keep their code and hint.
    return { error: plainError(e), ms };
  }
}

function runBatch(task: BatchTask): BatchResult {
  const t0 = performance.now();
  const ms = () => performance.now() - t0;
  const bytes = (b: SharedArrayBuffer | undefined) => b && new Uint8Array(b);
  try {
    const server = network().batch;
    switch (task.batch) {
      case 'decode':
        server.decodeInputs(task.sections, new Uint32Array(task.input), task.first);
        return { ms: ms() };
      case 'decode-prime': {
        const arena = new Uint8Array(task.arena);
        const sections = Array.from({ length: task.count }, (_, j) => arena.subarray((task.first + j) * task.slot, (task.first + j + 1) * task.slot));
        server.decodePrime(sections, task.first, task.prime, new Uint32Array(task.from), new Uint32Array(task.input));
        return { ms: ms() };
      }
      case 'evaluate':
        server.evaluateLanes(new Uint32Array(task.input), new Uint32Array(task.output), task.lane0, task.lane1, task.onePrime);
        return { ms: ms() };
      case 'rescale':
        server.rescaleRows(new Uint32Array(task.values), task.first, task.count, task.point);
        return { ms: ms() };
      case 'after-rescale':
        server.evaluateAfter(new Uint32Array(task.values), new Uint32Array(task.output), task.lane0, task.lane1, task.point);
        return { ms: ms() };
      case 'check-key':
        server.rerandKeyFor(bytes(task.rerandKey));
        return { ms: ms() };
      case 'encode': {
        const results = server.encodeResults(new Uint32Array(task.output), task.first, task.count, server.rerandKeyFor(bytes(task.rerandKey)));
        return { results, ms: ms() };
      }
    }
  } catch (e) {
    return { error: plainError(e), ms: ms() };
  }
}

function runTrees(task: TreeBatchTask | TreePartTask | TreeCombineTask): TreeResult {
  const t0 = performance.now();
  try {
    if (!trees) throw new SealedError('bad-query', 'this endpoint does not serve a tree ensemble');
    // The key set's sections back in their wire object (no Galois section), as TreeServer reads keys.
    const flood = task.keys.publicKey !== undefined;
    const header: KeysHeader = { params: paramsKey(trees.part.circuit.params), galois_steps: [], relin: true, public_key: flood };
    const keys = encodeWire('keys', header, flood ? [task.keys.relin, task.keys.publicKey!] : [task.keys.relin]);
    const id = task.keys.id;
    if ('treePart' in task) {
      const { sums, masks } = trees.evaluatePart(task.index, task.parts, task.inputs, keys, { masks: task.masks, keysId: id, onProgress: beat });
      return { partial: sums, masks, ms: performance.now() - t0 };
    }
    if ('treeCombine' in task) return { results: trees.combine(task.partials, task.masks, keys, id), ms: performance.now() - t0 };
    return { results: trees.evaluateBatch(task.inputs, keys, { keysId: id, onProgress: beat }), ms: performance.now() - t0 };
  } catch (e) {
    return { error: plainError(e), ms: performance.now() - t0 };
  }
}

function runTreeRecord(task: TreeRecordTask): TreeResult {
  const t0 = performance.now();
  try {
    const single = trees?.single;
    if (!single) throw new SealedError('bad-query', 'this endpoint does not serve a single-record tree form');
    if (task.treeRecord === 'part') {
      const exchange = task.exchange && new CopyExchange(task.exchange);
      const partial = single.evaluatePart(task.sections, task.part, task.parts, task.keys, exchange, task.masks);
      const masks = task.part === 0 && task.masks ? single.floodMasks(task.keys, task.masks) : undefined;
      return { partial: [partial], masks, ms: performance.now() - t0 };
    }
    return { results: single.finish(task.partials, task.masks, task.keys, task.results), ms: performance.now() - t0 };
  } catch (e) {
    return { error: plainError(e), ms: performance.now() - t0 };
  }
}

function probe(): ProbeResult {
  const t0 = performance.now();
  probeFailure ??= knownAnswer.check();
  return probeFailure ? { ok: false, why: probeFailure, ms: performance.now() - t0 } : { ok: true, ms: performance.now() - t0 };
}

/** Why this thread must be replaced now, if it must. */
function mustRetire(): string | undefined {
  const fault = sealFault();
  if (fault) return `its SEAL runtime trapped (${fault})`;
  if (probeFailure) return probeFailure;
  const n = sealExceptionCount();
  if (n >= SEAL_EXCEPTION_BUDGET) return `${n} SEAL exceptions reached the budget of ${SEAL_EXCEPTION_BUDGET} (each leaks WASM stack)`;
  return undefined;
}

function dispatch(task: Task): TaskResult {
  if ('warmup' in task) return { ms: { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 } };
  if ('probe' in task) return probe();
  if ('test' in task)
    return testHooks
      ? runTest(task, session, knownAnswer.ciphertext)
      : { exceptions: sealExceptionCount(), error: { code: 'bad-request', message: 'test tasks are refused: this pool has no test hooks' } };
  if ('batch' in task) return runBatch(task);
  if ('treeBatch' in task || 'treePart' in task || 'treeCombine' in task) return runTrees(task);
  if ('treeRecord' in task) return runTreeRecord(task);
  return evaluateOne(task);
}

/**
 * Offline work between tasks: flood masks for the next results (SinglePrivacy.prepareAhead), one
 * at a time, after IDLE_MS without a task, so that a request's own next task (a record's finish
 * after its parts) is not kept waiting for it; a task arriving meanwhile waits for one mask at
 * most. The pool runs piscina with atomics 'async' so that timers fire while a worker waits.
 */
const IDLE_MS = 25;
let idleTimer: ReturnType<typeof setTimeout> | undefined;
let idleWorked = false;
function idleStep(): void {
  idleTimer = undefined;
  if (retireReason) return;
  idleWorked = true;
  let more: boolean;
  try {
    more = trees ? trees.prepareAhead() : networkServer!.prepareAhead();
  } catch {
    // The next task checks this instance (mustRetire) before it computes anything.
    return;
  }
  if (more) idleTimer = setTimeout(idleStep, 0);
}

export default function run(task: Task): TaskResult {
  clearTimeout(idleTimer);
  idleTimer = undefined;
  if (idleWorked) {
    idleWorked = false;
    retireReason ??= mustRetire();
  }
  // The balancer gives a retiring worker no task; should one arrive anyway, an instance that
  // trapped or failed its probe computes nothing (a wrong answer is worse than a retry).
  if (retireReason && (sealFault() || probeFailure)) {
    const error: TaskError = { code: 'internal', message: 'the worker thread that took this task is being replaced', hint: RETRY };
    const retire = { threadId, reason: retireReason };
    if ('probe' in task) return { ok: false, why: retireReason, ms: 0, retire };
    if ('test' in task) return { exceptions: sealExceptionCount(), error, retire };
    if ('batch' in task || 'treeBatch' in task || 'treePart' in task || 'treeCombine' in task || 'treeRecord' in task) return { error, ms: 0, retire };
    return { error, ms: { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 }, retire };
  }
  const result = dispatch(task);
  retireReason ??= mustRetire();
  if (retireReason) {
    // Before the result is posted: once the main thread sees this thread free, it is marked.
    Atomics.store(retiringFlags, threadId % retiringFlags.length, threadId);
    result.retire = { threadId, reason: retireReason };
  } else idleTimer = setTimeout(idleStep, IDLE_MS);
  return moveResults(result);
}

/**
 * Result ciphertexts (a LeNet batch's: ten of ~10 MB) moved to the main thread instead of cloned,
 * where each owns its buffer (the copy and its fresh pages were the main thread's, between the
 * saves and the upload).
 */
function moveResults(result: TaskResult): TaskResult {
  const results = 'results' in result ? result.results : undefined;
  if (!results?.length) return result;
  const buffers = new Set(results.map((r) => r.buffer));
  if (buffers.size !== results.length || results.some((r) => r.byteOffset !== 0 || r.byteLength !== r.buffer.byteLength || !(r.buffer instanceof ArrayBuffer)))
    return result;
  Object.assign(result, { [Piscina.transferableSymbol]: [...buffers], [Piscina.valueSymbol]: result });
  return Piscina.move(result as never) as unknown as TaskResult;
}
