// Editing serialized SEAL objects for the precheck tests: the members of an object
// (decompressed), and an object built back around edited members with a consistent header, so
// each test damages exactly one thing.
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';

const HEADER = 16;

/** The members of a SEAL object (after its 16-byte header), decompressed when zstd. */
export function membersOf(obj: Uint8Array): Uint8Array {
  const body = obj.subarray(HEADER);
  return obj[5] === 2 ? new Uint8Array(zstdDecompressSync(body)) : body.slice();
}

/** A SEAL 4.1 object around `members`: header, then the members as `mode` says; size consistent. */
export function wrap(members: Uint8Array, mode: 'none' | 'zstd'): Uint8Array {
  const body = mode === 'zstd' ? new Uint8Array(zstdCompressSync(members)) : members;
  const out = new Uint8Array(HEADER + body.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, 0xa15e, true);
  out[2] = HEADER;
  out[3] = 4;
  out[4] = 1;
  out[5] = mode === 'zstd' ? 2 : 0;
  v.setBigUint64(8, BigInt(out.length), true);
  out.set(body, HEADER);
  return out;
}

/**
 * `obj` with its members edited by `edit` (a copy), saved back the way `obj` was. `edit`
 * changes them in place, or returns new members.
 */
export function editMembers(obj: Uint8Array, edit: (m: Uint8Array, v: DataView) => unknown): Uint8Array {
  const m = membersOf(obj);
  const returned = edit(m, new DataView(m.buffer, m.byteOffset, m.byteLength));
  const edited = returned instanceof Uint8Array ? returned : m;
  return wrap(edited, obj[5] === 2 ? 'zstd' : 'none');
}

/** A copy of `obj` with `edit` applied to its raw bytes (header included). */
export function editBytes(obj: Uint8Array, edit: (b: Uint8Array, v: DataView) => void): Uint8Array {
  const b = obj.slice();
  edit(b, new DataView(b.buffer));
  return b;
}

/** Offsets within a Ciphertext's members (SEAL 4.1). */
export const CT = { parmsId: 0, ntt: 32, size: 33, degree: 41, primes: 49, scale: 57, correction: 65, dynHeader: 73, count: 89, data: 97 } as const;
