// Batch mode on the server: the query's ciphertexts arrive as a stream, a batch at a time
// (one ciphertext per input feature, one record per slot). For each batch, three phases run on
// every worker of the pool over shared memory:
//   load      SEAL loads and checks each ciphertext, its residues go to the shared input
//   evaluate  each worker takes chunks of lanes (coefficients of one prime); chunks are
//             independent, so the split costs nothing and there is no merge
//   save      SEAL saves the result ciphertexts (one per output)
// Memory is bounded by two batches (inputs x 2 x lanes x 4 bytes each), whatever the query size.
import { reviveError, SealedError } from '../errors.ts';
import { dataPrimesOf, outputsOf, resultSize, type BatchPlan } from '../fhe/batch-plan.ts';
import type { BatchResult } from './worker-protocol.ts';
import type { EvaluationPool } from './pool.ts';
import type { BatchBuffers } from './batch-buffers.ts';
import { CHUNK } from './batch-constants.ts';
import { batchCount } from './query-checks.ts';

/** Ciphertexts per load task: small enough to spread a batch over the workers as it arrives. */
const LOAD_GROUP = 32;
/**
 * Evaluation tasks per worker and batch: few, so a worker rarely waits for the main thread
 * (busy streaming the next batch) to hand it more work; more than one, to balance.
 */
const TASKS_PER_WORKER = 4;

export interface BatchTimings {
  load: number;
  evaluate: number;
  save: number;
  /** Wall time of the evaluate phases (all workers), summed over batches. */
  evaluate_wall: number;
  batches: number;
}

function check(r: BatchResult): BatchResult {
  if (r.error) throw reviveError(r.error);
  return r;
}

/**
 * Bytes one batch-mode request of `batches` batches holds while it runs: its input buffers (two
 * from two batches on: one loads while the other is evaluated), the output buffer, the sections
 * of the load groups in flight (two batches' worth) and the re-randomization key. A request of
 * one batch (what `sealed predict` sends) needs one input buffer: 1.6 GiB, not 3.3, for an MNIST
 * MLP with two activations.
 */
export function batchMemory(plan: BatchPlan, batches = 2): number {
  const lanes = dataPrimesOf(plan) * plan.params.polyModulusDegree;
  const section = 2 * lanes * 8; // a SEAL ciphertext of two polynomials, uncompressed
  // The query's re-randomization key (circuit privacy): one result's polynomials, held once.
  const rerandKey = plan.privacy === 'flood' ? resultSize(plan) * lanes * 4 : 0;
  return (
    Math.min(2, batches) * plan.inputs * 2 * lanes * 4 +
    outputsOf(plan) * resultSize(plan) * lanes * 4 +
    2 * Math.min(plan.inputs, LOAD_GROUP * 2) * section +
    rerandKey
  );
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
  signal?: AbortSignal,
  rerandKey?: SharedArrayBuffer,
  buffers?: BatchBuffers,
): AsyncGenerator<Uint8Array> {
  // A bad (or missing) re-randomization key is refused before any of the query is read.
  if (plan.privacy === 'flood') check(await pool.runBatch({ batch: 'check-key', rerandKey }, signal));
  const lanes = dataPrimesOf(plan) * plan.params.polyModulusDegree;
  const batches = batchCount(plan, records);
  const outs = outputsOf(plan);
  const size = resultSize(plan);
  // Two input buffers: batch b+1 streams in and loads while batch b is evaluated (the main
  // thread's S3 reading and parsing would otherwise leave the workers idle).
  // (Kept from an earlier request when there is one: batch-buffers.ts.)
  const take = (bytes: number) => buffers?.take(bytes) ?? new SharedArrayBuffer(bytes);
  const inputs = (batches > 1 ? [0, 1] : [0]).map(() => take(plan.inputs * 2 * lanes * 4));
  const output = take(outs * size * lanes * 4);
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
  const load = async (b: number, input: SharedArrayBuffer) => {
    const loads: Promise<BatchResult>[] = [];
    let group: Uint8Array[] = [];
    let first = 0;
    try {
      for (let i = 0; i < plan.inputs; i++) {
        const next = await it.next();
        if (next.done)
          throw new SealedError(
            'bad-query',
            `the query ends after ${b * plan.inputs + i} ciphertexts; ${records} records need ${batches * plan.inputs}`,
            'upload the file written by `sealed predict`, unchanged',
          );
        group.push(next.value);
        if (group.length === LOAD_GROUP || i === plan.inputs - 1) {
          // Each section owns its buffer (the stream reader copies it out): move, not copy.
          loads.push(
            track(
              pool.runBatch(
                { batch: 'decode', sections: group, input, first },
                signal,
                group.map((g) => g.buffer as ArrayBuffer),
              ),
            ),
          );
          first = i + 1;
          group = [];
        }
      }
    } finally {
      // Whatever happens, no task of this batch is left running on the buffer.
      add(
        'load',
        (await Promise.allSettled(loads)).flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
      );
    }
    (await Promise.all(loads)).map(check);
  };
  let loading = load(0, inputs[0]);
  loading.catch(() => undefined); // awaited below
  try {
    yield* run();
  } finally {
    await loading.catch(() => undefined);
    await Promise.allSettled([...running]);
    buffers?.give([...inputs, output]);
  }
  async function* run(): AsyncGenerator<Uint8Array> {
    for (let b = 0; b < batches; b++) {
      await loading;
      const input = inputs[b % 2];
      if (b + 1 < batches) {
        loading = load(b + 1, inputs[(b + 1) % 2]);
        loading.catch(() => undefined); // awaited at the top of the next round
      }
      const t0 = performance.now();
      const evals: Promise<BatchResult>[] = [];
      const span = Math.ceil(lanes / CHUNK / (pool.size * TASKS_PER_WORKER)) * CHUNK;
      for (let l = 0; l < lanes; l += span)
        evals.push(track(pool.runBatch({ batch: 'evaluate', input, output, lane0: l, lane1: Math.min(l + span, lanes) }, signal)));
      add('evaluate', (await Promise.all(evals)).map(check));
      timings.evaluate_wall += performance.now() - t0;
      const per = Math.ceil(outs / pool.size);
      const saves: Promise<BatchResult>[] = [];
      for (let o = 0; o < outs; o += per)
        saves.push(track(pool.runBatch({ batch: 'encode', output, first: o, count: Math.min(per, outs - o), rerandKey }, signal)));
      const saved = (await Promise.all(saves)).map(check);
      add('save', saved);
      timings.batches++;
      for (const r of saved) yield* r.results!;
    }
    if (!(await it.next()).done)
      throw new SealedError(
        'bad-query',
        `the query has more ciphertexts than ${records} records need (${batches * plan.inputs})`,
        'upload the file written by `sealed predict`, unchanged',
      );
  }
}
