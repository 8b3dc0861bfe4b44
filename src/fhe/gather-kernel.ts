// The single-record gather's mask products in our WebAssembly kernel (gather.wat: split,
// macSplit, redcSplit) instead of SEAL's multiplyPlain and add. A giant group's sum over its
// diagonals of mask x copy is, per residue, sum_d m_d x_d mod q. SEAL reduces every product
// (Barrett, two 128-bit products emulated in its WebAssembly: ~12 ns here); the kernel splits
// each residue at bit b into two u32 halves, sums the products' three parts with SIMD 32 x 32 ->
// 64-bit multiplies, four residues at a time, and reduces once per residue (Montgomery: the masks
// are held times 2^64 mod q). The sum is the same integer mod q, so the ciphertext is SEAL's
// byte for byte (test/unit/gather-kernel.test.ts checks the kernel against BigInt,
// test/trees-slots-encrypted.test.ts the circuit).
import { SealedError } from '../errors.ts';
import { GATHER_WASM, wasmBytes } from './kernel-wasm.ts';
import { RAW_DATA_OFFSET, RAW_SCALE_OFFSET, readRawInfo } from './raw-ciphertext.ts';

interface Exports {
  toMontgomery(a: number, n: number, r2: bigint, q: bigint, qinv: bigint): void;
  mulConstMod53(a: number, n: number, c: bigint, cq: number, q: bigint): void;
  split(src: number, lo: number, hi: number, n: number, b: bigint): void;
  splitMask(src: number, lo: number, hi: number, n: number, b: bigint): void;
  macSplit(xlo: number, xhi: number, mlo: number, mhi: number, acc: number, n: number): void;
  redcSplit(acc: number, out: number, n: number, q: bigint, qinv: bigint, b: bigint): void;
  addMod64(a: number, dst: number, n: number, q: bigint): void;
}

/** SEAL's uncompressed Plaintext: SEALHeader, parms_id, coeff_count, scale, then a DynArray (its header and count) of residues. */
export const PLAIN_DATA_OFFSET = 16 + 32 + 8 + 8 + 16 + 8;
const M64 = (1n << 64n) - 1n;

let module: WebAssembly.Module | undefined;

/** -q^-1 mod 2^64 (Newton's iteration doubles the correct low bits; q odd is its own inverse to 3 bits). */
export function negInverse(q: bigint): bigint {
  let x = q;
  for (let i = 0; i < 6; i++) x = (x * (2n - q * x)) & M64;
  return (1n << 64n) - x;
}

/** Per prime: the split bit b (q < 2^2b) and how many products the accumulators and the reduction hold. */
function splitOf(q: bigint): { b: number; chunk: number } {
  if (q >= 1n << 61n || q % 2n === 0n) throw new SealedError('internal', `the gather kernel takes odd primes below 2^61, not ${q}`);
  const b = Math.max(16, Math.ceil(q.toString(2).length / 2));
  // A1's part, x_lo m_hi + x_hi m_lo, is below 2^(2b + 1); T = sum of products < q 2^64 for Montgomery's reduction.
  const chunk = Math.min(Number((1n << 64n) / (1n << BigInt(2 * b + 1))), Number((1n << 64n) / q));
  return { b, chunk };
}

/** Bytes of a form's masks in the kernel: `masks` polynomials of `primes` x `n` residues, 8 bytes each. */
export function maskBytes(n: number, primes: number, masks: number): number {
  return masks * primes * n * 8;
}

/**
 * A form's masks in memory the threads of a process share (the kernel's second memory), a word
 * saying whether they are there (0 not yet, 1 a thread is building them, 2 built) and one
 * counting the builds (maskBuilds: one, however many threads read them). The first kernel to
 * claim them builds them; the others wait, then read them where they are. The digits forest's
 * 378 masks are 297 MB, ~2 s of a worker's start to build (SEAL encoding them, then the first
 * touch of that memory): once per process instead of once per worker.
 */
export interface SharedMasks {
  memory: WebAssembly.Memory;
  state: Int32Array;
}

export function allocateSharedMasks(n: number, primes: number, masks: number): SharedMasks {
  const pages = Math.max(1, Math.ceil(maskBytes(n, primes, masks) / 65536));
  return { memory: new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }), state: new Int32Array(new SharedArrayBuffer(8)) };
}

const UNBUILT = 0;
const BUILDING = 1;
const BUILT = 2;

/**
 * A form's masks (Montgomery form, split; this thread's or shared, SharedMasks: `masks` x primes x
 * n residues) and one query's copies, split, in a kernel instance of its own: `copies` x 2 x
 * primes x n, three accumulators and an output ciphertext of 2 x primes x n, 8 bytes each, and a
 * scratch polynomial.
 */
export class GatherKernel {
  private readonly x: Exports;
  private readonly memory: WebAssembly.Memory;
  private readonly n: number;
  /** Per prime: q, -q^-1 mod 2^64, 2^128 mod q and 2^64 mod q (into Montgomery form), the split bit, the chunk. */
  private readonly primes: { q: bigint; qinv: bigint; r2: bigint; r: bigint; b: number; chunk: number }[];
  /** Residues per polynomial (primes x n). */
  private readonly words: number;
  private readonly copyAt: number;
  private readonly accAt: number;
  private readonly outAt: number;
  private readonly tmpAt: number;
  /** A copy's header (everything before its residues), for the sums: same parameters and size. */
  private header?: Uint8Array;
  private readonly shared?: SharedMasks;
  /** Whether this kernel builds the masks (setMask): they are its own, or it claimed the shared ones. */
  readonly buildsMasks: boolean;

  constructor(n: number, primes: bigint[], masks: number, copies: number, shared?: SharedMasks) {
    if (n % 4 !== 0) throw new SealedError('internal', `a gather kernel of degree ${n}`);
    this.n = n;
    this.primes = primes.map((q) => ({ q, qinv: negInverse(q), r2: (1n << 128n) % q, r: (1n << 64n) % q, ...splitOf(q) }));
    this.words = primes.length * n;
    const poly = 8 * this.words;
    this.copyAt = 0;
    this.accAt = this.copyAt + copies * 2 * poly;
    this.outAt = this.accAt + 3 * 8 * n;
    this.tmpAt = this.outAt + 2 * poly;
    const scratch = new WebAssembly.Memory({ initial: Math.ceil((this.tmpAt + poly) / 65536) });
    const need = maskBytes(n, primes.length, masks);
    if (shared && shared.memory.buffer.byteLength < need)
      throw new SealedError('internal', `shared masks of ${shared.memory.buffer.byteLength} bytes for ${need}`);
    const claimed = shared ? claim(shared.state) : 'own';
    this.shared = claimed === 'own' ? undefined : shared;
    this.buildsMasks = claimed !== 'built';
    const maskMemory = this.shared?.memory ?? allocateSharedMasks(n, primes.length, masks).memory;
    module ??= new WebAssembly.Module(wasmBytes(GATHER_WASM));
    this.x = new WebAssembly.Instance(module, { env: { scratch, masks: maskMemory } }).exports as unknown as Exports;
    this.memory = scratch;
  }

  /** The masks are all set (setMask): kernels sharing them that waited go on. */
  masksBuilt(): void {
    if (this.shared && this.buildsMasks) settle(this.shared.state, BUILT);
  }

  /** Building the masks failed: another kernel sharing them may claim them. */
  masksFailed(): void {
    if (this.shared && this.buildsMasks) settle(this.shared.state, UNBUILT);
  }

  /**
   * Residues of one polynomial (primes x n, prime-major) into the scratch, then split per prime at
   * `at` (lo, hi halves of n u32 each): a mask (Montgomery form) in the masks' memory, else in this thread's.
   */
  private splitInto(residues: Uint8Array, at: number, mask: boolean): void {
    new Uint8Array(this.memory.buffer, this.tmpAt, 8 * this.words).set(residues);
    this.primes.forEach(({ q, qinv, r2, r, b }, j) => {
      const src = this.tmpAt + 8 * j * this.n;
      // Below 2^53 the float64 quotient does it in a fraction of the work (the digits forest's
      // 378 masks: ~0.07 s instead of ~0.3 s with toMontgomery).
      if (mask && q < 1n << 53n) this.x.mulConstMod53(src, this.n, r, Number(r) / Number(q), q);
      else if (mask) this.x.toMontgomery(src, this.n, r2, q, qinv);
      const dst = at + 8 * j * this.n;
      if (mask) this.x.splitMask(src, dst, dst + 4 * this.n, this.n, BigInt(b));
      else this.x.split(src, dst, dst + 4 * this.n, this.n, BigInt(b));
    });
  }

  /** Mask `k`: a Plaintext at the top level in NTT form, as SEAL saves it uncompressed (only by a kernel that buildsMasks). */
  setMask(k: number, plaintext: Uint8Array): void {
    if (!this.buildsMasks) throw new SealedError('internal', 'a mask set in a kernel that reads shared masks it did not claim');
    if (plaintext.length !== PLAIN_DATA_OFFSET + 8 * this.words) throw new SealedError('internal', `a mask of ${plaintext.length} bytes`);
    this.splitInto(plaintext.subarray(PLAIN_DATA_OFFSET), k * 8 * this.words, true);
  }

  /** Copy `j` of the query: a ciphertext of size 2 at the top level, as SEAL saves it uncompressed. */
  setCopy(j: number, ciphertext: Uint8Array): void {
    const info = readRawInfo(ciphertext);
    if (info.size !== 2 || info.primes !== this.primes.length || info.degree !== this.n) throw new SealedError('internal', 'a copy of another shape');
    this.header ??= ciphertext.slice(0, RAW_DATA_OFFSET);
    for (let poly = 0; poly < 2; poly++) {
      const residues = ciphertext.subarray(RAW_DATA_OFFSET + 8 * poly * this.words, RAW_DATA_OFFSET + 8 * (poly + 1) * this.words);
      this.splitInto(residues, this.copyAt + 8 * (2 * j + poly) * this.words, false);
    }
  }

  /**
   * sum over `terms` of mask x copy, as SEAL would save the ciphertext uncompressed, at `scale`
   * (the copies' times the masks'): reduced once per `chunk` terms (512 for 53-bit primes),
   * the chunks added mod q.
   */
  sum(terms: { copy: number; mask: number }[], scale: number): Uint8Array {
    if (!this.header || terms.length === 0) throw new SealedError('internal', `a gather sum of ${terms.length} terms`);
    const { n, words } = this;
    const half = 4 * n;
    for (let poly = 0; poly < 2; poly++)
      this.primes.forEach(({ q, qinv, b, chunk }, j) => {
        const out = this.outAt + 8 * (poly * words + j * n);
        for (let from = 0; from < terms.length; from += chunk) {
          for (const { copy, mask } of terms.slice(from, from + chunk)) {
            const x = this.copyAt + 8 * ((2 * copy + poly) * words + j * n);
            const m = 8 * (mask * words + j * n);
            this.x.macSplit(x, x + half, m, m + half, this.accAt, n);
          }
          if (from === 0) this.x.redcSplit(this.accAt, out, n, q, qinv, BigInt(b));
          else {
            this.x.redcSplit(this.accAt, this.tmpAt, n, q, qinv, BigInt(b));
            this.x.addMod64(this.tmpAt, out, n, q);
          }
        }
      });
    const result = new Uint8Array(RAW_DATA_OFFSET + 16 * words);
    result.set(this.header);
    new DataView(result.buffer).setFloat64(RAW_SCALE_OFFSET, scale, true);
    result.set(new Uint8Array(this.memory.buffer, this.outAt, 16 * words), RAW_DATA_OFFSET);
    return result;
  }
}

/** How long a kernel waits for another thread to build the shared masks before it builds its own. */
const BUILD_WAIT_MS = 120_000;

/**
 * Claims shared masks to build ('build'), or waits while another thread builds them: 'built' once
 * they are. A builder that fails sets them unbuilt again, and a waiter claims them in turn; one
 * that never finishes (its thread terminated while building) leaves the waiters to build their
 * own ('own') after BUILD_WAIT_MS.
 */
function claim(state: Int32Array): 'build' | 'built' | 'own' {
  const until = performance.now() + BUILD_WAIT_MS;
  for (;;) {
    const was = Atomics.compareExchange(state, 0, UNBUILT, BUILDING);
    if (was === UNBUILT) return 'build';
    if (was === BUILT) return 'built';
    const left = until - performance.now();
    if (left <= 0) return 'own';
    Atomics.wait(state, 0, BUILDING, left);
  }
}

/** How many times shared masks were built (tests: one per process). */
export function maskBuilds(shared: SharedMasks): number {
  return Atomics.load(shared.state, 1);
}

function settle(state: Int32Array, to: number): void {
  if (to === BUILT) Atomics.add(state, 1, 1);
  Atomics.store(state, 0, to);
  Atomics.notify(state, 0);
}
