// The client's encryption pool (Node only; browsers encrypt on the page's thread): batch mode's
// ciphertexts are encrypted on every core, in order, a few tasks ahead of the upload.
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { reviveError, type PlainError } from '../errors.ts';
import type { CkksParams } from '../fhe/params.ts';
import { splitCiphertexts, type DecryptTask, type EncryptTask } from './encrypt-worker.ts';

/** Features per task: enough to amortize a message, few enough to keep every thread busy. */
const GROUP = 16;

type TransferList = NonNullable<Parameters<Piscina['run']>[1]>['transferList'];

/** A batch's values in shared memory (encryptColumns' layout), which every task of the pool reads without a copy. */
export const sharedMatrix = (length: number): Float64Array<SharedArrayBuffer> => new Float64Array(new SharedArrayBuffer(length * 8));

export class EncryptPool {
  private readonly piscina: Piscina;
  readonly size: number;
  /**
   * Buffers of tasks whose ciphertexts have been consumed (encryptColumns with `recycle`), handed
   * to later tasks to write into. A LeNet batch is 46 tasks of 29 MB: fresh, each cost its thread
   * a page fault per 4 KiB on first touch (~12 us each on this project's VMs) and the main thread
   * the external memory behind full collections of its heap.
   */
  private readonly spare: ArrayBuffer[] = [];
  /** Settles when the column run before the newest has handed its last task to the pool. */
  private turn: Promise<void> = Promise.resolve();
  /**
   * Each secret key given to a run, copied once into shared memory under a number: the tasks
   * carry that copy by reference and the workers keep a key loaded while the number is the same.
   * By the key's SHA-256 (callers may pass the same key in a new array each run). Kept (a run's
   * tasks may still be loading it when the next run starts) and zeroed at close.
   */
  private readonly keys = new Map<string, { id: number; shared: Uint8Array<SharedArrayBuffer> }>();

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
   * Ciphertexts of features 0..features-1 of the first `records` records of `matrix`
   * (preprocessed, column by column: feature i of record r at i slots + r, as
   * preprocessColumnsInto writes them; at most `slots` records; shared memory, sharedMatrix), in order.
   * At most 2 x threads tasks are in flight, so memory stays bounded however slow the consumer.
   *
   * Concurrent runs take turns: a run hands tasks to the pool once the run before it has handed
   * over its last. Interleaved, two queries finished encrypting together, then were uploaded,
   * downloaded and unpacked together: main-thread work, with the pool idle (12 s at ~1.5 of 2
   * cores busy for two batches of model (b)). In turns, the first query's upload and the
   * server's work on it overlap the second's encryption.
   *
   * `recycle`: the caller is done with each ciphertext once it asks for the next (it copies or
   * sends it before), so a task's buffer goes back to the pool once its last ciphertext has been
   * asked past, and a later task writes into it. Not for callers that keep the ciphertexts.
   */
  async *encryptColumns(
    matrix: Float64Array<SharedArrayBuffer>,
    records: number,
    features: number,
    o: { params: CkksParams; secretKey: Uint8Array; scaleBits: number; slots: number; form?: EncryptTask['form'] },
    recycle = false,
  ): AsyncGenerator<Uint8Array> {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const before = this.turn;
    this.turn = before.then(() => mine);
    await before;
    // The workers read the whole buffer from its start (encrypt-worker.ts): a view further in would be misread.
    if (matrix.byteOffset !== 0) throw new Error('encryptColumns: the matrix must start its shared buffer (sharedMatrix)');
    const values = matrix.buffer;
    const { id: keyId, shared: secretKey } = this.sharedKey(o.secretKey);
    const task = (first: number): EncryptTask => ({ ...o, secretKey, keyId, values, records, first, count: Math.min(GROUP, features - first) });
    const inFlight: Promise<Uint8Array>[] = [];
    let next = 0;
    const fill = () => {
      while (inFlight.length < 2 * this.size && next < features) {
        const into = recycle ? this.spare.pop() : undefined;
        // Moved to the thread, not copied (piscina checks for an array; its type follows the options form of postMessage).
        const transferList = (into ? [into] : undefined) as unknown as TransferList;
        const p = this.piscina.run(into ? { ...task(next), into } : task(next), { transferList }) as Promise<Uint8Array>;
        p.catch(() => undefined); // awaited in order below; this only marks it handled meanwhile
        inFlight.push(p);
        next += GROUP;
      }
      // The next run's tasks queue behind this run's last ones: the pool never waits between runs.
      if (next >= features) release();
    };
    try {
      fill();
      while (inFlight.length) {
        const bytes = await inFlight.shift()!;
        const done = splitCiphertexts(bytes);
        fill();
        yield* done;
        // Asked past its last ciphertext: the caller is done with this buffer (see `recycle`).
        if (recycle && this.spare.length <= 2 * this.size) this.spare.push(bytes.buffer as ArrayBuffer);
      }
    } finally {
      release(); // a run given up early (its upload failed) lets the next go on
    }
  }

  /** encryptColumns, gathered: every ciphertext of `rows` in one list (a tree query's batch). */
  async encryptAll(rows: ArrayLike<number>[], features: number, o: Parameters<EncryptPool['encryptColumns']>[3]): Promise<Uint8Array[]> {
    const matrix = sharedMatrix(features * o.slots);
    rows.forEach((r, i) => {
      for (let j = 0; j < features; j++) matrix[j * o.slots + i] = r[j];
    });
    const out: Uint8Array[] = [];
    for await (const ct of this.encryptColumns(matrix, rows.length, features, o)) out.push(ct);
    return out;
  }

  /**
   * Each of `sections` (batch-mode result ciphertexts under `o.secretKey`) decrypted into its
   * slots, in order, split evenly over the threads (session.ts decryptScoresWith).
   */
  async decryptAll(sections: Uint8Array[], o: { params: CkksParams; secretKey: Uint8Array }): Promise<Float64Array[]> {
    const { id: keyId, shared: secretKey } = this.sharedKey(o.secretKey);
    const per = Math.ceil(sections.length / this.size);
    const slots = o.params.polyModulusDegree / 2;
    const tasks: Promise<Float64Array | { error: PlainError }>[] = [];
    for (let first = 0; first < sections.length; first += per) {
      // Views of a result in shared memory (predict reads it so) go as they are: the thread reads
      // them in place. Otherwise a task's ciphertexts are copied into one buffer of their own and
      // moved to its thread: posted as views of an ordinary buffer, each message cloned the whole
      // result (100 MB for a LeNet batch: 1.4 s of the main thread and 0.8 s of each thread's,
      // 2026-12-07).
      const mine = sections.slice(first, first + per);
      if (mine.every((c) => c.buffer instanceof SharedArrayBuffer)) {
        const task: DecryptTask = { decrypt: mine, params: o.params, secretKey, keyId };
        tasks.push(this.piscina.run(task) as Promise<Float64Array | { error: PlainError }>);
        continue;
      }
      const buffer = new ArrayBuffer(mine.reduce((a, c) => a + c.length, 0));
      let at = 0;
      const decrypt = mine.map((c) => {
        const view = new Uint8Array(buffer, at, c.length);
        view.set(c);
        at += c.length;
        return view;
      });
      const task: DecryptTask = { decrypt, params: o.params, secretKey, keyId };
      tasks.push(this.piscina.run(task, { transferList: [buffer] as never }) as Promise<Float64Array | { error: PlainError }>);
    }
    const out: Float64Array[] = [];
    for (const all of await Promise.all(tasks)) {
      if ('error' in all) throw reviveError(all.error);
      for (let at = 0; at < all.length; at += slots) out.push(all.subarray(at, at + slots));
    }
    return out;
  }

  private sharedKey(key: Uint8Array): { id: number; shared: Uint8Array<SharedArrayBuffer> } {
    const digest = createHash('sha256').update(key).digest('hex');
    let k = this.keys.get(digest);
    if (!k) {
      const shared = new Uint8Array(new SharedArrayBuffer(key.length));
      shared.set(key);
      k = { id: this.keys.size + 1, shared };
      this.keys.set(digest, k);
    }
    return k;
  }

  async close(): Promise<void> {
    this.spare.length = 0;
    await this.piscina.destroy();
    for (const { shared } of this.keys.values()) shared.fill(0);
    this.keys.clear();
  }
}
