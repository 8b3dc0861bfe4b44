// The batch kernel's SIMD loops (kernel.wat) and their memory: one instance per thread, grown on
// demand. Memory grows by detaching the views on it, so callers keep byte offsets and take views
// (simdView) after the last growth.
import { KERNEL_RELAXED_WASM, KERNEL_WASM, wasmBytes } from './kernel-wasm.ts';

export interface Simd {
  memory: WebAssembly.Memory;
  mac4(
    r0: number,
    r1: number,
    r2: number,
    r3: number,
    xa: number,
    xb: number,
    wa0: number,
    wb0: number,
    wa1: number,
    wb1: number,
    wa2: number,
    wb2: number,
    wa3: number,
    wb3: number,
    n: number,
  ): void;
  acc4(dst: number, sa: number, sb: number, sc: number, sd: number, wa: number, wb: number, wc: number, wd: number, n: number): void;
  /** acc4 for four outputs: d0..d3, then the sources, then w00..w03 (d0's weights), ..., w33, then n. */
  acc4x4(...args: number[]): void;
  squareRow(a0: number, a1: number, sq: number, n: number, q: number): void;
  squareAdd(dst: number, a: number, b: number, f: number, n: number, q: number): void;
  reduceAdd(x: number, n: number, q: number, c: number): void;
  /** n (even) u32 at byte src as float64 at byte dst, and back (integers below 2^32). */
  u32ToF64(src: number, dst: number, n: number): void;
  f64ToU32(src: number, dst: number, n: number): void;
}

let simd: Simd | undefined;

const RELAXED = wasmBytes(KERNEL_RELAXED_WASM);
/**
 * Fused multiply-adds in the first layer where the engine has relaxed SIMD (Node >= 22): 8% off
 * its time on the 2-core AMD VM (0.1376 -> 0.1268 ns per lane product). The sums are the same.
 * Exported for the test that compares the two loops.
 */
export let useRelaxedSimd = WebAssembly.validate(RELAXED);
/** For that test: the kernel with or without fused multiply-adds from the next instance on. */
export function setRelaxedSimd(on: boolean): void {
  useRelaxedSimd = on && WebAssembly.validate(RELAXED);
  simd = undefined;
}

/** This thread's instance, its memory at least `bytes` long. */
export function simdWithMemory(bytes: number): Simd {
  if (!simd) {
    const binary = wasmBytes(KERNEL_WASM);
    simd = new WebAssembly.Instance(new WebAssembly.Module(binary), {}).exports as unknown as Simd;
    if (useRelaxedSimd) {
      // The first and second layers' loops with fused multiply-adds (kernel-relaxed.wat), on the same memory.
      const relaxed = new WebAssembly.Instance(new WebAssembly.Module(RELAXED), { kernel: { memory: simd.memory } }).exports as Pick<Simd, 'mac4' | 'acc4x4'>;
      simd = { ...simd, mac4: relaxed.mac4, acc4x4: relaxed.acc4x4 };
    }
  }
  const have = simd.memory.buffer.byteLength;
  if (have < bytes) simd.memory.grow(Math.ceil((bytes - have) / 65536));
  return simd;
}

/**
 * dst(o) += sum over r < 4 of weight(o, r) * src[r], over n float64 lanes, for each output o < outs
 * with a nonzero weight (a convolution's later layers are mostly zeros), `parts` times: part p
 * adds p * stride bytes to every offset (the polynomials of the second layer's sums). Outputs go
 * four at a time through acc4x4, which loads each source lane once for the four (the loop is
 * bound by its instructions, not by memory: 0.58-0.63 ns per output lane from 128 to 2,048
 * lanes in acc4), and the last few through acc4. `active` and `weights`: room for outs and
 * 4 outs values.
 */
export function accumulateRows(
  s: Simd,
  outs: number,
  weight: (o: number, r: number) => number,
  dst: (o: number) => number,
  src: readonly number[],
  n: number,
  parts: number,
  stride: number,
  active: Int32Array,
  weights: Float64Array,
): void {
  let m = 0;
  for (let o = 0; o < outs; o++) {
    const w0 = weight(o, 0);
    const w1 = weight(o, 1);
    const w2 = weight(o, 2);
    const w3 = weight(o, 3);
    if (w0 === 0 && w1 === 0 && w2 === 0 && w3 === 0) continue;
    weights[4 * m] = w0;
    weights[4 * m + 1] = w1;
    weights[4 * m + 2] = w2;
    weights[4 * m + 3] = w3;
    active[m++] = o;
  }
  const [s0, s1, s2, s3] = src;
  const w = weights;
  let i = 0;
  for (; i + 4 <= m; i += 4) {
    const d0 = dst(active[i]);
    const d1 = dst(active[i + 1]);
    const d2 = dst(active[i + 2]);
    const d3 = dst(active[i + 3]);
    const k = 4 * i;
    for (let p = 0, b = 0; p < parts; p++, b += stride)
      s.acc4x4(
        d0 + b,
        d1 + b,
        d2 + b,
        d3 + b,
        s0 + b,
        s1 + b,
        s2 + b,
        s3 + b,
        w[k],
        w[k + 1],
        w[k + 2],
        w[k + 3],
        w[k + 4],
        w[k + 5],
        w[k + 6],
        w[k + 7],
        w[k + 8],
        w[k + 9],
        w[k + 10],
        w[k + 11],
        w[k + 12],
        w[k + 13],
        w[k + 14],
        w[k + 15],
        n,
      );
  }
  for (; i < m; i++) {
    const d = dst(active[i]);
    const k = 4 * i;
    for (let p = 0, b = 0; p < parts; p++, b += stride) s.acc4(d + b, s0 + b, s1 + b, s2 + b, s3 + b, w[k], w[k + 1], w[k + 2], w[k + 3], n);
  }
}
