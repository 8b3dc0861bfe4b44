// Worker thread of the evaluation pool: its own SEAL (WASM) instance, the model's program with
// every mask pre-encoded, and a small cache of loaded evaluation keys. The main thread never
// runs SEAL, so /ping answers while evaluations run here.
import { workerData } from 'node:worker_threads';
import { isSealedError, SealedError } from '../errors.ts';
import { CkksSession, loadEvaluationKeys, loadQueryCiphertext, type EvaluationKeys } from '../fhe/ckks.ts';
import { Engine } from '../fhe/engine.ts';
import { readServerPart } from '../model/bundle.ts';

export interface EvaluateTask {
  ciphertext: Uint8Array;
  keys: { id: string; galois: Uint8Array; relin?: Uint8Array; bytes: number };
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

export default function evaluate(task: EvaluateTask | { warmup: true }): EvaluateResult {
  if ('warmup' in task) return { ms: { deserialize: 0, evaluate: 0, serialize: 0, keys: 0 } };
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
    if (isSealedError(e)) {
      const se = e as SealedError;
      return { error: { code: se.code, message: se.message, hint: se.hint }, ms };
    }
    const what = e instanceof Error ? `${e.name}: ${e.message}` : 'unknown error';
    return { error: { code: 'internal', message: `evaluation failed inside the worker (${what.slice(0, 200)})` }, ms };
  }
}
