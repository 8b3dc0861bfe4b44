// The web demo's Web Worker (bundled by scripts/build-web.ts into out/web/seal-worker.js), for
// both pages. SEAL (WebAssembly), the model's client part, the secret key and the SDK client live
// here, so key generation (seconds for a tree model's single-record form), encryption, the upload
// of the evaluation keys and decryption never block the page. It uses the SDK (src/client/index.ts) as any program would, with the page's
// web server as its proxy: only the evaluation keys and the encrypted image leave, and only
// sizes, timings and the decrypted prediction are posted back to the page. The secret key is
// never posted out of the worker.
import { createClient, type SealedClient } from '../client/index.ts';
import type { Op, WorkerCalls, WorkerRequest, WorkerResponse } from './seal-protocol.ts';

let client: SealedClient | undefined;

const need = (): SealedClient => {
  if (!client) throw new Error('the worker is not initialised');
  return client;
};

type Handler<K extends Op> = (args: WorkerCalls[K]['args']) => Promise<WorkerCalls[K]['result']> | WorkerCalls[K]['result'];

const handlers: { [K in Op]: Handler<K> } = {
  async init({ modelUrl, wasmUrl, proxy }) {
    client ??= await createClient({ model: new URL(modelUrl), wasmUrl, proxy });
    const wasm = performance.getEntriesByType('resource').find((e) => e.name === wasmUrl) as PerformanceResourceTiming | undefined;
    return { modelId: client.modelId, model: client.model, wasmBytes: wasm?.decodedBodySize || undefined };
  },
  keygen() {
    const k = need().generateKeys();
    return { evaluationKeysId: k.evaluationKeysId, evaluationKeysBytes: k.evaluationKeys.length, secretKeyBytes: k.secretKey.length };
  },
  async predict({ record }) {
    const c = need();
    // The SDK checks that the result names this query's SHA-256 before it decrypts it.
    const out = await c.predictWithStats([record]);
    const keys = c.keys!;
    const single = out.stats.layout === 'single' ? keys.singleRecord : undefined;
    return {
      prediction: out.predictions[0],
      stats: out.stats,
      evaluationKeysId: (single ?? keys).evaluationKeysId,
      secretKeyBytes: (single ?? keys).secretKey.length,
    };
  },
};

const scope = globalThis as unknown as { onmessage: ((ev: MessageEvent<WorkerRequest>) => void) | null; postMessage(message: WorkerResponse): void };

// One call at a time, in order.
let queue: Promise<void> = Promise.resolve();
scope.onmessage = (ev) => {
  const { id, op, args } = ev.data;
  queue = queue.then(async () => {
    const t0 = performance.now();
    try {
      const handler = handlers[op] as Handler<Op>;
      if (!handler) throw new Error(`unknown call ${String(op)}`);
      const value = await handler(args);
      scope.postMessage({ id, ok: true, value, ms: performance.now() - t0 });
    } catch (e) {
      const err = e as { message?: string; hint?: string };
      scope.postMessage({ id, ok: false, error: { message: err.message ?? String(e), hint: err.hint } });
    }
  });
};
