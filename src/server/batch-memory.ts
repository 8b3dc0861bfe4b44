// What a batch-mode request holds in memory while it runs (batch.ts), for the server's budget.
import { dataPrimesOf, outputsOf, rescalesOf, resultPrimesOf, resultSize, type BatchPlan } from '../fhe/batch-plan.ts';
import { seededBytes } from '../fhe/seeded-batch.ts';
import { LOAD_GROUP } from './batch-constants.ts';

/**
 * Bytes one batch-mode request of `batches` batches holds while it runs, its sections seeded:
 * their buffers (two from two batches on: one fills from the stream while the other is
 * evaluated), two primes' residues, the output buffer and the re-randomization key. 0.8 GiB for
 * an MNIST MLP with two activations at ring 16384 (one batch: what `sealed predict` sends).
 */
export function batchMemory(plan: BatchPlan, batches = 2): number {
  const N = plan.params.polyModulusDegree;
  // Results keep fewer primes when the plan rescales; the values each rescale divides are held first.
  const resultLanes = resultPrimesOf(plan) * N;
  const values = rescalesOf(plan).reduce((a, r) => a + r.rows * r.size * r.primesBefore * N * 4, 0);
  // The query's re-randomization key (circuit privacy): one result's polynomials, held once.
  const rerandKey = plan.privacy === 'flood' ? resultSize(plan) * resultLanes * 4 : 0;
  return (
    Math.min(2, batches) * plan.inputs * seededBytes(dataPrimesOf(plan), N) +
    2 * plan.inputs * 2 * N * 4 +
    outputsOf(plan) * resultSize(plan) * resultLanes * 4 +
    values +
    rerandKey
  );
}

/**
 * What batches of SEAL's own forms (older clients' sections) need beyond batchMemory: every
 * prime's residues (two batches' worth from two batches on) and the sections of the load groups
 * in flight.
 */
export function wholeBatchMemory(plan: BatchPlan, batches = 2): number {
  const lanes = dataPrimesOf(plan) * plan.params.polyModulusDegree;
  const section = 2 * lanes * 8; // a SEAL ciphertext of two polynomials, uncompressed
  return Math.min(2, batches) * plan.inputs * 2 * lanes * 4 + 2 * Math.min(plan.inputs, LOAD_GROUP * 2) * section;
}
