// The client part of a bundle: everything a client needs to encrypt queries and read results,
// and nothing of the model's weights.
import { sha256Hex } from '../util/sha256.ts';
import { SealedError } from '../errors.ts';
import { checkParams, type CkksParams } from '../fhe/params.ts';
import type { InputBox } from './input-box.ts';
import type { InputLayout, OutputLayout } from './layout.ts';

export const CLIENT_FORMAT = 'sealed-client';

export type Task = 'regression' | 'binary' | 'multiclass';

export interface ClientPart {
  format: typeof CLIENT_FORMAT;
  version: 1;
  /** Set when the bundle is written: a hash of the whole model, client and server parts. */
  model_id?: string;
  task: Task;
  params: CkksParams;
  input_scale_bits: number;
  galois_steps: number[];
  relin: boolean;
  features: string[];
  /** Standardisation applied by the client before encryption: (x - mean) / std. */
  preprocess: { mean: number[]; std: number[] };
  /** Image models: records are side x side pixel rows; `deskew` is applied before standardising. */
  image?: { side: number; deskew: boolean };
  input: InputLayout;
  output: OutputLayout;
  /** binary: sigmoid of the score; multiclass: softmax; regression: score * std + mean. */
  postprocess: { kind: 'sigmoid' | 'softmax' | 'affine'; mean?: number; std?: number };
  labels?: string[];
  target?: string;
  /**
   * Batch mode (record per slot, feature per ciphertext; no evaluation keys): used for
   * `crossover` records or more, where it costs less than the single layout.
   */
  batch?: BatchClientPart;
}

export interface BatchClientPart {
  params: CkksParams;
  input_scale_bits: number;
  records_per_batch: number;
  /** Result ciphertexts per batch (one per output) and their polynomials (3, 5 or 9 after one, two or three squares: not relinearized). */
  outputs: number;
  result_size: number;
  /**
   * Data primes the results keep when the plan rescales (batch-plan.ts, rescalePrimes):
   * they come back at that level of the chain. Absent: all of them.
   */
  result_primes?: number;
  /**
   * Data primes the results have when the server floods them, before its last rescale drops
   * some (batch-plan.ts, resultRescalePrimes): the re-randomization key's. Absent: result_primes.
   */
  flood_primes?: number;
  /** log2 of the results' scale (not an integer after a rescale; results carry it exactly). */
  output_scale_bits: number;
  crossover: number;
  /**
   * Powers of two the client multiplies each pre-processed feature by before batch encryption
   * (compile-batch.ts, batchInputFactors): each feature's calibration range to within a factor
   * of 2, so that 15-bit kernel weights hold layers whose inputs differ by orders of magnitude.
   * Absent: all 1.
   */
  input_factors?: number[];
  /**
   * Present when batch mode's inputs are the 2x2 box sums of each channel of the pre-processed
   * image (input-box.ts; the first layer pools 2x2): the client encrypts those, channels
   * (height - 1) (width - 1) ciphertexts per batch. Absent: one per feature.
   */
  input_box?: InputBox;
  /**
   * The largest |score| the batch parameters are sized for (compile-batch.ts, batchOutputBound):
   * a decrypted score beyond it is not a prediction (a corrupt result ciphertext, or a record far
   * outside the calibration data) and the client refuses the result. Absent (older bundles): not checked.
   */
  output_bound?: number;
}

/** Identifies a model: its queries are refused by a server that serves another one. */
export function modelIdOf(...parts: (string | Uint8Array)[]): string {
  return sha256Hex(...parts).slice(0, 32);
}

export function parseClientPart(text: string, where: string): ClientPart & { model_id: string } {
  let c: ClientPart;
  try {
    c = JSON.parse(text) as ClientPart;
  } catch {
    throw new SealedError('bad-bundle', `the client part in ${where} is not valid JSON`);
  }
  if (c.format !== CLIENT_FORMAT || c.version !== 1) throw new SealedError('bad-bundle', `${where} does not hold a version-1 sealed client part`);
  // A tree ensemble's client part has the same format tag and another shape (trees/compile.ts).
  if ((c as { model?: unknown }).model === 'trees')
    throw new SealedError(
      'bad-bundle',
      `${where} holds a tree-ensemble model, which this client does not read`,
      'use `sealed predict` / `sealed keygen`, which read tree models (or TreeClient in src/model/trees/query.ts)',
    );
  if (typeof c.model_id !== 'string' || !/^[0-9a-f]{32}$/.test(c.model_id))
    throw new SealedError('bad-bundle', `the client part in ${where} has no valid model_id`);
  checkParams(c.params);
  const r = c.input?.rotations;
  if (r !== undefined && (!Array.isArray(r) || r.some((k) => !Number.isInteger(k) || k <= 0 || k >= c.params.polyModulusDegree / 2)))
    throw new SealedError('bad-bundle', `the client part in ${where} has input rotations that are not rotations within the slots`);
  if (c.batch) checkParams(c.batch.params);
  const f = c.batch?.input_factors;
  if (f !== undefined && (!Array.isArray(f) || f.length !== c.features?.length || f.some((v) => typeof v !== 'number' || !(v > 0) || !Number.isFinite(v))))
    throw new SealedError('bad-bundle', `the client part in ${where} has batch input factors that are not one positive number per feature`);
  const box = c.batch?.input_box;
  const dim = (v: unknown, min: number) => typeof v === 'number' && Number.isInteger(v) && v >= min;
  if (
    box !== undefined &&
    (typeof box !== 'object' ||
      box === null ||
      !dim(box.channels, 1) ||
      !dim(box.height, 2) ||
      !dim(box.width, 2) ||
      box.channels * box.height * box.width !== c.features?.length ||
      f !== undefined)
  )
    throw new SealedError(
      'bad-bundle',
      `the client part in ${where} has a batch input box that is not an image shape of its features (channels x height x width), or has it with input factors`,
    );
  const bound = c.batch?.output_bound;
  if (bound !== undefined && (typeof bound !== 'number' || !(bound > 0) || !Number.isFinite(bound)))
    throw new SealedError('bad-bundle', `the client part in ${where} has a batch output bound that is not a positive number`);
  return c as ClientPart & { model_id: string };
}
