// A model's batch mode in one worker: its SEAL instance, the exact kernel, the re-randomizer and,
// for a plan that rescales, the rescale. ModelServer holds one (model-server.ts); the pool's
// workers call its phases on shared memory (batch.ts says in which order), and
// ModelServer.evaluateBatch runs them one after the other in process:
//   decodeInputs | decodePrime   query sections -> residues
//   evaluateLanes                the kernel, lanes of one prime at a time
//   rescaleRows, evaluateAfter   plans that rescale: a layer's values divided by their last
//                                primes, then the squares and layers after over the rest (once
//                                per rescale: `point` 0, 1, ...)
//   encodeResults                re-randomized, flooded, rescaled (plans with resultRescalePrimes), saved
import { SealedError } from '../errors.ts';
import { BatchSession } from '../fhe/batch-io.ts';
import { evaluateLanes, prepareKernel, segmentsOf, squareLayersOf, type BatchKernel } from '../fhe/batch-kernel.ts';
import { layersAfterRescale } from '../fhe/batch-kernel-deep.ts';
import { rescalesOf, resultSize, type BatchPlan } from '../fhe/batch-plan.ts';
import { BatchPrivacy } from '../fhe/batch-privacy.ts';
import { loadRerandKey, type RerandKey } from '../fhe/privacy.ts';
import { ProductRescale } from '../fhe/rescale.ts';
import { CHUNK } from './batch-constants.ts';

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

export class BatchModel {
  readonly io: BatchSession;
  private readonly kernel: BatchKernel;
  private readonly privacy: BatchPrivacy;
  /** The kernel segment 0 runs: without w3 when the second layer's values are rescaled. */
  private readonly toFirstRescale: BatchKernel;
  /**
   * Per rescale, in order: the values it divides (rows of `size` polynomials over `lanes` lanes,
   * the level before it), the rescale, and the layers after it up to the next rescale or the end,
   * over `primes` (the level it leaves).
   */
  private readonly points: {
    rows: number;
    size: number;
    lanes: number;
    rescale: ProductRescale;
    layers: ReturnType<typeof squareLayersOf>;
    primes: number[];
  }[] = [];
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
    this.privacy = new BatchPrivacy(io.plan, io.outputPrimes);
    this.toFirstRescale = io.plan.second?.rescalePrimes ? { ...this.kernel, w3: undefined } : this.kernel;
    const degree = io.plan.params.polyModulusDegree;
    const segments = segmentsOf(io.plan);
    rescalesOf(io.plan).forEach((r, j) => {
      const before = io.primes.slice(0, r.primesBefore);
      this.points.push({
        rows: r.rows,
        size: r.size,
        lanes: r.primesBefore * degree,
        rescale: new ProductRescale(before, degree, r.primesBefore - r.primesAfter),
        layers: squareLayersOf(this.kernel, segments[j + 1].from, segments[j + 1].to),
        primes: io.primes.slice(0, r.primesAfter),
      });
    });
  }

  static async open(plan: BatchPlan): Promise<BatchModel> {
    return new BatchModel(await BatchSession.open(plan));
  }

  /** Residues of one polynomial set over the batch primes (primes x degree). */
  get lanes(): number {
    return this.io.lanes;
  }

  /** Residues of one output polynomial, as the kernel writes it (fewer primes than `lanes` after a rescale). */
  get outputLanes(): number {
    return this.io.outputLanes;
  }

  /** How many rescales the plan makes: evaluateLanes then writes the values the first divides, and rescaleRows and evaluateAfter follow, once per rescale. */
  get rescalePoints(): number {
    return this.points.length;
  }

  /** Residues of a batch's values that rescale `point` divides: rows x polynomials x the lanes of the level before it. */
  valuesAt(point: number): number {
    const p = this.point(point);
    return p.rows * p.size * p.lanes;
  }

  /** Rows of the values that rescale `point` divides. */
  rowsAt(point: number): number {
    return this.point(point).rows;
  }

  /** Lanes the layers after rescale `point` run over (the level it leaves). */
  lanesAfter(point: number): number {
    return this.point(point).primes.length * this.io.plan.params.polyModulusDegree;
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
    const key = loadRerandKey(bytes, io.outputPrimes, io.plan.params.polyModulusDegree, resultSize(io.plan));
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
   * For a plan that rescales, `output` receives the values the first rescale divides instead
   * (valuesAt(0) long), for rescaleRows.
   */
  evaluateLanes(input: Uint32Array, output: Uint32Array, lane0: number, lane1: number, onePrime = false): void {
    const degree = this.io.plan.params.polyModulusDegree;
    if (onePrime && Math.floor(lane0 / degree) !== Math.floor((lane1 - 1) / degree)) throw new RangeError('lanes of one prime only');
    for (let l = lane0; l < lane1;) {
      const end = Math.min(l + CHUNK, lane1, (Math.floor(l / degree) + 1) * degree);
      evaluateLanes(this.toFirstRescale, input, output, l, end, onePrime);
      l = end;
    }
  }

  /** Phase 2b (plans that rescale): rows `first` .. `first + count - 1` of the values rescale `point` divides, rescaled in place. */
  rescaleRows(values: Uint32Array, first: number, count: number, point = 0): void {
    const p = this.point(point);
    p.rescale.rows(values, p.size, first, count);
  }

  /**
   * Phase 2c (plans that rescale): the squares and layers after rescale `point`, over lanes
   * [lane0, lane1) of the level it leaves, into `output`: the results after the last rescale,
   * the values the next divides before it (valuesAt(point + 1) long).
   */
  evaluateAfter(values: Uint32Array, output: Uint32Array, lane0: number, lane1: number, point = 0): void {
    const p = this.point(point);
    const degree = this.io.plan.params.polyModulusDegree;
    for (let l = lane0; l < lane1;) {
      const end = Math.min(l + CHUNK, lane1, (Math.floor(l / degree) + 1) * degree);
      layersAfterRescale(values, p.size * p.lanes, p.rows, p.size, p.layers, p.primes, degree, output, l, end);
      l = end;
    }
  }

  /**
   * Phase 3: outputs `first` .. `first + count - 1` re-randomized, flooded, rescaled (plans with
   * resultRescalePrimes: BatchSession.encodeOutput) and saved as result ciphertexts.
   */
  encodeResults(output: Uint32Array, first: number, count: number, rerandKey: RerandKey | undefined): Uint8Array[] {
    const { io, privacy } = this;
    const size = resultSize(io.plan);
    const results: Uint8Array[] = [];
    for (let o = first; o < first + count; o++) {
      privacy.apply(rerandKey, output, o, io.outputLanes);
      results.push(io.encodeOutput(output, o * size * io.outputLanes, size));
    }
    return results;
  }

  close(): void {
    this.lastRerandKey = undefined;
    this.io.close();
  }

  private point(point: number): BatchModel['points'][number] {
    const p = this.points[point];
    if (!p) throw new SealedError('internal', `this batch plan has ${this.points.length} rescales, not a rescale ${point}`);
    return p;
  }
}
