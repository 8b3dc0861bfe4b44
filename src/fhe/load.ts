// Loading untrusted SEAL ciphertexts (queries, results; load-keys.ts: evaluation keys): each is checked in
// TypeScript first (seal-precheck.ts), so SEAL sees only bytes that fit the model's parameters.
import type { Ciphertext } from 'node-seal/throws';
import { SealedError } from '../errors.ts';
import type { CkksSession } from './ckks.ts';
import { isPackedWide, unpackWide } from './packed-wide.ts';
import { isPacked, unpackResidues } from './raw-ciphertext.ts';
import { precheckCiphertext, type CiphertextRule, type ComprMode } from './seal-precheck.ts';
import { guard } from './seal.ts';

const QUERY_HINT = 'encrypt the query with `sealed predict` (or the SDK) for the model this endpoint serves';

/**
 * Loads a ciphertext after checking it in TypeScript (seal-precheck.ts): SEAL sees only bytes
 * that fit `rule`. Packed sections (raw-ciphertext.ts, packed-wide.ts) are unpacked first.
 */
function loadChecked(s: CkksSession, bytes: Uint8Array, rule: CiphertextRule): Ciphertext {
  const widest = Math.max(...rule.levels.map((l) => l.primes.length));
  const most = rule.maxPolys * s.params.polyModulusDegree * widest;
  const raw = isPacked(bytes) ? unpackResidues(bytes, rule.what, most) : isPackedWide(bytes) ? unpackWide(bytes, rule.what, most) : bytes;
  const checked = precheckCiphertext(raw, s.shape, rule);
  const ct = new s.seal.Ciphertext();
  try {
    guard(rule.code, rule.what, () => ct.loadFromArray(s.context, checked));
    return ct;
  } catch (e) {
    ct.delete();
    throw e;
  }
}

/** Any ciphertext of this context's data levels (results, batch results), zstd or uncompressed. */
export function loadCiphertext(s: CkksSession, bytes: Uint8Array, what: string): Ciphertext {
  return loadChecked(s, bytes, { what, code: 'bad-query', hint: QUERY_HINT, levels: s.shape.data, minPolys: 2, maxPolys: 16, compression: ['none', 'zstd'] });
}

export interface QueryOptions {
  /** Names the ciphertext in messages; "ciphertext 3 of the encrypted query" when the caller knows its index. */
  what?: string;
  /** What the model's client writes: zstd (single layout); batch mode also packed sections. */
  compression?: readonly ComprMode[];
}

/**
 * A query section of `count` SEAL objects back to back (the input and the client's rotated
 * copies, Engine.inputCiphertexts) -> each object's bytes, split at the sizes their headers
 * declare; each is then checked in full by loadQueryCiphertext.
 */
export function splitSection(bytes: Uint8Array, count: number, what: string): Uint8Array[] {
  if (count === 1) return [bytes];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const parts: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 16 > bytes.length)
      throw new SealedError(
        'bad-query',
        `${what} holds ${i} ciphertexts; this model reads ${count} per section (the input and its rotated copies)`,
        QUERY_HINT,
      );
    const size = v.getUint32(at + 12, true) * 2 ** 32 + v.getUint32(at + 8, true);
    if (size < 16 || size > bytes.length - at)
      throw new SealedError('bad-query', `${what}: ciphertext ${i + 1} of ${count} declares ${size} bytes, ${bytes.length - at} are left`, QUERY_HINT);
    parts.push(bytes.subarray(at, at + size));
    at += size;
  }
  if (at !== bytes.length) throw new SealedError('bad-query', `${what} has ${bytes.length - at} bytes after its ${count} ciphertexts`, QUERY_HINT);
  return parts;
}

/** A query section: its input ciphertext and the client's rotated copies, each checked by loadQueryCiphertext. */
export function loadQuerySection(s: CkksSession, bytes: Uint8Array, count: number, scaleBits: number, o: QueryOptions = {}): Ciphertext[] {
  const what = o.what ?? 'the encrypted query';
  const parts = splitSection(bytes, count, what);
  const cts: Ciphertext[] = [];
  try {
    parts.forEach((b, k) => cts.push(loadQueryCiphertext(s, b, scaleBits, { ...o, what: k === 0 ? what : `${what} (rotated copy ${k})` })));
    return cts;
  } catch (e) {
    for (const ct of cts) ct.delete();
    throw e;
  }
}

/** Server side: a query ciphertext must be fresh (top level, size 2) at the expected scale. */
export function loadQueryCiphertext(s: CkksSession, bytes: Uint8Array, scaleBits: number, o: QueryOptions = {}): Ciphertext {
  const what = o.what ?? 'the encrypted query';
  const ct = loadChecked(s, bytes, {
    what,
    code: 'bad-query',
    hint: QUERY_HINT,
    levels: [s.shape.data[0]],
    minPolys: 2,
    maxPolys: 2,
    compression: o.compression ?? ['zstd'],
    scale: 2 ** scaleBits,
  });
  // The precheck has refused all of this already; kept as SEAL's own word on what it loaded.
  const fail = (why: string) => {
    ct.delete();
    return new SealedError('bad-query', `${what} ${why}`, QUERY_HINT);
  };
  if (ct.polyModulusDegree() !== s.params.polyModulusDegree)
    throw fail(`has ring degree ${ct.polyModulusDegree()}, the model uses ${s.params.polyModulusDegree}`);
  if (ct.coeffModulusSize() !== s.dataPrimes) throw fail(`is at the wrong level (${ct.coeffModulusSize()} primes, expected ${s.dataPrimes})`);
  if (ct.size() !== 2) throw fail(`has ${ct.size()} polynomials, expected 2`);
  const scale = ct.scale();
  if (!Number.isFinite(scale) || scale !== 2 ** scaleBits)
    throw fail(`has scale ${Number.isFinite(scale) ? `2^${Math.log2(scale).toFixed(2)}` : 'that is not a number'}, expected 2^${scaleBits}`);
  if (!ct.isNttForm()) throw fail('is not in NTT form');
  return ct;
}
