// A thread's reusable room for bytes that live only while SEAL copies them in: evaluation keys
// as they are unpacked (packed-keys.ts; src/fhe/load.ts unpacks one Galois key at a time). A
// fresh array costs a page fault per 4 KiB on first touch (~12-14 us each on the 2-core AMD VM,
// several times the unpacking itself), and the garbage collector returns it before the next key
// set; reused, its pages are already there.

export class ByteArena {
  // One buffer per take since the reset, in order: a thread takes the same kinds of bytes in the
  // same order each time (a Galois key packed, then unpacked; a relinearization key), so each
  // take finds the room the same take had before, already touched. One buffer for them all,
  // grown when a take did not fit, put the second set's first take where no page had been
  // touched yet (the first set's went to the buffer before the growth).
  private readonly buffers: Uint8Array[] = [];
  private next = 0;

  /** `n` bytes, not zeroed: the caller writes every one. Valid until reset. */
  take(n: number): Uint8Array {
    const i = this.next++;
    if ((this.buffers[i]?.length ?? -1) < n) this.buffers[i] = new Uint8Array(n);
    return this.buffers[i].subarray(0, n);
  }

  /** Everything taken is free again (nothing taken may be used after this). */
  reset(): void {
    this.next = 0;
  }
}
