// The evaluation pool: piscina worker threads, one SEAL instance each; as many as CPUs.
//
// Workers heal: a worker whose SEAL instance wore out (too many exceptions) or broke (a WASM
// trap, a failed probe) marks itself in `retiring` before it posts its last result; the
// balancer below gives a marked worker no task, and when the result arrives the pool
// terminates the thread. Piscina then starts a fresh one (a new WASM instance) to keep
// minThreads, and queued tasks wait for it. See worker.ts for when a worker retires.
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { maskBuilds, type SharedMasks } from '../fhe/gather-kernel.ts';
import { Piscina } from 'piscina';
import type {
  BatchResult,
  BatchTask,
  EvaluateResult,
  EvaluateTask,
  ProbeResult,
  Retirement,
  TestResult,
  TestTask,
  TreeBatchTask,
  TreeCombineTask,
  TreePartTask,
  TreeRecordTask,
  TreeResult,
} from './worker-protocol.ts';

export interface PoolOptions {
  modelDir: string;
  workers?: number;
  keyCacheBytes?: number;
  /** Called when a worker is retired (for the server's log): which thread, and why. */
  onRetire?: (r: Retirement) => void;
  /** A tree model's single-record masks, shared by the workers (served-model.ts); else each builds its own. */
  singleMasks?: SharedMasks;
  /** TEST-ONLY: lets runTest() drive a worker's SEAL into failure (test/light/worker-heal.test.ts). */
  testHooks?: boolean;
  /** A pool with work that shows no progress for this long is stuck (default STALL_MS). */
  stallMs?: number;
}

/** A probe answer is reused this long: /ping may come every second, from several callers. */
const PROBE_TTL_MS = 2000;
/** probe() waits this long for its task; a busy pool queues it behind evaluations. */
const PROBE_WAIT_MS = 1000;
/**
 * A pool with work in hand that has shown no progress for this long is stuck. Progress is a
 * finished task, or a heartbeat from a worker inside a long one (a tree-ensemble query runs
 * for minutes as one task and beats after every group of leaves: see `heartbeat`). Tasks of
 * the other models (one ciphertext, or one phase of a batch) take under a second to a few
 * seconds; a request's deadline is 60 s.
 */
const STALL_MS = 60_000;
/**
 * Slots of the shared retiring marks, indexed by threadId modulo this. Thread ids are unique in
 * a process, so a mark names its thread; two live workers share a slot only when their ids
 * differ by a multiple of this.
 */
const RETIRE_SLOTS = 1024;
/** Retirements remembered for inspection (workersReplaced counts them all). */
const RETIREMENTS_KEPT = 50;

export class EvaluationPool {
  private readonly piscina: Piscina;
  readonly size: number;
  /** threadId of a retiring worker at threadId % RETIRE_SLOTS, written by the worker itself. */
  private readonly retiring = new Int32Array(new SharedArrayBuffer(4 * RETIRE_SLOTS));
  /** Bumped by workers (Atomics.add) while a long task makes progress; read by probe(). */
  private readonly heartbeat = new Int32Array(new SharedArrayBuffer(4));
  private lastBeat = 0;
  private readonly stallMs: number;
  private readonly retired = new Set<number>();
  private readonly onRetire?: (r: Retirement) => void;
  private replaced = 0;
  /** The latest retirements, oldest first: which thread, why, when (ISO time). */
  readonly retirements: (Retirement & { at: string })[] = [];
  private probed: { ok: boolean; at: number } | undefined;
  private probing: Promise<boolean> | undefined;
  private pending = 0;
  private lastProgress = performance.now();

  private readonly singleMasks?: SharedMasks;

  constructor(o: PoolOptions) {
    this.singleMasks = o.singleMasks;
    this.size = o.workers ?? availableParallelism();
    this.onRetire = o.onRetire;
    this.stallMs = o.stallMs ?? STALL_MS;
    this.piscina = new Piscina({
      filename: new URL('./worker.ts', import.meta.url).href,
      minThreads: this.size,
      maxThreads: this.size,
      idleTimeout: Infinity,
      // Workers wait for tasks without blocking their event loop, so their timers fire between
      // tasks (the flood masks they make ahead: worker.ts).
      atomics: 'async',
      workerData: {
        modelDir: o.modelDir,
        keyCacheBytes: o.keyCacheBytes ?? 512 * 1024 * 1024,
        retiring: this.retiring.buffer,
        heartbeat: this.heartbeat.buffer,
        testHooks: o.testHooks === true,
        singleMasks: o.singleMasks,
      },
      // An idle worker that is not retiring (one task per worker, as piscina's default does).
      loadBalancer: (_task, workers) => workers.find((w) => w.currentUsage === 0 && !this.isRetiring(w.id)) ?? null,
    });
  }

  /** How many times the workers built the shared single-record masks (tests: once), or undefined without them. */
  get singleMasksBuilds(): number | undefined {
    return this.singleMasks && maskBuilds(this.singleMasks);
  }

  private isRetiring(threadId: number): boolean {
    return Atomics.load(this.retiring, threadId % RETIRE_SLOTS) === threadId;
  }

  /** Every task's result passes here: a worker that asks to retire is terminated. */
  private track<R extends { retire?: Retirement }>(p: Promise<R>): Promise<R> {
    this.pending++;
    return p.then(
      (r) => {
        this.settled();
        if (r.retire) this.retire(r.retire);
        return r;
      },
      (e: unknown) => {
        this.settled();
        throw e;
      },
    );
  }

  private settled(): void {
    this.pending--;
    this.lastProgress = performance.now();
  }

  private retire(r: Retirement): void {
    if (this.retired.has(r.threadId)) return;
    this.retired.add(r.threadId);
    this.replaced++;
    this.retirements.push({ ...r, at: new Date().toISOString() });
    if (this.retirements.length > RETIREMENTS_KEPT) this.retirements.shift();
    // Idle by now (the balancer skips it): terminating it fails no task.
    void this.piscina.threads.find((t) => t.threadId === r.threadId)?.terminate();
    this.onRetire?.(r);
  }

  /** An aborted signal drops the task if it is still queued (a running evaluation finishes). */
  run(task: EvaluateTask, signal?: AbortSignal): Promise<EvaluateResult> {
    return this.track(this.piscina.run(task, { signal }) as Promise<EvaluateResult>);
  }

  /** `transfer`: buffers handed to the worker instead of copied (the caller gives them up). */
  runBatch(task: BatchTask, signal?: AbortSignal, transfer?: ArrayBuffer[]): Promise<BatchResult> {
    return this.track(this.piscina.run(task, { signal, transferList: transfer as never }) as Promise<BatchResult>);
  }

  /** A tree-ensemble query's batch, a part of a batch, or the parts' combination; `transfer`: buffers given up by the caller. */
  runTrees(task: TreeBatchTask | TreePartTask | TreeCombineTask | TreeRecordTask, signal?: AbortSignal, transfer?: ArrayBuffer[]): Promise<TreeResult> {
    return this.track(this.piscina.run(task, { signal, transferList: transfer as never }) as Promise<TreeResult>);
  }

  /** TEST-ONLY: refused by the workers unless the pool was made with `testHooks`. */
  runTest(task: TestTask): Promise<TestResult> {
    return this.track(this.piscina.run(task) as Promise<TestResult>);
  }

  /**
   * Whether the pool can evaluate, for GET /ping: a worker doubles a known ciphertext under a
   * throwaway key and checks the decrypted answer (a few ms). A worker that fails it is retired
   * like one that traps, so the probe also heals. The answer is reused for 2 s (`maxAgeMs`).
   * A busy pool queues the probe behind evaluations: after 1 s the pool answers from what it
   * knows (the last probe's answer) as long as tasks keep finishing; a pool with work that has
   * shown no progress (a finished task or a worker's heartbeat) for 60 s, or that is closed,
   * answers false. Never rejects.
   */
  async probe(maxAgeMs = PROBE_TTL_MS): Promise<boolean> {
    if (this.probed && performance.now() - this.probed.at < maxAgeMs) return this.probed.ok;
    this.probing ??= this.probeOnce();
    const wait = new AbortController();
    const late = new Promise<undefined>((resolve) => {
      const timer = setTimeout(resolve, PROBE_WAIT_MS);
      wait.signal.addEventListener('abort', () => clearTimeout(timer));
    });
    const answer = await Promise.race([this.probing, late]);
    wait.abort();
    if (answer !== undefined) return answer;
    const beat = Atomics.load(this.heartbeat, 0);
    if (beat !== this.lastBeat) {
      this.lastBeat = beat;
      this.lastProgress = performance.now();
    }
    const stuck = this.pending > 0 && performance.now() - this.lastProgress > this.stallMs;
    return !stuck && (this.probed?.ok ?? true);
  }

  private async probeOnce(): Promise<boolean> {
    let ok: boolean;
    try {
      ok = (await this.track(this.piscina.run({ probe: true }) as Promise<ProbeResult>)).ok;
    } catch {
      ok = false;
    }
    this.probed = { ok, at: performance.now() };
    this.probing = undefined;
    return ok;
  }

  /** Workers retired and replaced since the pool started (a log-friendly reason for each is in `retirements`). */
  get workersReplaced(): number {
    return this.replaced;
  }

  get queued(): number {
    return this.piscina.queueSize;
  }

  /** The worker threads (piscina replaces one that dies). */
  get threads(): readonly Worker[] {
    return this.piscina.threads;
  }

  /** Waits until every worker has loaded SEAL and the model (a worker answers only then). */
  async ready(): Promise<void> {
    await Promise.all(Array.from({ length: this.size }, () => this.track(this.piscina.run({ warmup: true }) as Promise<EvaluateResult>)));
  }

  close(): Promise<void> {
    return this.piscina.destroy();
  }
}
