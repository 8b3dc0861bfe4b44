// Batch mode on the server: the query's ciphertexts arrive as a stream, a batch at a time
// (one ciphertext per input feature, one record per slot). For each batch, three phases run on
// every worker of the pool over shared memory:
//   load      seeded sections (what clients send, seeded-batch.ts) are kept as they arrive, in
//             one buffer, and each prime's residues are unpacked and expanded just before that
//             prime is evaluated; SEAL's own forms (older clients) are loaded whole, all primes
//   evaluate  each worker takes chunks of lanes (coefficients of one prime); chunks are
//             independent, so the split costs nothing and there is no merge. A plan that
//             rescales (batch-plan.ts) stops at the second layer's values, which are then
//             rescaled by rows (a rescale mixes every prime of a polynomial) and finished by
//             chunks of the primes left
//   save      the result ciphertexts are flooded and saved (one per output)
// Prime by prime, a batch holds its sections (13/32 of its residues' bytes) and two primes'
// residues (one evaluated while the next is unpacked) instead of every prime's: 0.8 GiB instead of
// 1.6 for an MNIST MLP with two activations at ring 16384 (16 primes), and fresh memory is paid
// for page by page on first touch (~10 us per 4 KiB page on this project's CI VMs, more with two
// threads faulting at once: batch-buffers.ts).
import { reviveError, SealedError } from '../errors.ts';
import { dataPrimesOf, outputsOf, rescalesOf, outputPrimesOf, resultSize, type BatchPlan } from '../fhe/batch-plan.ts';
import { isSeededSection, seededBytes } from '../fhe/seeded-batch.ts';
import type { BatchResult } from './worker-protocol.ts';
import type { EvaluationPool } from './pool.ts';
import type { BatchBuffers } from './batch-buffers.ts';
import type { Reservation } from './budget.ts';
import { CHUNK, LOAD_GROUP } from './batch-constants.ts';
import { wholeBatchMemory } from './batch-memory.ts';
import { batchCount } from './query-checks.ts';
import { QUERY_UNCHANGED_HINT as HINT } from '../wire/format.ts';

/**
 * Evaluation tasks per worker and batch (per prime, prime by prime): few, so a worker rarely waits
 * for the main thread (busy streaming the next batch) to hand it more work; more than one, to balance.
 */
const TASKS_PER_WORKER = 4;
/** Unpacking tasks per worker and prime. */
const DECODES_PER_WORKER = 2;

export interface BatchTimings {
  load: number;
  evaluate: number;
  save: number;
  /** Wall time of the evaluate phases (all workers), summed over batches. */
  evaluate_wall: number;
  batches: number;
}

export interface BatchOptions {
  signal?: AbortSignal;
  /** The query's re-randomization key (circuit privacy), in shared memory. */
  rerandKey?: SharedArrayBuffer;
  /** Buffers kept from earlier requests, and where this one's go back. */
  buffers?: BatchBuffers;
  /** Has the stream read its next section straight into `dst` (WireStream.into): a seeded batch's go to their place. */
  into?: (dst: Uint8Array) => void;
  /** Reserves what a batch of SEAL's own forms needs beyond batchMemory (wholeBatchMemory); throws when it cannot. */
  reserve?: (bytes: number) => Reservation;
}

function check(r: BatchResult): BatchResult {
  if (r.error) throw reviveError(r.error);
  return r;
}

/**
 * Evaluates every batch of the query; yields the result ciphertexts in order (outputs of batch
 * 0, then batch 1, ...). `sections` must hold exactly batches x inputs ciphertexts.
 */
export async function* evaluateBatches(
  plan: BatchPlan,
  records: number,
  sections: AsyncIterable<Uint8Array>,
  pool: EvaluationPool,
  timings: BatchTimings,
  o: BatchOptions = {},
): AsyncGenerator<Uint8Array> {
  const { signal, rerandKey, buffers } = o;
  // A bad (or missing) re-randomization key is refused before any of the query is read.
  if (plan.privacy === 'flood') check(await pool.runBatch({ batch: 'check-key', rerandKey }, signal));
  const N = plan.params.polyModulusDegree;
  const primes = dataPrimesOf(plan);
  const lanes = primes * N;
  const outputLanes = outputPrimesOf(plan) * N;
  const batches = batchCount(plan, records);
  const outs = outputsOf(plan);
  const size = resultSize(plan);
  const slot = seededBytes(primes, N);
  // Buffers are taken when first needed (kept from an earlier request when there is one:
  // batch-buffers.ts) and all given back at the end.
  const held: SharedArrayBuffer[] = [];
  const hold = (bytes: number) => {
    const b = buffers?.take(bytes) ?? new SharedArrayBuffer(bytes);
    held.push(b);
    return b;
  };
  const output = hold(outs * size * outputLanes * 4);
  // A plan that rescales: the kernel writes the values the first rescale divides here; they are
  // rescaled (their rows split over the workers), and the layers after run over the lanes the
  // rescale leaves, into the next rescale's values or, after the last, into `output`.
  const rescales = rescalesOf(plan);
  const values = rescales.map((r) => hold(r.rows * r.size * r.primesBefore * N * 4));
  // By batch parity: batch b + 1 streams in while batch b is evaluated.
  const arenas: SharedArrayBuffer[] = [];
  const wholes: SharedArrayBuffer[] = [];
  let primeInputs: SharedArrayBuffer[] | undefined;
  let extra: Reservation | undefined;
  const it = sections[Symbol.asyncIterator]();
  // Every task handed to the pool, so that no task still works on the buffers when this returns.
  const running = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    running.add(p);
    p.then(
      () => running.delete(p),
      () => running.delete(p),
    );
    return p;
  };
  const add = (k: 'load' | 'evaluate' | 'save', rs: BatchResult[]) => {
    for (const r of rs) timings[k] += r.ms;
  };
  /** Tasks' results once all have settled (none left on the buffers), their times added; throws the first error. */
  const settle = async (k: 'load' | 'evaluate' | 'save', tasks: Promise<BatchResult>[]): Promise<BatchResult[]> => {
    add(
      k,
      (await Promise.allSettled(tasks)).flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
    );
    return (await Promise.all(tasks)).map(check);
  };
  const nextSection = async (b: number, i: number): Promise<Uint8Array> => {
    const next = await it.next();
    if (next.done)
      throw new SealedError('bad-query', `the query ends after ${b * plan.inputs + i} ciphertexts; ${records} records need ${batches * plan.inputs}`, HINT);
    return next.value;
  };

  type Loaded = { arena: SharedArrayBuffer } | { whole: SharedArrayBuffer };
  const load = async (b: number): Promise<Loaded> => {
    const first = await nextSection(b, 0);
    if (isSeededSection(first)) {
      // Kept as they arrive: unpacked a prime at a time (evaluateSeeded).
      const arena = (arenas[b % 2] ??= hold(plan.inputs * slot));
      const bytes = new Uint8Array(arena);
      for (let i = 0, s = first; ;) {
        const what = `ciphertext ${i} of a batch of the encrypted query`;
        if (!isSeededSection(s)) throw new SealedError('bad-query', `${what} is not a seeded batch ciphertext, as the batch's first is`, HINT);
        if (s.length !== slot) throw new SealedError('bad-query', `${what} has ${s.length} bytes, expected ${slot}`, HINT);
        if (s.buffer !== arena || s.byteOffset !== i * slot) bytes.set(s, i * slot);
        if (++i === plan.inputs) return { arena };
        o.into?.(bytes.subarray(i * slot, (i + 1) * slot));
        s = await nextSection(b, i);
      }
    }
    // SEAL's own forms (older clients): loaded whole, every prime's residues, in groups.
    extra ??= o.reserve?.(wholeBatchMemory(plan, batches));
    const whole = (wholes[b % 2] ??= hold(plan.inputs * 2 * lanes * 4));
    const loads: Promise<BatchResult>[] = [];
    let group: Uint8Array[] = [first];
    let at = 0;
    try {
      for (let i = 1; i <= plan.inputs; i++) {
        if (group.length === LOAD_GROUP || i === plan.inputs) {
          // Each section owns its buffer (the stream reader copies it out): move, not copy.
          loads.push(
            track(
              pool.runBatch(
                { batch: 'decode', sections: group, input: whole, first: at },
                signal,
                group.map((g) => g.buffer as ArrayBuffer),
              ),
            ),
          );
          at = i;
          group = [];
        }
        if (i < plan.inputs) group.push(await nextSection(b, i));
      }
    } finally {
      // Whatever happens, no task of this batch is left running on the buffer.
      await Promise.allSettled(loads);
    }
    await settle('load', loads);
    return { whole };
  };

  /** Lane tasks over [lane0, lane1) (one prime's lanes with `onePrime`). */
  const evaluations = (input: SharedArrayBuffer, lane0: number, lane1: number, onePrime: boolean) => {
    const tasks: Promise<BatchResult>[] = [];
    const span = Math.ceil((lane1 - lane0) / CHUNK / (pool.size * TASKS_PER_WORKER)) * CHUNK;
    for (let l = lane0; l < lane1; l += span)
      tasks.push(track(pool.runBatch({ batch: 'evaluate', input, output: values[0] ?? output, lane0: l, lane1: Math.min(l + span, lane1), onePrime }, signal)));
    return tasks;
  };

  /** A plan that rescales, once every prime is evaluated: each rescale (by rows), then the layers after it (by the lanes it leaves). */
  const finishRescaled = async () => {
    for (const [j, r] of rescales.entries()) {
      const per = Math.ceil(r.rows / (pool.size * TASKS_PER_WORKER));
      const rows: Promise<BatchResult>[] = [];
      for (let first = 0; first < r.rows; first += per)
        rows.push(track(pool.runBatch({ batch: 'rescale', values: values[j], first, count: Math.min(per, r.rows - first), point: j }, signal)));
      await settle('evaluate', rows);
      const after = r.primesAfter * N;
      const span = Math.ceil(after / CHUNK / (pool.size * TASKS_PER_WORKER)) * CHUNK;
      const lanesAfter: Promise<BatchResult>[] = [];
      for (let l = 0; l < after; l += span)
        lanesAfter.push(
          track(
            pool.runBatch(
              { batch: 'after-rescale', values: values[j], output: values[j + 1] ?? output, lane0: l, lane1: Math.min(l + span, after), point: j },
              signal,
            ),
          ),
        );
      await settle('evaluate', lanesAfter);
    }
  };

  /** A seeded batch, prime by prime: prime p + 1 is unpacked while prime p is evaluated. */
  const evaluateSeeded = async (arena: SharedArrayBuffer) => {
    const inputs = (primeInputs ??= [hold(plan.inputs * 2 * N * 4), hold(plan.inputs * 2 * N * 4)]);
    const from = new SharedArrayBuffer(plan.inputs * 4); // each ciphertext's keystream position
    const per = Math.ceil(plan.inputs / (pool.size * DECODES_PER_WORKER));
    const decode = (p: number) => {
      const tasks: Promise<BatchResult>[] = [];
      for (let first = 0; first < plan.inputs; first += per) {
        const count = Math.min(per, plan.inputs - first);
        tasks.push(track(pool.runBatch({ batch: 'decode-prime', arena, slot, first, count, prime: p, from, input: inputs[p % 2] }, signal)));
      }
      return settle('load', tasks);
    };
    let decoding = decode(0);
    try {
      for (let p = 0; p < primes; p++) {
        await decoding;
        // Queued before the next prime's unpacking, which runs as workers free up.
        const evals = evaluations(inputs[p % 2], p * N, (p + 1) * N, true);
        if (p + 1 < primes) {
          decoding = decode(p + 1);
          decoding.catch(() => undefined); // awaited at the top of the next round
        }
        await settle('evaluate', evals);
      }
    } finally {
      await decoding.catch(() => undefined);
    }
  };

  let loading = load(0);
  loading.catch(() => undefined); // awaited below
  try {
    yield* run();
  } finally {
    await loading.catch(() => undefined);
    await Promise.allSettled([...running]);
    buffers?.give(held);
    extra?.release();
  }
  async function* run(): AsyncGenerator<Uint8Array> {
    for (let b = 0; b < batches; b++) {
      const loaded = await loading;
      if (b + 1 < batches) {
        loading = load(b + 1);
        loading.catch(() => undefined); // awaited at the top of the next round
      }
      const t0 = performance.now();
      if ('arena' in loaded) await evaluateSeeded(loaded.arena);
      else await settle('evaluate', evaluations(loaded.whole, 0, lanes, false));
      if (rescales.length) await finishRescaled();
      timings.evaluate_wall += performance.now() - t0;
      // A task per result, each handed on once it and those before it are saved: the results'
      // upload then overlaps their saving (until 2026-12-07 one task per worker, all awaited first).
      const saves: Promise<BatchResult>[] = [];
      for (let o = 0; o < outs; o++) saves.push(track(pool.runBatch({ batch: 'encode', output, first: o, count: 1, rerandKey }, signal)));
      try {
        for (const saving of saves) {
          const saved = await saving;
          add('save', [saved]);
          yield* saved.results!;
        }
      } finally {
        // The next batch's evaluation overwrites `output`: no save may still read it.
        await Promise.allSettled(saves);
      }
      timings.batches++;
    }
    if (!(await it.next()).done)
      throw new SealedError('bad-query', `the query has more ciphertexts than ${records} records need (${batches * plan.inputs})`, HINT);
  }
}
