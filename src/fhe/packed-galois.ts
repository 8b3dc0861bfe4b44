// Galois keys made one key at a time, their packings merged into the packing of them all.
//
// SEAL holds the Galois keys it makes, unseeded, until they are saved, then their saved bytes in
// a stream: made all at once, the 27 keys of the digits forest's single-record form peaked at
// 1.1 GB of the client's memory and took 3.9-4.2 s on the 2-core VM; made and saved one at a
// time, 0.44 GB and 2.2-2.4 s (most of the difference is first touches of fresh memory, ~13 us a
// page here; docs/trees.md). The bytes sent are what packing the keys made all at once would
// give, but for the randomness.
import { headLength, isPackedKeys, SEAL_HEADER, u64 } from './packed-keys.ts';

/**
 * One packing of Galois keys from packings (packed-keys.ts packKeys) of SEAL GaloisKeys that
 * each hold one key. GaloisKeys have a slot per Galois element (N of them, in ascending element
 * order); a piece has one slot with a key and the others empty (a zero part count each), so its
 * key's bytes run from that slot to the empty ones after it. Undefined when the pieces are not
 * such packings of one context's keys: the caller then makes the keys all at once.
 */
export function mergePackedGaloisKeys(pieces: Uint8Array[]): Uint8Array | undefined {
  if (pieces.length === 0 || !pieces.every(isPackedKeys)) return undefined;
  const first = pieces[0];
  const fv = new DataView(first.buffer, first.byteOffset, first.byteLength);
  const head = headLength(fv.getUint32(4, true));
  // The packing head, SEAL's header up to its size field, and the parms_id: the same in every piece.
  const shared = [...first.subarray(0, head + 8), ...first.subarray(head + SEAL_HEADER, head + SEAL_HEADER + 32)];
  const N = u64(fv, head + SEAL_HEADER + 32);
  const slotsAt = head + SEAL_HEADER + 40;
  const keys = new Map<number, { bytes: Uint8Array; unpacked: number }>();
  for (const piece of pieces) {
    const v = new DataView(piece.buffer, piece.byteOffset, piece.byteLength);
    const same =
      piece.length > slotsAt &&
      [...piece.subarray(0, head + 8), ...piece.subarray(head + SEAL_HEADER, head + SEAL_HEADER + 32)].every((b, i) => b === shared[i]);
    if (!same || u64(v, head + SEAL_HEADER + 32) !== N || N < 1 || piece.length < slotsAt + 8 * N) return undefined;
    let slot = 0;
    while (slot < N && u64(v, slotsAt + 8 * slot) === 0) slot++;
    const start = slotsAt + 8 * slot;
    const end = piece.length - 8 * (N - slot - 1);
    if (slot === N || end <= start + 8 || piece.subarray(end).some((b) => b !== 0)) return undefined;
    // The key's unpacked bytes: the piece's unpacked size less what its other slots and the members before them take.
    keys.set(slot, { bytes: piece.subarray(start, end), unpacked: u64(v, head + 8) - (SEAL_HEADER + 40) - 8 * (N - 1) });
  }
  let size = slotsAt + 8 * (N - keys.size);
  let unpacked = SEAL_HEADER + 40 + 8 * (N - keys.size);
  for (const k of keys.values()) {
    size += k.bytes.length;
    unpacked += k.unpacked;
  }
  const out = new Uint8Array(size);
  out.set(first.subarray(0, slotsAt));
  const ov = new DataView(out.buffer);
  ov.setUint32(head + 8, unpacked % 2 ** 32, true);
  ov.setUint32(head + 12, Math.floor(unpacked / 2 ** 32), true);
  let at = slotsAt;
  for (let slot = 0; slot < N; slot++) {
    const k = keys.get(slot);
    if (k) {
      out.set(k.bytes, at);
      at += k.bytes.length;
    } else at += 8; // an empty slot: its zero part count, as the array is made
  }
  return out;
}
