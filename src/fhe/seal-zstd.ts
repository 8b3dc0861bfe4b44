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
/** A zstd frame's magic number (RFC 8878, 3.1.1), little-endian at its start. */
export const ZSTD_FRAME = 0xfd2fb528;

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
  const members = raw.subarray(HEADER);
  // One output chunk larger than zstd's bound (ZSTD_compressBound: n + n/256 + at most 64 bytes).
  // In Node's default 16 KiB chunks, a frame that ends exactly at a chunk's end gets a second,
  // empty frame after it (Node's sync loop calls zstd once more with ZSTD_e_end), which the
  // loader's precheck refuses as bytes after the stream: one result in 16,384 was refused so.
  const chunkSize = members.length + (members.length >> 7) + (1 << 17);
  const body = compress(members, { chunkSize, params: { [zlib.constants.ZSTD_c_compressionLevel]: LEVEL } });
  if (zstdFrameLength(body) !== body.length) throw new Error('zstdFromRaw: zstd wrote more or less than one frame');
  const out = new Uint8Array(HEADER + body.length);
  out.set(raw.subarray(0, HEADER));
  out[COMPR_MODE] = 2;
  new DataView(out.buffer).setBigUint64(8, BigInt(out.length), true);
  out.set(body, HEADER);
  return out;
}

/**
 * Bytes of the zstd frame at the start of `b` (RFC 8878, 3.1.1: header, blocks up to the last,
 * checksum), or -1 when `b` does not hold one whole frame. Walks block headers only.
 */
export function zstdFrameLength(b: Uint8Array): number {
  if (b.length < 6 || (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0 !== ZSTD_FRAME) return -1;
  const descriptor = b[4];
  if (descriptor & 0x08) return -1; // reserved bit
  const singleSegment = (descriptor >> 5) & 1;
  const contentSizeBytes = [singleSegment, 2, 4, 8][descriptor >> 6];
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3] + contentSizeBytes;
  for (let last = false; !last;) {
    if (at + 3 > b.length) return -1;
    const block = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
    const type = (block >> 1) & 3;
    if (type === 3) return -1; // reserved block type
    last = (block & 1) === 1;
    at += 3 + (type === 1 ? 1 : block >>> 3); // an RLE block holds one byte
  }
  at += descriptor & 0x04 ? 4 : 0; // content checksum
  return at <= b.length ? at : -1;
}
