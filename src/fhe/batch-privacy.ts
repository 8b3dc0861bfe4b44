// Circuit privacy in batch mode: the server's step between the kernel and encodeResult, and the
// client's key. See privacy.ts for the design and the bound.
import { SealedError } from '../errors.ts';
import type { BatchPlan } from './batch-plan.ts';
import { resultSize } from './batch-plan.ts';
import type { CkksSession } from './ckks.ts';
import {
  FLOOD_SECURITY_BITS,
  floodSigma,
  makeRerandKey,
  nttTables,
  rerandomizeResidues,
  saveRerandKey,
  secretKeyResidues,
  type NegacyclicNtt,
  type RerandKey,
} from './privacy.ts';
import { primes as chainPrimes } from './params.ts';
import { guard, release } from './seal.ts';

/**
 * Client side: the re-randomization key for batch results of `size` polynomials (the client
 * part's result_size), from the batch secret key (SEAL bytes) of session `s`. Sent with the query.
 * `resultPrimes`: the data primes the results have when the server floods them (fewer than the
 * query's after a rescale: batch-plan.ts outputPrimesOf; the client part's flood_primes, else its
 * result_primes); all of them by default.
 */
export function makeBatchRerandKey(s: CkksSession, size: number, secretKey: Uint8Array, resultPrimes?: number): Uint8Array {
  // 2 polynomials, or 2^n + 1 after n squares (batch-plan.ts resultSize).
  if (size !== 2 && size !== 3 && size !== 5 && size !== 9) throw new SealedError('bad-bundle', `batch results of ${size} polynomials: expected 2, 3, 5 or 9`);
  const sk = new s.seal.SecretKey();
  try {
    guard('bad-keys', 'the secret key', () => sk.loadFromArray(s.context, secretKey));
    const all = chainPrimes(s.seal, s.context).map(Number);
    const k = all.length - 1; // the data primes: all but the special one
    const degree = s.params.polyModulusDegree;
    const raw = sk.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    const residues = secretKeyResidues(raw, degree, all.length, k);
    raw.fill(0);
    if (resultPrimes !== undefined && (!Number.isInteger(resultPrimes) || resultPrimes < 1 || resultPrimes > k))
      throw new SealedError('bad-bundle', `batch results at ${resultPrimes} data primes: expected 1 to ${k}`);
    const key = makeRerandKey(residues, all.slice(0, resultPrimes ?? k), degree, size);
    residues.fill(0);
    return saveRerandKey(key);
  } finally {
    release(sk);
  }
}

/** Server side: one per worker and plan (NTT tables ~10 ms per prime to build). */
export class BatchPrivacy {
  readonly plan: BatchPlan;
  readonly enabled: boolean;
  /** sigma of the flood per output. */
  readonly sigmas: number[];
  private readonly ntts: NegacyclicNtt[];

  constructor(plan: BatchPlan, primes: number[]) {
    this.plan = plan;
    this.enabled = plan.privacy === 'flood';
    const lambda = plan.floodSecurityBits ?? FLOOD_SECURITY_BITS;
    this.sigmas = this.enabled ? plan.noiseL2Bits!.map((b) => floodSigma(2 ** b, lambda)) : [];
    this.ntts = this.enabled ? nttTables(primes, plan.params.polyModulusDegree) : [];
  }

  /**
   * Re-randomizes and floods result `o` in place: `output` as the kernel wrote it,
   * [output][poly][prime][coeff], `lanes` residues per polynomial. Call before encodeResult.
   * A no-op with privacy 'none'.
   */
  apply(key: RerandKey | undefined, output: Uint32Array, o: number, lanes: number): void {
    if (!this.enabled) return;
    if (!key) throw new Error('circuit privacy is on: a re-randomization key is required');
    rerandomizeResidues(key, output, o * resultSize(this.plan) * lanes, this.sigmas[o], this.ntts);
  }
}
