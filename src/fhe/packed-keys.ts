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

const MAGIC = [0x50, 0x57, 0x4b, 0x00];
export const SEAL_HEADER = 16;
/** A ciphertext's members before its residues: parms_id .. correction_factor, DynArray header, count. */
export const CT_FIXED = 32 + 1 + 8 + 8 + 8 + 8 + 8 + SEAL_HEADER + 8;
export const AT_DEGREE = 41;
export const AT_PRIMES = 49;
export const AT_COUNT = 73 + SEAL_HEADER;
/** What follows a seeded part's residues: SEAL's seed record (header, PRNG type, 64-byte seed). */
export const MAX_SUFFIX = SEAL_HEADER + 1 + 64;
export const MAX_PRIMES = 64;
export const MAX_WIDTH = 60;
export const MAX_DEGREE = 32768;

export function isPackedKeys(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && MAGIC.every((b, i) => bytes[i] === b);
}

/** Bytes before SEAL's: the magic, the prime count and the widths (k of them, padded to 4 bytes). */
export const headLength = (k: number) => 8 + Math.ceil(k / 4) * 4;
export const blockWords = (degree: number, width: number) => Math.ceil((degree * width) / 32);

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

/**
 * SEAL's uncompressed bytes back from packed keys. `maxBytes`: the most the model's keys may
 * take unpacked, so a hostile object cannot make us allocate more. Throws a SealedError
 * ('bad-keys') naming `what` on anything that is not packed keys. With `arena`, the bytes are
 * taken from it (every one is written: `to` runs over the whole output) instead of allocated.
 */
export function unpackKeys(packed: Uint8Array, what: string, maxBytes: number, arena?: ByteArena): Uint8Array {
  const fail = (why: string) => new SealedError('bad-keys', `${what} ${why}`, 'make keys for this model with `sealed keygen`');
  const pv = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  if (!isPackedKeys(packed)) throw fail('are not packed keys');
  const k = pv.getUint32(4, true);
  if (k < 1 || k > MAX_PRIMES) throw fail(`declare ${k} primes`);
  const head = headLength(k);
  if (packed.length < head + SEAL_HEADER + 40) throw fail('are truncated');
  const widths = Array.from(packed.subarray(8, 8 + k));
  if (widths.some((w) => w < 1 || w > MAX_WIDTH)) throw fail('declare a residue width outside 1-60 bits');
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
      const members = partStart + SEAL_HEADER;
      const partSize = u64(ov, partStart + 8);
      const degree = u64(ov, members + AT_DEGREE);
      const count = u64(ov, members + AT_COUNT);
      if (u64(ov, members + AT_PRIMES) !== k) throw fail('have a key part whose prime count disagrees with the packing');
      if (!(degree >= 1 && degree <= MAX_DEGREE) || count % (k * degree) !== 0) throw fail('have a key part with an impossible residue count');
      const suffix = partSize - SEAL_HEADER - CT_FIXED - 8 * count;
      if (suffix < 0 || suffix > MAX_SUFFIX || partStart + partSize > size) throw fail('have a key part of another size than it declares');
      from = unpackResidues(packed, from, count / degree, degree, widths, out, to, fail);
      to += 8 * count;
      copy(suffix);
    }
  }
  if (from !== packed.length || to !== size) throw fail('are truncated or longer than they declare');
  return out;
}

// Residues are read from and written to aligned scratch (their arrays start at odd byte
// offsets); one block of `degree` u64 residues at a time, so the scratch stays small.
let scratch64 = new Uint32Array(0);
let scratchBits = new Uint32Array(0);
function ensureScratch(degree: number): void {
  if (scratch64.length < 2 * degree) scratch64 = new Uint32Array(2 * degree);
  // Slack words: the reader takes a 96-bit window at every position, the writer spills into two more words.
  if (scratchBits.length < 2 * degree + 3) scratchBits = new Uint32Array(2 * degree + 3);
}

/** Packs `blocks` x `degree` u64 residues at bytes[from..]; returns the bytes written at out[to..], or -1 if a residue does not fit. */
function packResidues(bytes: Uint8Array, from: number, blocks: number, degree: number, widths: number[], out: Uint8Array, to: number): number {
  ensureScratch(degree);
  const src = scratch64;
  const start = to;
  for (let j = 0; j < blocks; j++, from += 8 * degree) {
    const w = widths[j % widths.length];
    const words = blockWords(degree, w);
    new Uint8Array(src.buffer, 0, 8 * degree).set(bytes.subarray(from, from + 8 * degree));
    const dst = scratchBits.fill(0, 0, words + 2);
    // Branch-free: (x >>> 1) >>> (31 - o) is x >>> (32 - o), and 0 when o is 0 (JavaScript
    // shifts by 32 as by 0). The scratch has two words of slack for the zeros written past the end.
    let pos = 0;
    if (w > 32) {
      const hiBits = w - 32;
      for (let c = 0; c < degree; c++, pos += w) {
        const lo = src[2 * c];
        const hi = src[2 * c + 1];
        if (hi >>> hiBits !== 0) return -1;
        const i = pos >>> 5;
        const o = pos & 31;
        dst[i] |= lo << o;
        dst[i + 1] |= ((lo >>> 1) >>> (31 - o)) | (hi << o);
        dst[i + 2] |= (hi >>> 1) >>> (31 - o);
      }
    } else {
      for (let c = 0; c < degree; c++, pos += w) {
        const lo = src[2 * c];
        if (src[2 * c + 1] !== 0 || (lo >>> 1) >>> (w - 1) !== 0) return -1;
        const i = pos >>> 5;
        const o = pos & 31;
        dst[i] |= lo << o;
        dst[i + 1] |= (lo >>> 1) >>> (31 - o);
      }
    }
    out.set(new Uint8Array(dst.buffer, 0, 4 * words), to);
    to += 4 * words;
  }
  return to - start;
}

/** Unpacks `blocks` x `degree` residues from packed[from..] into out[to..] as u64 words; returns where the packed blocks end. */
function unpackResidues(
  packed: Uint8Array,
  from: number,
  blocks: number,
  degree: number,
  widths: number[],
  out: Uint8Array,
  to: number,
  fail: (why: string) => Error,
): number {
  ensureScratch(degree);
  const res = scratch64;
  for (let j = 0; j < blocks; j++, to += 8 * degree) {
    const w = widths[j % widths.length];
    const words = blockWords(degree, w);
    if (from + 4 * words > packed.length || to + 8 * degree > out.length) throw fail('are truncated');
    const src = scratchBits;
    new Uint8Array(src.buffer, 0, 4 * words).set(packed.subarray(from, from + 4 * words));
    src[words] = 0;
    src[words + 1] = 0;
    from += 4 * words;
    // (x << 1) << (31 - o) is x << (32 - o), and 0 when o is 0 (see packResidues).
    let pos = 0;
    if (w > 32) {
      const hiMask = 2 ** (w - 32) - 1;
      for (let c = 0; c < degree; c++, pos += w) {
        const i = pos >>> 5;
        const o = pos & 31;
        const b = src[i + 1];
        res[2 * c] = (src[i] >>> o) | ((b << 1) << (31 - o));
        res[2 * c + 1] = ((b >>> o) | ((src[i + 2] << 1) << (31 - o))) & hiMask;
      }
    } else {
      const mask = w === 32 ? 0xffffffff : 2 ** w - 1;
      for (let c = 0; c < degree; c++, pos += w) {
        const i = pos >>> 5;
        const o = pos & 31;
        res[2 * c] = ((src[i] >>> o) | ((src[i + 1] << 1) << (31 - o))) & mask;
        res[2 * c + 1] = 0;
      }
    }
    out.set(new Uint8Array(res.buffer, 0, 8 * degree), to);
  }
  return from;
}
