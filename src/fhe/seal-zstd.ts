// SEAL's zstd form of an object: its 16-byte header with compr_mode 2 and the total size, then
// the members (what follows the header in the uncompressed form) as one zstd frame. The loader's
// precheck (seal-precheck.ts) walks the frame's block headers to know where it ends before
// anything is decompressed. (Batch results were compressed here until session 61; they are packed
// now: raw-ciphertext.ts, packed-decrypt.ts.)
/** A zstd frame's magic number (RFC 8878, 3.1.1), little-endian at its start. */
export const ZSTD_FRAME = 0xfd2fb528;

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
