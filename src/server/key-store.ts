// Evaluation keys on the main thread: downloaded once per (URI, ETag) however many requests ask
// at once, identified by content (SHA-256), held in SharedArrayBuffers so every worker reads them
// without a copy, and evicted least-recently-used beyond a byte budget.
//
// Key objects named by their SHA-256 (.../<64 hex>[.keys], as clients write them) are
// content-addressed for real: the bytes downloaded must hash to the name, or they are refused
// (422) and not cached; and a name whose hash is already cached is served from the cache, so
// whoever overwrites a client's key object (another caller pointing output_uri at it) can make
// neither the server use other keys nor that client's requests fail while its keys are cached.
import { SealedError } from '../errors.ts';
import { describeS3Location, formatS3Uri, type ObjectStore, type S3Location } from '../storage/s3.ts';
import type { MemoryBudget } from './budget.ts';
import { parseKeySet, type KeyKinds, type KeySet } from './key-set.ts';

export type { KeySet };

export interface KeyStoreStats {
  /** URIs cached. */
  entries: number;
  /** Sum of the cached entries' sizes (serialized bytes), never over the budget. */
  bytes: number;
  /** GETs of key objects started. */
  downloads: number;
  /** Requests answered from the cache (after a HEAD found the ETag unchanged). */
  hits: number;
  /** Downloads in progress. */
  inflight: number;
}

const HASH_NAME = /^([0-9a-f]{64})(?:\.keys)?$/i;

/** The SHA-256 (lowercase hex) a key object's name commits to (last segment `<64 hex>` or `<64 hex>.keys`), or undefined. */
export function keysNameHash(key: string): string | undefined {
  const m = HASH_NAME.exec(key.slice(key.lastIndexOf('/') + 1));
  return m ? m[1].toLowerCase() : undefined;
}

export class KeyStore {
  // Map order is recency: least recently used first.
  private readonly entries = new Map<string, { etag?: string; set: KeySet }>();
  // Downloads in progress by URI: concurrent requests for the same keys share one. Settled ones
  // are removed, so a failed download is not remembered and the next request tries again.
  private readonly inflight = new Map<string, Promise<KeySet>>();
  private total = 0;
  private downloads = 0;
  private hits = 0;
  private readonly store: ObjectStore;
  private readonly kinds: KeyKinds;
  private readonly maxBytes: number;
  private readonly maxObjectBytes: number;
  private readonly budget: MemoryBudget | undefined;

  /**
   * `budget`: request memory, from which a download reserves what it holds until it is parsed.
   * `kinds`: the keys the model takes (key-set.ts).
   */
  constructor(o: { store: ObjectStore; kinds: KeyKinds; maxBytes: number; maxObjectBytes: number; budget?: MemoryBudget }) {
    this.store = o.store;
    this.kinds = o.kinds;
    this.maxBytes = o.maxBytes;
    this.maxObjectBytes = o.maxObjectBytes;
    this.budget = o.budget;
  }

  /**
   * The key set at `loc`: from cache when a HEAD finds the object's ETag unchanged, or (for a
   * hash-named object) when keys with that hash are cached; else downloaded (or taken from a
   * download of the same URI already in progress), and checked against the name's hash.
   */
  async get(loc: S3Location): Promise<{ set: KeySet; cached: boolean }> {
    const uri = formatS3Uri(loc);
    const named = keysNameHash(loc.key);
    const pending = this.inflight.get(uri);
    if (pending) return { set: await pending, cached: false };
    const hit = this.entries.get(uri);
    const byHash = named === undefined ? undefined : this.findById(named);
    if (hit || byHash) {
      // The object must still exist where the request says (and the server be allowed to see
      // it), even when its content is known by its name.
      const head = await this.store.head(loc);
      if (!head) {
        // Deleted: its bytes will not be asked for again under this ETag.
        if (hit && this.entries.get(uri) === hit) this.drop(uri);
        throw new SealedError('not-found', `evaluation keys not found at ${describeS3Location(loc)}`, 'upload them first (`sealed predict` does)');
      }
      // The keys the name commits to, verified when they were downloaded: whatever the object
      // holds now (it may have been overwritten), these are the keys the client named.
      const known = byHash ?? (head.etag === hit!.etag ? ([uri, hit!] as const) : undefined);
      if (known) {
        this.touch(known[0], known[1]);
        this.hits++;
        return { set: known[1].set, cached: true };
      }
    }
    return { set: await this.download(loc, uri, named), cached: false };
  }

  /** A cached entry holding the key set whose content hash is `id`. */
  private findById(id: string): readonly [string, { etag?: string; set: KeySet }] | undefined {
    for (const [u, e] of this.entries) if (e.set.id === id) return [u, e];
    return undefined;
  }

  /** Most recently used: to the end of the order (unless replaced or evicted meanwhile). */
  private touch(uri: string, e: { etag?: string; set: KeySet }): void {
    if (this.entries.get(uri) !== e) return;
    this.entries.delete(uri);
    this.entries.set(uri, e);
  }

  stats(): KeyStoreStats {
    return { entries: this.entries.size, bytes: this.total, downloads: this.downloads, hits: this.hits, inflight: this.inflight.size };
  }

  private download(loc: S3Location, uri: string, named: string | undefined): Promise<KeySet> {
    // Another request may have started it while this one waited for its HEAD.
    const pending = this.inflight.get(uri);
    if (pending) return pending;
    this.downloads++;
    const p = (async () => {
      // The size first, so the download's memory (the object, read into shared memory: the key
      // set's sections are views of it) is reserved before a byte of it is read; a request that
      // cannot have it gets 503 at once.
      let limit = this.maxObjectBytes;
      let reservation;
      if (this.budget) {
        const head = await this.store.head(loc);
        if (!head) throw new SealedError('not-found', `evaluation keys not found at ${describeS3Location(loc)}`, 'upload them first (`sealed predict` does)');
        if (head.size > this.maxObjectBytes) {
          throw new SealedError(
            'bad-request',
            `the evaluation keys at ${describeS3Location(loc)} are ${head.size} bytes, over this server's limit of ${this.maxObjectBytes}`,
            'check that the URI names keys made by `sealed keygen` for this model',
          );
        }
        limit = head.size;
        reservation = this.budget.reserve(head.size, 'downloading evaluation keys');
      }
      try {
        const { bytes, etag, sha256 } = await this.store.getShared(loc, limit, 'evaluation keys');
        const set = this.parse(bytes, sha256, loc, named);
        this.insert(uri, etag, set);
        return set;
      } finally {
        reservation?.release();
      }
    })();
    this.inflight.set(uri, p);
    const settled = () => {
      if (this.inflight.get(uri) === p) this.inflight.delete(uri);
    };
    p.then(settled, settled);
    return p;
  }

  /** Caches `set` under `uri` in place of any older entry, then evicts down to the budget. */
  private insert(uri: string, etag: string | undefined, set: KeySet): void {
    this.drop(uri);
    // Larger than the whole budget: served to the requests waiting for it, not kept.
    if (set.bytes > this.maxBytes) return;
    this.entries.set(uri, { etag, set });
    this.total += set.bytes;
    for (const [u] of this.entries) {
      if (this.total <= this.maxBytes) break;
      this.drop(u);
    }
  }

  private drop(uri: string): void {
    const e = this.entries.get(uri);
    if (!e) return;
    this.total -= e.set.bytes;
    this.entries.delete(uri);
  }

  /** `id`: the SHA-256 of `bytes` (hex), hashed as they were downloaded. */
  private parse(bytes: Uint8Array, id: string, loc: S3Location, named: string | undefined): KeySet {
    // Before anything else, and before caching: an object that is not what its name says was
    // replaced (or damaged) after its owner uploaded it.
    if (named !== undefined && id !== named) {
      throw new SealedError(
        'bad-keys',
        `the evaluation keys at ${describeS3Location(loc)} are not the object their name says: their SHA-256 is ${id}, the name says ${named}`,
        'upload the keys again under the SHA-256 of their bytes (`sealed predict` checks and re-uploads them)',
      );
    }
    // The same bytes already cached under another URI (checked when they were): share that set's
    // buffers instead of copying them again. Each URI's entry still counts its bytes, so the
    // total is an upper bound of the memory held, and evicting one URI leaves the other intact.
    for (const e of this.entries.values()) if (e.set.id === id) return e.set;
    return parseKeySet(bytes, id, this.kinds);
  }
}
