// The client's last check of a batch-mode result: scores within what the model's parameters are
// sized for (client-part.ts, output_bound). Nothing else shows a wrong result ciphertext that SEAL
// still loads: every integrity check before decryption (the header, the query's hash) passes.
import { SealedError } from '../errors.ts';

/** A batch result refused for scores beyond the output bound (resultOutOfRange). */
export class ResultOutOfRange extends SealedError {
  /** Result ciphertexts with most records beyond: corrupt, where evaluating the query again can help. */
  readonly corruptCiphertexts: number;
  constructor(corruptCiphertexts: number, message: string, hint: string) {
    super('bad-data', message, hint);
    this.corruptCiphertexts = corruptCiphertexts;
  }
}

export interface OutOfRange {
  batch: number;
  output: number;
  records: number;
  of: number;
}

/** Per output ciphertext of one batch: how many of its `used` slots hold a score beyond `bound`. */
export function outOfRange(outs: ArrayLike<number>[], used: number, bound: number, batch: number): OutOfRange[] {
  const found: OutOfRange[] = [];
  outs.forEach((o, output) => {
    let records = 0;
    for (let s = 0; s < used; s++) if (!(Math.abs(o[s]) <= bound)) records++;
    if (records) found.push({ batch, output, records, of: used });
  });
  return found;
}

/**
 * The refusal of a result with scores beyond the bound: never returned as predictions. It names
 * ciphertexts and counts, never a score.
 */
export function resultOutOfRange(found: OutOfRange[], bound: number): ResultOutOfRange {
  // A corrupt ciphertext decrypts to garbage in every slot, and garbage lands within the bound now
  // and then: half its records or more beyond it counts as corrupt.
  const whole = found.filter((f) => 2 * f.records >= f.of);
  const where = found
    .slice(0, 3)
    .map((f) => `output ${f.output} of batch ${f.batch}: ${f.records} of ${f.of} records`)
    .join('; ');
  return new ResultOutOfRange(
    whole.length,
    `the result holds scores beyond ${bound.toPrecision(3)} in magnitude, the most this model's parameters are sized for (${where}${found.length > 3 ? `; ${found.length - 3} more` : ''}); it is not used`,
    whole.length
      ? 'most records of a result ciphertext are affected: the ciphertext is corrupt (a fault on the server or in storage): predict again, and report it if it happens again'
      : 'only some records are affected: they lie far outside the data the model was compiled with (its calibration data); check them, or compile the model with calibration data that covers them',
  );
}

/**
 * `decrypt(first)`; when that is refused for corrupt ciphertexts (most records of one beyond the
 * bound: a fault on the way, not the query), the result fetched `again` (the same query evaluated
 * once more) and decrypted. Refused again, or refused for some records only: thrown. `retryMs`:
 * the wall time of `again`, which the callers' stats count as evaluation, not decryption.
 */
export async function decryptOrRetry<R>(
  first: R,
  decrypt: (r: R) => number[][] | Promise<number[][]>,
  again?: () => Promise<R>,
): Promise<{ scores: number[][]; result: R; retries: number; retryMs: number }> {
  try {
    return { scores: await decrypt(first), result: first, retries: 0, retryMs: 0 };
  } catch (e) {
    if (!(e instanceof ResultOutOfRange) || !e.corruptCiphertexts || !again) throw e;
    const t = performance.now();
    const result = await again();
    const retryMs = performance.now() - t;
    return { scores: await decrypt(result), result, retries: 1, retryMs };
  }
}
