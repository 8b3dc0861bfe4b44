// Residues at their primes' widths: blocks of `degree` u64 residues (SEAL's words) written in
// `width` bits each, least significant bit first, in whole u32 words (packed-keys.ts' layout).

export const blockWords = (degree: number, width: number) => Math.ceil((degree * width) / 32);

// Residues are read from and written to aligned scratch (their arrays start at odd byte
// offsets); one block of `degree` u64 residues at a time, so the scratch stays small.
let scratch64 = new Uint32Array(0);
let scratchBits = new Uint32Array(0);
function ensureScratch(degree: number): void {
  if (scratch64.length < 2 * degree) scratch64 = new Uint32Array(2 * degree);
  // Slack words: the reader takes a 96-bit window at every position, the writer spills into two more words.
  if (scratchBits.length < 2 * degree + 3) scratchBits = new Uint32Array(2 * degree + 3);
}

/** Packs `blocks` x `degree` u64 residues at bytes[from..]; returns the bytes written at out[to..], or -1 if a residue does not fit. */
export function packResidues(bytes: Uint8Array, from: number, blocks: number, degree: number, widths: number[], out: Uint8Array, to: number): number {
  ensureScratch(degree);
  const src = scratch64;
  const start = to;
  for (let j = 0; j < blocks; j++, from += 8 * degree) {
    const w = widths[j % widths.length];
    const words = blockWords(degree, w);
    new Uint8Array(src.buffer, 0, 8 * degree).set(bytes.subarray(from, from + 8 * degree));
    const dst = scratchBits.fill(0, 0, words + 2);
    // Branch-free: (x >>> 1) >>> (31 - o) is x >>> (32 - o), and 0 when o is 0 (JavaScript
    // shifts by 32 as by 0). The scratch has two words of slack for the zeros written past the end.
    let pos = 0;
    if (w > 32) {
      const hiBits = w - 32;
      for (let c = 0; c < degree; c++, pos += w) {
        const lo = src[2 * c];
        const hi = src[2 * c + 1];
        if (hi >>> hiBits !== 0) return -1;
        const i = pos >>> 5;
        const o = pos & 31;
        dst[i] |= lo << o;
        dst[i + 1] |= ((lo >>> 1) >>> (31 - o)) | (hi << o);
        dst[i + 2] |= (hi >>> 1) >>> (31 - o);
      }
    } else {
      for (let c = 0; c < degree; c++, pos += w) {
        const lo = src[2 * c];
        if (src[2 * c + 1] !== 0 || (lo >>> 1) >>> (w - 1) !== 0) return -1;
        const i = pos >>> 5;
        const o = pos & 31;
        dst[i] |= lo << o;
        dst[i + 1] |= (lo >>> 1) >>> (31 - o);
      }
    }
    out.set(new Uint8Array(dst.buffer, 0, 4 * words), to);
    to += 4 * words;
  }
  return to - start;
}

/** Unpacks `blocks` x `degree` residues from packed[from..] into out[to..] as u64 words; returns where the packed blocks end. */
export function unpackResidues(
  packed: Uint8Array,
  from: number,
  blocks: number,
  degree: number,
  widths: number[],
  out: Uint8Array,
  to: number,
  fail: (why: string) => Error,
): number {
  ensureScratch(degree);
  const res = scratch64;
  for (let j = 0; j < blocks; j++, to += 8 * degree) {
    const w = widths[j % widths.length];
    const words = blockWords(degree, w);
    if (from + 4 * words > packed.length || to + 8 * degree > out.length) throw fail('are truncated');
    const src = scratchBits;
    new Uint8Array(src.buffer, 0, 4 * words).set(packed.subarray(from, from + 4 * words));
    src[words] = 0;
    src[words + 1] = 0;
    from += 4 * words;
    // (x << 1) << (31 - o) is x << (32 - o), and 0 when o is 0 (see packResidues).
    let pos = 0;
    if (w > 32) {
      const hiMask = 2 ** (w - 32) - 1;
      for (let c = 0; c < degree; c++, pos += w) {
        const i = pos >>> 5;
        const o = pos & 31;
        const b = src[i + 1];
        res[2 * c] = (src[i] >>> o) | ((b << 1) << (31 - o));
        res[2 * c + 1] = ((b >>> o) | ((src[i + 2] << 1) << (31 - o))) & hiMask;
      }
    } else {
      const mask = w === 32 ? 0xffffffff : 2 ** w - 1;
      for (let c = 0; c < degree; c++, pos += w) {
        const i = pos >>> 5;
        const o = pos & 31;
        res[2 * c] = ((src[i] >>> o) | ((src[i + 1] << 1) << (31 - o))) & mask;
        res[2 * c + 1] = 0;
      }
    }
    out.set(new Uint8Array(res.buffer, 0, 8 * degree), to);
  }
  return from;
}
