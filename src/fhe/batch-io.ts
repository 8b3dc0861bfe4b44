// SEAL at the edges of batch mode: queries are checked (seal-precheck.ts), loaded by SEAL, then
// handed to the kernel as raw residues; results are built from residues, every residue checked
// below its prime, and written packed (raw-ciphertext.ts, 26 bits a residue).
import { SealedError } from '../errors.ts';
import { CkksSession } from './ckks.ts';
import { loadQueryCiphertext } from './load.ts';
import { dataPrimesOf, outputPrimesOf, PRIME_BITS, resultPrimesOf, resultScale, type BatchPlan } from './batch-plan.ts';
import { primes } from './params.ts';
import { copyResidues, packedFromResidues } from './raw-ciphertext.ts';
import { ProductRescale } from './rescale.ts';
import { isSeededSection, type SeededLevel } from './seeded-batch.ts';
import { decodeSeededPrime, decodeSeededSection } from './seeded-decode.ts';

export class BatchSession {
  readonly session: CkksSession;
  readonly plan: BatchPlan;
  /** The data primes, first to last. */
  readonly primes: number[];
  /** Those the kernel's outputs keep (where they are flooded): all, or all but the last few after a rescale (batch-plan.ts). */
  readonly outputPrimes: number[];
  /** Those the results the client receives keep: the outputs', or fewer after the result rescale. */
  readonly resultPrimes: number[];
  private readonly level: SeededLevel;
  /** The result rescale (batch-plan.ts, resultRescalePrimes): its tables (~10 ms per prime) made with the model, not on a request. */
  private readonly resultRescale: ProductRescale | undefined;
  /** The results' exact scale (resultScale), computed by the first result (a session that only decodes needs no layers). */
  private resultScale: number | undefined;
  /** SEAL's name for the results' level: the top data level, or the one the rescale leaves. */
  private readonly resultParmsId: Uint8Array;

  private constructor(session: CkksSession, plan: BatchPlan) {
    this.session = session;
    this.plan = plan;
    const all = primes(session.seal, session.context);
    this.primes = all.slice(0, dataPrimesOf(plan)).map(Number);
    if (this.primes.some((q) => q >= 2 ** PRIME_BITS)) throw new SealedError('bad-bundle', `batch mode needs primes below 2^${PRIME_BITS}`);
    this.outputPrimes = this.primes.slice(0, outputPrimesOf(plan));
    this.resultPrimes = this.primes.slice(0, resultPrimesOf(plan));
    const k = plan.resultRescalePrimes;
    this.resultRescale = k ? new ProductRescale(this.outputPrimes, plan.params.polyModulusDegree, k) : undefined;
    const drop = this.primes.length - this.resultPrimes.length;
    this.level = { parmsId: session.shape.data[0].parmsId, primes: this.primes, degree: plan.params.polyModulusDegree };
    this.resultParmsId = session.shape.data[drop].parmsId;
  }

  /** A plan that rescales needs SEAL's chain down to its results' level (~0.4 s more at ring 16384). */
  static async open(plan: BatchPlan): Promise<BatchSession> {
    return new BatchSession(await CkksSession.open(plan.params, { topLevelOnly: resultPrimesOf(plan) === dataPrimesOf(plan) }), plan);
  }

  /** Residues per polynomial (primes x degree). */
  get lanes(): number {
    return this.primes.length * this.plan.params.polyModulusDegree;
  }

  /** Residues per polynomial of a kernel's output (its primes x degree). */
  get outputLanes(): number {
    return this.outputPrimes.length * this.plan.params.polyModulusDegree;
  }

  /** Residues per polynomial of a result as the client receives it (its primes x degree). */
  get resultLanes(): number {
    return this.resultPrimes.length * this.plan.params.polyModulusDegree;
  }

  /**
   * Loads one query ciphertext (checked: fresh, top level, expected scale) into `dst` at
   * `offset`. Sections are seeded (what the client writes: seeded-batch.ts, read without SEAL),
   * or SEAL's bytes packed in 26 bits (what clients wrote before) or SEAL's zstd.
   */
  decodeInto(bytes: Uint8Array, dst: Uint32Array, offset: number, what = 'a ciphertext of the encrypted query'): void {
    if (isSeededSection(bytes)) {
      decodeSeededSection(bytes, this.level, 2 ** this.plan.inputScaleBits, dst, offset, what);
      return;
    }
    const { seal } = this.session;
    const ct = loadQueryCiphertext(this.session, bytes, this.plan.inputScaleBits, { what, compression: ['none', 'zstd'] });
    try {
      copyResidues(ct.saveToArray(seal.ComprModeType.none) as Uint8Array, dst, offset);
    } finally {
      ct.delete();
    }
  }

  /**
   * Prime `p` of one seeded query ciphertext (decodeSeededPrime) into `dst` at `offset`: its two
   * polynomials' residues modulo that prime, [poly][coeff]. `from`: where the prime's keystream
   * words start (0 for prime 0, else what this returned for prime p - 1); returns the next's.
   */
  decodePrimeInto(bytes: Uint8Array, p: number, dst: Uint32Array, offset: number, from: number, what = 'a ciphertext of the encrypted query'): number {
    return decodeSeededPrime(bytes, this.level, 2 ** this.plan.inputScaleBits, p, dst, offset, from, what);
  }

  /**
   * The result ciphertext of a kernel output of `size` polynomials at `offset` (over
   * outputPrimes), once flooded: divided in place by the plan's result rescale (its result then
   * at the front of its place), then encodeResult. Only after the flood: the rescale's rounding,
   * a function of the unflooded output, would otherwise reach the client unhidden.
   */
  encodeOutput(output: Uint32Array, offset: number, size: number): Uint8Array {
    if (this.resultRescale) {
      const at = output.subarray(offset);
      this.resultRescale.ciphertext(at, at, size);
    }
    return this.encodeResult(output, offset, size);
  }

  /**
   * A result ciphertext of `size` polynomials from residues at `offset` (over resultPrimes), at
   * the plan's exact result scale (or 2^scaleBits), packed (raw-ciphertext.ts, "P26": 26 bits a
   * residue) once every residue is checked below its prime, as SEAL's load would check it. The
   * client decrypts it with its own code (packed-decrypt.ts); SEAL loads it too (load.ts). zstd
   * cost ~110 ms a LeNet result here and ~190 ms to undo on the client, for 3% fewer bytes.
   */
  encodeResult(residues: Uint32Array, offset: number, size: number, scaleBits?: number): Uint8Array {
    const scale = scaleBits === undefined ? (this.resultScale ??= resultScale(this.plan)) : 2 ** scaleBits;
    const N = this.plan.params.polyModulusDegree;
    for (let poly = 0, at = offset; poly < size; poly++)
      for (const q of this.resultPrimes)
        for (const end = at + N; at < end; at++)
          if (residues[at] >= q) throw new SealedError('internal', `a batch result holds a residue above its prime (polynomial ${poly})`);
    return packedFromResidues({ parmsId: this.resultParmsId, degree: N, primes: this.resultPrimes.length, scale }, size, residues, offset);
  }

  close(): void {
    this.session.close();
  }
}
