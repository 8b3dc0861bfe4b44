// The web demo's pages' side of their Web Worker (seal-worker.ts): its calls as promises.
import type { ClientPart } from '../model/client-part.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import type { Op, WorkerCalls, WorkerRequest, WorkerResponse } from './seal-protocol.ts';

/** A tree ensemble's client part, told by its tag: the pages' bundles hold no SDK code (its isTreeClientPart). */
export const isTreeModel = (m: ClientPart | TreeClientPart): m is TreeClientPart => 'model' in m && m.model === 'trees';

/** The worker, as promises: one call at a time, each with the time the worker spent on it. */
export class SealWorker {
  private readonly w: Worker;
  private next = 1;
  private readonly pending = new Map<number, { resolve: (r: WorkerResponse) => void }>();

  constructor(url: URL) {
    this.w = new Worker(url, { type: 'module', name: 'sealed-seal' });
    this.w.onmessage = (ev: MessageEvent<WorkerResponse>) => {
      const p = this.pending.get(ev.data.id);
      this.pending.delete(ev.data.id);
      p?.resolve(ev.data);
    };
    this.w.onerror = (ev) => {
      const error = { message: `the SEAL worker failed: ${ev.message || 'it could not start'}` };
      for (const [id, p] of this.pending) p.resolve({ id, ok: false, error });
      this.pending.clear();
    };
  }

  async call<K extends Op>(op: K, args: WorkerCalls[K]['args']): Promise<{ value: WorkerCalls[K]['result']; ms: number }> {
    const id = this.next++;
    const r = await new Promise<WorkerResponse>((resolve) => {
      this.pending.set(id, { resolve });
      this.w.postMessage({ id, op, args } satisfies WorkerRequest<K>);
    });
    if (!r.ok) throw Object.assign(new Error(r.error.message), { hint: r.error.hint });
    return { value: r.value as WorkerCalls[K]['result'], ms: r.ms };
  }
}
