// The server's memory budget. Everything the server holds that grows with what callers send is
// paid for out of one budget derived from the container's memory, so no mix of requests can take
// the process past it: a request is admitted only if the bytes it will hold are free now
// (otherwise 503 + Retry-After, before any of its bytes are read), and gives them back when its
// work has really stopped (not when its caller was answered).
//
// Split of the budget B (defaults; every part can be set):
//   B         = memory - max(25% of memory, 1 GiB) (an 8 GiB instance: 6 GiB, 2 GiB to spare)
//   main      = 256 MiB      the main thread's heap, Fastify, the S3 client, stream buffers
//   workers   = per worker: 192 MiB (SEAL's WASM heap, the model, scratch) + its key cache
//   key cache = B / 12, at most 512 MiB (key bytes on the main thread, shared with the workers);
//               each worker caches loaded keys, B / 24 each, at most 256 MiB (WASM heaps only grow)
//   requests  = the rest, reserved per request by its bytes (see invocations.ts)
import { totalmem } from 'node:os';
import { SealedError } from '../errors.ts';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

/** The container's memory: the cgroup limit when there is one, else the machine's. */
export function containerMemory(): number {
  const total = totalmem();
  const limit = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0;
  // Unconstrained cgroups report 0 or 2^64 - 1.
  return limit > 0 && limit < total ? limit : total;
}

export interface BudgetSplit {
  memory: number;
  budget: number;
  main: number;
  /** What the workers share, held once (a tree model's single-record masks). */
  shared: number;
  perWorker: number;
  workers: number;
  keyCache: number;
  workerKeyCache: number;
  requests: number;
}

const WORKER_BASE = 192 * MiB;
const MAIN_BASE = 256 * MiB;

/**
 * How the budget is split for `workers` threads; `budget` overrides the derived total.
 * `workerModel`: what each worker holds beyond its base for the model (a tree model's
 * single-record form: its plaintexts, one loaded key set and a query's copies, single.ts singleWorkerBytes).
 * `sharedModel`: what the workers hold once between them (its gather masks, single.ts singleMasksBytes).
 */
export function splitBudget(o: {
  workers: number;
  memory?: number;
  budget?: number;
  keyCache?: number;
  workerKeyCache?: number;
  workerModel?: number;
  sharedModel?: number;
}): BudgetSplit {
  const memory = o.memory ?? containerMemory();
  const budget = o.budget ?? memory - Math.max(memory / 4, GiB);
  const keyCache = o.keyCache ?? Math.min(512 * MiB, Math.floor(budget / 12));
  const workerKeyCache = o.workerKeyCache ?? Math.min(256 * MiB, Math.floor(budget / 24));
  const perWorker = WORKER_BASE + workerKeyCache + (o.workerModel ?? 0);
  const shared = o.sharedModel ?? 0;
  const requests = budget - MAIN_BASE - shared - o.workers * perWorker - keyCache;
  if (requests < 32 * MiB) {
    throw new SealedError(
      'bad-request',
      `a memory budget of ${Math.round(budget / MiB)} MiB leaves ${Math.round(requests / MiB)} MiB for requests after ${o.workers} workers and the key caches`,
      'give the container more memory, run fewer workers (--workers), or set a larger budget (--memory-budget-mb)',
    );
  }
  return { memory, budget, main: MAIN_BASE, shared, perWorker, workers: o.workers, keyCache, workerKeyCache, requests };
}

/** A byte semaphore that never waits: bytes are reserved now or the request is refused now. */
export class MemoryBudget {
  readonly capacity: number;
  private used = 0;
  private peak = 0;
  private readonly reclaimers: (() => void)[] = [];

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get reserved(): number {
    return this.used;
  }

  get peakReserved(): number {
    return this.peak;
  }

  /**
   * `reclaim` lets go of memory held only for reuse (batch-buffers.ts), releasing its
   * reservation; it is called before a reservation would be refused.
   */
  onPressure(reclaim: () => void): void {
    this.reclaimers.push(reclaim);
  }

  /**
   * Reserves `bytes` for `what`, or throws 503 'overloaded' (or 400 if it could never fit, with
   * `neverFits` as what to do: by default, fewer records per request).
   */
  reserve(bytes: number, what: string, neverFits = 'send fewer records per request, or run the server with more memory'): Reservation {
    const n = Math.ceil(bytes);
    if (n > this.capacity)
      throw new SealedError(
        'bad-request',
        `${what} needs ${mib(n)} of server memory, more than this server's request budget of ${mib(this.capacity)}`,
        neverFits,
      );
    if (this.used + n > this.capacity) for (const reclaim of this.reclaimers) reclaim();
    if (this.used + n > this.capacity) {
      throw new SealedError(
        'overloaded',
        `the server's memory for requests is in use (${mib(this.used)} of ${mib(this.capacity)} reserved; ${what} needs ${mib(n)})`,
        'retry after the number of seconds in Retry-After',
      );
    }
    this.used += n;
    this.peak = Math.max(this.peak, this.used);
    let held = true;
    return {
      bytes: n,
      release: () => {
        if (!held) return;
        held = false;
        this.used -= n;
      },
    };
  }
}

export interface Reservation {
  bytes: number;
  /** Idempotent. */
  release(): void;
}

const mib = (n: number) => `${(n / MiB).toFixed(n < 10 * MiB ? 1 : 0)} MiB`;
