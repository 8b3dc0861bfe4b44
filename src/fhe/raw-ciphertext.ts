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
const SCALE = PRIMES + 8;
const CORRECTION = SCALE + 8;
const DYN = CORRECTION + 8;
const COUNT = DYN + HEADER;
export const RAW_DATA_OFFSET = COUNT + 8;

export interface RawCiphertextInfo {
  parmsId: Uint8Array;
  size: number;
  degree: number;
  primes: number;
  scale: number;
}

function fail(why: string): SealedError {
  return new SealedError('bad-query', `a ciphertext ${why}`, 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves');
}

export function readRawInfo(bytes: Uint8Array): RawCiphertextInfo {
  if (bytes.length < RAW_DATA_OFFSET) throw fail('is truncated');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint16(0, true) !== MAGIC || v.getUint8(2) !== HEADER || bytes[5] !== 0) throw fail('is not an uncompressed SEAL ciphertext');
  const info = {
    parmsId: bytes.slice(PARMS, PARMS + 32),
    size: Number(v.getBigUint64(SIZE, true)),
    degree: Number(v.getBigUint64(DEGREE, true)),
    primes: Number(v.getBigUint64(PRIMES, true)),
    scale: v.getFloat64(SCALE, true),
  };
  const count = info.size * info.degree * info.primes;
  if (bytes[NTT] !== 1 || Number(v.getBigUint64(COUNT, true)) !== count || bytes.length !== RAW_DATA_OFFSET + 8 * count) throw fail('has an unexpected layout');
  return info;
}

/**
 * Copies the residues (all below 2^32: our batch primes have 26 bits) into `dst` at `offset`,
 * as u32: half the memory of SEAL's u64 words.
 */
export function copyResidues(bytes: Uint8Array, dst: Uint32Array, offset: number): number {
  const info = readRawInfo(bytes);
  const count = info.size * info.degree * info.primes;
  // The data starts at an odd offset: copy it to an aligned buffer once, then read words.
  const aligned = new Uint32Array(2 * count);
  new Uint8Array(aligned.buffer).set(bytes.subarray(RAW_DATA_OFFSET, RAW_DATA_OFFSET + 8 * count));
  for (let i = 0; i < count; i++) {
    if (aligned[2 * i + 1] !== 0) throw fail('has a residue above 32 bits');
    dst[offset + i] = aligned[2 * i];
  }
  return count;
}

/** An uncompressed SEAL ciphertext with `size` polynomials from u32 residues (polynomial-major). */
export function buildRaw(info: Omit<RawCiphertextInfo, 'size'>, size: number, residues: Uint32Array, offset: number): Uint8Array {
  const count = size * info.degree * info.primes;
  const out = new Uint8Array(RAW_DATA_OFFSET + 8 * count);
  const v = new DataView(out.buffer);
  const header = (at: number, total: number) => {
    v.setUint16(at, MAGIC, true);
    v.setUint8(at + 2, HEADER);
    v.setUint8(at + 3, 4); // SEAL major version
    v.setUint8(at + 4, 1); // SEAL minor version
    v.setUint8(at + 5, 0); // compr_mode none
    v.setBigUint64(at + 8, BigInt(total), true);
  };
  header(0, out.length);
  out.set(info.parmsId, PARMS);
  out[NTT] = 1;
  v.setBigUint64(SIZE, BigInt(size), true);
  v.setBigUint64(DEGREE, BigInt(info.degree), true);
  v.setBigUint64(PRIMES, BigInt(info.primes), true);
  v.setFloat64(SCALE, info.scale, true);
  v.setBigUint64(CORRECTION, 1n, true);
  header(DYN, HEADER + 8 + 8 * count);
  v.setBigUint64(COUNT, BigInt(count), true);
  const words = new Uint32Array(2 * count);
  for (let i = 0; i < count; i++) words[2 * i] = residues[offset + i];
  out.set(new Uint8Array(words.buffer), RAW_DATA_OFFSET);
  return out;
}
