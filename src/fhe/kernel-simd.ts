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
  squareRow(a0: number, a1: number, sq: number, n: number, q: number): void;
  squareAdd(dst: number, a: number, b: number, f: number, n: number, q: number): void;
  reduceAdd(x: number, n: number, q: number, c: number): void;
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
      // The first layer's loop with fused multiply-adds (kernel-relaxed.wat), on the same memory.
      const relaxed = new WebAssembly.Instance(new WebAssembly.Module(RELAXED), { kernel: { memory: simd.memory } }).exports as Pick<Simd, 'mac4'>;
      simd = { ...simd, mac4: relaxed.mac4 };
    }
  }
  const have = simd.memory.buffer.byteLength;
  if (have < bytes) simd.memory.grow(Math.ceil((bytes - have) / 65536));
  return simd;
}
