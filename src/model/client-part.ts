// The client part of a bundle: everything a client needs to encrypt queries and read results,
// and nothing of the model's weights.
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { checkParams, type CkksParams } from '../fhe/params.ts';
import type { InputLayout, OutputLayout } from './layout.ts';

export const CLIENT_FORMAT = 'sealed-client';

export type Task = 'regression' | 'binary' | 'multiclass';

export interface ClientPart {
  format: typeof CLIENT_FORMAT;
  version: 1;
  task: Task;
  params: CkksParams;
  input_scale_bits: number;
  galois_steps: number[];
  relin: boolean;
  features: string[];
  /** Standardisation applied by the client before encryption: (x - mean) / std. */
  preprocess: { mean: number[]; std: number[] };
  input: InputLayout;
  output: OutputLayout;
  /** binary: sigmoid of the score; multiclass: softmax; regression: score * std + mean. */
  postprocess: { kind: 'sigmoid' | 'softmax' | 'affine'; mean?: number; std?: number };
  labels?: string[];
  target?: string;
}

export function modelIdOf(clientJson: string | Uint8Array): string {
  return createHash('sha256').update(clientJson).digest('hex').slice(0, 32);
}

export function parseClientPart(text: string, where: string): ClientPart {
  let c: ClientPart;
  try {
    c = JSON.parse(text) as ClientPart;
  } catch {
    throw new SealedError('bad-bundle', `the client part in ${where} is not valid JSON`);
  }
  if (c.format !== CLIENT_FORMAT || c.version !== 1) throw new SealedError('bad-bundle', `${where} does not hold a version-1 sealed client part`);
  checkParams(c.params);
  return c;
}
