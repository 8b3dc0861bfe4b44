// A thread's reusable room for bytes that live only while SEAL copies them in: the unpacked
// evaluation keys (packed-keys.ts), ~150 MB for the digits forest's single-record set. A fresh
// array of that size costs a page fault per 4 KiB on first touch (~12-14 us each on the 2-core
// AMD VM: ~0.45 s, three times the unpacking itself), and the garbage collector returns it
// before the next key set; reused, its pages are already there.

export class ByteArena {
  private buffer = new Uint8Array(0);
  private used = 0;

  /**
   * `n` bytes, not zeroed: the caller writes every one. Valid until reset; a take that does
   * not fit moves to a new buffer (the bytes given out before stay where they are).
   */
  take(n: number): Uint8Array {
    if (this.used + n > this.buffer.length) {
      // Room for everything taken since the reset and this: after one growth, the same takes fit.
      this.buffer = new Uint8Array(this.used + n);
      this.used = 0;
    }
    const out = this.buffer.subarray(this.used, this.used + n);
    this.used += n;
    return out;
  }

  /** Everything taken is free again (nothing taken may be used after this). */
  reset(): void {
    this.used = 0;
  }
}
