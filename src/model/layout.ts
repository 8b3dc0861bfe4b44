// Where each record's features go in the slots of a ciphertext, and where its outputs come
// back. Shared by the client (packing, unpacking) and the compiler (which chooses it).
import { rotate } from './simulate.ts';

export interface InputLayout {
  slots: number;
  recordsPerCiphertext: number;
  /** Distance in slots between consecutive records of one ciphertext. */
  recordStride: number;
  /** For record 0, the slots holding feature j (a feature may be written more than once). */
  featureSlots: number[][];
  /**
   * Rotations (to the left) of each packed vector the client encrypts after it, in this order:
   * the first step's rotations done by the client (input-copies.ts). Absent: none.
   */
  rotations?: number[];
}

export interface OutputLayout {
  count: number;
  recordStride: number;
  /** For record 0, the slot of output c. */
  offsets: number[];
}

/** Packs records (already pre-processed) into slot vectors, one per ciphertext. */
export function packRecords(layout: InputLayout, rows: ArrayLike<number>[]): Float64Array[] {
  const out: Float64Array[] = [];
  for (let start = 0; start < rows.length; start += layout.recordsPerCiphertext) {
    const v = new Float64Array(layout.slots);
    const end = Math.min(rows.length, start + layout.recordsPerCiphertext);
    for (let r = start; r < end; r++) {
      const base = (r - start) * layout.recordStride;
      const row = rows[r];
      for (let j = 0; j < layout.featureSlots.length; j++) for (const s of layout.featureSlots[j]) v[base + s] = row[j];
    }
    out.push(v);
  }
  return out;
}

/** A packed vector and its rotations by the layout's `rotations`: the ciphertexts of one query section. */
export function withRotations(layout: InputLayout, v: Float64Array): Float64Array[] {
  return [v, ...(layout.rotations ?? []).map((k) => rotate(v, k))];
}

export function ciphertextsFor(layout: InputLayout, records: number): number {
  return Math.ceil(records / layout.recordsPerCiphertext);
}

/** Reads the outputs of `records` records back from decrypted slot vectors. */
export function unpackOutputs(layout: OutputLayout, perCiphertext: number, decoded: Float64Array[], records: number): number[][] {
  const out: number[][] = [];
  for (let r = 0; r < records; r++) {
    const v = decoded[Math.floor(r / perCiphertext)];
    const base = (r % perCiphertext) * layout.recordStride;
    out.push(layout.offsets.map((o) => v[base + o]));
  }
  return out;
}
