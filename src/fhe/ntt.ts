/* eslint-disable max-lines -- Over 300 lines on purpose: both number types share the table code
   (findPsi, bitReversedPowers) and SEAL's conventions stated below; split by number type, the
   convention would be stated twice. */
import { SealedError } from '../errors.ts';
import { KERNEL_WASM, wasmBytes } from './kernel-wasm.ts';

// The negacyclic NTT of SEAL (Z_q[X]/(X^N + 1) -> Z_q^N). SEAL's NTTTables use the minimal
// primitive 2N-th root psi, stored in bit-reversed order, and the Cooley-Tukey / Gentleman-Sande
// loops of Longa-Naehrig 2016 (output in bit-reversed order): so do we, in two number types.
// NegacyclicNtt works on float64 for primes below 2^26 (batch mode), so that every product of
// two residues is below 2^52, exact; NegacyclicNttBig on u64 (BigInt in JavaScript) for any SEAL
// prime up to 60 bits (the single layout's). Both get psi and their tables from the same code
// (`findPsi`, `bitReversedPowers`, generic over the arithmetic). The forward transforms, which
// every flooded result needs, run in WebAssembly (kernel.wat), and so does NegacyclicNtt's
// inverse, which rescaling needs once per polynomial (rescale.ts: 1.8 ms as a JavaScript loop at
// N = 16384, 0.064 ms in kernel.wat); NegacyclicNttBig's, which only the client and tests use,
// stays a JavaScript loop. Checked against SEAL
// in test/unit/circuit-privacy.test.ts: the inverse transform of SEAL's secret key is ternary,
// and forward(inverse(x)) = x.
//
// Tables depend only on (q, N), i.e. on the parameters, never on keys or data: `of(q, N)` builds
// them once per thread and shares them (a BigInt table takes ~20 ms per prime to build, about
// what one transform costs, so building them per key set or per result doubled the flood's cost).

export function mulmod(a: number, b: number, q: number): number {
  const p = a * b;
  let r = p - Math.floor(p / q) * q;
  if (r < 0) r += q;
  else if (r >= q) r -= q;
  return r;
}

/** a^-1 mod q for a prime q (Fermat), exactly in float64. */
export function inverseMod(a: number, q: number): number {
  let r = 1;
  let b = a % q;
  for (let e = q - 2; e > 0; e = Math.floor(e / 2), b = mulmod(b, b, q)) if (e % 2) r = mulmod(r, b, q);
  return r;
}

function bitReverse(x: number, bits: number): number {
  let r = 0;
  for (let i = 0; i < bits; i++) r = (r << 1) | ((x >>> i) & 1);
  return r;
}

/** Arithmetic modulo q in one number type (number or bigint): what building the tables needs. */
interface ModArith<T> {
  q: T;
  mul(a: T, b: T): T;
  /** a^e mod q */
  pow(a: T, e: T): T;
  int(x: number): T;
  /** q - k */
  minus(k: number): T;
  /** (q - 1) / (2N) */
  cofactor(n: number): T;
  less(a: T, b: T): boolean;
}

function powWith<T>(a: T, e: T, one: T, mul: (a: T, b: T) => T, odd: (e: T) => boolean, half: (e: T) => T, zero: T): T {
  let r = one;
  for (; e !== zero; e = half(e), a = mul(a, a)) if (odd(e)) r = mul(r, a);
  return r;
}

function numberArith(q: number): ModArith<number> {
  const mul = (a: number, b: number) => mulmod(a, b, q);
  return {
    q,
    mul,
    pow: (a, e) =>
      powWith(
        a % q,
        e,
        1,
        mul,
        (e) => (e & 1) === 1,
        (e) => Math.floor(e / 2),
        0,
      ),
    int: (x) => x,
    minus: (k) => q - k,
    cofactor: (n) => (q - 1) / (2 * n),
    less: (a, b) => a < b,
  };
}

function bigArith(q: bigint): ModArith<bigint> {
  const mul = (a: bigint, b: bigint) => (a * b) % q;
  return {
    q,
    mul,
    pow: (a, e) =>
      powWith(
        a % q,
        e,
        1n,
        mul,
        (e) => (e & 1n) === 1n,
        (e) => e >> 1n,
        0n,
      ),
    int: (x) => BigInt(x),
    minus: (k) => q - BigInt(k),
    cofactor: (n) => (q - 1n) / BigInt(2 * n),
    less: (a, b) => a < b,
  };
}

/** SEAL's psi (the smallest primitive 2N-th root of unity) and its inverse. */
function findPsi<T>(ar: ModArith<T>, n: number): { psi: T; psiInv: T } {
  const { mul, pow, int } = ar;
  const minusOne = ar.minus(1);
  // Some primitive 2N-th root (g^N = -1), then the smallest of its odd powers: SEAL's choice.
  let g: T;
  for (let x = 2; ; x++) {
    g = pow(int(x), ar.cofactor(n));
    if (pow(g, int(n)) === minusOne) break;
  }
  let psi = g;
  const g2 = mul(g, g);
  for (let k = 0, p = g; k < n; k++, p = mul(p, g2)) if (ar.less(p, psi)) psi = p;
  return { psi, psiInv: pow(psi, int(2 * n - 1)) };
}

/** root^bitrev(i) for i < n: the layout of SEAL's tables. */
function bitReversedPowers<T>(ar: ModArith<T>, root: T, n: number): T[] {
  const bits = Math.log2(n);
  const out = new Array<T>(n);
  for (let i = 0, p = ar.int(1); i < n; i++, p = ar.mul(p, root)) out[bitReverse(i, bits)] = p;
  return out;
}

/** N^-1 mod q. */
const inverseOfN = <T>(ar: ModArith<T>, n: number): T => ar.pow(ar.int(n), ar.minus(2));

/** The shared table of (q, N) in `cache`, made by `make` on first use. */
function shared<K, V>(cache: Map<string, V>, q: K, n: number, make: () => V): V {
  const key = `${String(q)}:${n}`;
  let t = cache.get(key);
  if (!t) cache.set(key, (t = make()));
  return t;
}

const numberTables = new Map<string, NegacyclicNtt>();
const bigTables = new Map<string, NegacyclicNttBig>();

interface NttInstance {
  /** a, then psiRev and psiRev / q, then psiInvRev and psiInvRev / q (float64). */
  memory: Float64Array;
  run(): void;
  runInverse(): void;
}

let kernelModule: WebAssembly.Module | undefined;

/** An instance of the kernel module (kernel.wat) with at least `bytes` of memory of its own. */
export function kernelInstance<E>(bytes: number): { exports: E; buffer: ArrayBuffer } {
  kernelModule ??= new WebAssembly.Module(wasmBytes(KERNEL_WASM));
  const exports = new WebAssembly.Instance(kernelModule, {}).exports as E & { memory: WebAssembly.Memory };
  const have = exports.memory.buffer.byteLength;
  if (have < bytes) exports.memory.grow(Math.ceil((bytes - have) / 65536));
  return { exports, buffer: exports.memory.buffer };
}

/** A kernel instance of its own holding one prime's tables: forward (NegacyclicNtt.forwardTables), then inverse. */
function nttInstance(forward: Float64Array, inverse: Float64Array, q: number, nInv: number): NttInstance {
  const n = forward.length / 2;
  const { exports, buffer } = kernelInstance<{
    nttForward(n: number, q: number): void;
    nttInverseAt(n: number, q: number, a: number, tab: number, ninv: number): void;
  }>(40 * n);
  const memory = new Float64Array(buffer, 0, 5 * n);
  memory.set(forward, n);
  memory.set(inverse, 3 * n);
  return { memory, run: () => exports.nttForward(n, q), runInverse: () => exports.nttInverseAt(n, q, 0, 24 * n, nInv) };
}

export class NegacyclicNtt {
  readonly q: number;
  readonly n: number;
  /** psi^bitrev(i) and psi^-bitrev(i). */
  private readonly psiRev: Float64Array;
  private readonly psiInvRev: Float64Array;
  /** n^-1 mod q. */
  readonly nInv: number;
  private wasm: NttInstance | undefined;

  /** The tables of (q, N), built once per thread. */
  static of(q: number, n: number): NegacyclicNtt {
    return shared(numberTables, q, n, () => new NegacyclicNtt(q, n));
  }

  constructor(q: number, n: number) {
    if (q >= 2 ** 26 || (q - 1) % (2 * n) !== 0) throw new SealedError('internal', `NTT: ${q} is not a prime below 2^26 congruent to 1 mod 2N`);
    this.q = q;
    this.n = n;
    const ar = numberArith(q);
    const { psi, psiInv } = findPsi(ar, n);
    this.psiRev = Float64Array.from(bitReversedPowers(ar, psi, n));
    this.psiInvRev = Float64Array.from(bitReversedPowers(ar, psiInv, n));
    this.nInv = inverseOfN(ar, n);
  }

  /**
   * In place; entries in [0, q). Runs in WebAssembly SIMD (kernel.wat: nttForwardAt, lazily
   * reduced: 0.075 ms at N = 16384 against 0.267 for the loop that reduced at every stage); the
   * tables live in this object's own instance memory.
   */
  forward(a: Float64Array): void {
    const w = this.instance();
    w.memory.set(a);
    w.run();
    a.set(w.memory.subarray(0, this.n));
  }

  private instance(): NttInstance {
    return (this.wasm ??= nttInstance(this.forwardTables(), this.inverseTables(), this.q, this.nInv));
  }

  /** The forward transform's tables as kernel.wat's NTT reads them: psi^bitrev(i), then psi^bitrev(i) / q (2N float64). */
  forwardTables(): Float64Array {
    return this.tables(this.psiRev);
  }

  /** The inverse transform's, as kernel.wat's nttInverseAt reads them: psi^-bitrev(i), then psi^-bitrev(i) / q. */
  inverseTables(): Float64Array {
    return this.tables(this.psiInvRev);
  }

  private tables(powers: Float64Array): Float64Array {
    const { q, n } = this;
    const t = new Float64Array(2 * n);
    t.set(powers);
    t.set(
      powers.map((x) => x / q),
      n,
    );
    return t;
  }

  /** In place; the inverse of forward (kernel.wat: nttInverseAt, in the same instance). */
  inverse(a: Float64Array): void {
    const w = this.instance();
    w.memory.set(a);
    w.runInverse();
    a.set(w.memory.subarray(0, this.n));
  }
}

/** A small signed integer polynomial reduced modulo q, as residues in [0, q). */
export function reduceSmall(x: ArrayLike<number>, q: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] < 0 ? x[i] + q : x[i];
  return out;
}

/** The NTT tables of each prime (shared: built once per thread and parameter set). */
export function nttTables(primes: number[], degree: number): NegacyclicNtt[] {
  return primes.map((q) => NegacyclicNtt.of(q, degree));
}

// ---------------------------------------------------------------------------------------------
// The single layout: results are SEAL ciphertexts of size 2 whose primes may have up to 60 bits.
// Re-randomization is SEAL's own public-key encryption of zero (u pk + (e0, e1)) with the
// client's PublicKey; the flood is added to c0 on the raw residues, through the same negacyclic
// NTT (one transform per prime and result).

/** NegacyclicNtt for any SEAL prime up to 60 bits (u64 residues), used once per result and prime. */
/** A kernel instance of its own holding one table: W = psi^bitrev(i) and floor(W 2^64 / q). */
function ntt64Instance(psiRev: BigUint64Array, q: bigint): Ntt64Instance {
  if (q >= 1n << 61n) throw new SealedError('internal', `NTT: the prime ${q} has more than 61 bits`);
  const { exports, buffer } = kernelInstance<{ nttForward64(n: number, q: bigint): void; addMod64(a: number, dst: number, n: number, q: bigint): void }>(
    32 * psiRev.length,
  );
  const n = psiRev.length;
  const memory = new BigUint64Array(buffer, 0, 3 * n);
  memory.set(psiRev, n);
  memory.set(
    psiRev.map((w) => (w << 64n) / q),
    2 * n,
  );
  return {
    memory,
    bytes: new Uint8Array(buffer, 0, 32 * n),
    run: () => exports.nttForward64(n, q),
    addToLast: () => exports.addMod64(0, 24 * n, n, q),
  };
}

interface Ntt64Instance {
  /** a, psiRev, floor(psiRev 2^64 / q), then a fourth region of n words (addToLast). */
  memory: BigUint64Array;
  bytes: Uint8Array;
  run(): void;
  /** The fourth region += a, modulo q. */
  addToLast(): void;
}

export class NegacyclicNttBig {
  readonly q: bigint;
  readonly n: number;
  private readonly psiRev: BigUint64Array;
  private psiInvRev?: BigUint64Array;
  private wasm: Ntt64Instance | undefined;

  /** The tables of (q, N), built once per thread (not per key set: they do not depend on keys). */
  static of(q: bigint, n: number): NegacyclicNttBig {
    return shared(bigTables, q, n, () => new NegacyclicNttBig(q, n));
  }

  constructor(q: bigint, n: number) {
    if ((q - 1n) % BigInt(2 * n) !== 0n) throw new SealedError('internal', `NTT: ${q} is not congruent to 1 mod 2N`);
    this.q = q;
    this.n = n;
    const ar = bigArith(q);
    this.psiRev = BigUint64Array.from(bitReversedPowers(ar, findPsi(ar, n).psi, n));
  }

  /**
   * In place; entries in [0, q). In WebAssembly (kernel.wat: nttForward64, Shoup's products):
   * 0.34-0.42 ms at N = 16384 and a 60-bit prime on 2026-12-01's VM, against 6.5 ms for the
   * BigInt loop it replaces.
   */
  forward(a: BigUint64Array): void {
    const w = (this.wasm ??= ntt64Instance(this.psiRev, this.q));
    w.memory.set(a);
    w.run();
    a.set(w.memory.subarray(0, this.n));
  }
  /**
   * Adds forward(a) to the n residues (little-endian u64, in [0, q)) at byte `at` of `target`,
   * modulo q; `a` is left transformed. The flood's last step, without a BigInt per coefficient.
   */
  addForwardInto(a: BigUint64Array, target: Uint8Array, at: number): void {
    this.forward(a); // leaves a in the instance's first region
    const w = this.wasm!;
    const { n } = this;
    w.bytes.set(target.subarray(at, at + 8 * n), 24 * n);
    w.addToLast();
    target.set(w.bytes.subarray(24 * n, 32 * n), at);
  }

  /** In place; the inverse of forward (tables made on first use: the server never needs it). */
  inverse(a: BigUint64Array): void {
    const { q, n } = this;
    const ar = bigArith(q);
    this.psiInvRev ??= BigUint64Array.from(bitReversedPowers(ar, findPsi(ar, n).psiInv, n));
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
    const nInv = inverseOfN(ar, n);
    for (let j = 0; j < n; j++) a[j] = (a[j] * nInv) % q;
  }
}
