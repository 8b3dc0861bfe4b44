// SEAL at the edges of batch mode: queries are checked (seal-precheck.ts), loaded by SEAL, then
// handed to the kernel as raw residues; results are built from residues, every residue checked
// below its prime, and written in SEAL's zstd form (seal-zstd.ts; by SEAL where Node's zstd is
// missing).
import { SealedError } from '../errors.ts';
import { CkksSession } from './ckks.ts';
import { loadCiphertext, loadQueryCiphertext } from './load.ts';
import { dataPrimesOf, PRIME_BITS, type BatchPlan } from './batch-plan.ts';
import { primes } from './params.ts';
import { buildRaw, copyResidues } from './raw-ciphertext.ts';
import { NATIVE_ZSTD, zstdFromRaw } from './seal-zstd.ts';
import { isSeededSection, type SeededLevel } from './seeded-batch.ts';
import { decodeSeededPrime, decodeSeededSection } from './seeded-decode.ts';

export class BatchSession {
  readonly session: CkksSession;
  readonly plan: BatchPlan;
  /** The data primes, first to last. */
  readonly primes: number[];
  private readonly parmsId: Uint8Array;
  private readonly level: SeededLevel;

  private constructor(session: CkksSession, plan: BatchPlan) {
    this.session = session;
    this.plan = plan;
    const all = primes(session.seal, session.context);
    this.primes = all.slice(0, dataPrimesOf(plan)).map(Number);
    if (this.primes.some((q) => q >= 2 ** PRIME_BITS)) throw new SealedError('bad-bundle', `batch mode needs primes below 2^${PRIME_BITS}`);
    this.parmsId = session.shape.data[0].parmsId;
    this.level = { parmsId: this.parmsId, primes: this.primes, degree: plan.params.polyModulusDegree };
  }

  static async open(plan: BatchPlan): Promise<BatchSession> {
    return new BatchSession(await CkksSession.open(plan.params, { topLevelOnly: true }), plan);
  }

  /** Residues per polynomial (primes x degree). */
  get lanes(): number {
    return this.primes.length * this.plan.params.polyModulusDegree;
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
   * A result ciphertext of `size` polynomials from residues at `offset`, in SEAL's zstd form:
   * compressed by Node (seal-zstd.ts) once every residue is checked below its prime, as SEAL's
   * load would check it; elsewhere loaded into SEAL and saved by it.
   */
  encodeResult(residues: Uint32Array, offset: number, size: number, scaleBits: number): Uint8Array {
    const { seal } = this.session;
    const N = this.plan.params.polyModulusDegree;
    // Reused: compressed here, or copied into SEAL by its load, before the next result is built.
    const raw = buildRaw({ parmsId: this.parmsId, degree: N, primes: this.primes.length, scale: 2 ** scaleBits }, size, residues, offset, true);
    if (NATIVE_ZSTD) {
      for (let poly = 0, at = offset; poly < size; poly++)
        for (const q of this.primes)
          for (const end = at + N; at < end; at++)
            if (residues[at] >= q) throw new SealedError('internal', `a batch result holds a residue above its prime (polynomial ${poly})`);
      return zstdFromRaw(raw)!;
    }
    const ct = loadCiphertext(this.session, raw, 'a batch result');
    try {
      return ct.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
    } finally {
      ct.delete();
    }
  }

  close(): void {
    this.session.close();
  }
}
