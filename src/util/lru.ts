// The key caches of the servers (network, tree batch, tree single record) hold SEAL objects that
// must be closed, in a WebAssembly heap that never shrinks: so they make room before they load.
// Loading first, then evicting, would hold one value more than the capacity while it loads, and
// the heap would keep that room for good.

/** Values by key, at most `capacity` of them (at least one), the least recently used closed first. */
export class LruCache<V> {
  // Map order is recency: least recently used first.
  private readonly entries = new Map<string, V>();
  private readonly capacity: number;
  private readonly dispose: (v: V) => void;

  constructor(capacity: number, dispose: (v: V) => void) {
    this.capacity = Math.max(1, Math.floor(capacity));
    this.dispose = dispose;
  }

  /**
   * The value under `key`, now the most recently used; else `load()`'s, kept under `key` once it
   * has loaded, after the least recently used values have been closed to make room for it. A
   * load that throws keeps nothing (the values closed for it stay closed).
   */
  get(key: string, load: () => V): V {
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    while (this.entries.size >= this.capacity) {
      const [oldest, old] = this.entries.entries().next().value!;
      this.entries.delete(oldest);
      this.dispose(old);
    }
    const v = load();
    this.entries.set(key, v);
    return v;
  }

  /** Closes the value under `key`, if any, and forgets it. */
  delete(key: string): void {
    const v = this.entries.get(key);
    if (v === undefined) return;
    this.entries.delete(key);
    this.dispose(v);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The values, the most recently used first. */
  recentFirst(): V[] {
    return [...this.entries.values()].reverse();
  }

  /** Closes every value. */
  clear(): void {
    for (const v of this.entries.values()) this.dispose(v);
    this.entries.clear();
  }
}
