// Loading node-seal and translating its C++ exceptions. This folder is the only code that
// imports node-seal; everything above it speaks in our own types and errors.
import SEAL from 'node-seal/throws';
import type { MainModule } from 'node-seal/throws';
import { SealedError, type ErrorCode } from '../errors.ts';
import { nodeBuiltin } from '../util/node-builtin.ts';
import { patchSealWasm } from './seal-patch.ts';

export type Seal = MainModule;

let loading: Promise<Seal> | undefined;
let patched = false;

const WASM_FILE = 'seal_throws.wasm';

/**
 * The SEAL runtime of this thread (each worker thread has its own WASM instance), node-seal's
 * WebAssembly with seal-patch.ts's faster division.
 * `locateFile` maps node-seal's file name (seal_throws.wasm) to where it is served; a browser
 * page passes it on the first call (later calls reuse the instance and ignore it). Without it,
 * the .wasm is read next to node-seal's module (Node) or looked up next to the bundled script
 * (a browser; node-seal's own loading, unpatched).
 */
export function loadSeal(locateFile?: (path: string) => string): Promise<Seal> {
  loading ??= (async () => {
    const bytes = locateFile ? await fetchBytes(locateFile(WASM_FILE)) : readNodeSealWasm();
    if (!bytes) return SEAL();
    const p = patchSealWasm(bytes);
    patched = p.patched;
    return SEAL({ wasmBinary: p.wasm });
  })();
  return loading;
}

/** Whether this thread's SEAL runs seal-patch.ts's division (after loadSeal has resolved). */
export function sealPatched(): boolean {
  return patched;
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`could not load SEAL's WebAssembly from ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** Node's copy of node-seal's .wasm; undefined in a browser (no `process`; nothing imported). */
function readNodeSealWasm(): Uint8Array | undefined {
  const fs = nodeBuiltin('node:fs');
  if (!fs) return undefined;
  return new Uint8Array(fs.readFileSync(new URL(WASM_FILE, import.meta.resolve('node-seal/throws'))));
}

/** The [type, text] pair node-seal puts in a WebAssembly.Exception's message. */
export function sealExceptionText(e: unknown): string | undefined {
  const Exc = (WebAssembly as unknown as { Exception?: new () => object }).Exception;
  if (typeof Exc === 'function' && e instanceof Exc) {
    const m = (e as unknown as { message?: unknown }).message;
    if (Array.isArray(m)) return m.map(String).join(': ');
    return String(m ?? 'unknown SEAL error');
  }
  return undefined;
}

// Thread health. node-seal's C++ exceptions unwind into JavaScript without restoring the WASM
// stack pointer: each one leaks 16 bytes of the 64 KiB WASM stack (measured here with node-seal
// 7.0.0: the same 16 bytes at every throw site tried: loadFromArray of ciphertexts and keys,
// rotateVector without its key, addPlain and multiplyPlain mismatches, encode). The stack then
// overruns the static data below it: after ~3,770 exceptions (a loop of Ciphertext.loadFromArray
// on garbage) calls fail with "table index is out of bounds", "null function" and later "memory
// access out of bounds", and once the stack is that deep nothing guarantees results are right.
// So each thread counts its exceptions, and a WASM trap marks its instance as faulted; the
// worker pool retires a thread on either (src/server/worker.ts). Untrusted bytes are checked
// before SEAL sees them (seal-precheck.ts), so honest traffic throws almost never.
let exceptions = 0;
let fault: string | undefined;

/**
 * SEAL exceptions a worker thread absorbs before it is replaced: 1,000 x 16 bytes is 16 KiB, a
 * quarter of the stack, against the ~3,770 measured to break it.
 */
export const SEAL_EXCEPTION_BUDGET = 1000;

/** SEAL (C++) exceptions this thread's WASM instance has thrown so far. */
export function sealExceptionCount(): number {
  return exceptions;
}

/** Why this thread's WASM instance can no longer be trusted (a trap it hit), if it hit one. */
export function sealFault(): string | undefined {
  return fault;
}

/**
 * A WebAssembly trap or a RangeError out of a SEAL call: the instance's memory, stack or
 * function table may be corrupt, and nothing it computes afterwards can be trusted.
 */
export function isWasmFault(e: unknown): boolean {
  if (e instanceof WebAssembly.RuntimeError || e instanceof RangeError) return true;
  return e instanceof Error && /out of bounds|null function|function signature mismatch|unreachable|table index|call stack|Aborted\(/i.test(e.message);
}

/**
 * Records what an error says about this thread's SEAL instance (an exception leaked stack, a
 * trap faulted it); returns which. Errors already translated (SealedErrors) were recorded then.
 */
export function noteSealError(e: unknown): 'exception' | 'fault' | undefined {
  if (sealExceptionText(e) !== undefined) {
    exceptions++;
    return 'exception';
  }
  if (isWasmFault(e)) {
    fault ??= e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 120) : 'WebAssembly trap';
    return 'fault';
  }
  return undefined;
}

/**
 * Runs a SEAL call and turns a C++ exception into a SealedError with a message a user can act
 * on. `what` names the object being handled ("the encrypted query", "the evaluation keys").
 */
export function guard<T>(code: ErrorCode, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw translate(e, code, what);
  }
}

export function translate(e: unknown, code: ErrorCode, what: string): unknown {
  const kind = noteSealError(e);
  if (kind === 'fault') {
    // Not the caller's fault and not a verdict on its data: the runtime broke under it.
    return new SealedError(
      'internal',
      `the SEAL runtime failed while handling ${what} (WebAssembly trap); nothing was computed`,
      'retry the request: the thread that failed is replaced by a fresh one',
      { cause: e },
    );
  }
  if (kind === undefined) return e;
  const text = sealExceptionText(e)!;
  return new SealedError(code, `${what}: ${explain(text)}`, hintFor(text));
}

function explain(text: string): string {
  if (/input buffer ended unexpectedly|unexpected end|loaded size/i.test(text)) return 'the data is truncated';
  if (/incompatible version|invalid header|magic/i.test(text)) return 'the data is not a SEAL object (corrupted or of another format)';
  if (/compression|zstd|zlib/i.test(text)) return 'the data is corrupted (decompression failed)';
  if (/parms|parameter|not valid for encryption parameters|is_valid_for|data is invalid/i.test(text)) {
    return 'it was made for different encryption parameters than this model uses';
  }
  if (/Galois key not present/i.test(text)) return 'the evaluation keys lack a rotation this model needs';
  if (/scale out of bounds/i.test(text)) return 'the values grew beyond what the encryption parameters can hold';
  if (/scale mismatch/i.test(text)) return 'its scale does not match what the model expects';
  if (/transparent/i.test(text)) return 'the ciphertext is transparent (it encrypts nothing securely)';
  return 'SEAL rejected it';
}

function hintFor(text: string): string {
  if (/Galois key not present|parms|parameter|data is invalid/i.test(text)) {
    return 'make the keys and the query with `sealed keygen` / `sealed predict` for the model this endpoint serves';
  }
  return 'upload the object again as written by `sealed predict`; do not edit or truncate it';
}

/** Deletes WASM objects; nothing in node-seal is garbage-collected. */
export function release(...objs: ({ delete(): void; isDeleted?(): boolean } | undefined | null)[]): void {
  for (const o of objs) {
    if (o && !(o.isDeleted?.() ?? false)) o.delete();
  }
}
