// The client's encryption pool (Node only; browsers encrypt on the page's thread): batch mode's
// ciphertexts are encrypted on every core, in order, a few tasks ahead of the upload.
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { CkksParams } from '../fhe/params.ts';
import { splitCiphertexts, type EncryptTask } from './encrypt-worker.ts';

/** Features per task: enough to amortize a message, few enough to keep every thread busy. */
const GROUP = 16;

export class EncryptPool {
  private readonly piscina: Piscina;
  readonly size: number;

  constructor(threads = availableParallelism()) {
    this.size = threads;
    this.piscina = new Piscina({
      filename: new URL('./encrypt-worker.ts', import.meta.url).href,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: Infinity,
    });
  }

  /**
   * Ciphertexts of features 0..features-1 for `rows` (preprocessed, at most `slots`), in order.
   * At most 2 x threads tasks are in flight, so memory stays bounded however slow the consumer.
   */
  async *encryptColumns(
    rows: ArrayLike<number>[],
    features: number,
    o: { params: CkksParams; secretKey: Uint8Array; scaleBits: number; slots: number; form?: EncryptTask['form'] },
  ): AsyncGenerator<Uint8Array> {
    const values = new SharedArrayBuffer(rows.length * features * 8);
    const view = new Float64Array(values);
    rows.forEach((r, i) => view.set(Array.from(r), i * features));
    const task = (first: number): EncryptTask => ({ ...o, values, records: rows.length, features, first, count: Math.min(GROUP, features - first) });
    const inFlight: Promise<Uint8Array>[] = [];
    let next = 0;
    const fill = () => {
      while (inFlight.length < 2 * this.size && next < features) {
        const p = this.piscina.run(task(next)) as Promise<Uint8Array>;
        p.catch(() => undefined); // awaited in order below; this only marks it handled meanwhile
        inFlight.push(p);
        next += GROUP;
      }
    };
    fill();
    while (inFlight.length) {
      const done = splitCiphertexts(await inFlight.shift()!);
      fill();
      yield* done;
    }
  }

  /** encryptColumns, gathered: every ciphertext of `rows` in one list (a tree query's batch). */
  async encryptAll(rows: ArrayLike<number>[], features: number, o: Parameters<EncryptPool['encryptColumns']>[2]): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    for await (const ct of this.encryptColumns(rows, features, o)) out.push(ct);
    return out;
  }

  close(): Promise<void> {
    return this.piscina.destroy();
  }
}
