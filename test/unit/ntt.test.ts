// The float64 NTTs of batch mode's primes (kernel.wat: nttForwardAt and nttInverseAt, signed
// reduction) against the schoolbook Cooley-Tukey and Gentleman-Sande loops with a reduction at
// every step, at the largest primes below 2^26 where their exactness arguments are tightest (a
// multiplicand of up to 2q + 4 times a twiddle below q must stay below 2^53), on inputs at the
// ends of [0, q).
import t from 'tap';
import { mulmod, NegacyclicNtt } from '../../src/fhe/ntt.ts';

const isPrime = (n: number) => {
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
};
/** The largest primes below 2^26 that are 1 mod 2N (so they have a 2N-th root of unity). */
function largestPrimes(N: number, count: number): number[] {
  const out: number[] = [];
  for (let q = Math.floor((2 ** 26 - 1) / (2 * N)) * 2 * N + 1; out.length < count; q -= 2 * N) if (isPrime(q)) out.push(q);
  return out;
}

function reference(ntt: NegacyclicNtt, a: Float64Array): Float64Array {
  const { q, n } = ntt;
  const psiRev = ntt.forwardTables().subarray(0, n);
  const x = Float64Array.from(a);
  for (let m = 1, t = n >> 1; m < n; m <<= 1, t >>= 1)
    for (let i = 0; i < m; i++)
      for (let j = 2 * i * t; j < 2 * i * t + t; j++) {
        const U = x[j];
        const V = mulmod(x[j + t], psiRev[m + i], q);
        x[j] = (U + V) % q;
        x[j + t] = (U - V + q) % q;
      }
  return x;
}

/** The inverse: Gentleman-Sande butterflies, then times n^-1. */
function referenceInverse(ntt: NegacyclicNtt, a: Float64Array): Float64Array {
  const { q, n } = ntt;
  const psiInvRev = ntt.inverseTables().subarray(0, n);
  const x = Float64Array.from(a);
  for (let m = n >> 1, t = 1; m >= 1; m >>= 1, t <<= 1)
    for (let i = 0; i < m; i++)
      for (let j = 2 * i * t; j < 2 * i * t + t; j++) {
        const U = x[j];
        const V = x[j + t];
        x[j] = (U + V) % q;
        x[j + t] = mulmod((U - V + q) % q, psiInvRev[m + i], q);
      }
  return x.map((v) => mulmod(v, ntt.nInv, q));
}

for (const N of [4, 8192, 16384])
  t.test(`forward and inverse NTT at N = ${N}: the schoolbook transforms' residues, in [0, q)`, async (t) => {
    for (const q of largestPrimes(Math.max(N, 1024), 2)) {
      const ntt = NegacyclicNtt.of(q, N);
      let seed = 12345;
      const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
      const inputs: [string, Float64Array][] = [
        ['all q - 1', new Float64Array(N).fill(q - 1)],
        ['zero', new Float64Array(N)],
        ['q - 1 and 0 alternating', Float64Array.from({ length: N }, (_, i) => (i % 2 ? 0 : q - 1))],
        ['uniform', Float64Array.from({ length: N }, () => Math.floor(rand() * q))],
        ['near q and near 0', Float64Array.from({ length: N }, () => (rand() < 0.5 ? q - 1 - Math.floor(rand() * 3) : Math.floor(rand() * 3)))],
      ];
      for (const [name, a] of inputs) {
        const want = reference(ntt, a);
        const got = Float64Array.from(a);
        ntt.forward(got);
        const wrong = got.findIndex((x, i) => x !== want[i]);
        t.equal(wrong, -1, `q = ${q}, ${name}: every residue equal${wrong >= 0 ? ` (first difference at ${wrong}: ${got[wrong]} vs ${want[wrong]})` : ''}`);
        const wantInverse = referenceInverse(ntt, a);
        const inverse = Float64Array.from(a);
        ntt.inverse(inverse);
        const wrongInverse = inverse.findIndex((x, i) => x !== wantInverse[i]);
        t.equal(
          wrongInverse,
          -1,
          `q = ${q}, ${name}, inverse: every residue equal${wrongInverse >= 0 ? ` (first difference at ${wrongInverse}: ${inverse[wrongInverse]} vs ${wantInverse[wrongInverse]})` : ''}`,
        );
      }
    }
  });
