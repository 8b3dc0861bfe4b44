// A batch-mode result's scores from its ciphertexts' slots, however they were decrypted
// (session.ts: on the calling thread, or on the encryption pool's threads).
import { SealedError } from '../errors.ts';
import type { CkksParams } from '../fhe/params.ts';
import type { BatchClientPart, ClientPart } from '../model/client-part.ts';
import { outOfRange, resultOutOfRange, type OutOfRange } from './result-range.ts';

/** What decryptScoresWith needs of the encryption pool (encrypt-pool.ts): each ciphertext's slots, in order. */
export interface BatchDecryptor {
  decryptAll(sections: Uint8Array[], o: { params: CkksParams; secretKey: Uint8Array }): Promise<Float64Array[]>;
}

/** The client part's batch mode, once a result's ciphertext count is checked against it. */
export function batchPart(part: ClientPart, ciphertexts: number, records: number): BatchClientPart {
  const b = part.batch;
  if (!b) throw new SealedError('bad-data', 'a batch-mode result for a model without batch mode');
  const batches = Math.ceil(records / b.records_per_batch);
  if (ciphertexts !== batches * b.outputs)
    throw new SealedError('bad-data', `the result holds ${ciphertexts} ciphertexts, ${records} records need ${batches * b.outputs}`);
  return b;
}

/** Records' scores from result ciphertext i's slots (`slots(i)`, asked for in order), checked against the output bound. */
export function batchScores(b: BatchClientPart, slots: (i: number) => Float64Array, records: number): number[][] {
  const S = b.records_per_batch;
  const batches = Math.ceil(records / S);
  const scores: number[][] = [];
  const beyond: OutOfRange[] = [];
  for (let bi = 0; bi < batches; bi++) {
    const outs = Array.from({ length: b.outputs }, (_, o) => slots(bi * b.outputs + o));
    const used = Math.min(S, records - bi * S);
    if (b.output_bound !== undefined) beyond.push(...outOfRange(outs, used, b.output_bound, bi));
    for (let s = 0; s < used; s++) scores.push(outs.map((o) => o[s]));
  }
  if (beyond.length) throw resultOutOfRange(beyond, b.output_bound!);
  return scores;
}
