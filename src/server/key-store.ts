// Evaluation keys on the main thread: downloaded once per (URI, ETag), identified by content
// (SHA-256), held in SharedArrayBuffers so every worker reads them without a copy, and evicted
// least-recently-used beyond a byte budget.
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { paramsKey } from '../fhe/params.ts';
import type { Program } from '../fhe/program.ts';
import { formatS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
import { decodeWire, type KeysHeader } from '../wire/format.ts';

export interface KeySet {
  id: string;
  galois: Uint8Array;
  relin?: Uint8Array;
  bytes: number;
}

function shared(b: Uint8Array): Uint8Array {
  const s = new Uint8Array(new SharedArrayBuffer(b.length));
  s.set(b);
  return s;
}

export class KeyStore {
  private readonly entries = new Map<string, { etag?: string; set: KeySet }>();
  private total = 0;
  private readonly store: ObjectStore;
  private readonly program: Program;
  private readonly maxBytes: number;
  private readonly maxObjectBytes: number;

  constructor(o: { store: ObjectStore; program: Program; maxBytes: number; maxObjectBytes: number }) {
    this.store = o.store;
    this.program = o.program;
    this.maxBytes = o.maxBytes;
    this.maxObjectBytes = o.maxObjectBytes;
  }

  /** The key set at `loc`, from cache when the object's ETag is unchanged. */
  async get(loc: S3Location): Promise<{ set: KeySet; cached: boolean }> {
    const uri = formatS3Uri(loc);
    const hit = this.entries.get(uri);
    if (hit) {
      const head = await this.store.head(loc);
      if (!head) throw new SealedError('not-found', `evaluation keys not found at ${uri}`, 'upload them first (`sealed predict` does)');
      if (head.etag === hit.etag) {
        this.entries.delete(uri);
        this.entries.set(uri, hit);
        return { set: hit.set, cached: true };
      }
    }
    const { bytes, etag } = await this.store.get(loc, this.maxObjectBytes, 'evaluation keys');
    const set = this.parse(bytes);
    if (hit) this.drop(uri);
    this.entries.set(uri, { etag, set });
    this.total += set.bytes;
    for (const [u] of this.entries) {
      if (this.total <= this.maxBytes || this.entries.size <= 1) break;
      this.drop(u);
    }
    return { set, cached: false };
  }

  private drop(uri: string): void {
    const e = this.entries.get(uri);
    if (!e) return;
    this.total -= e.set.bytes;
    this.entries.delete(uri);
  }

  private parse(bytes: Uint8Array): KeySet {
    const msg = decodeWire<KeysHeader>('keys', bytes, 'the evaluation-keys object');
    const h = msg.header;
    const want = paramsKey(this.program.params);
    if (h.params !== want) {
      throw new SealedError('bad-keys', `the evaluation keys were made for parameters ${String(h.params).replace(/[^0-9A-Za-z_.-]/g, '?').slice(0, 64)}, this model uses ${want}`, 'make keys for this model with `sealed keygen`');
    }
    const missing = this.program.galoisSteps.filter((s) => !(Array.isArray(h.galois_steps) && h.galois_steps.includes(s)));
    if (missing.length) throw new SealedError('bad-keys', `the evaluation keys lack rotations ${missing.join(', ')} this model needs`, 'make keys for this model with `sealed keygen`');
    const expected = h.relin ? 2 : 1;
    if (msg.sections.length !== expected) throw new SealedError('bad-keys', `the evaluation keys hold ${msg.sections.length} sections, expected ${expected}`);
    if (this.program.relin && !h.relin) throw new SealedError('bad-keys', 'the evaluation keys lack relinearization keys, which this model needs', 'make keys for this model with `sealed keygen`');
    const id = createHash('sha256').update(bytes).digest('hex');
    return { id, galois: shared(msg.sections[0]), relin: h.relin ? shared(msg.sections[1]) : undefined, bytes: bytes.length };
  }
}
