// A model's batch mode in one worker: its SEAL instance, the exact kernel, the re-randomizer and,
// for a plan that rescales, the rescale. ModelServer holds one (model-server.ts); the pool's
// workers call its phases on shared memory (batch.ts says in which order), and
// ModelServer.evaluateBatch runs them one after the other in process:
//   decodeInputs | decodePrime   query sections -> residues
//   evaluateLanes                the kernel, lanes of one prime at a time
//   rescaleRows, evaluateThird   plans that rescale: the second layer's values divided by their
//                                last primes, then the second square and third layer over the rest
//   encodeResults                re-randomized, flooded, saved
import { SealedError } from '../errors.ts';
import { BatchSession } from '../fhe/batch-io.ts';
import { evaluateLanes, prepareKernel, type BatchKernel } from '../fhe/batch-kernel.ts';
import { thirdLayerLanes } from '../fhe/batch-kernel-deep.ts';
import { resultSize, type BatchPlan } from '../fhe/batch-plan.ts';
import { BatchPrivacy } from '../fhe/batch-privacy.ts';
import { loadRerandKey, type RerandKey } from '../fhe/privacy.ts';
import { ProductRescale } from '../fhe/rescale.ts';
import { CHUNK } from './batch-constants.ts';

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

export class BatchModel {
  readonly io: BatchSession;
  private readonly kernel: BatchKernel;
  private readonly privacy: BatchPrivacy;
  private readonly rescaled?: { toSecond: BatchKernel; rescale: ProductRescale; w3: Float64Array };
  /**
   * The last re-randomization key parsed, with the bytes it came from. A request's key reaches
   * this worker with every encode task of every batch (and the check before them); parsing it
   * copies and range-checks one result's worth of residues, so it is parsed once per key, and
   * later tasks only compare bytes (a native memcmp).
   */
  private lastRerandKey: { bytes: Uint8Array; key: RerandKey } | undefined;

  private constructor(io: BatchSession) {
    this.io = io;
    this.kernel = prepareKernel(io.plan, io.primes);
    this.privacy = new BatchPrivacy(io.plan, io.resultPrimes);
    const drop = io.primes.length - io.resultPrimes.length;
    if (drop > 0)
      this.rescaled = {
        toSecond: { ...this.kernel, w3: undefined },
        rescale: new ProductRescale(io.primes, io.plan.params.polyModulusDegree, drop),
        w3: this.kernel.w3!,
      };
  }

  static async open(plan: BatchPlan): Promise<BatchModel> {
    return new BatchModel(await BatchSession.open(plan));
  }

  /** Residues of one polynomial set over the batch primes (primes x degree). */
  get lanes(): number {
    return this.io.lanes;
  }

  /** Residues of one result polynomial (fewer primes than `lanes` after a rescale). */
  get resultLanes(): number {
    return this.io.resultLanes;
  }

  /** Whether the plan rescales: evaluateLanes then writes the second layer's values, and rescaleRows and evaluateThird follow. */
  get rescales(): boolean {
    return this.rescaled !== undefined;
  }

  /** Residues of a batch's second-layer values in a plan that rescales: rows x 3 polynomials x lanes. */
  get secondValues(): number {
    return this.io.plan.second!.rows * 3 * this.io.lanes;
  }

  /**
   * The query's re-randomization key, checked against the batch parameters; undefined for a
   * model without circuit privacy (which ignores it). Refused when the model floods and it is missing.
   */
  rerandKeyFor(bytes: Uint8Array | undefined): RerandKey | undefined {
    const { io, privacy } = this;
    if (!privacy.enabled) return undefined;
    if (!bytes)
      throw new SealedError(
        'bad-query',
        'the query carries no re-randomization key: this model re-randomizes its batch results (circuit privacy)',
        'encrypt with a current `sealed predict` (or SDK), which sends it',
      );
    const last = this.lastRerandKey;
    if (last && sameBytes(last.bytes, bytes)) return last.key;
    const key = loadRerandKey(bytes, io.resultPrimes, io.plan.params.polyModulusDegree, resultSize(io.plan));
    this.lastRerandKey = { bytes: bytes.slice(), key };
    return key;
  }

  /** Phase 1: loads ciphertexts `first`, `first + 1`, ... of a batch, as residues, into `input`. */
  decodeInputs(sections: Uint8Array[], input: Uint32Array, first: number): void {
    const { io } = this;
    sections.forEach((bytes, i) => io.decodeInto(bytes, input, (first + i) * 2 * io.lanes, `ciphertext ${first + i} of a batch of the encrypted query`));
  }

  /**
   * Phase 1 a prime at a time, for seeded sections (what clients send): prime `p` of ciphertexts
   * `first`, `first + 1`, ... of a batch into `input` ([feature][poly][coefficient], that prime
   * only). `from[i]`: where ciphertext i's keystream words for this prime start (0 for prime 0),
   * moved on to the next prime's. A batch evaluated this way holds one prime's residues, 1/k of
   * what decodeInputs fills.
   */
  decodePrime(sections: readonly Uint8Array[], first: number, p: number, from: Uint32Array, input: Uint32Array): void {
    const { io } = this;
    const degree = io.plan.params.polyModulusDegree;
    sections.forEach((bytes, j) => {
      const i = first + j;
      from[i] = io.decodePrimeInto(bytes, p, input, i * 2 * degree, from[i], `ciphertext ${i} of a batch of the encrypted query`);
    });
  }

  /**
   * Phase 2: the exact kernel over lanes [lane0, lane1) of `input` into `output`, CHUNK lanes
   * within one prime at a time; with `onePrime`, `input` holds only the lanes' prime (decodePrime).
   * For a plan that rescales, `output` receives the second layer's values instead (secondValues
   * long), for rescaleRows.
   */
  evaluateLanes(input: Uint32Array, output: Uint32Array, lane0: number, lane1: number, onePrime = false): void {
    const degree = this.io.plan.params.polyModulusDegree;
    if (onePrime && Math.floor(lane0 / degree) !== Math.floor((lane1 - 1) / degree)) throw new RangeError('lanes of one prime only');
    const k = this.rescaled?.toSecond ?? this.kernel;
    for (let l = lane0; l < lane1;) {
      const end = Math.min(l + CHUNK, lane1, (Math.floor(l / degree) + 1) * degree);
      evaluateLanes(k, input, output, l, end, onePrime);
      l = end;
    }
  }

  /** Phase 2b (plans that rescale): rows `first` .. `first + count - 1` of the second layer's values, rescaled in place. */
  rescaleRows(values: Uint32Array, first: number, count: number): void {
    this.rescaledMode().rescale.rows(values, 3, first, count);
  }

  /** Phase 2c (plans that rescale): the second square and the third layer over result lanes [lane0, lane1) into `output`. */
  evaluateThird(values: Uint32Array, output: Uint32Array, lane0: number, lane1: number): void {
    const { io, kernel } = this;
    const { w3 } = this.rescaledMode();
    const degree = io.plan.params.polyModulusDegree;
    for (let l = lane0; l < lane1;) {
      const end = Math.min(l + CHUNK, lane1, (Math.floor(l / degree) + 1) * degree);
      thirdLayerLanes(values, 3 * io.lanes, io.plan.second!.rows, w3, kernel.bias3, io.resultPrimes, degree, output, l, end);
      l = end;
    }
  }

  /** Phase 3: outputs `first` .. `first + count - 1` re-randomized, flooded and saved as result ciphertexts. */
  encodeResults(output: Uint32Array, first: number, count: number, rerandKey: RerandKey | undefined): Uint8Array[] {
    const { io, privacy } = this;
    const size = resultSize(io.plan);
    const results: Uint8Array[] = [];
    for (let o = first; o < first + count; o++) {
      privacy.apply(rerandKey, output, o, io.resultLanes);
      results.push(io.encodeResult(output, o * size * io.resultLanes, size));
    }
    return results;
  }

  close(): void {
    this.lastRerandKey = undefined;
    this.io.close();
  }

  private rescaledMode(): NonNullable<BatchModel['rescaled']> {
    if (!this.rescaled) throw new SealedError('internal', 'this batch plan does not rescale');
    return this.rescaled;
  }
}
