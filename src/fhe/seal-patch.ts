// node-seal's WebAssembly with one function replaced: SEAL's 128-by-64-bit division, which SEAL
// builds for WebAssembly as a loop over the quotient's bits, by seal-div128.wat's (two hardware
// divisions). SEALContext creation spends ~93% of its time in that loop (it derives every NTT
// table entry of every level), so every thread that opens a context at N = 16384 paid ~2.4 s:
// server workers at start and after a replacement, client sessions, encryption pools.
//
// The function is found by the SHA-256 of its body, not by its index, so another node-seal build
// is left exactly as it is (`patched: false`, and test/unit/seal-patch.test.ts says so) rather
// than patched in the wrong place. Both functions have SEAL's contract (quotient out, remainder
// in place); the tests check the replacement against BigInt division and SEAL built both ways
// against each other, byte for byte.
import { Sha256 } from '../util/sha256.ts';
import { concatBytes } from '../util/bytes.ts';
import { SEAL_DIV128_WASM, wasmBytes } from './kernel-wasm.ts';

/** node-seal 7.0.0's divide_uint128_uint64_inplace_generic (seal_throws.wasm, function 79). */
const TARGET = { bytes: 923, sha256: '10c1411f5620bd45626f37394a540d5d72928e7cfd68ed40673217e106554f41' };
const CODE_SECTION = 10;

export interface PatchedWasm {
  wasm: Uint8Array;
  /** False when no function of `wasm` is the one this patch replaces (another node-seal build). */
  patched: boolean;
}

export function patchSealWasm(wasm: Uint8Array): PatchedWasm {
  const code = codeSection(wasm);
  const hits = code.bodies.filter((b) => b.end - b.start === TARGET.bytes && bodyDigest(wasm, b) === TARGET.sha256);
  if (hits.length !== 1) return { wasm, patched: false };
  const replacement = onlyBody(wasmBytes(SEAL_DIV128_WASM));
  const hit = hits[0];
  const entries: Uint8Array[] = [];
  for (const b of code.bodies) {
    const body = b === hit ? replacement : wasm.subarray(b.start, b.end);
    entries.push(uleb(body.length), body);
  }
  const content = concatBytes([uleb(code.bodies.length), ...entries]);
  const out = concatBytes([wasm.subarray(0, code.start), Uint8Array.of(CODE_SECTION), uleb(content.length), content, wasm.subarray(code.end)]);
  return { wasm: out, patched: true };
}

/** Hex SHA-256 of one function body: how the patch recognises SEAL's division. */
export function bodyDigest(wasm: Uint8Array, b: Body): string {
  return new Sha256().update(wasm.subarray(b.start, b.end)).hex();
}

export interface Body {
  start: number;
  end: number;
}

/** The code section's extent (its id byte to its end) and its function bodies (after their size). */
export function codeSection(wasm: Uint8Array): { start: number; end: number; bodies: Body[] } {
  if (wasm.length < 8 || wasm[0] !== 0 || wasm[1] !== 0x61 || wasm[2] !== 0x73 || wasm[3] !== 0x6d) throw new Error('not a WebAssembly module');
  let pos = 8;
  while (pos < wasm.length) {
    const start = pos;
    const id = wasm[pos++];
    const [size, at] = readUleb(wasm, pos);
    const end = at + size;
    if (end > wasm.length) throw new Error('truncated WebAssembly module');
    if (id === CODE_SECTION) {
      const bodies: Body[] = [];
      let [count, p] = readUleb(wasm, at);
      for (; count > 0; count--) {
        const [n, q] = readUleb(wasm, p);
        bodies.push({ start: q, end: q + n });
        p = q + n;
      }
      if (p !== end) throw new Error('malformed WebAssembly code section');
      return { start, end, bodies };
    }
    pos = end;
  }
  throw new Error('WebAssembly module without code');
}

function onlyBody(wasm: Uint8Array): Uint8Array {
  const { bodies } = codeSection(wasm);
  if (bodies.length !== 1) throw new Error('seal-div128.wat must define exactly one function');
  return wasm.subarray(bodies[0].start, bodies[0].end);
}

function readUleb(b: Uint8Array, pos: number): [number, number] {
  let value = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos >= b.length) throw new Error('truncated WebAssembly module');
    const byte = b[pos++];
    value += (byte & 0x7f) * 2 ** shift;
    if (!(byte & 0x80)) return [value, pos];
  }
  throw new Error('malformed WebAssembly integer');
}

function uleb(n: number): Uint8Array {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Uint8Array.from(out);
}
