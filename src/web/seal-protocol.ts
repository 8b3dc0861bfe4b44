// Messages between the web demo's pages (app.ts, digit.ts) and their Web Worker (seal-worker.ts),
// which holds SEAL, the secret key and the SDK client. Types only.
import type { PredictStats, Prediction } from '../client/index.ts';
import type { ClientPart } from '../model/client-part.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';

export interface WorkerCalls {
  /** Loads SEAL (WebAssembly) and the model's client part; queries go to the web server at `proxy`. */
  init: {
    args: { modelUrl: string; wasmUrl: string; proxy: string };
    result: { modelId: string; model: ClientPart | TreeClientPart; /** Size of SEAL's WebAssembly, if the worker saw it. */ wasmBytes?: number };
  };
  /** Makes a key set; the secret key stays in the worker, only sizes and the keys' id come back. */
  keygen: { args: Record<string, never>; result: { evaluationKeysId: string; evaluationKeysBytes: number; secretKeyBytes: number } };
  /**
   * One record (a 28x28 image: 0..255): keys when missing, encrypt, send (the evaluation keys
   * first, once), decrypt: the SDK's predictWithStats. `secretKeyBytes`: the size of the secret
   * key the record was encrypted under (a tree model's single-record form has its own).
   */
  predict: {
    args: { record: number[] };
    result: { prediction: Prediction; stats: PredictStats; evaluationKeysId: string; secretKeyBytes: number };
  };
}

export type Op = keyof WorkerCalls;

export interface WorkerRequest<K extends Op = Op> {
  id: number;
  op: K;
  args: WorkerCalls[K]['args'];
}

export type WorkerResponse<K extends Op = Op> =
  | { id: number; ok: true; value: WorkerCalls[K]['result']; /** Time the worker spent on the call. */ ms: number }
  | { id: number; ok: false; error: { message: string; hint?: string } };
