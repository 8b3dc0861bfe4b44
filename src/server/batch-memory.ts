// What a batch-mode request holds in memory while it runs (batch.ts), for the server's budget.
import { dataPrimesOf, outputsOf, rescalesOf, outputPrimesOf, resultSize, type BatchPlan } from '../fhe/batch-plan.ts';
import { rerandKeyBytes } from '../fhe/rerand-key.ts';
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
  const outputLanes = outputPrimesOf(plan) * N;
  const values = rescalesOf(plan).reduce((a, r) => a + r.rows * r.size * r.primesBefore * N * 4, 0);
  // The query's re-randomization key (circuit privacy): one result's polynomials, held once.
  const rerandKey = plan.privacy === 'flood' ? resultSize(plan) * outputLanes * 4 : 0;
  return (
    Math.min(2, batches) * plan.inputs * seededBytes(dataPrimesOf(plan), N) +
    2 * plan.inputs * 2 * N * 4 +
    outputsOf(plan) * resultSize(plan) * outputLanes * 4 +
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

/**
 * Bytes of a one-batch query as the client writes it (what `sealed predict` sends per request):
 * its seeded sections and its re-randomization key, plus 1 MiB for the header and the sections'
 * framing. The server's default query limit is at least this (serve.ts): 1.43 GB for LeNet at
 * ring 32768, over the 1 GiB default of the models before it.
 */
export function batchQueryBytes(plan: BatchPlan): number {
  const N = plan.params.polyModulusDegree;
  return plan.inputs * seededBytes(dataPrimesOf(plan), N) + rerandKeyBytes(outputPrimesOf(plan), N, resultSize(plan)) + 1024 * 1024;
}
