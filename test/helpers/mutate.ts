// Seeded mutations of real objects for the fuzz tests: bit flips, byte runs, truncation,
// extension, length-field edits, damage past the frame.
import { seededRandom } from '../../src/train/augment.ts';

export function mutator(seed: number) {
  const rand = seededRandom(seed);
  const int = (n: number) => Math.floor(rand() * n);

  function mutate(src: Uint8Array): Uint8Array {
    const b = new Uint8Array(src);
    switch (int(6)) {
      case 0: // flip bits
        for (let i = 0, n = 1 + int(8); i < n; i++) b[int(b.length)] ^= 1 << int(8);
        return b;
      case 1: {
        // overwrite a run with random bytes
        const at = int(b.length);
        for (let i = at; i < Math.min(b.length, at + 1 + int(64)); i++) b[i] = int(256);
        return b;
      }
      case 2: // truncate
        return b.subarray(0, int(b.length));
      case 3: {
        // extend
        // Spreading a multi-megabyte key object into an array cost ~50 ms a case.
        const extra = Array.from({ length: 1 + int(100) }, () => int(256));
        const out = new Uint8Array(b.length + extra.length);
        out.set(b);
        out.set(extra, b.length);
        return out;
      }
      case 4: {
        // edit a length or count field near the start (frame and SEAL headers live there)
        const at = int(Math.min(b.length - 4, 200));
        new DataView(b.buffer).setUint32(at, [0, 1, 0xffffffff, 0x7fffffff, int(2 ** 32)][int(5)], true);
        return b;
      }
      default: {
        // damage inside a SEAL section, past the frame
        const at = 200 + int(Math.max(1, b.length - 200));
        b[at % b.length] ^= 0xff;
        return b;
      }
    }
  }
  return { rand, int, mutate };
}

/**
 * The fuzz suites' seed: FUZZ_SEED when given (to replay a run), else a new one each run, so every
 * run tries new cases. Printed in the TAP output with how to replay it.
 */
export function fuzzSeed(t: { comment(message: string): void }): number {
  const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
  t.comment(`fuzz seed ${seed}: FUZZ_SEED=${seed} replays this run`);
  return seed;
}
