// The wire format of queries, evaluation keys and results (documented in docs/wire-format.md):
//
//   "SEALED" (6 bytes) | version u8 = 1 | kind u8 (1 query, 2 keys, 3 result)
//   | header length u32 LE | header (UTF-8 JSON) | section count u32 LE
//   | per section: length u32 LE | bytes (a SEAL object as saved by SEAL, zstd)
//
// Parsing trusts nothing: every length is checked against the buffer before it is used.
import { SealedError, type ErrorCode } from '../errors.ts';

const MAGIC = [0x53, 0x45, 0x41, 0x4c, 0x45, 0x44]; // "SEALED"
export const WIRE_VERSION = 1;
/** Largest JSON header; larger ones are refused before they are read. */
export const MAX_HEADER = 64 * 1024;
/** Most sections one object may declare (a 40,000-image batch query has 7,840). */
export const MAX_SECTIONS = 100_000;

export type WireKind = 'query' | 'keys' | 'result';
const KIND_CODE: Record<WireKind, number> = { query: 1, keys: 2, result: 3 };

export interface QueryHeader {
  model_id: string;
  params: string;
  records: number;
  /**
   * Absent: single (records packed per ciphertext). batch: record per slot, feature per
   * ciphertext. slots: one tree-ensemble record, its bits in every period of the slots, in
   * rotated copies (src/fhe/tree-slots.ts).
   */
  layout?: 'single' | 'batch' | 'slots';
  /**
   * Batch mode: the first section is the client's re-randomization key for circuit privacy
   * (src/fhe/privacy.ts, "SRK1"), the ciphertexts follow. A model that floods its results
   * refuses batch queries without it.
   */
  rerand_key?: boolean;
}
export interface KeysHeader {
  params: string;
  galois_steps: number[];
  relin: boolean;
  /**
   * Sections: Galois keys, relinearization keys (when relin), then the client's public key (when
   * public_key: SEAL PublicKey, seeded, zstd), with which the server re-randomizes results
   * (circuit privacy). A model that floods its results refuses keys without it.
   */
  public_key?: boolean;
}
/**
 * A result's header: the query's, plus the SHA-256 (64 lowercase hex digits) of the query object
 * it answers, as the server read it, so that a client can refuse a result made from another query.
 * The server always writes it; optional here because a reader may be handed a result made
 * elsewhere (a client that knows its query refuses a result without it).
 */
export interface ResultHeader extends QueryHeader {
  query_sha256?: string;
}

export interface WireMessage<H> {
  header: H;
  sections: Uint8Array[];
}

export function encodeWire<H>(kind: WireKind, header: H, sections: Uint8Array[]): Uint8Array {
  const head = new TextEncoder().encode(JSON.stringify(header));
  const total = 8 + 4 + head.length + 4 + sections.reduce((a, s) => a + 4 + s.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[6] = WIRE_VERSION;
  out[7] = KIND_CODE[kind];
  let o = 8;
  view.setUint32(o, head.length, true);
  out.set(head, (o += 4));
  o += head.length;
  view.setUint32(o, sections.length, true);
  o += 4;
  for (const s of sections) {
    view.setUint32(o, s.length, true);
    out.set(s, (o += 4));
    o += s.length;
  }
  return out;
}

/** Magic, version and kind: the first 8 bytes. */
export function checkPrefix(kind: WireKind, bytes: Uint8Array, fail: (why: string) => Error): void {
  if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) throw fail('is not a sealed object (bad magic)');
  if (bytes[6] !== WIRE_VERSION) throw fail(`has wire version ${bytes[6]}; this server reads version ${WIRE_VERSION}`);
  if (bytes[7] !== KIND_CODE[kind])
    throw fail(`is a sealed ${Object.keys(KIND_CODE).find((k) => KIND_CODE[k as WireKind] === bytes[7]) ?? 'unknown'} object, not ${kind}`);
}

/** The hint of a refused query: what a client should send instead. */
export const QUERY_UNCHANGED_HINT = 'upload the file written by `sealed predict`, unchanged';

export function decodeWire<H>(kind: WireKind, bytes: Uint8Array, what: string): WireMessage<H> {
  const code: ErrorCode = kind === 'keys' ? 'bad-keys' : 'bad-query';
  const fail = (why: string) =>
    new SealedError(code, `${what} ${why}`, kind === 'keys' ? 'upload the keys file written by `sealed keygen`, unchanged' : QUERY_UNCHANGED_HINT);
  if (bytes.length < 16) throw fail('is not a sealed object (bad magic)');
  checkPrefix(kind, bytes, fail);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = 8;
  const hl = view.getUint32(o, true);
  o += 4;
  if (hl > MAX_HEADER || o + hl + 4 > bytes.length) throw fail('is truncated (header)');
  let header: H;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(o, o + hl))) as H;
  } catch {
    throw fail('has a corrupted header');
  }
  if (typeof header !== 'object' || header === null) throw fail('has a corrupted header');
  o += hl;
  const count = view.getUint32(o, true);
  o += 4;
  if (count > MAX_SECTIONS) throw fail(`declares ${count} sections`);
  const sections: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    if (o + 4 > bytes.length) throw fail('is truncated');
    const len = view.getUint32(o, true);
    o += 4;
    if (o + len > bytes.length) throw fail('is truncated');
    sections.push(bytes.subarray(o, o + len));
    o += len;
  }
  if (o !== bytes.length) throw fail('has trailing bytes');
  return { header, sections };
}
