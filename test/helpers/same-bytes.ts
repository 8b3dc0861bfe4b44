// t.same for byte arrays at memcmp speed: tap's deep comparison walks a typed array element by
// element (~0.5 us per byte here: 2.5 s for a 5 MB key set), which made byte-for-byte checks of
// keys and gathers the slowest assertions of their suites. Integer arrays only: bytes, not values,
// are compared (a Float64Array's -0 and 0 differ here).
import type { Test } from 'tap';

/** Where two byte views first differ: 'equal', their lengths, or the first differing byte. */
export function byteDifference(actual: ArrayBufferView | undefined, expected: ArrayBufferView): string {
  if (actual === undefined) return 'no bytes (undefined)';
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.length !== b.length) return `${a.length} bytes against ${b.length}`;
  if (a.equals(b)) return 'equal';
  let i = 0;
  while (a[i] === b[i]) i++;
  return `first difference at byte ${i} of ${a.length}: ${a[i]} against ${b[i]}`;
}

/** Passes when `actual` holds the same bytes as `expected`; a failure says where they differ. */
export function sameBytes(t: Test, actual: ArrayBufferView | undefined, expected: ArrayBufferView, message: string): boolean {
  return t.equal(byteDifference(actual, expected), 'equal', message);
}
