// The server's side of seeded batch ciphertexts (seeded-batch.ts has the format and the client's
// encryptor): a section checked against the batch parameters, its residues unpacked and its
// uniform half expanded from the seed, whole or one prime at a time.
import { SealedError } from '../errors.ts';
import { kernelInstance } from './ntt.ts';
import { AT_SEED, expandUniform, HEAD, HINT, isSeededSection, seededSectionBytes, type SeededLevel } from './seeded-batch.ts';

/**
 * The server's side: checks a section against the batch parameters and writes its ciphertext's
 * residues into dst[offset..]: c0, then c1 expanded from the seed ([poly][prime][coeff]).
 */
export function decodeSeededSection(bytes: Uint8Array, level: SeededLevel, scale: number, dst: Uint32Array, offset: number, what: string): void {
  checkSeededSection(bytes, level, scale, what);
  const { primes, degree: N } = level;
  const bad = unpack26(bytes, HEAD, primes, N, dst, offset);
  if (bad >= 0) throw residueAbove(what, bad, primes.length);
  expandUniform(bytes.subarray(AT_SEED, HEAD), primes, N, dst, offset + primes.length * N);
}

/**
 * One prime of a section, checked as decodeSeededSection checks it: c0's residues modulo
 * primes[p] into dst[offset..offset + N), then c1's, expanded from keystream word `from` on: 0
 * for prime 0, else what this returned for prime p - 1 (the stream runs through the primes in
 * turn). Returns where prime p + 1's words start. The server evaluates a batch a prime at a time
 * (batch.ts), so it holds one prime's residues of the batch, not all of them.
 */
export function decodeSeededPrime(
  bytes: Uint8Array,
  level: SeededLevel,
  scale: number,
  p: number,
  dst: Uint32Array,
  offset: number,
  from: number,
  what: string,
): number {
  checkSeededSection(bytes, level, scale, what);
  const { primes, degree: N } = level;
  if (unpack26(bytes, HEAD + (p * N * 13) / 4, [primes[p]], N, dst, offset) >= 0) throw residueAbove(what, p, primes.length);
  return expandUniform(bytes.subarray(AT_SEED, HEAD), [primes[p]], N, dst, offset + N, from);
}

const residueAbove = (what: string, p: number, k: number) =>
  new SealedError('bad-query', `${what} has a residue above its prime (prime ${p + 1} of ${k})`, HINT);

/** Refuses a section whose form, N, k, scale, parms_id or length differ from the batch parameters'. */
function checkSeededSection(bytes: Uint8Array, level: SeededLevel, scale: number, what: string): void {
  const fail = (why: string) => new SealedError('bad-query', `${what} ${why}`, HINT);
  const { primes, degree: N, parmsId } = level;
  const k = primes.length;
  if (bytes.length < HEAD || !isSeededSection(bytes)) throw fail('is not a seeded batch ciphertext');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint32(4, true) !== N || v.getUint32(8, true) !== k)
    throw fail(`has ring degree ${v.getUint32(4, true)} and ${v.getUint32(8, true)} primes, the model uses ${N} and ${k}`);
  const got = v.getFloat64(12, true);
  if (got !== scale)
    throw fail(
      `has scale ${Number.isFinite(got) && got > 0 ? `2^${Math.log2(got).toFixed(2)}` : 'that is not a power of two'}, expected 2^${Math.log2(scale)}`,
    );
  for (let i = 0; i < 32; i++) if (bytes[20 + i] !== parmsId[i]) throw fail("is not at the batch parameters' top level");
  if (bytes.length !== seededSectionBytes(level)) throw fail(`has ${bytes.length} bytes, expected ${seededSectionBytes(level)}`);
}

/** kernel.wat's unpack26, and the room in its memory for one prime's packed bytes and residues. */
interface Unpacker {
  unpack26(src: number, n: number, dst: number): number;
  bytes: Uint8Array;
  residues: Uint32Array;
}
let unpacker: Unpacker | undefined;

function unpackerFor(N: number): Unpacker {
  if (!unpacker || unpacker.residues.length < N) {
    // The packed bytes (13 per four residues; unpack26's loads stay within each group), then the residues.
    const packed = (N / 4) * 13;
    const at = Math.ceil(packed / 16) * 16;
    const { exports, buffer } = kernelInstance<Pick<Unpacker, 'unpack26'>>(at + 4 * N);
    unpacker = { unpack26: exports.unpack26, bytes: new Uint8Array(buffer, 0, packed), residues: new Uint32Array(buffer, at, N) };
  }
  return unpacker;
}

/**
 * pack26's inverse into dst[offset..], prime block by prime block; the index of the first prime
 * with a residue >= it, else -1. Each block is copied into a kernel instance's memory and
 * unpacked there (kernel.wat unpack26: 55-66 -> ~15 us per prime at ring 32768, the copies in
 * and out included), which also finds its largest residue.
 */
export function unpack26(b: Uint8Array, at: number, primes: readonly number[], N: number, dst: Uint32Array, offset: number): number {
  if (N % 4 !== 0) throw new RangeError('unpack26 takes four residues at a time');
  const k = unpackerFor(N);
  const block = (N / 4) * 13;
  for (let j = 0; j < primes.length; j++) {
    k.bytes.set(b.subarray(at + j * block, at + (j + 1) * block));
    const high = k.unpack26(k.bytes.byteOffset, N, k.residues.byteOffset);
    dst.set(k.residues.subarray(0, N), offset + j * N);
    if (high >= primes[j]) return j;
  }
  return -1;
}
