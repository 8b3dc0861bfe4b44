// Ciphertexts packed at their primes' widths: SEAL's uncompressed bytes with each residue in as
// many bits as its prime has (57 for a 57-bit prime) instead of a 64-bit word. What tree batch
// queries are written in: zstd gets a little less from the words' zero high bits, and costs the
// client a compression and the server a decompression per ciphertext, which this format does not.
//
//   "PWB" 0 | prefix length u32 | residue count u32 | primes k u32 | width u8 x k, zero-padded to
//   4 bytes | prefix (SEAL's bytes up to the residues) | blocks | suffix (a seed)
//
// The residues are SEAL's, [poly][prime][coeff]: block j holds the `degree` residues of prime
// j mod k, least significant bit first, in u32 words. The unpacked bytes go through the same
// checks as any ciphertext (seal-precheck.ts) before SEAL loads them.
import { SealedError } from '../errors.ts';
import { RAW_DATA_OFFSET as DATA, RAW_FIELDS } from './raw-ciphertext.ts';

const MAGIC = [0x50, 0x57, 0x42, 0x00];
const HEAD = 16;
const MAX_PRIMES = 64;
const MAX_WIDTH = 60;
const { degree: DEGREE, primes: PRIMES, count: COUNT } = RAW_FIELDS;
/** What follows the residues of a seeded ciphertext: SEAL's seed record (header, PRNG type, 64-byte seed). */
const MAX_SUFFIX = 16 + 1 + 64;

const fail = (why: string, what = 'a ciphertext') =>
  new SealedError('bad-query', `${what} ${why}`, 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves');

export function isPackedWide(bytes: Uint8Array): boolean {
  return bytes.length >= HEAD && MAGIC.every((b, i) => bytes[i] === b);
}

/** Bits of a prime (its width): q < 2^width. */
export const primeWidth = (q: number | bigint) => BigInt(q).toString(2).length;

const headLength = (k: number) => HEAD + Math.ceil(k / 4) * 4;
const blockWords = (degree: number, width: number) => Math.ceil((degree * width) / 32);

/**
 * Packs SEAL's uncompressed ciphertext bytes with residue r of prime j in widths[j] bits;
 * undefined when the bytes are not that layout or a residue does not fit its width.
 */
export function packWide(bytes: Uint8Array, widths: number[]): Uint8Array | undefined {
  if (bytes.length < DATA || widths.some((w) => !(w >= 1 && w <= MAX_WIDTH))) return undefined;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const degree = Number(v.getBigUint64(DEGREE, true));
  const k = Number(v.getBigUint64(PRIMES, true));
  const count = Number(v.getBigUint64(COUNT, true));
  const suffix = bytes.length - DATA - 8 * count;
  if (k !== widths.length || degree < 1 || count % (k * degree) !== 0 || suffix < 0 || suffix > MAX_SUFFIX) return undefined;
  const blocks = count / degree;
  let words = 0;
  for (let j = 0; j < blocks; j++) words += blockWords(degree, widths[j % k]);
  const head = headLength(k);
  const out = new Uint8Array(head + DATA + 4 * words + suffix);
  out.set(MAGIC);
  const ov = new DataView(out.buffer);
  ov.setUint32(4, DATA, true);
  ov.setUint32(8, count, true);
  ov.setUint32(12, k, true);
  widths.forEach((w, j) => (out[HEAD + j] = w));
  out.set(bytes.subarray(0, DATA), head);
  // The residues start at an odd offset: read them from an aligned copy.
  const src = new Uint32Array(2 * count);
  new Uint8Array(src.buffer).set(bytes.subarray(DATA, DATA + 8 * count));
  const dst = new Uint32Array(words);
  let pos = 0;
  for (let j = 0, i = 0; j < blocks; j++) {
    const w = widths[j % k];
    const start = pos;
    for (let c = 0; c < degree; c++, i++) {
      const lo = src[2 * i],
        hi = src[2 * i + 1];
      if (w <= 32) {
        if (hi !== 0 || (w < 32 && lo >>> w !== 0)) return undefined;
        pos = writeBits(dst, pos, lo, w);
      } else {
        if (hi >>> (w - 32) !== 0) return undefined;
        pos = writeBits(dst, writeBits(dst, pos, lo, 32), hi, w - 32);
      }
    }
    pos = start + 32 * blockWords(degree, w);
  }
  out.set(new Uint8Array(dst.buffer), head + DATA);
  out.set(bytes.subarray(DATA + 8 * count), head + DATA + 4 * words);
  return out;
}

/**
 * SEAL's uncompressed bytes back from a packed one. `maxResidues`: the most the model's
 * ciphertexts hold, so a hostile object cannot make us allocate more.
 */
export function unpackWide(packed: Uint8Array, what: string | undefined, maxResidues: number): Uint8Array {
  const v = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  if (!isPackedWide(packed) || v.getUint32(4, true) !== DATA) throw fail('is not a packed ciphertext', what);
  const count = v.getUint32(8, true);
  const k = v.getUint32(12, true);
  if (k < 1 || k > MAX_PRIMES) throw fail(`declares ${k} primes`, what);
  const head = headLength(k);
  if (packed.length < head + DATA) throw fail('is truncated', what);
  const widths = Array.from(packed.subarray(HEAD, HEAD + k));
  if (widths.some((w) => w < 1 || w > MAX_WIDTH)) throw fail('declares a residue width outside 1-60 bits', what);
  const pv = new DataView(packed.buffer, packed.byteOffset + head, DATA);
  const degree = Number(pv.getBigUint64(DEGREE, true));
  if (Number(pv.getBigUint64(PRIMES, true)) !== k || Number(pv.getBigUint64(COUNT, true)) !== count)
    throw fail('has a prefix that disagrees with its packing', what);
  if (count > maxResidues || !(degree >= 1 && degree <= 32768) || count % (k * degree) !== 0) throw fail('is truncated or declares too many residues', what);
  const blocks = count / degree;
  let words = 0;
  for (let j = 0; j < blocks; j++) words += blockWords(degree, widths[j % k]);
  const body = head + DATA + 4 * words;
  if (body > packed.length) throw fail('is truncated or declares too many residues', what);
  if (packed.length - body > MAX_SUFFIX) throw fail('has more bytes after its residues than a seed', what);
  const src = new Uint32Array(words);
  new Uint8Array(src.buffer).set(packed.subarray(head + DATA, body));
  const res = new Uint32Array(2 * count);
  let pos = 0;
  for (let j = 0, i = 0; j < blocks; j++) {
    const w = widths[j % k];
    const start = pos;
    for (let c = 0; c < degree; c++, i++) {
      if (w <= 32) {
        res[2 * i] = readBits(src, pos, w);
        pos += w;
      } else {
        res[2 * i] = readBits(src, pos, 32);
        res[2 * i + 1] = readBits(src, pos + 32, w - 32);
        pos += w;
      }
    }
    pos = start + 32 * blockWords(degree, w);
  }
  const out = new Uint8Array(DATA + 8 * count + (packed.length - body));
  out.set(packed.subarray(head, head + DATA));
  out.set(new Uint8Array(res.buffer), DATA);
  out.set(packed.subarray(body), DATA + 8 * count);
  return out;
}

/** Writes the low `n` (1-32) bits of `value` at bit `pos`; returns the next position. */
function writeBits(words: Uint32Array, pos: number, value: number, n: number): number {
  const i = pos >>> 5,
    o = pos & 31;
  words[i] |= value << o;
  if (o + n > 32) words[i + 1] |= value >>> (32 - o);
  return pos + n;
}

/** The `n` (1-32) bits at bit `pos`, as an unsigned integer. */
function readBits(words: Uint32Array, pos: number, n: number): number {
  const i = pos >>> 5,
    o = pos & 31;
  let v = words[i] >>> o;
  if (o + n > 32) v |= words[i + 1] << (32 - o);
  return n === 32 ? v >>> 0 : (v & ((1 << n) - 1)) >>> 0;
}
