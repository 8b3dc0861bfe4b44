// The byte layout of a CKKS ciphertext as SEAL 4.x saves it uncompressed (ComprModeType.none):
//
//   SEALHeader (16) | parms_id (32) | is_ntt_form (1) | size u64 | degree u64 | primes u64
//   | scale f64 | correction_factor u64 | DynArray: SEALHeader (16) | count u64 | count x u64
//
// The data is size x primes x degree residues, polynomial-major, in NTT form for CKKS. Batch
// mode works on these residues directly (coefficient-wise arithmetic needs no NTT and no keys),
// so it reads and writes this layout; SEAL still loads and checks every object at the edges.
import { SealedError } from '../errors.ts';

const MAGIC = 0xa15e;
const HEADER = 16;
const PARMS = 16;
const NTT = PARMS + 32;
const SIZE = NTT + 1;
const DEGREE = SIZE + 8;
const PRIMES = DEGREE + 8;
/** Where the scale (f64) sits. */
export const RAW_SCALE_OFFSET = PRIMES + 8;
const SCALE = RAW_SCALE_OFFSET;
const CORRECTION = SCALE + 8;
const DYN = CORRECTION + 8;
const COUNT = DYN + HEADER;
export const RAW_DATA_OFFSET = COUNT + 8;
/** Where the degree, the prime count and the residue count (u64 each) sit. */
export const RAW_FIELDS = { degree: DEGREE, primes: PRIMES, count: COUNT } as const;

export interface RawCiphertextInfo {
  parmsId: Uint8Array;
  size: number;
  degree: number;
  primes: number;
  scale: number;
}

function fail(why: string, what = 'a ciphertext'): SealedError {
  return new SealedError('bad-query', `${what} ${why}`, 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves');
}

export function readRawInfo(bytes: Uint8Array): RawCiphertextInfo {
  if (bytes.length < RAW_DATA_OFFSET) throw fail('is truncated');
  const { info, count } = prefixFields(bytes, 0);
  if (bytes.length !== RAW_DATA_OFFSET + 8 * count) throw fail('has an unexpected layout');
  return info;
}

/**
 * The fields of SEAL's uncompressed NTT-form ciphertext prefix at bytes[h..] (readRawInfo's, and a
 * packed ciphertext's after its own header), and its residue count; refused unless it is one.
 */
function prefixFields(bytes: Uint8Array, h: number, what?: string): { info: RawCiphertextInfo; count: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint16(h, true) !== MAGIC || v.getUint8(h + 2) !== HEADER || bytes[h + 5] !== 0) throw fail('is not an uncompressed SEAL ciphertext', what);
  const info = {
    parmsId: bytes.slice(h + PARMS, h + PARMS + 32),
    size: Number(v.getBigUint64(h + SIZE, true)),
    degree: Number(v.getBigUint64(h + DEGREE, true)),
    primes: Number(v.getBigUint64(h + PRIMES, true)),
    scale: v.getFloat64(h + SCALE, true),
  };
  const count = info.size * info.degree * info.primes;
  if (bytes[h + NTT] !== 1 || Number(v.getBigUint64(h + COUNT, true)) !== count) throw fail('has an unexpected layout', what);
  return { info, count };
}

/**
 * This thread's aligned u32 scratch for the two conversions below (grown on demand, never
 * shrunk): batch mode converts every query ciphertext, and a fresh megabyte per ciphertext is
 * work for the garbage collector. Callers copy out before the next call.
 */
let scratch = new Uint32Array(0);
function scratchWords(n: number): Uint32Array {
  if (scratch.length < n) scratch = new Uint32Array(n);
  return scratch;
}

/**
 * Copies the residues (all below 2^32: our batch primes have 26 bits) into `dst` at `offset`,
 * as u32: half the memory of SEAL's u64 words.
 */
export function copyResidues(bytes: Uint8Array, dst: Uint32Array, offset: number): number {
  const info = readRawInfo(bytes);
  const count = info.size * info.degree * info.primes;
  // The data starts at an odd offset: copy it to an aligned buffer once, then read words.
  const aligned = scratchWords(2 * count);
  new Uint8Array(aligned.buffer, 0, 8 * count).set(bytes.subarray(RAW_DATA_OFFSET, RAW_DATA_OFFSET + 8 * count));
  // The high halves are OR-ed and checked once, after the loop: one branch instead of one per
  // residue, twice as fast. On a refusal dst holds a partial copy, which the caller discards.
  let high = 0;
  for (let i = 0, j = 0; i < count; i++, j += 2) {
    high |= aligned[j + 1];
    dst[offset + i] = aligned[j];
  }
  if (high !== 0) throw fail('has a residue above 32 bits');
  return count;
}

/** SEAL's 16-byte header of an uncompressed object of `total` bytes (SEAL 4.1), at `at`. */
export function writeSealHeader(v: DataView, at: number, total: number): void {
  v.setUint16(at, MAGIC, true);
  v.setUint8(at + 2, HEADER);
  v.setUint8(at + 3, 4); // SEAL major version
  v.setUint8(at + 4, 1); // SEAL minor version
  v.setUint8(at + 5, 0); // compr_mode none
  v.setBigUint64(at + 8, BigInt(total), true);
}

/** An uncompressed SEAL ciphertext with `size` polynomials from u32 residues (polynomial-major). */
export function buildRaw(info: Omit<RawCiphertextInfo, 'size'>, size: number, residues: Uint32Array, offset: number): Uint8Array {
  const count = size * info.degree * info.primes;
  const total = RAW_DATA_OFFSET + 8 * count;
  // Placed so that the residues start 4-byte aligned: they are written as u32 pairs in place.
  const at = (4 - (RAW_DATA_OFFSET % 4)) % 4;
  const buffer = new ArrayBuffer(at + total);
  const out = new Uint8Array(buffer, at, total);
  writeRawPrefix(new DataView(buffer, at, total), info, size);
  const words = new Uint32Array(buffer, at + RAW_DATA_OFFSET, 2 * count);
  for (let i = 0; i < count; i++) {
    words[2 * i] = residues[offset + i];
    words[2 * i + 1] = 0;
  }
  return out;
}

/** SEAL's bytes of an uncompressed NTT-form ciphertext up to its residues (RAW_DATA_OFFSET of them). */
function writeRawPrefix(v: DataView, info: Omit<RawCiphertextInfo, 'size'>, size: number): void {
  const count = size * info.degree * info.primes;
  writeSealHeader(v, 0, RAW_DATA_OFFSET + 8 * count);
  new Uint8Array(v.buffer, v.byteOffset + PARMS, 32).set(info.parmsId);
  v.setUint8(NTT, 1);
  v.setBigUint64(SIZE, BigInt(size), true);
  v.setBigUint64(DEGREE, BigInt(info.degree), true);
  v.setBigUint64(PRIMES, BigInt(info.primes), true);
  v.setFloat64(SCALE, info.scale, true);
  v.setBigUint64(CORRECTION, 1n, true);
  writeSealHeader(v, DYN, HEADER + 8 + 8 * count);
  v.setBigUint64(COUNT, BigInt(count), true);
}

/**
 * A packed ciphertext straight from u32 residues (polynomial-major, each below its prime, which
 * the caller has checked): what packResidues(buildRaw(...)) makes, without SEAL's 8-byte words
 * in between. Batch mode's results (batch-io.ts).
 */
export function packedFromResidues(info: Omit<RawCiphertextInfo, 'size'>, size: number, residues: Uint32Array, offset: number): Uint8Array {
  const count = size * info.degree * info.primes;
  if (count % 4 !== 0) throw new SealedError('internal', 'a packed ciphertext holds a multiple of four residues');
  const out = new Uint8Array(PACK_HEAD + RAW_DATA_OFFSET + (count / 4) * 13);
  out.set(PACK_MAGIC);
  const v = new DataView(out.buffer);
  v.setUint32(4, RAW_DATA_OFFSET, true);
  v.setUint32(8, count, true);
  writeRawPrefix(new DataView(out.buffer, PACK_HEAD, RAW_DATA_OFFSET), info, size);
  for (let i = offset, end = offset + count, o = PACK_HEAD + RAW_DATA_OFFSET; i < end; i += 4, o += 13)
    pack4x26(out, o, residues[i], residues[i + 1], residues[i + 2], residues[i + 3]);
  return out;
}

// Packed sections (batch-mode queries): a ciphertext SEAL saved uncompressed, with its residues
// (all below 2^26: batch mode's primes have 26 bits) packed four to 13 bytes instead of four
// 64-bit words. 20% smaller than SEAL's zstd and cheaper to make and to read.
//
//   "P26" 0 | prefix length u32 | residue count u32 | prefix (SEAL's bytes up to the residues)
//   | packed residues (count / 4 x 13 bytes) | suffix (SEAL's bytes after them: a seed)
const PACK_MAGIC = [0x50, 0x32, 0x36, 0x00];
const PACK_HEAD = 12;
const MAX_PACKED_RESIDUES = 16 * 16 * 32768;
/** What follows the residues of a seeded ciphertext: SEAL's seed record (header, PRNG type, 64-byte seed). */
const MAX_SUFFIX = 16 + 1 + 64;

export function isPacked(bytes: Uint8Array): boolean {
  return bytes.length >= PACK_HEAD && PACK_MAGIC.every((b, i) => bytes[i] === b);
}

/**
 * The fields of a packed ciphertext (its SEAL prefix: uncompressed, in NTT form, no suffix), and
 * where its packed residues start; refused unless its length is exactly what they declare.
 */
export function readPackedInfo(packed: Uint8Array, what?: string): RawCiphertextInfo & { at: number } {
  const v = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  if (!isPacked(packed) || packed.length < PACK_HEAD + RAW_DATA_OFFSET || v.getUint32(4, true) !== RAW_DATA_OFFSET)
    throw fail('is not a packed ciphertext', what);
  const { info, count } = prefixFields(packed, PACK_HEAD, what);
  const at = PACK_HEAD + RAW_DATA_OFFSET;
  if (v.getUint32(8, true) !== count || packed.length !== at + (count / 4) * 13) throw fail('has an unexpected layout', what);
  return { ...info, at };
}

/** Four residues below 2^26 as 13 bytes at out[o..], least significant bit first (the layout above). */
export function pack4x26(out: Uint8Array, o: number, a: number, b: number, c: number, d: number): void {
  out[o] = a;
  out[o + 1] = a >>> 8;
  out[o + 2] = a >>> 16;
  out[o + 3] = (a >>> 24) | (b << 2);
  out[o + 4] = b >>> 6;
  out[o + 5] = b >>> 14;
  out[o + 6] = (b >>> 22) | (c << 4);
  out[o + 7] = c >>> 4;
  out[o + 8] = c >>> 12;
  out[o + 9] = (c >>> 20) | (d << 6);
  out[o + 10] = d >>> 2;
  out[o + 11] = d >>> 10;
  out[o + 12] = d >>> 18;
}

/** Packs SEAL's uncompressed ciphertext bytes; undefined if a residue does not fit 26 bits. */
export function packResidues(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length < RAW_DATA_OFFSET) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = Number(v.getBigUint64(COUNT, true));
  const suffix = bytes.length - RAW_DATA_OFFSET - 8 * count;
  if (count % 4 !== 0 || suffix < 0) return undefined;
  const out = new Uint8Array(PACK_HEAD + RAW_DATA_OFFSET + (count / 4) * 13 + suffix);
  out.set(PACK_MAGIC);
  const ov = new DataView(out.buffer);
  ov.setUint32(4, RAW_DATA_OFFSET, true);
  ov.setUint32(8, count, true);
  out.set(bytes.subarray(0, RAW_DATA_OFFSET), PACK_HEAD);
  let o = PACK_HEAD + RAW_DATA_OFFSET;
  for (let i = 0; i < count; i += 4) {
    const at = RAW_DATA_OFFSET + 8 * i;
    const a = v.getUint32(at, true),
      b = v.getUint32(at + 8, true),
      c = v.getUint32(at + 16, true),
      d = v.getUint32(at + 24, true);
    if ((a | b | c | d) >>> 26 || v.getUint32(at + 4, true) | v.getUint32(at + 12, true) | v.getUint32(at + 20, true) | v.getUint32(at + 28, true))
      return undefined;
    pack4x26(out, o, a, b, c, d);
    o += 13;
  }
  out.set(bytes.subarray(RAW_DATA_OFFSET + 8 * count), o);
  return out;
}

/**
 * SEAL's uncompressed bytes back from a packed section (then checked by seal-precheck.ts before
 * SEAL loads them). `maxResidues`: the most the model's ciphertexts hold, so a section cannot
 * make us allocate more than that.
 */
export function unpackResidues(packed: Uint8Array, what?: string, maxResidues = MAX_PACKED_RESIDUES): Uint8Array {
  const v = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  if (!isPacked(packed) || v.getUint32(4, true) !== RAW_DATA_OFFSET) throw fail('is not a packed ciphertext', what);
  const count = v.getUint32(8, true);
  const body = PACK_HEAD + RAW_DATA_OFFSET + (count / 4) * 13;
  if (count % 4 !== 0 || count > Math.min(maxResidues, MAX_PACKED_RESIDUES) || body > packed.length)
    throw fail('is truncated or declares too many residues', what);
  if (packed.length - body > MAX_SUFFIX) throw fail('has more bytes after its residues than a seed', what);
  const out = new Uint8Array(RAW_DATA_OFFSET + 8 * count + (packed.length - body));
  out.set(packed.subarray(PACK_HEAD, PACK_HEAD + RAW_DATA_OFFSET));
  // The scratch may hold another ciphertext's words: every word, high halves too, is written.
  const words = scratchWords(2 * count);
  let p = PACK_HEAD + RAW_DATA_OFFSET;
  for (let i = 0; i < count; i += 4) {
    const b3 = packed[p + 3],
      b6 = packed[p + 6],
      b9 = packed[p + 9];
    words[2 * i] = packed[p] | (packed[p + 1] << 8) | (packed[p + 2] << 16) | ((b3 & 3) << 24);
    words[2 * i + 1] = 0;
    words[2 * i + 2] = (b3 >>> 2) | (packed[p + 4] << 6) | (packed[p + 5] << 14) | ((b6 & 15) << 22);
    words[2 * i + 3] = 0;
    words[2 * i + 4] = (b6 >>> 4) | (packed[p + 7] << 4) | (packed[p + 8] << 12) | ((b9 & 63) << 20);
    words[2 * i + 5] = 0;
    words[2 * i + 6] = (b9 >>> 6) | (packed[p + 10] << 2) | (packed[p + 11] << 10) | (packed[p + 12] << 18);
    words[2 * i + 7] = 0;
    p += 13;
  }
  out.set(new Uint8Array(words.buffer, 0, 8 * count), RAW_DATA_OFFSET);
  out.set(packed.subarray(body), RAW_DATA_OFFSET + 8 * count);
  return out;
}
