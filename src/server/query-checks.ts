// What a query's header must say before any of its ciphertexts is touched: this model, a known
// layout, the model's parameters, and as many ciphertexts as its records need. Pure, and shared
// by every path (the S3 form, the body form, ModelServer in process), so a bad query gets the
// same code and message wherever it arrives.
import { safeText, SealedError } from '../errors.ts';
import type { BatchPlan } from '../fhe/batch-plan.ts';
import { recordsPerBatch, outputPrimesOf, resultSize } from '../fhe/batch-plan.ts';
import { ciphertextBytesBound, paramsKey, type CkksParams } from '../fhe/params.ts';
import { rerandKeyBytes } from '../fhe/privacy.ts';
import { inputCiphertexts, type Program } from '../fhe/program.ts';
import type { TreeCircuit } from '../fhe/tree-circuit.ts';
import type { QueryHeader } from '../wire/format.ts';
import type { StreamLimits } from '../wire/stream.ts';

/** What the server needs of a model to check and evaluate queries. */
export interface ServingModel {
  modelId: string;
  /** A tree ensemble's is empty: it states the keys the model needs (no rotations). */
  program: Program;
  recordsPerCiphertext: number;
  batch?: BatchPlan;
  /** A tree ensemble (src/model/trees): its queries take their own path (invoke-trees.ts). */
  trees?: TreeServing;
}

/** What the request path needs of a tree ensemble. */
export interface TreeServing {
  params: CkksParams;
  /** Thermometer ciphertexts per batch of `recordsPerBatch` records. */
  inputs: number;
  outputs: number;
  recordsPerBatch: number;
  /** The circuit (plain data, no SEAL): the main thread cuts a batch into parts from it (treeParts). */
  circuit: TreeCircuit;
  /** The single-record form (layout 'slots'), when the bundle has one: its parameters, query size and keys. */
  /** The single-record form: its result ciphertexts (several outputs may share one). */
  single?: { params: CkksParams; copies: number; results: number; program: Program };
}

export function batchCount(plan: BatchPlan, records: number): number {
  return Math.ceil(records / recordsPerBatch(plan));
}

/** Model id and record count, then the layout: 'single' or 'batch'. */
export function checkQueryHeader(model: ServingModel, h: QueryHeader): 'single' | 'batch' {
  if (h.model_id !== model.modelId) {
    throw new SealedError(
      'wrong-model',
      `the query was encrypted for model ${safeText(h.model_id)}, this endpoint serves ${model.modelId}`,
      "fetch this endpoint's client part and encrypt again",
    );
  }
  if (!Number.isInteger(h.records) || h.records < 1) throw new SealedError('bad-query', `the query declares ${safeText(h.records)} records`);
  if (h.layout === 'batch') return 'batch';
  if (h.layout !== undefined && h.layout !== 'single')
    throw new SealedError('bad-query', `the query's layout ${safeText(h.layout)} is not one of single, batch`);
  return 'single';
}

/** A single-layout query of `count` ciphertexts (after checkQueryHeader). */
export function checkSingleQuery(model: ServingModel, h: QueryHeader, count: number): void {
  if (h.params !== paramsKey(model.program.params)) throw new SealedError('bad-query', 'the query declares other encryption parameters than the model uses');
  if (Math.ceil(h.records / model.recordsPerCiphertext) !== count) {
    throw new SealedError(
      'bad-query',
      `the query declares ${h.records} records in ${count} ciphertexts, which does not match the model's ${model.recordsPerCiphertext} records per ciphertext`,
    );
  }
}

/** A batch-mode query of `count` sections (after checkQueryHeader): its plan, batches and whether a re-randomization key comes first. */
export function checkBatchQuery(model: ServingModel, h: QueryHeader, count: number): { plan: BatchPlan; batches: number; rerandKey: boolean } {
  const plan = model.batch;
  if (!plan)
    throw new SealedError(
      'bad-query',
      'the query uses batch mode, which this model does not offer',
      'encrypt with the single layout (`sealed predict --layout single`)',
    );
  if (h.params !== paramsKey(plan.params))
    throw new SealedError('bad-query', 'the query declares other encryption parameters than the model uses in batch mode');
  const batches = batchCount(plan, h.records);
  if (h.rerand_key !== undefined && typeof h.rerand_key !== 'boolean') throw new SealedError('bad-query', "the query header's rerand_key is not a boolean");
  const keySections = h.rerand_key === true ? 1 : 0;
  if (plan.privacy === 'flood' && !keySections) {
    throw new SealedError(
      'bad-query',
      'the query carries no re-randomization key: this model re-randomizes its batch results (circuit privacy)',
      'encrypt with a current `sealed predict` (or SDK), which sends it',
    );
  }
  if (count !== keySections + batches * plan.inputs) {
    throw new SealedError(
      'bad-query',
      `the query declares ${h.records} records in ${count - keySections} ciphertexts; batch mode needs ${plan.inputs} per batch of ${plan.params.polyModulusDegree / 2} records (${batches * plan.inputs})`,
    );
  }
  return { plan, batches, rerandKey: keySections === 1 };
}

/** Section bounds of the model's layouts, known once the query's header is read. */
export function sectionLimits(model: ServingModel, maxQueryBytes: number, h: QueryHeader): StreamLimits {
  const plan = h.layout === 'batch' ? model.batch : undefined;
  const params = plan ? plan.params : model.program.params;
  // A SEAL object is at least its 16-byte serialization header plus a ciphertext's fields; a
  // batch query's re-randomization key holds a result's polynomials as 32-bit residues.
  const rerandKey = plan ? rerandKeyBytes(outputPrimesOf(plan), plan.params.polyModulusDegree, resultSize(plan)) : 0;
  // A single-layout section holds the input and the client's rotated copies of it.
  const perSection = plan ? 1 : inputCiphertexts(model.program);
  return { minSection: 64, maxSection: Math.max(perSection * ciphertextBytesBound(params, 2), rerandKey), maxSections: Math.floor(maxQueryBytes / 68) };
}
