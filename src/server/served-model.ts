// What startServer serves, read from a bundle directory: a network (server/program.json, single
// layout and batch mode) or a tree ensemble (server/trees.json, whole batch queries; their keys
// carry no Galois section). Checked before any worker starts, so a bad bundle fails fast.
import type { BatchPlan } from '../fhe/batch-plan.ts';
import { allocateSharedMasks, type SharedMasks } from '../fhe/gather-kernel.ts';
import { readClientPart, readManifest, readServerPart } from '../model/bundle.ts';
import { isTreeBundle, readTreeBundle } from '../model/trees/bundle.ts';
import { singleKeysBytesBound, singleMasksBytes, singleResults, singleWorkerBytes } from '../model/trees/single.ts';
import type { ServingModel } from './query-checks.ts';

export interface ServedModel {
  model: ServingModel;
  /** Layouts whose results are not flooded (the owner chose privacy none): logged at start. */
  exposed: string[];
  batch?: BatchPlan;
  /** Whether the model's keys carry a Galois section (networks: yes; trees rotate nothing). */
  galoisSection: boolean;
  /** What each worker holds for the model beyond its base (a tree model's single-record form). */
  workerModelBytes?: number;
  /** A tree model's single-record form: the gather's masks, built once and read by every worker. */
  singleMasks?: SharedMasks;
  /** What the workers share for the model, held once (those masks). */
  sharedModelBytes?: number;
  /** The largest keys object the model's clients make, when known (a tree model's single-record form: ~110-150 MB). */
  keysBytesBound?: number;
}

export async function readServedModel(dir: string): Promise<ServedModel> {
  const manifest = await readManifest(dir);
  if (manifest && isTreeBundle(manifest)) {
    const { client, server } = await readTreeBundle(dir);
    const c = server.circuit;
    // No single-layout program: this empty one states the keys the model needs (no rotations,
    // relinearization, the public key when flooded); tree queries never reach a program.
    const program = { params: c.params, inputScaleBits: c.inputScaleBits, steps: [], galoisSteps: [], relin: true, privacy: c.privacy };
    const one = server.single;
    // The single-record form's keys: its rotations, relinearization, the public key when flooded.
    const single = one && {
      params: one.params,
      copies: one.copies,
      results: singleResults(one),
      program: { params: one.params, inputScaleBits: one.inputScaleBits, steps: [], galoisSteps: one.galoisSteps, relin: true, privacy: one.privacy },
    };
    const trees = { params: c.params, inputs: c.inputs, outputs: c.outputs, recordsPerBatch: client.records_per_batch, circuit: c, single };
    return {
      model: { modelId: server.model_id, program, recordsPerCiphertext: client.records_per_batch, trees },
      exposed: c.privacy === 'none' ? ['trees'] : [],
      galoisSection: false,
      workerModelBytes: one && singleWorkerBytes(one),
      // Reserved, not touched: the first worker to start builds the masks there for all.
      sharedModelBytes: one && singleMasksBytes(one),
      singleMasks: one && allocateSharedMasks(one.params.polyModulusDegree, one.params.coeffModulusBits.length - 1, one.masks.length),
      keysBytesBound: one && singleKeysBytesBound(one),
    };
  }
  const part = await readServerPart(dir);
  const { client } = await readClientPart(dir);
  const exposed = [part.privacy.single === 'none' ? 'single' : undefined, part.privacy.batch === 'none' ? 'batch' : undefined].filter(
    (x): x is string => x !== undefined,
  );
  return {
    model: { modelId: part.modelId, program: part.program, recordsPerCiphertext: client.input.recordsPerCiphertext, batch: part.batch },
    exposed,
    batch: part.batch,
    galoisSection: true,
  };
}
