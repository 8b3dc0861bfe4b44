// Untrusted SEAL objects are checked here, in TypeScript, before SEAL sees them. Every C++
// exception node-seal throws leaks WASM stack (seal.ts), so bytes we can refuse must never
// reach it. SEAL 4.1's serialization, as SEAL saves it (all integers little-endian):
//
//   SEALHeader   magic u16 = 0xA15E | header_size u8 = 16 | version major u8 = 4, minor u8 = 1
//                | compr_mode u8 (0 none, 1 zlib, 2 zstd) | reserved u16 = 0
//                | size u64 = every byte of the object, header included
//   then the members, zstd-compressed as one frame when compr_mode is 2:
//
//   Ciphertext   parms_id (4 x u64) | is_ntt_form u8 | size u64 (polynomials) | degree u64
//                | primes u64 | scale f64 | correction_factor u64
//                | DynArray: SEALHeader (none) | count u64 | count x u64 residues
//                | seeded only (count = degree x primes, size 2): the second polynomial is a
//                  PRNG seed: SEALHeader (none, size 81) | prng_type u8 (1, 2) | seed (64 bytes)
//   KSwitchKeys  parms_id | keys u64 | per key: parts u64 | parts x PublicKey (a Ciphertext
//                saved whole, header included, uncompressed), as GaloisKeys and RelinKeys are
//
// Residues are polynomial-major (polynomial, then prime, then coefficient) and must be below
// their prime. A zstd body must be exactly one zstd frame (SEAL refuses bytes after it, Node's
// zstd ignores them). Checking an object costs less than SEAL's own load, and its decompressed
// bytes are handed to SEAL uncompressed, so SEAL does not decompress it again. For keys (tens of
// MB) that takes a third off the load (SEAL's zstd in WASM is slower than Node's) and keeps
// SEAL's decompression buffer out of the worker's WASM heap, which never shrinks; the price is
// one transient uncompressed copy on the JavaScript side.
/* eslint-disable max-lines -- Over 300 lines on purpose: one binary format read front to back, next
   to its description above; split, each reader would be far from the layout it follows. */
import { SealedError, type ErrorCode } from '../errors.ts';
import { nodeBuiltin } from '../util/node-builtin.ts';
import type { ByteArena } from './byte-arena.ts';
import { isPackedKeys, unpackKeys } from './packed-keys.ts';
import { ZSTD_FRAME, zstdFrameLength } from './seal-zstd.ts';

const MAGIC = 0xa15e;
const HEADER = 16;
const VERSION_MAJOR = 4;
const VERSION_MINOR = 1;
const COMPR = ['none', 'zlib', 'zstd'] as const;
export type ComprMode = (typeof COMPR)[number];

/** Ciphertext members before the residues: parms_id .. correction_factor, DynArray header, count. */
const CT_FIXED = 32 + 1 + 8 + 8 + 8 + 8 + 8 + HEADER + 8;
/** A saved UniformRandomGeneratorInfo: header, prng_type, 64-byte seed. */
const SEED_INFO = HEADER + 1 + 64;
/** SEAL_CIPHERTEXT_SIZE_MAX: no ciphertext has more polynomials. */
const MAX_POLYS = 16;

/** One level of SEAL's modulus chain: its parms_id (32 bytes) and its primes. */
export interface SealLevel {
  parmsId: Uint8Array;
  primes: bigint[];
}

/** What a SEAL context accepts, read from SEAL once when a session opens (ckks.ts). */
export interface SealShape {
  degree: number;
  /** The key level: every prime, the special one included. */
  key: SealLevel;
  /** The data levels, top (fresh ciphertexts) first. */
  data: SealLevel[];
}

export interface CiphertextRule {
  /** Names the object in messages: "ciphertext 3 of the encrypted query". */
  what: string;
  code: ErrorCode;
  hint: string;
  /** Levels the ciphertext may be at. */
  levels: SealLevel[];
  /** Polynomial counts accepted. */
  minPolys: number;
  maxPolys: number;
  /** What the model's clients write; anything else is refused. */
  compression: readonly ComprMode[];
  /** The exact scale expected (fresh queries), if any. */
  scale?: number;
}

export interface KeysRule {
  what: string;
  kind: 'galois' | 'relin';
  /** Galois keys: the rotations the model needs, with SEAL's Galois element of each. */
  required?: { step: number; element: number }[];
  /** Galois keys: most keys accepted (bounds the memory a key object may claim). */
  maxKeys?: number;
  /** What the model's clients write: zstd unless said (a tree's single-record keys: uncompressed too). */
  compression?: readonly ComprMode[];
  /** Where packed keys are unpacked (the returned bytes are then valid until its reset); else a fresh array. */
  arena?: ByteArena;
}

/** Zstd, when this runtime has it (Node >= 22.15); pages get none and let SEAL decompress. */
type Zstd = (bytes: Uint8Array, maxOutputLength: number) => Uint8Array;
const zstd: Zstd | undefined = (() => {
  // Not an import: this file is in the browser bundle, which has no node:zlib.
  const fn = nodeBuiltin('node:zlib')?.zstdDecompressSync;
  // One output chunk for a ciphertext (zlib's default 16 KiB chunks make it ~2x slower). Nothing
  // above 2 GiB can load into SEAL's 32-bit WASM memory anyway.
  return fn ? (bytes, max) => fn(bytes, { maxOutputLength: Math.min(max, 2 ** 31), chunkSize: Math.max(64, Math.min(max, 4 << 20)) }) : undefined;
})();

/** Whether compressed objects are decompressed and checked whole (else header and size only). */
export const DEEP_CHECKS = zstd !== undefined;

class Refusal {
  readonly rule: { what: string; code: ErrorCode; hint: string };
  constructor(rule: { what: string; code: ErrorCode; hint: string }) {
    this.rule = rule;
  }
  /** A fault in the framing: "X: the data is truncated". */
  frame(why: string): SealedError {
    const hint =
      this.rule.code === 'bad-keys'
        ? 'upload the keys again as written by `sealed keygen`; do not edit or truncate them'
        : 'upload the object again as written by `sealed predict`; do not edit or truncate it';
    return new SealedError(this.rule.code, `${this.rule.what}: ${why}`, hint);
  }
  /** A well-formed object that does not fit the model: "X has 3 polynomials, expected 2". */
  content(why: string): SealedError {
    return new SealedError(this.rule.code, `${this.rule.what} ${why}`, this.rule.hint);
  }
}

/** Reads little-endian fields; u64 values above 2^53 come back inexact but above any bound. */
class Bytes {
  readonly b: Uint8Array;
  readonly v: DataView;
  constructor(b: Uint8Array) {
    this.b = b;
    this.v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  get length(): number {
    return this.b.length;
  }
  u64(at: number): number {
    return this.v.getUint32(at + 4, true) * 2 ** 32 + this.v.getUint32(at, true);
  }
}

/** Checks a SEALHeader at `at`; returns its compression mode and declared size. */
function readHeader(x: Bytes, at: number, r: Refusal): { compr: number; size: number } {
  if (at + HEADER > x.length) throw r.frame('the data is truncated');
  if (x.v.getUint16(at, true) !== MAGIC) throw r.frame('the data is not a SEAL object (bad magic)');
  if (x.b[at + 2] !== HEADER) throw r.frame('the data is not a SEAL object (bad header size)');
  if (x.b[at + 3] !== VERSION_MAJOR || x.b[at + 4] !== VERSION_MINOR)
    throw r.frame(`the data was written by another SEAL version than ${VERSION_MAJOR}.${VERSION_MINOR}, which this server reads`);
  if (x.b[at + 5] >= COMPR.length) throw r.frame('the data is not a SEAL object (unknown compression mode)');
  if (x.v.getUint16(at + 6, true) !== 0) throw r.frame('the data is not a SEAL object (reserved header bytes are set)');
  return { compr: x.b[at + 5], size: x.u64(at + 8) };
}

/** An upper bound of zstd's output for `n` input bytes (ZSTD_compressBound, with room). */
function zstdBound(n: number): number {
  return n + Math.floor(n / 256) + 1024;
}

/**
 * The outer header against the object's length and the byte bound; the members, decompressed
 * if need be (bounded by `maxBody`), or undefined when this runtime cannot decompress.
 */
function openObject(bytes: Uint8Array, allowed: readonly ComprMode[], maxBody: number, r: Refusal): { members: Bytes; decompressed: boolean } | undefined {
  const x = new Bytes(bytes);
  if (bytes.length < HEADER) throw r.frame('the data is not a SEAL object (shorter than a SEAL header)');
  const h = readHeader(x, 0, r);
  const mode = COMPR[h.compr];
  if (!allowed.includes(mode))
    throw r.frame(`the data uses SEAL compression mode "${mode}"; this model's clients write ${allowed.map((m) => `"${m}"`).join(' or ')}`);
  if (h.size > bytes.length) throw r.frame('the data is truncated (its SEAL header declares more bytes than arrived)');
  if (h.size < bytes.length) throw r.frame('the data has bytes after the end of the SEAL object');
  const maxBytes = HEADER + (mode === 'none' ? maxBody : zstdBound(maxBody));
  if (bytes.length > maxBytes) throw r.frame(`the data is larger than any such object of this model (${bytes.length} bytes, at most ${maxBytes})`);
  if (mode === 'none') return { members: new Bytes(bytes.subarray(HEADER)), decompressed: false };
  if (bytes.length < HEADER + 4 || x.v.getUint32(HEADER, true) !== ZSTD_FRAME) throw r.frame('the data is corrupted (not a zstd stream)');
  const frame = zstdFrameLength(bytes.subarray(HEADER));
  if (frame < 0) throw r.frame('the data is corrupted (not one whole zstd frame)');
  if (frame < bytes.length - HEADER) throw r.frame('the data has bytes after the end of its zstd stream');
  if (!zstd) return undefined;
  try {
    return { members: new Bytes(zstd(bytes.subarray(HEADER), maxBody)), decompressed: true };
  } catch (e) {
    if (e instanceof RangeError) throw r.frame('the data is corrupted (it decompresses to more than any such object of this model)');
    throw r.frame('the data is corrupted (decompression failed)');
  }
}

/** SEAL's uncompressed form of an object whose members we decompressed: SEAL loads it as is. */
function uncompressed(original: Uint8Array, members: Bytes): Uint8Array {
  const out = new Uint8Array(HEADER + members.length);
  out.set(original.subarray(0, HEADER));
  out[5] = 0;
  new DataView(out.buffer).setBigUint64(8, BigInt(out.length), true);
  out.set(members.b, HEADER);
  return out;
}

function sameId(a: Uint8Array, b: Uint8Array, at: number): boolean {
  for (let i = 0; i < 32; i++) if (a[i] !== b[at + i]) return false;
  return true;
}

/** Whether every residue of `polys` polynomials at `at` is below its prime. */
function residuesBelowPrimes(x: Bytes, at: number, polys: number, degree: number, primes: bigint[]): boolean {
  const v = x.v;
  for (let p = 0; p < polys; p++) {
    for (const q of primes) {
      const qHi = Number(q >> 32n);
      const qLo = Number(q & 0xffffffffn);
      for (const end = at + 8 * degree; at < end; at += 8) {
        const hi = v.getUint32(at + 4, true);
        if (hi > qHi || (hi === qHi && v.getUint32(at, true) >= qLo)) return false;
      }
    }
  }
  return true;
}

interface MemberRule {
  levels: SealLevel[];
  minPolys: number;
  maxPolys: number;
  scale?: number;
}

/**
 * Checks Ciphertext members at `at` (what Ciphertext::load_members and SEAL's validity checks
 * would refuse, and more); returns where they end.
 */
function readCiphertextMembers(x: Bytes, at: number, degree: number, m: MemberRule, r: Refusal): number {
  if (at + CT_FIXED > x.length) throw r.frame('the data is truncated');
  const level = m.levels.find((l) => sameId(l.parmsId, x.b, at));
  if (!level) throw r.content('was made for other encryption parameters (or is at another level) than this model uses');
  if (x.b[at + 32] !== 1) throw r.content('is not in NTT form');
  const polys = x.u64(at + 33);
  if (polys < m.minPolys || polys > m.maxPolys) {
    const expected = m.minPolys === m.maxPolys ? `${m.minPolys}` : `${m.minPolys} to ${m.maxPolys}`;
    throw r.content(`has ${polys <= MAX_POLYS ? polys : 'too many'} polynomials, expected ${expected}`);
  }
  if (x.u64(at + 41) !== degree) throw r.content(`has another ring degree than this model's ${degree}`);
  if (x.u64(at + 49) !== level.primes.length) throw r.content(`has a prime count that does not match its level (${level.primes.length} primes)`);
  const scale = x.v.getFloat64(at + 57, true);
  if (!(scale > 0) || !Number.isFinite(scale)) throw r.content('has a scale that is not a positive number');
  if (m.scale !== undefined && scale !== m.scale) throw r.content(`has scale 2^${Math.log2(scale).toFixed(2)}, expected 2^${Math.log2(m.scale)}`);
  if (x.u64(at + 65) !== 1) throw r.content('has a correction factor other than 1 (CKKS has none)');
  const dyn = at + 73;
  const h = readHeader(x, dyn, r);
  const perPoly = degree * level.primes.length;
  const count = x.u64(dyn + HEADER);
  const seeded = polys === 2 && count === perPoly;
  if (h.compr !== 0 || (count !== polys * perPoly && !seeded)) throw r.frame('the data has an unexpected layout (its residue array does not match its size)');
  if (h.size !== HEADER + 8 + 8 * count) throw r.frame('the data has an unexpected layout (its residue array declares another size)');
  const data = dyn + HEADER + 8;
  let end = data + 8 * count;
  if (end > x.length) throw r.frame('the data is truncated');
  if (seeded) {
    const s = readHeader(x, end, r);
    if (s.compr !== 0 || s.size !== SEED_INFO || end + SEED_INFO > x.length) throw r.frame('the data has an unexpected layout (bad seed record)');
    const prng = x.b[end + HEADER];
    if (prng !== 1 && prng !== 2) throw r.frame('the data has an unexpected layout (unknown random generator)');
    end += SEED_INFO;
  }
  if (!residuesBelowPrimes(x, data, seeded ? 1 : polys, degree, level.primes)) throw r.frame('the data is corrupted (a residue is not below its prime)');
  return end;
}

/**
 * Checks an untrusted ciphertext; returns the bytes to hand SEAL (uncompressed when it was
 * decompressed here). Throws a SealedError saying what is wrong, never showing the bytes.
 */
export function precheckCiphertext(bytes: Uint8Array, shape: SealShape, rule: CiphertextRule): Uint8Array {
  const r = new Refusal(rule);
  const widest = Math.max(...rule.levels.map((l) => l.primes.length));
  const maxBody = CT_FIXED + 8 * rule.maxPolys * shape.degree * widest + SEED_INFO;
  const opened = openObject(bytes, rule.compression, maxBody, r);
  if (!opened) return bytes;
  const { members, decompressed } = opened;
  const end = readCiphertextMembers(members, 0, shape.degree, rule, r);
  if (end !== members.length) throw r.frame(end < members.length ? 'the data has bytes after the end of the ciphertext' : 'the data is truncated');
  return decompressed ? uncompressed(bytes, members) : bytes;
}

/** Bytes of one key-switching key part (a PublicKey saved whole), unseeded. */
function publicKeyBytes(shape: SealShape): number {
  return HEADER + CT_FIXED + 8 * 2 * shape.degree * shape.key.primes.length + SEED_INFO;
}

/**
 * Checks untrusted Galois or relinearization keys (KSwitchKeys), packed (packed-keys.ts) or as
 * SEAL saves them: header, byte bound, and when this runtime can decompress, every key and
 * residue, and that each required rotation is there. Returns the bytes to hand SEAL:
 * uncompressed when they were unpacked or decompressed here, else as they came.
 */
export function precheckKeys(bytes: Uint8Array, shape: SealShape, rule: KeysRule): Uint8Array {
  const hint = 'make keys for this model with `sealed keygen`';
  const r = new Refusal({ what: rule.what, code: 'bad-keys', hint });
  // Galois keys are indexed by (element - 1) / 2 < degree; relinearization keys hold one key.
  const maxIndex = rule.kind === 'galois' ? shape.degree : 1;
  const maxKeys = rule.kind === 'galois' ? (rule.maxKeys ?? shape.degree) : 1;
  const parts = shape.data[0].primes.length;
  const maxBody = 32 + 8 + 8 * maxIndex + maxKeys * parts * publicKeyBytes(shape);
  // What current clients send (packed-keys.ts): unpacked here, then checked as uncompressed keys.
  if (isPackedKeys(bytes)) return precheckKeys(unpackKeys(bytes, rule.what, HEADER + maxBody, rule.arena), shape, { ...rule, compression: ['none'] });
  const opened = openObject(bytes, rule.compression ?? ['zstd'], maxBody, r);
  if (!opened) return bytes;
  const x = opened.members;
  if (x.length < 40) throw r.frame('the data is truncated');
  if (!sameId(shape.key.parmsId, x.b, 0)) throw r.content('were made for other encryption parameters than this model uses');
  const slots = x.u64(32);
  if (slots > maxIndex || (rule.kind === 'relin' && slots !== 1))
    throw r.content(rule.kind === 'relin' ? 'do not hold exactly one relinearization key' : 'hold more key slots than a ring of this degree has');
  const present = new Set<number>();
  const keyLevel: MemberRule = { levels: [shape.key], minPolys: 2, maxPolys: 2 };
  let at = 40;
  for (let i = 0; i < slots; i++) {
    if (at + 8 > x.length) throw r.frame('the data is truncated');
    const n = x.u64(at);
    at += 8;
    if (n === 0) continue;
    if (n !== parts) throw r.frame(`the data has an unexpected layout (a key of other than ${parts} parts)`);
    present.add(i);
    if (present.size > maxKeys) throw r.content(`hold more than the ${maxKeys} keys this model accepts`);
    for (let j = 0; j < n; j++) {
      const h = readHeader(x, at, r);
      if (h.compr !== 0) throw r.frame('the data has an unexpected layout (a compressed key part)');
      const end = readCiphertextMembers(x, at + HEADER, shape.degree, keyLevel, r);
      if (end !== at + h.size) throw r.frame('the data has an unexpected layout (a key part of another size than it declares)');
      at = end;
    }
  }
  if (at !== x.length) throw r.frame('the data has bytes after the end of the keys');
  for (const need of rule.required ?? []) {
    if (!present.has((need.element - 1) >>> 1))
      throw new SealedError('bad-keys', `the evaluation keys lack the rotation by ${need.step} this model needs`, hint);
  }
  return opened.decompressed ? uncompressed(bytes, x) : bytes;
}
