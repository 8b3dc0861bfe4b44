// V8's garbage collector, tuned for batch mode's traffic in ArrayBuffers.
//
// A batch query is gigabytes of ciphertexts passing through short-lived ArrayBuffers: the
// encryption threads' results, the S3 SDK's parts, the sockets' and files' chunks, the server's
// sections. By default V8 starts a full mark-compact whenever external memory (ArrayBuffers'
// bytes) has grown by 64 MB since the last one, however small the JavaScript heap: one LeNet batch
// (a 1.43 GB query, client, embedded S3 and server in one process) ran ~250 of them on the main
// thread, 5.6 s of it, and the encryption and server threads theirs. With external memory counted
// in the heap's global limit instead, a collection comes when the heap and the ArrayBuffers
// together have grown by V8's usual factor over what the last one left alive (13 on that thread).
// Measured with scripts/bench (docs/batch-mode.md): 4.4-5.1 -> 3.4-3.5 ms of CPU per image.
import { setFlagsFromString } from 'node:v8';

export const EXTERNAL_MEMORY_FLAG = '--external-memory-accounted-in-global-limit';

/**
 * Sets the flag for this process (every thread: V8's flags are per process) on V8 13 (Node 24),
 * unless SEALED_GC=default asks for V8's default (to compare, or if a process's memory peaks
 * matter more than its CPU: garbage ArrayBuffers wait longer for their collection). Older V8s
 * lack the flag; later ones make it the default and drop it (V8 513bb22991 and cf511a65ad,
 * chromium bug 361124432). Either would print an error for an unknown flag.
 */
export function tuneGarbageCollection(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.SEALED_GC === 'default' || Number(process.versions.v8.split('.')[0]) !== 13) return false;
  setFlagsFromString(EXTERNAL_MEMORY_FLAG);
  return true;
}
