// SEAL's zstd form of an object, compressed by Node's zlib instead of SEAL's WebAssembly build
// of zstd. The form is SEAL's: its 16-byte header with compr_mode 2 and the total size, then
// the members (what follows the header in the uncompressed form) as one zstd frame; SEAL and
// seal-precheck.ts read it back byte for byte (test/unit/seal-zstd.test.ts).
//
// Why: batch mode builds its results from residues (batch-io.ts encodeResult), and a model-(b)
// result (5 polynomials, 16 primes, ring 16384: 10.5 MB uncompressed) took 135-140 ms of CPU to
// load into SEAL and save with SEAL's zstd; built into a reused buffer and compressed here, 59-81
// ms, and 7% smaller at level 1 (4.95 MB against 5.34; 2-core AMD VM, 20 results per run). For
// objects already in SEAL this is no gain: saving uncompressed and compressing here measured
// 5.3 against SEAL's 2.1 ms for a ring-8192 ciphertext of 3 primes, 22 against 20 ms at 16384.
import { nodeBuiltin } from '../util/node-builtin.ts';

const zlib = nodeBuiltin('node:zlib');
const compress = zlib?.zstdCompressSync;
/** Level 1: smaller than SEAL's level on residues (above) and about twice as fast as level 3. */
const LEVEL = 1;

const HEADER = 16;
const COMPR_MODE = 5;
const MAGIC = 0xa15e;

/** Whether this runtime compresses here (Node >= 22.15); elsewhere (browsers) SEAL does. */
export const NATIVE_ZSTD = compress !== undefined;

/**
 * `raw`, a SEAL object saved uncompressed (ComprModeType.none), in SEAL's zstd form; undefined
 * where this runtime has no zstd (the caller then lets SEAL save it).
 */
export function zstdFromRaw(raw: Uint8Array): Uint8Array | undefined {
  if (!compress || !zlib) return undefined;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (raw.length < HEADER || v.getUint16(0, true) !== MAGIC || raw[COMPR_MODE] !== 0 || Number(v.getBigUint64(8, true)) !== raw.length)
    throw new Error('zstdFromRaw: not an uncompressed SEAL object');
  const body = compress(raw.subarray(HEADER), { params: { [zlib.constants.ZSTD_c_compressionLevel]: LEVEL } });
  const out = new Uint8Array(HEADER + body.length);
  out.set(raw.subarray(0, HEADER));
  out[COMPR_MODE] = 2;
  new DataView(out.buffer).setBigUint64(8, BigInt(out.length), true);
  out.set(body, HEADER);
  return out;
}
