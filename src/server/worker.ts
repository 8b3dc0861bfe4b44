// Worker thread of the evaluation pool: its own SEAL (WASM) instance, the model's program with
// every mask pre-encoded, and a small cache of loaded evaluation keys. The main thread never
// runs SEAL, so /ping answers while evaluations run here.
import { workerData } from 'node:worker_threads';
import { isSealedError, SealedError } from '../errors.ts';
import { CkksSession, loadEvaluationKeys, loadQueryCiphertext, type EvaluationKeys } from '../fhe/ckks.ts';
import { Engine } from '../fhe/engine.ts';
import { BatchSession } from '../fhe/batch-io.ts';
import { resultSize } from '../fhe/batch-plan.ts';
import { evaluateLanes, prepareKernel } from '../fhe/batch-kernel.ts';
import { CHUNK } from './batch.ts';
import { readServerPart } from '../model/bundle.ts';

export interface EvaluateTask {
  ciphertext: Uint8Array;
  keys: { id: string; galois: Uint8Array; relin?: Uint8Array; bytes: number };
}

/** Batch mode, in three phases over shared memory (see batch.ts): load, evaluate lanes, save. */
export type BatchTask =
  | { batch: 'decode'; sections: Uint8Array[]; input: SharedArrayBuffer; first: number }
  | { batch: 'evaluate'; input: SharedArrayBuffer; output: SharedArrayBuffer; lane0: number; lane1: number }
  | { batch: 'encode'; output: SharedArrayBuffer; first: number; count: number };

export interface BatchResult {
  results?: Uint8Array[];
  error?: { code: string; message: string; hint?: string };
  ms: number;
}

export interface EvaluateResult {
  result?: Uint8Array;
  error?: { code: string; message: string; hint?: string };
  ms: { deserialize: number; evaluate: number; serialize: number; keys: number };
}

const { modelDir, keyCacheBytes } = workerData as { modelDir: string; keyCacheBytes: number };
const part = await readServerPart(modelDir);
const session = await CkksSession.open(part.program.params);
const engine = new Engine(session, part.program, part.masks);
const batch = part.batch ? await BatchSession.open(part.batch) : undefined;
const kernel = batch && prepareKernel(batch.plan, batch.primes);

// LRU by key-set id (content hash), bounded by the serialized size of the cached key sets.
const keyCache = new Map<string, { keys: EvaluationKeys; bytes: number }>();
let cachedBytes = 0;

function keysFor(k: EvaluateTask['keys']): EvaluationKeys {
  const hit = keyCache.get(k.id);
  if (hit) {
    keyCache.delete(k.id);
    keyCache.set(k.id, hit);
    return hit.keys;
  }
  const keys = loadEvaluationKeys(session, k.galois, k.relin, part.program.galoisSteps, part.program.relin);
  keyCache.set(k.id, { keys, bytes: k.bytes });
  cachedBytes += k.bytes;
  for (const [id, e] of keyCache) {
    if (cachedBytes <= keyCacheBytes || keyCache.size <= 1) break;
    e.keys.close();
    cachedBytes -= e.bytes;
    keyCache.delete(id);
  }
  return keys;
}

function runBatch(task: BatchTask): BatchResult {
  const t0 = performance.now();
  if (!batch || !kernel) return { error: { code: 'bad-query', message: 'this model has no batch plan', hint: 'encrypt with the single layout' }, ms: 0 };
  const LN = batch.lanes;
  try {
    if (task.batch === 'decode') {
      const input = new Uint32Array(task.input);
      task.sections.forEach((bytes, i) => batch.decodeInto(bytes, input, (task.first + i) * 2 * LN));
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
    const output = new Uint32Array(task.output);
    const size = resultSize(batch.plan);
    const results: Uint8Array[] = [];
    for (let o = task.first; o < task.first + task.count; o++) results.push(batch.encodeResult(output, o * size * LN, size, batch.plan.outputScaleBits));
    return { results, ms: performance.now() - t0 };
  } catch (e) {
    return { error: plainError(e), ms: performance.now() - t0 };
  }
}

function plainError(e: unknown): { code: string; message: string; hint?: string } {
  if (isSealedError(e)) {
    const se = e as SealedError;
    return { code: se.code, message: se.message, hint: se.hint };
  }
  const what = e instanceof Error ? `${e.name}: ${e.message}` : 'unknown error';
  return { code: 'internal', message: `evaluation failed inside the worker (${what.slice(0, 200)})` };
}

export default function evaluate(task: EvaluateTask | BatchTask | { warmup: true }): EvaluateResult | BatchResult {
  if ('warmup' in task) return { ms: { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 } };
  if ('batch' in task) return runBatch(task);
  const ms = { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 };
  let t = performance.now();
  const lap = () => {
    const now = performance.now();
    const d = now - t;
    t = now;
    return d;
  };
  try {
    const keys = keysFor(task.keys);
    ms.keys = lap();
    const ct = loadQueryCiphertext(session, task.ciphertext, part.program.inputScaleBits);
    ms.deserialize = lap();
    let out;
    try {
      out = engine.run(ct, keys);
    } finally {
      ct.delete();
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
