// The threads that gather one record's parts (tree-slots.ts runPart) each need nearly all of the
// query's copies, and loading a copy is mostly SEAL expanding its seed (~3.6 of ~5 ms at ring
// 16384 and 6 primes, AMD VM). Through an exchange in shared memory each copy is expanded and
// checked by one thread, the first to claim it, and the others take its uncompressed bytes.
// Never a deadlock: a thread waits only for a copy another thread has claimed, i.e. is loading
// now; if that takes longer than `TAKE_TIMEOUT_MS` (its thread died) or failed (a bad copy), the
// waiter loads the copy itself and meets the same refusal. Pure: shared memory and Atomics, no SEAL.
import { SealedError } from '../errors.ts';

const FREE = 0;
const CLAIMED = 1;
const READY = 2;
const FAILED = 3;
/** How long a thread waits for a copy another has claimed before loading it itself. */
export const TAKE_TIMEOUT_MS = 2000;

/** The exchange's memory, made by the caller that starts the parts and handed to each (shared, not copied). */
export interface CopyExchangeBuffers {
  /** Per copy: its state and its length in bytes (Int32 pairs). */
  state: SharedArrayBuffer;
  /** Per copy, `stride` bytes: the copy as SEAL saves it uncompressed. */
  bytes: SharedArrayBuffer;
  stride: number;
}

export function allocateCopyExchange(copies: number, stride: number): CopyExchangeBuffers {
  return { state: new SharedArrayBuffer(8 * copies), bytes: new SharedArrayBuffer(copies * stride), stride };
}

export class CopyExchange {
  private readonly state: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly stride: number;

  constructor(b: CopyExchangeBuffers) {
    this.state = new Int32Array(b.state);
    this.bytes = new Uint8Array(b.bytes);
    this.stride = b.stride;
  }

  get copies(): number {
    return this.state.length / 2;
  }

  /** Whether this thread must load copy `j` (it claimed it: publish or fail it next). */
  claim(j: number): boolean {
    return Atomics.compareExchange(this.state, 2 * j, FREE, CLAIMED) === FREE;
  }

  /** Copy `j` as SEAL saved it uncompressed, for the others. */
  publish(j: number, raw: Uint8Array): void {
    if (raw.length > this.stride) {
      this.fail(j);
      throw new SealedError('internal', `a copy of ${raw.length} bytes in an exchange of ${this.stride}`);
    }
    this.bytes.set(raw, j * this.stride);
    Atomics.store(this.state, 2 * j + 1, raw.length);
    Atomics.store(this.state, 2 * j, READY);
    Atomics.notify(this.state, 2 * j);
  }

  /** Copy `j` could not be loaded: who waits for it loads it itself (and meets the same refusal). */
  fail(j: number): void {
    Atomics.store(this.state, 2 * j, FAILED);
    Atomics.notify(this.state, 2 * j);
  }

  /**
   * Copy `j` (a view of the shared bytes: read it before the exchange is dropped), once its
   * claimer has published it; undefined if it failed, was never claimed, or its claimer took
   * longer than `timeoutMs`: load it yourself then.
   */
  take(j: number, timeoutMs = TAKE_TIMEOUT_MS): Uint8Array | undefined {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const s = Atomics.load(this.state, 2 * j);
      if (s === READY) {
        const length = Atomics.load(this.state, 2 * j + 1);
        return this.bytes.subarray(j * this.stride, j * this.stride + length);
      }
      if (s !== CLAIMED) return undefined;
      const left = deadline - performance.now();
      if (left <= 0) return undefined;
      Atomics.wait(this.state, 2 * j, CLAIMED, left);
    }
  }
}
