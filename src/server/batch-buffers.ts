// The shared buffers of finished batch-mode requests, kept for the next one: a batch's sections
// (0.67 GB for an MNIST MLP with two activations at ring 16384), two primes' residues (100 MiB
// each) and the results' residues (batch.ts). Fresh memory is paid for page by page on first
// touch: ~10 us per 4 KiB page on this project's CI VMs (a PVM hypervisor), more with two threads
// faulting at once (a fresh buffer took 7.6 ms per ciphertext to unpack into at ring 16384 with
// 16 primes, a touched one 1.6 ms; 2026-12-05, 2-core AMD VM).
//
// Kept bytes stay reserved in the memory budget, so the budget still bounds what the process
// holds; when a reservation would be refused, the budget asks for them back first (onPressure).
// A reused buffer still holds an earlier request's bytes, never read: a batch's sections are all
// written as they arrive before any is read, each prime's unpacking (for SEAL's forms, the whole
// load) writes all of its buffer (each ciphertext's two polynomials at every coefficient) before
// the kernel reads it, and the kernel writes every lane of the output before it is saved.
import type { MemoryBudget, Reservation } from './budget.ts';

export class BatchBuffers {
  private kept: SharedArrayBuffer[] = [];
  private held?: Reservation;
  private readonly maxBytes: number;
  private readonly budget?: MemoryBudget;

  /** `maxBytes`: the most kept at once; `budget`: where kept bytes are reserved. */
  constructor(maxBytes: number, budget?: MemoryBudget) {
    this.maxBytes = maxBytes;
    this.budget = budget;
    budget?.onPressure(() => this.drop());
  }

  get keptBytes(): number {
    return this.kept.reduce((a, b) => a + b.byteLength, 0);
  }

  /** A buffer of `bytes`: a kept one of that size, else a new one. */
  take(bytes: number): SharedArrayBuffer {
    const i = this.kept.findIndex((b) => b.byteLength === bytes);
    if (i < 0) return new SharedArrayBuffer(bytes);
    const [b] = this.kept.splice(i, 1);
    this.reserveKept();
    return b;
  }

  /** Buffers no task uses any more, each kept if it fits in maxBytes with those kept before it. */
  give(buffers: SharedArrayBuffer[]): void {
    for (const b of buffers) if (this.keptBytes + b.byteLength <= this.maxBytes) this.kept.push(b);
    this.reserveKept();
  }

  /** Lets every kept buffer go (to the garbage collector) and its reservation with it. */
  drop(): void {
    this.kept = [];
    this.held?.release();
    this.held = undefined;
  }

  private reserveKept(): void {
    this.held?.release();
    this.held = undefined;
    const bytes = this.keptBytes;
    if (!bytes || !this.budget) return;
    try {
      const held = this.budget.reserve(bytes, 'kept batch buffers');
      // The reservation may have asked every holder to give memory back, this one too: then
      // nothing is kept, and nothing stays reserved for it.
      if (this.keptBytes === bytes) this.held = held;
      else held.release();
    } catch {
      this.kept = []; // no room: not kept
    }
  }
}
