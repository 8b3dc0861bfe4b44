// Evaluation keys packed at their primes' widths: SEAL's uncompressed KSwitchKeys (Galois or
// relinearization keys) with every residue array's residues in as many bits as their prime has
// (53 for a 53-bit prime) instead of 64-bit words; everything else byte for byte.
//
//   "PWK" 0 | primes k u32 | width u8 x k, zero-padded to 4 bytes | SEAL's bytes, each residue
//   array (count x u64) replaced by its blocks
//
// SEAL's bytes are the KSwitchKeys layout of seal-precheck.ts: header | parms_id | slots u64 |
// per slot: parts u64 | parts x (PublicKey header | ciphertext members up to the residue count |
// residues | seed record when seeded). Block j of an array holds the `degree` residues of prime
// j mod k, least significant bit first, in whole u32 words.
//
// Why: zstd gets ~11% from the words' zero high bits and costs the client ~0.7 s (SEAL's zstd in
// WebAssembly) and each worker ~0.4 s to undo for 150 MB of keys; packing gets ~21% for ~0.15 s
// each way. The unpacked bytes go through every check of seal-precheck.ts before SEAL
// loads them.
import { SealedError } from '../errors.ts';
import type { ByteArena } from './byte-arena.ts';
import { blockWords, packResidues, unpackResidues } from './residue-bits.ts';

const MAGIC = [0x50, 0x57, 0x4b, 0x00];
export const SEAL_HEADER = 16;
/** A ciphertext's members before its residues: parms_id .. correction_factor, DynArray header, count. */
export const CT_FIXED = 32 + 1 + 8 + 8 + 8 + 8 + 8 + SEAL_HEADER + 8;
const AT_DEGREE = 41;
const AT_PRIMES = 49;
const AT_COUNT = 73 + SEAL_HEADER;
/** What follows a seeded part's residues: SEAL's seed record (header, PRNG type, 64-byte seed). */
const MAX_SUFFIX = SEAL_HEADER + 1 + 64;
const MAX_PRIMES = 64;
const MAX_WIDTH = 60;
const MAX_DEGREE = 32768;

export function isPackedKeys(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && MAGIC.every((b, i) => bytes[i] === b);
}

/** Bytes before SEAL's: the magic, the prime count and the widths (k of them, padded to 4 bytes). */
export const headLength = (k: number) => 8 + Math.ceil(k / 4) * 4;

export const u64 = (v: DataView, at: number) => v.getUint32(at + 4, true) * 2 ** 32 + v.getUint32(at, true);

/** A key part's residue array in SEAL's uncompressed KSwitchKeys bytes: where it starts, its residue count and ring degree. */
export interface ResidueArray {
  at: number;
  count: number;
  degree: number;
}

/** The residue arrays of SEAL's uncompressed KSwitchKeys bytes at k primes, in order; undefined when the bytes are not that layout. */
function residueArrays(bytes: Uint8Array, k: number): ResidueArray[] | undefined {
  if (bytes.length < SEAL_HEADER + 40 || bytes[5] !== 0) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const arrays: ResidueArray[] = [];
  const slots = u64(v, SEAL_HEADER + 32);
  let at = SEAL_HEADER + 40;
  for (let i = 0; i < slots; i++) {
    if (at + 8 > bytes.length) return undefined;
    const parts = u64(v, at);
    at += 8;
    for (let p = 0; p < parts; p++) {
      if (at + SEAL_HEADER + CT_FIXED > bytes.length) return undefined;
      const partSize = u64(v, at + 8);
      const members = at + SEAL_HEADER;
      const degree = u64(v, members + AT_DEGREE);
      const count = u64(v, members + AT_COUNT);
      const suffix = partSize - SEAL_HEADER - CT_FIXED - 8 * count;
      if (u64(v, members + AT_PRIMES) !== k || !(degree >= 1 && degree <= MAX_DEGREE) || count % (k * degree) !== 0) return undefined;
      if (suffix < 0 || suffix > MAX_SUFFIX || at + partSize > bytes.length) return undefined;
      arrays.push({ at: members + CT_FIXED, count, degree });
      at += partSize;
    }
  }
  return at === bytes.length ? arrays : undefined;
}

/**
 * Packs SEAL's uncompressed KSwitchKeys bytes with the residues of prime j in widths[j] bits;
 * undefined when the bytes are not that layout (or a residue does not fit its width): the caller
 * then sends them as they are.
 */
export function packKeys(bytes: Uint8Array, widths: number[]): Uint8Array | undefined {
  const k = widths.length;
  const arrays = validWidths(widths) ? residueArrays(bytes, k) : undefined;
  if (!arrays) return undefined;
  // Sized exactly first: a fresh page costs more to touch than its bytes cost to copy.
  const head = headLength(k);
  const out = new Uint8Array(head + packedSpanLength(arrays, 0, bytes.length, widths));
  writePackingHead(out, widths);
  return packSpan(bytes, arrays, 0, bytes.length, widths, out, head) < 0 ? undefined : out;
}

const validWidths = (widths: number[]) => widths.length >= 1 && widths.length <= MAX_PRIMES && widths.every((w) => w >= 1 && w <= MAX_WIDTH);

/** The packing's head (magic, prime count, widths) at out[0..headLength(k)). */
export function writePackingHead(out: Uint8Array, widths: number[]): void {
  out.set(MAGIC);
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(4, widths.length, true);
  widths.forEach((w, j) => (out[8 + j] = w));
}

/**
 * SEAL's uncompressed KSwitchKeys bytes read for packing: their residue arrays (at k =
 * widths.length primes), or undefined when the bytes are not that layout or the widths are not
 * 1-60 bits.
 */
export function keyResidueArrays(bytes: Uint8Array, widths: number[]): ResidueArray[] | undefined {
  return validWidths(widths) ? residueArrays(bytes, widths.length) : undefined;
}

/** How many bytes bytes[from..end) take packed; `arrays` lie wholly inside or outside it. */
export function packedSpanLength(arrays: ResidueArray[], from: number, end: number, widths: number[]): number {
  let size = end - from;
  for (const a of arrays) {
    if (a.at < from || a.at >= end) continue;
    size -= 8 * a.count;
    for (let j = 0; j < a.count / a.degree; j++) size += 4 * blockWords(a.degree, widths[j % widths.length]);
  }
  return size;
}

/**
 * Packs bytes[from..end) (SEAL's uncompressed KSwitchKeys bytes, residue arrays `arrays`) into
 * out[to..]: the residues at their widths, everything else byte for byte. Returns the bytes
 * written, or -1 if a residue does not fit its width.
 */
export function packSpan(bytes: Uint8Array, arrays: ResidueArray[], from: number, end: number, widths: number[], out: Uint8Array, to: number): number {
  const start = to;
  for (const a of arrays) {
    if (a.at < from || a.at >= end) continue;
    out.set(bytes.subarray(from, a.at), to);
    to += a.at - from;
    const written = packResidues(bytes, a.at, a.count / a.degree, a.degree, widths, out, to);
    if (written < 0) return -1;
    from = a.at + 8 * a.count;
    to += written;
  }
  out.set(bytes.subarray(from, end), to);
  return to + end - from - start;
}

/** The packing's head, checked: its prime count, widths, and where SEAL's bytes start. */
export function packingHead(packed: Uint8Array, fail: (why: string) => Error): { pv: DataView; k: number; head: number; widths: number[] } {
  const pv = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  if (!isPackedKeys(packed)) throw fail('are not packed keys');
  const k = pv.getUint32(4, true);
  if (k < 1 || k > MAX_PRIMES) throw fail(`declare ${k} primes`);
  const head = headLength(k);
  if (packed.length < head + SEAL_HEADER + 40) throw fail('are truncated');
  const widths = Array.from(packed.subarray(8, 8 + k));
  if (widths.some((w) => w < 1 || w > MAX_WIDTH)) throw fail('declare a residue width outside 1-60 bits');
  return { pv, k, head, widths };
}

/**
 * A key part's header at `at` (its PublicKey header, then the ciphertext members up to the
 * residue count: the same bytes packed and unpacked), checked against k primes.
 */
export function keyPart(v: DataView, at: number, k: number, fail: (why: string) => Error): { partSize: number; degree: number; count: number; suffix: number } {
  const members = at + SEAL_HEADER;
  const partSize = u64(v, at + 8);
  const degree = u64(v, members + AT_DEGREE);
  const count = u64(v, members + AT_COUNT);
  if (u64(v, members + AT_PRIMES) !== k) throw fail('have a key part whose prime count disagrees with the packing');
  if (!(degree >= 1 && degree <= MAX_DEGREE) || count % (k * degree) !== 0) throw fail('have a key part with an impossible residue count');
  const suffix = partSize - SEAL_HEADER - CT_FIXED - 8 * count;
  if (suffix < 0 || suffix > MAX_SUFFIX) throw fail('have a key part of another size than it declares');
  return { partSize, degree, count, suffix };
}

/**
 * SEAL's uncompressed bytes back from packed keys. `maxBytes`: the most the model's keys may
 * take unpacked, so a hostile object cannot make us allocate more. Throws a SealedError
 * ('bad-keys') naming `what` on anything that is not packed keys. With `arena`, the bytes are
 * taken from it (every one is written: `to` runs over the whole output) instead of allocated.
 */
export function unpackKeys(packed: Uint8Array, what: string, maxBytes: number, arena?: ByteArena): Uint8Array {
  const fail = (why: string) => new SealedError('bad-keys', `${what} ${why}`, 'make keys for this model with `sealed keygen`');
  const { pv, k, head, widths } = packingHead(packed, fail);
  // The SEAL header's size is the unpacked size: one allocation, bounded before it is made.
  const size = u64(pv, head + 8);
  if (size > maxBytes) throw fail(`declare ${size} bytes unpacked, more than any key set of this model (${maxBytes})`);
  if (size < SEAL_HEADER + 40) throw fail('are truncated');
  const out = arena ? arena.take(size) : new Uint8Array(size);
  const ov = new DataView(out.buffer, out.byteOffset, out.byteLength);
  let from = head;
  let to = 0;
  const copy = (n: number) => {
    if (from + n > packed.length || to + n > size) throw fail('are truncated or longer than they declare');
    out.set(packed.subarray(from, from + n), to);
    from += n;
    to += n;
  };
  copy(SEAL_HEADER + 40);
  const slots = u64(ov, SEAL_HEADER + 32);
  if (slots > size / 8) throw fail('declare more key slots than their size holds');
  for (let i = 0; i < slots; i++) {
    copy(8);
    const parts = u64(ov, to - 8);
    if (parts > size / CT_FIXED) throw fail('declare more key parts than their size holds');
    for (let p = 0; p < parts; p++) {
      copy(SEAL_HEADER + CT_FIXED);
      const partStart = to - SEAL_HEADER - CT_FIXED;
      const { partSize, degree, count, suffix } = keyPart(ov, partStart, k, fail);
      if (partStart + partSize > size) throw fail('have a key part of another size than it declares');
      from = unpackResidues(packed, from, count / degree, degree, widths, out, to, fail);
      to += 8 * count;
      copy(suffix);
    }
  }
  if (from !== packed.length || to !== size) throw fail('are truncated or longer than they declare');
  return out;
}
