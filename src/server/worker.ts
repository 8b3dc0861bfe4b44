// Worker thread of the evaluation pool: its own SEAL (WASM) instance, the model's program with
// every mask pre-encoded, and a small cache of loaded evaluation keys. The main thread never
// runs SEAL, so /ping answers while evaluations run here.
//
// A SEAL instance wears out: every C++ exception leaks WASM stack, and a WASM trap leaves it
// corrupt (src/fhe/seal.ts). After each task the worker checks its instance; when it must go,
// it marks itself in shared memory (the pool's balancer then gives it no further task) before
// its result is posted, and the result names it, so the pool terminates the thread and piscina
// starts a fresh one. No task is lost: a retiring worker finishes the task it has and gets no
// other.
import { threadId, workerData } from 'node:worker_threads';
import { isSealedError, SealedError, type PlainError } from '../errors.ts';
import { CkksSession, SecretKeyHolder, generateSecretKey, loadCiphertext, loadEvaluationKeys, loadQueryCiphertext, type EvaluationKeys } from '../fhe/ckks.ts';
import { Engine } from '../fhe/engine.ts';
import { BatchSession } from '../fhe/batch-io.ts';
import { resultSize } from '../fhe/batch-plan.ts';
import { evaluateLanes, prepareKernel } from '../fhe/batch-kernel.ts';
import { BatchPrivacy } from '../fhe/batch-privacy.ts';
import { loadRerandKey, type RerandKey } from '../fhe/privacy.ts';
import { SinglePrivacy } from '../fhe/single-privacy.ts';
import { SEAL_EXCEPTION_BUDGET, guard, noteSealError, release, sealExceptionCount, sealExceptionText, sealFault } from '../fhe/seal.ts';
import { CHUNK } from './batch-constants.ts';
import { readServerPart } from '../model/bundle.ts';

export interface EvaluateTask {
  ciphertext: Uint8Array;
  keys: { id: string; galois: Uint8Array; relin?: Uint8Array; publicKey?: Uint8Array; bytes: number };
  /** The ciphertext's index in the query, for messages ("ciphertext 3 of the encrypted query"). */
  index?: number;
}

/** Batch mode, in three phases over shared memory (see batch.ts): load, evaluate lanes, save. */
export type BatchTask =
  | { batch: 'decode'; sections: Uint8Array[]; input: SharedArrayBuffer; first: number }
  | { batch: 'evaluate'; input: SharedArrayBuffer; output: SharedArrayBuffer; lane0: number; lane1: number }
  | { batch: 'encode'; output: SharedArrayBuffer; first: number; count: number; rerandKey?: SharedArrayBuffer }
  /** Checks the query's re-randomization key before any work is done on the query. */
  | { batch: 'check-key'; rerandKey?: SharedArrayBuffer };

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

const { modelDir, keyCacheBytes, retiring, testHooks } = workerData as { modelDir: string; keyCacheBytes: number; retiring: SharedArrayBuffer; testHooks?: boolean };
const retiringFlags = new Int32Array(retiring);
const part = await readServerPart(modelDir);
const session = await CkksSession.open(part.program.params);
const engine = new Engine(session, part.program, part.masks);
const batch = part.batch ? await BatchSession.open(part.batch) : undefined;
const kernel = batch && prepareKernel(batch.plan, batch.primes);
// Circuit privacy (src/fhe/privacy.ts): results are re-randomized and flooded before they leave.
const singleFloods = part.program.privacy === 'flood';
const batchPrivacy = batch && new BatchPrivacy(batch.plan, batch.primes);

// The probe's known answer: a throwaway secret key (no client's), a ciphertext of known values.
const probeValues = Float64Array.from({ length: Math.min(16, session.slots) }, (_, i) => (i - 8) / 16);
const probeKey = new SecretKeyHolder(session, generateSecretKey(session));
const probeCiphertext = probeKey.encrypt(probeValues, part.program.inputScaleBits);

// LRU by key-set id (content hash), bounded by the bytes the loaded key sets take in the WASM
// heap: every key-switching key (one per rotation, one for relinearization) holds, for each of
// the D data primes, a two-polynomial ciphertext over the D + 1 key-level primes. Uploaded keys
// are seeded (half of that, then compressed), so counting serialized bytes would let the cache
// hold twice its budget.
const keyCache = new Map<string, { keys: EvaluationKeys; privacy?: SinglePrivacy; bytes: number }>();
let cachedBytes = 0;
const dataPrimes = part.program.params.coeffModulusBits.length - 1;
const degree = part.program.params.polyModulusDegree;
// With circuit privacy, the public key too: two polynomials over the key-level primes, and its encryptor.
const loadedKeySetBytes = ((part.program.galoisSteps.length + (part.program.relin ? 1 : 0)) * dataPrimes + (singleFloods ? 2 : 0)) * 2 * (dataPrimes + 1) * degree * 8;

/** Why this worker must be replaced (set once; the thread is then terminated by the pool). */
let retireReason: string | undefined;
let probeFailure: string | undefined;

function keysFor(k: EvaluateTask['keys']): { keys: EvaluationKeys; privacy?: SinglePrivacy } {
  const hit = keyCache.get(k.id);
  if (hit) {
    keyCache.delete(k.id);
    keyCache.set(k.id, hit);
    return hit;
  }
  if (singleFloods && !k.publicKey) throw new SealedError('bad-keys', 'the evaluation keys lack a public key: this model re-randomizes its results (circuit privacy)', 'make keys with a current `sealed keygen` (or SDK), which includes it');
  const keys = loadEvaluationKeys(session, k.galois, k.relin, part.program.galoisSteps, part.program.relin);
  let privacy: SinglePrivacy | undefined;
  try {
    privacy = singleFloods ? new SinglePrivacy(session, k.publicKey!, 2 ** part.program.noiseL2Bits!, part.program.floodSecurityBits) : undefined;
  } catch (e) {
    keys.close();
    throw e;
  }
  const entry = { keys, privacy, bytes: loadedKeySetBytes };
  keyCache.set(k.id, entry);
  cachedBytes += loadedKeySetBytes;
  for (const [id, e] of keyCache) {
    if (cachedBytes <= keyCacheBytes || keyCache.size <= 1) break;
    e.keys.close();
    e.privacy?.close();
    cachedBytes -= e.bytes;
    keyCache.delete(id);
  }
  return entry;
}

/** The query's re-randomization key, checked against this model's batch parameters. */
function rerandKeyOf(bytes: SharedArrayBuffer | undefined): RerandKey | undefined {
  if (!batch || !batchPrivacy?.enabled) return undefined;
  if (!bytes) throw new SealedError('bad-query', 'the query carries no re-randomization key: this model re-randomizes its batch results (circuit privacy)', 'encrypt with a current `sealed predict` (or SDK), which sends it');
  return loadRerandKey(new Uint8Array(bytes), batch.primes, batch.plan.params.polyModulusDegree, resultSize(batch.plan));
}

function runBatch(task: BatchTask): BatchResult {
  const t0 = performance.now();
  if (!batch || !kernel) return { error: { code: 'bad-query', message: 'this model has no batch plan', hint: 'encrypt with the single layout' }, ms: 0 };
  const LN = batch.lanes;
  try {
    if (task.batch === 'decode') {
      const input = new Uint32Array(task.input);
      task.sections.forEach((bytes, i) => batch.decodeInto(bytes, input, (task.first + i) * 2 * LN, `ciphertext ${task.first + i} of a batch of the encrypted query`));
      return { ms: performance.now() - t0 };
    }
    if (task.batch === 'evaluate') {
      // Chunks of CHUNK lanes within one prime each (the kernel's working set stays in cache).
      const input = new Uint32Array(task.input);
      const output = new Uint32Array(task.output);
      const degree = batch.plan.params.polyModulusDegree;
      for (let l = task.lane0; l < task.lane1; ) {
        const end = Math.min(l + CHUNK, task.lane1, (Math.floor(l / degree) + 1) * degree);
        evaluateLanes(kernel, input, output, l, end);
        l = end;
      }
      return { ms: performance.now() - t0 };
    }
    if (task.batch === 'check-key') {
      rerandKeyOf(task.rerandKey);
      return { ms: performance.now() - t0 };
    }
    const output = new Uint32Array(task.output);
    const size = resultSize(batch.plan);
    const rerandKey = rerandKeyOf(task.rerandKey);
    const results: Uint8Array[] = [];
    for (let o = task.first; o < task.first + task.count; o++) {
      batchPrivacy!.apply(rerandKey, output, o, LN);
      results.push(batch.encodeResult(output, o * size * LN, size, batch.plan.outputScaleBits));
    }
    return { results, ms: performance.now() - t0 };
  } catch (e) {
    return { error: plainError(e), ms: performance.now() - t0 };
  }
}

const RETRY = 'retry the request: the worker thread that failed is replaced by a fresh one';

function plainError(e: unknown): TaskError {
  if (isSealedError(e)) {
    const se = e as SealedError;
    return { code: se.code, message: se.message, hint: se.hint };
  }
  // Errors that did not pass through guard() are recorded here (SealedErrors were, in translate).
  if (noteSealError(e) === 'fault') {
    return { code: 'internal', message: 'the evaluation failed: the SEAL runtime of its worker thread trapped (WebAssembly runtime error); nothing was computed', hint: RETRY };
  }
  const text = sealExceptionText(e);
  const what = text ?? (e instanceof Error ? `${e.name}: ${e.message}` : 'unknown error');
  return { code: 'internal', message: `evaluation failed inside the worker (${what.slice(0, 200)})`, hint: 'retry; if it persists, report it with the request id' };
}

function evaluateOne(task: EvaluateTask): EvaluateResult {
  const ms = { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 };
  let t = performance.now();
  const lap = () => {
    const now = performance.now();
    const d = now - t;
    t = now;
    return d;
  };
  try {
    const { keys, privacy } = keysFor(task.keys);
    ms.keys = lap();
    const what = task.index === undefined ? 'the encrypted query' : `ciphertext ${task.index} of the encrypted query`;
    const ct = loadQueryCiphertext(session, task.ciphertext, part.program.inputScaleBits, { what });
    ms.deserialize = lap();
    let out;
    try {
      out = engine.run(ct, keys);
    } finally {
      ct.delete();
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
    const result = out.saveToArray(session.seal.ComprModeType.zstd) as Uint8Array;
    out.delete();
    ms.serialize = lap();
    return { result, ms };
  } catch (e) {
    // Errors cross the thread boundary as plain data; SealedErrors keep their code and hint.
    return { error: plainError(e), ms };
  }
}

/**
 * Doubles the known ciphertext, saves it, loads it back (precheck and all), decrypts: the
 * paths every evaluation takes. Right within 1e-3 (CKKS noise here is ~1e-6) or not healthy.
 */
function probe(): ProbeResult {
  const t0 = performance.now();
  const { seal, evaluator } = session;
  let ct, sum;
  try {
    ct = loadCiphertext(session, probeCiphertext, 'the probe ciphertext');
    sum = new seal.Ciphertext();
    evaluator.add(ct, ct, sum);
    const got = probeKey.decrypt(sum.saveToArray(seal.ComprModeType.zstd) as Uint8Array);
    const worst = Math.max(...probeValues.map((v, i) => Math.abs(got[i] - 2 * v)));
    if (!(worst < 1e-3)) probeFailure = `the probe decrypted to a wrong answer (error ${worst.toExponential(1)})`;
  } catch (e) {
    noteSealError(e);
    probeFailure = `the probe failed (${e instanceof Error ? e.name : 'error'})`;
  } finally {
    try {
      release(sum, ct);
    } catch {
      probeFailure ??= 'the probe could not release its objects';
    }
  }
  return probeFailure ? { ok: false, why: probeFailure, ms: performance.now() - t0 } : { ok: true, ms: performance.now() - t0 };
}

function runTest(task: TestTask): TestResult {
  if (!testHooks) return { exceptions: sealExceptionCount(), error: { code: 'bad-request', message: 'test tasks are refused: this pool has no test hooks' } };
  const garbage = Uint8Array.from({ length: 16 }, (_, i) => (i * 37) & 0xff);
  const { seal, context } = session;
  try {
    if (task.test === 'seal-exceptions') {
      for (let i = 0; i < task.count; i++) {
        const ct = new seal.Ciphertext();
        try {
          guard('bad-query', 'test garbage', () => ct.loadFromArray(context, garbage));
        } catch (e) {
          if (!isSealedError(e) || (e as SealedError).code === 'internal') throw e;
        } finally {
          ct.delete();
        }
      }
    } else {
      // Nothing here is recorded. The first traps hit only the throw path (valid work still
      // runs, on a stack that has run into static data); go on until valid work fails too.
      const load = (bytes: Uint8Array) => {
        const ct = new seal.Ciphertext();
        try {
          ct.loadFromArray(context, bytes);
        } finally {
          ct.delete();
        }
      };
      for (let i = 0; i < 50_000; i++) {
        try {
          load(garbage);
        } catch (e) {
          if (sealExceptionText(e) !== undefined) continue;
          try {
            load(probeCiphertext);
          } catch {
            break;
          }
        }
      }
    }
    return { exceptions: sealExceptionCount() };
  } catch (e) {
    return { exceptions: sealExceptionCount(), error: plainError(e) };
  }
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

type Task = EvaluateTask | BatchTask | ProbeTask | TestTask | { warmup: true };
type Result = EvaluateResult | BatchResult | ProbeResult | TestResult;

function dispatch(task: Task): Result {
  if ('warmup' in task) return { ms: { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 } };
  if ('probe' in task) return probe();
  if ('test' in task) return runTest(task);
  if ('batch' in task) return runBatch(task);
  return evaluateOne(task);
}

export default function run(task: Task): Result {
  // The balancer gives a retiring worker no task; should one arrive anyway, an instance that
  // trapped or failed its probe computes nothing (a wrong answer is worse than a retry).
  if (retireReason && (sealFault() || probeFailure)) {
    const error: TaskError = { code: 'internal', message: 'the worker thread that took this task is being replaced', hint: RETRY };
    const retire = { threadId, reason: retireReason };
    if ('probe' in task) return { ok: false, why: retireReason, ms: 0, retire };
    if ('test' in task) return { exceptions: sealExceptionCount(), error, retire };
    if ('batch' in task) return { error, ms: 0, retire };
    return { error, ms: { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 }, retire };
  }
  const result = dispatch(task);
  retireReason ??= mustRetire();
  if (retireReason) {
    // Before the result is posted: once the main thread sees this thread free, it is marked.
    Atomics.store(retiringFlags, threadId % retiringFlags.length, threadId);
    result.retire = { threadId, reason: retireReason };
  }
  return result;
}
