import { SealedError } from '../errors.ts';

// The negacyclic NTT of SEAL (Z_q[X]/(X^N + 1) -> Z_q^N), for primes below 2^26 so that every
// product of two residues is below 2^52, exact in a float64. SEAL's NTTTables use the minimal
// primitive 2N-th root psi, stored in bit-reversed order, and the Cooley-Tukey / Gentleman-Sande
// loops of Longa-Naehrig 2016 (output in bit-reversed order): so do we. Checked against SEAL in
// test/unit/circuit-privacy.test.ts: the inverse transform of SEAL's secret key is ternary.

export function mulmod(a: number, b: number, q: number): number {
  const p = a * b;
  let r = p - Math.floor(p / q) * q;
  if (r < 0) r += q;
  else if (r >= q) r -= q;
  return r;
}

function powmod(a: number, e: number, q: number): number {
  let r = 1;
  a %= q;
  while (e > 0) {
    if (e & 1) r = mulmod(r, a, q);
    a = mulmod(a, a, q);
    e = Math.floor(e / 2);
  }
  return r;
}

function bitReverse(x: number, bits: number): number {
  let r = 0;
  for (let i = 0; i < bits; i++) r = (r << 1) | ((x >>> i) & 1);
  return r;
}

export class NegacyclicNtt {
  readonly q: number;
  readonly n: number;
  /** psi^bitrev(i) and psi^-bitrev(i). */
  private readonly psiRev: Float64Array;
  private readonly psiInvRev: Float64Array;
  private readonly nInv: number;

  constructor(q: number, n: number) {
    if (q >= 2 ** 26 || (q - 1) % (2 * n) !== 0) throw new SealedError('internal', `NTT: ${q} is not a prime below 2^26 congruent to 1 mod 2N`);
    this.q = q;
    this.n = n;
    const bits = Math.log2(n);
    // Some primitive 2N-th root (g^N = -1), then the smallest of its odd powers: SEAL's choice.
    let g = 0;
    for (let x = 2; x < q; x++) {
      g = powmod(x, (q - 1) / (2 * n), q);
      if (powmod(g, n, q) === q - 1) break;
    }
    let psi = g;
    const g2 = mulmod(g, g, q);
    for (let k = 0, p = g; k < n; k++, p = mulmod(p, g2, q)) if (p < psi) psi = p;
    const psiInv = powmod(psi, 2 * n - 1, q);
    this.psiRev = new Float64Array(n);
    this.psiInvRev = new Float64Array(n);
    for (let i = 0, p = 1, pi = 1; i < n; i++, p = mulmod(p, psi, q), pi = mulmod(pi, psiInv, q)) {
      this.psiRev[bitReverse(i, bits)] = p;
      this.psiInvRev[bitReverse(i, bits)] = pi;
    }
    this.nInv = powmod(n, q - 2, q);
  }

  /** In place; entries in [0, q). */
  forward(a: Float64Array): void {
    const { q, n, psiRev } = this;
    for (let m = 1, t = n >> 1; m < n; m <<= 1, t >>= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = mulmod(a[j + t], S, q);
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          const y = U - V;
          a[j + t] = y < 0 ? y + q : y;
        }
      }
    }
  }

  /** In place; the inverse of forward. */
  inverse(a: Float64Array): void {
    const { q, n, psiInvRev } = this;
    for (let m = n >> 1, t = 1; m >= 1; m >>= 1, t <<= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiInvRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = a[j + t];
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          const y = U - V;
          a[j + t] = mulmod(y < 0 ? y + q : y, S, q);
        }
      }
    }
    for (let j = 0; j < n; j++) a[j] = mulmod(a[j], this.nInv, q);
  }
}

/** A small signed integer polynomial reduced modulo q, as residues in [0, q). */
export function reduceSmall(x: ArrayLike<number>, q: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] < 0 ? x[i] + q : x[i];
  return out;
}

export function reduceBig(x: bigint[], q: number): Float64Array {
  const Q = BigInt(q);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    let r = x[i] % Q;
    if (r < 0n) r += Q;
    out[i] = Number(r);
  }
  return out;
}

/** One NTT table per prime (build once per session: ~10 ms each at N = 8192). */
export function nttTables(primes: number[], degree: number): NegacyclicNtt[] {
  return primes.map((q) => new NegacyclicNtt(q, degree));
}

// ---------------------------------------------------------------------------------------------
// The single layout: results are SEAL ciphertexts of size 2 whose primes may have up to 60 bits.
// Re-randomization is SEAL's own public-key encryption of zero (u pk + (e0, e1)) with the
// client's PublicKey; the flood is added to c0 on the raw residues, through the same negacyclic
// NTT in BigInt (one transform per prime and result).

function powmodBig(a: bigint, e: bigint, q: bigint): bigint {
  let r = 1n;
  a %= q;
  while (e > 0n) {
    if (e & 1n) r = (r * a) % q;
    a = (a * a) % q;
    e >>= 1n;
  }
  return r;
}

/** NegacyclicNtt for any SEAL prime (up to 60 bits), in BigInt: ~20x slower, used once per result. */
export class NegacyclicNttBig {
  readonly q: bigint;
  readonly n: number;
  private readonly psiRev: BigUint64Array;
  private psiInvRev?: BigUint64Array;

  constructor(q: bigint, n: number) {
    const N2 = BigInt(2 * n);
    if ((q - 1n) % N2 !== 0n) throw new SealedError('internal', `NTT: ${q} is not congruent to 1 mod 2N`);
    this.q = q;
    this.n = n;
    let g: bigint;
    for (let x = 2n; ; x++) {
      g = powmodBig(x, (q - 1n) / N2, q);
      if (powmodBig(g, BigInt(n), q) === q - 1n) break;
    }
    let psi = g;
    const g2 = (g * g) % q;
    for (let k = 0, p = g; k < n; k++, p = (p * g2) % q) if (p < psi) psi = p;
    const bits = Math.log2(n);
    this.psiRev = new BigUint64Array(n);
    for (let i = 0, p = 1n; i < n; i++, p = (p * psi) % q) this.psiRev[bitReverse(i, bits)] = p;
  }

  forward(a: BigUint64Array): void {
    const { q, n, psiRev } = this;
    for (let m = 1, t = n >> 1; m < n; m <<= 1, t >>= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = (a[j + t] * S) % q;
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          a[j + t] = U >= V ? U - V : U + q - V;
        }
      }
    }
  }

  /** In place; the inverse of forward (tables made on first use: the server never needs it). */
  inverse(a: BigUint64Array): void {
    const { q, n } = this;
    if (!this.psiInvRev) {
      const psiInv = powmodBig(this.psiRev[bitReverse(1, Math.log2(n))], q - 2n, q);
      const bits = Math.log2(n);
      this.psiInvRev = new BigUint64Array(n);
      for (let i = 0, p = 1n; i < n; i++, p = (p * psiInv) % q) this.psiInvRev[bitReverse(i, bits)] = p;
    }
    const psiInvRev = this.psiInvRev;
    for (let m = n >> 1, t = 1; m >= 1; m >>= 1, t <<= 1) {
      for (let i = 0; i < m; i++) {
        const S = psiInvRev[m + i];
        const j1 = 2 * i * t;
        for (let j = j1; j < j1 + t; j++) {
          const U = a[j];
          const V = a[j + t];
          const x = U + V;
          a[j] = x >= q ? x - q : x;
          a[j + t] = ((U >= V ? U - V : U + q - V) * S) % q;
        }
      }
    }
    const nInv = powmodBig(BigInt(n), q - 2n, q);
    for (let j = 0; j < n; j++) a[j] = (a[j] * nInv) % q;
  }
}
