// Galois keys made one key at a time, each packed straight into its place in the packing of them
// all.
//
// SEAL holds the Galois keys it makes, unseeded, until they are saved, then their saved bytes in
// a stream: made all at once, the 27 keys of the digits forest's single-record form peaked at
// 1.1 GB of the client's memory and took 3.9-4.2 s on the 2-core VM; made and saved one at a
// time, 0.44 GB and 2.2-2.4 s (most of the difference is first touches of fresh memory, ~13 us a
// page here; docs/trees.md). Packing each key into a piece of its own and then copying the
// pieces into one array touched every byte sent twice more; here each key's bytes are packed
// once, where they are sent from: digits 2.2 s median instead of 2.8, 0.35 GB instead of 0.44.
// The bytes sent are what packing the keys made all at once would give, but for the randomness.
import { galoisElement } from './params.ts';
import { CT_FIXED, headLength, keyPart, keyResidueArrays, packedSpanLength, packingHead, packSpan, SEAL_HEADER, u64, writePackingHead } from './packed-keys.ts';
import { blockWords } from './residue-bits.ts';

/** Where SEAL's KSwitchKeys bytes keep their slot count, and where their slots start. */
const AT_SLOTS = SEAL_HEADER + 32;
const SLOTS_AT = SEAL_HEADER + 40;

/** Distinct rotation steps in the order SEAL keeps their keys: by Galois element. */
export function inKeyOrder(steps: number[], degree: number): number[] {
  return [...new Set(steps)].sort((a, b) => galoisElement(a, degree) - galoisElement(b, degree));
}

/**
 * The packing (packed-keys.ts) of `count` Galois keys, written from SEAL GaloisKeys that each hold
 * one key, added in ascending order of their Galois elements (the order of SEAL's slots, one per
 * element). GaloisKeys have a slot per Galois element (N of them); a one-key object has one slot
 * with a key and the others empty (a zero part count each). Every key of one context has the
 * same size, so the first fixes the whole array's size and each key's place. `add` returns false,
 * and the writer is spent, when a key is not such an object, not of the first key's context or
 * size, or out of order: the caller then makes the keys all at once.
 */
export class PackedGaloisWriter {
  private readonly widths: number[];
  private readonly count: number;
  private out: Uint8Array | undefined;
  private added = 0;
  private failed = false;
  private lastSlot = -1;
  private keyBytes = 0;
  private keyUnpacked = 0;
  private slots = 0;
  private sealHead: Uint8Array | undefined;

  constructor(widths: number[], count: number) {
    this.widths = widths;
    this.count = count;
  }

  /** Adds the key of one-key GaloisKeys `raw` (SEAL's uncompressed bytes); false if it cannot. */
  add(raw: Uint8Array): boolean {
    if (this.failed || this.added >= this.count || !this.place(raw)) {
      this.failed = true;
      this.out = undefined;
      return false;
    }
    this.added++;
    return true;
  }

  /** The packing of every key, or undefined unless all `count` were added. */
  result(): Uint8Array | undefined {
    return !this.failed && this.added === this.count ? this.out : undefined;
  }

  private place(raw: Uint8Array): boolean {
    const arrays = keyResidueArrays(raw, this.widths);
    if (!arrays || raw.length < SLOTS_AT + 8) return false;
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const N = u64(v, AT_SLOTS);
    if (N < 1 || raw.length < SLOTS_AT + 8 * N) return false;
    let slot = 0;
    while (slot < N && u64(v, SLOTS_AT + 8 * slot) === 0) slot++;
    const start = SLOTS_AT + 8 * slot;
    const end = raw.length - 8 * (N - slot - 1);
    if (slot === N || end <= start + 8 || raw.subarray(end).some((b) => b !== 0) || slot <= this.lastSlot) return false;
    const packedKey = packedSpanLength(arrays, start, end, this.widths);
    const head = headLength(this.widths.length);
    if (!this.out || !this.sealHead) {
      // The SEAL header up to its size field, and the parms_id: the same in every key's object.
      this.sealHead = raw.slice(0, SLOTS_AT);
      this.slots = N;
      this.keyBytes = packedKey;
      this.keyUnpacked = end - start;
      const empty = N - this.count;
      this.out = new Uint8Array(head + SLOTS_AT + 8 * empty + this.count * packedKey);
      writePackingHead(this.out, this.widths);
      this.out.set(this.sealHead, head);
      const unpacked = SLOTS_AT + 8 * empty + this.count * this.keyUnpacked;
      const ov = new DataView(this.out.buffer);
      ov.setUint32(head + 8, unpacked % 2 ** 32, true);
      ov.setUint32(head + 12, Math.floor(unpacked / 2 ** 32), true);
    } else {
      const same =
        raw.subarray(0, 8).every((b, i) => b === this.sealHead![i]) &&
        raw.subarray(SEAL_HEADER, SLOTS_AT).every((b, i) => b === this.sealHead![SEAL_HEADER + i]);
      if (!same || N !== this.slots || packedKey !== this.keyBytes || end - start !== this.keyUnpacked) return false;
    }
    // Before this key: the empty slots (zero part counts, as the array is made) and the keys added.
    const at = head + SLOTS_AT + 8 * (slot - this.added) + this.keyBytes * this.added;
    if (slot - this.added > N - this.count) return false;
    this.lastSlot = slot;
    return packSpan(raw, arrays, start, end, this.widths, this.out, at) === packedKey;
  }
}

/** One key's place in a packing: its Galois element, its slot, its packed bytes [at, end), its size unpacked. */
export interface PackedGaloisKey {
  element: number;
  slot: number;
  at: number;
  end: number;
  unpacked: number;
}

/** The keys of a packing of Galois keys (packedGaloisLayout), and what a one-key object of any of them shares. */
export interface PackedGaloisLayout {
  keys: PackedGaloisKey[];
  /** Where the slots start (after the packing's head, SEAL's header, the parms_id and the slot count). */
  slotsAt: number;
  /** The slot count (N). */
  slots: number;
  head: number;
}

/**
 * Where each key of packed Galois keys lies, every read bounded; only the layout is walked, each
 * key is checked whole when its one-key object is unpacked (seal-precheck.ts). `fail(why)` makes
 * the error thrown: truncation, impossible counts, more slots than `maxSlots` (another ring).
 */
export function packedGaloisLayout(packed: Uint8Array, maxSlots: number, fail: (why: string) => Error): PackedGaloisLayout {
  const { pv: v, k, head, widths } = packingHead(packed, fail);
  const slotsAt = head + SLOTS_AT;
  const N = u64(v, head + AT_SLOTS);
  // GaloisKeys have a slot per element of the ring's degree: more slots is another ring.
  if (N > maxSlots) throw fail('were made for other encryption parameters than this model uses');
  if (N > (packed.length - slotsAt) / 8) throw fail('declare more key slots than their size holds');
  const keys: PackedGaloisKey[] = [];
  let at = slotsAt;
  for (let slot = 0; slot < N; slot++) {
    if (at + 8 > packed.length) throw fail('are truncated');
    const parts = u64(v, at);
    if (parts === 0) {
      at += 8;
      continue;
    }
    if (parts > packed.length / CT_FIXED) throw fail('declare more key parts than their size holds');
    let end = at + 8;
    let unpacked = 8;
    for (let p = 0; p < parts; p++) {
      if (end + SEAL_HEADER + CT_FIXED > packed.length) throw fail('are truncated');
      const { partSize, degree, count, suffix } = keyPart(v, end, k, fail);
      // Every block takes at least a word: a count the bytes cannot hold is refused before any loop over it.
      if (count / degree > packed.length / 4) throw fail('have a key part with an impossible residue count');
      let residues = 0;
      for (let j = 0; j < count / degree; j++) residues += 4 * blockWords(degree, widths[j % k]);
      end += SEAL_HEADER + CT_FIXED + residues + suffix;
      unpacked += partSize;
      if (end > packed.length) throw fail('are truncated');
    }
    keys.push({ element: 2 * slot + 1, slot, at, end, unpacked });
    at = end;
  }
  if (at !== packed.length) throw fail('are truncated or longer than they declare');
  return { keys, slotsAt, slots: N, head };
}

/**
 * The packed object of one key of a packing (`key`, from its layout): what packing one-key
 * GaloisKeys gives (the head, SEAL's header with one key's size, the parms_id, the slot count,
 * every slot empty but the key's), written into `room(n)` (the caller's to reuse). A worker loads
 * the keys one by one from these, so it never holds a whole set's unpacked bytes, nor SEAL a copy
 * of them (~150 MB each for the digits forest's single-record keys, first touches of fresh memory).
 */
export function oneGaloisKey(packed: Uint8Array, layout: PackedGaloisLayout, key: PackedGaloisKey, room: (n: number) => Uint8Array): Uint8Array {
  const { slotsAt, slots: N, head } = layout;
  const { slot, at, end, unpacked } = key;
  const one = room(slotsAt + 8 * (N - 1) + (end - at));
  one.set(packed.subarray(0, slotsAt));
  const size = SLOTS_AT + 8 * (N - 1) + unpacked;
  const ov = new DataView(one.buffer, one.byteOffset, one.byteLength);
  ov.setUint32(head + 8, size % 2 ** 32, true);
  ov.setUint32(head + 12, Math.floor(size / 2 ** 32), true);
  one.fill(0, slotsAt, slotsAt + 8 * slot);
  one.set(packed.subarray(at, end), slotsAt + 8 * slot);
  one.fill(0, slotsAt + 8 * slot + (end - at));
  return one;
}
