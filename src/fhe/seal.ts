// Loading node-seal and translating its C++ exceptions. This folder is the only code that
// imports node-seal; everything above it speaks in our own types and errors.
import SEAL from 'node-seal/throws';
import type { MainModule } from 'node-seal/throws';
import { SealedError, type ErrorCode } from '../errors.ts';

export type Seal = MainModule;

let loading: Promise<Seal> | undefined;

/**
 * The SEAL runtime of this thread (each worker thread has its own WASM instance).
 * `locateFile` maps node-seal's file name (seal_throws.wasm) to where it is served; a browser
 * page passes it on the first call (later calls reuse the instance and ignore it). Without it,
 * the .wasm is looked up next to node-seal's module (Node) or next to the bundled script.
 */
export function loadSeal(locateFile?: (path: string) => string): Promise<Seal> {
  loading ??= locateFile ? SEAL({ locateFile }) : SEAL();
  return loading;
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
  const text = sealExceptionText(e);
  if (text === undefined) {
    if (e instanceof RangeError || (e instanceof Error && /memory|out of bounds/i.test(e.message))) {
      return new SealedError(code, `${what} could not be read: it is malformed or too large`, 'send an object made by `sealed` for this model', { cause: e });
    }
    return e;
  }
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
