// Batch mode's results decrypted and decoded by our own code instead of SEAL's Decryptor and
// CKKSEncoder: the counterpart of seeded-batch.ts's encryption.
//
// Why: a LeNet batch's ten results (9 polynomials over 10 primes at ring 32768) cost the client
// ~0.3-0.7 s each through SEAL (unpacking into SEAL's layout, the precheck, SEAL's load, its
// decryption and multiprecision compose), and the thread that decrypted them first built a SEAL
// context of the whole modulus chain (~0.75 s); the server zstd-compressed each (~110 ms) for a
// few percent fewer bytes than the 26-bit packing. Here a result is read straight from its packed
// residues ("P26", raw-ciphertext.ts) and, per prime q:
//   m = c_0 + s (c_1 + s (c_2 + ...))  mod q, in NTT form (Horner: one product per polynomial),
//   then out of NTT form (ntt.ts, one inverse transform);
// then per coefficient the centered integer from its residues: Garner's mixed-radix digits,
// balanced (each in (-q/2, q/2], a carry into the next), summed in float64 from the top digit
// down, so the value comes out with float64's relative rounding (SEAL's compose is exact and its
// conversion to double rounds likewise); divided by the scale, it is decoded as SEAL decodes
// (ckks-encode.ts). Residues are below 2^26, so every product of two is exact in float64.
// test/unit/packed-decrypt.test.ts compares slot for slot with SEAL's decryption.
import { SealedError } from '../errors.ts';
import { CkksEncoder } from './ckks-encode.ts';
import { inverseMod, mulmod, NegacyclicNtt } from './ntt.ts';
import { readPackedInfo } from './raw-ciphertext.ts';
import { unpack26 } from './seeded-decode.ts';

const HINT = 'the result does not match the model this client holds: check that the endpoint serves this model';

/** Decrypts packed results under one secret key (its residues in NTT form over the data primes). */
export class PackedResultDecryptor {
  private readonly primes: readonly number[];
  private readonly degree: number;
  /** [prime][coefficient], NTT form: the secret key, zeroed by close(). */
  private readonly s: Uint32Array;
  /** q_l^-1 mod q_j, at [j * k + l] for l < j. */
  private readonly inverses: Float64Array;
  private residues = new Uint32Array(0);

  constructor(primes: readonly number[], degree: number, secretResidues: Uint32Array) {
    if (primes.some((q) => q >= 2 ** 26)) throw new SealedError('insecure-parameters', 'packed decryption needs primes below 2^26');
    if (secretResidues.length !== primes.length * degree) throw new SealedError('bad-keys', 'the secret key does not match the batch parameters');
    this.primes = primes;
    this.degree = degree;
    this.s = Uint32Array.from(secretResidues);
    const k = primes.length;
    this.inverses = new Float64Array(k * k);
    for (let j = 0; j < k; j++) for (let l = 0; l < j; l++) this.inverses[j * k + l] = inverseMod(primes[l] % primes[j], primes[j]);
  }

  /** The N/2 slots of a packed result (`what` names it in messages). */
  decrypt(bytes: Uint8Array, what = 'the encrypted result'): Float64Array {
    const fail = (why: string) => new SealedError('bad-query', `${what} ${why}`, HINT);
    const N = this.degree;
    const info = readPackedInfo(bytes, what);
    const L = info.primes;
    const S = info.size;
    if (info.degree !== N) throw fail(`has ring degree ${info.degree}, the model uses ${N}`);
    if (L < 1 || L > this.primes.length) throw fail(`has ${L} primes, the model's results have 1 to ${this.primes.length}`);
    if (S < 2 || S > 16) throw fail(`has ${S} polynomials, not 2 to 16`);
    if (!(info.scale > 0 && Number.isFinite(info.scale))) throw fail('has a scale that is not a positive number');
    const primes = this.primes.slice(0, L);
    if (this.residues.length < S * L * N) this.residues = new Uint32Array(S * L * N);
    const c = this.residues;
    for (let p = 0; p < S; p++) {
      const bad = unpack26(bytes, info.at + ((p * L * N) / 4) * 13, primes, N, c, p * L * N);
      if (bad >= 0) throw fail(`has a residue above its prime (polynomial ${p + 1}, prime ${bad + 1})`);
    }
    // Per prime: Horner in NTT form, then out of it. m[j][x] in [0, q_j).
    const m = primes.map((q, j) => {
      const s = this.s.subarray(j * N, (j + 1) * N);
      const acc = new Float64Array(N);
      const top = (S - 1) * L * N + j * N;
      for (let x = 0; x < N; x++) acc[x] = c[top + x];
      for (let p = S - 2; p >= 0; p--) {
        const at = p * L * N + j * N;
        for (let x = 0; x < N; x++) {
          const v = mulmod(acc[x], s[x], q) + c[at + x];
          acc[x] = v >= q ? v - q : v;
        }
      }
      NegacyclicNtt.of(q, N).inverse(acc);
      return acc;
    });
    const coefficients = new Float64Array(N);
    const digits = new Float64Array(L);
    const { inverses } = this;
    const k = this.primes.length;
    const inverseScale = 1 / info.scale;
    for (let x = 0; x < N; x++) {
      // Garner: digits d_j in [0, q_j) with value = d_0 + d_1 q_0 + d_2 q_0 q_1 + ...
      for (let j = 0; j < L; j++) {
        const q = primes[j];
        let t = m[j][x];
        for (let l = 0; l < j; l++) {
          t -= digits[l];
          while (t < 0) t += q;
          t = mulmod(t, inverses[j * k + l], q);
        }
        digits[j] = t;
      }
      // Balanced (the centered representative, as SEAL's upper-half test makes it), then summed.
      let carry = 0;
      for (let j = 0; j < L; j++) {
        const d = digits[j] + carry;
        carry = d > primes[j] / 2 ? 1 : 0;
        digits[j] = d - carry * primes[j];
      }
      let v = digits[L - 1];
      for (let j = L - 2; j >= 0; j--) v = v * primes[j] + digits[j];
      coefficients[x] = v * inverseScale;
    }
    const slots = new Float64Array(N / 2);
    CkksEncoder.of(N).decode(coefficients, slots);
    return slots;
  }

  /** Zeroes this decryptor's copy of the secret key. */
  close(): void {
    this.s.fill(0);
    this.residues.fill(0);
  }
}
