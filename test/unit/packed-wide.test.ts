// Ciphertexts packed at their primes' widths (src/fhe/packed-wide.ts): what tree clients send
// in batch queries. Round trip byte for byte, the size, the load, and hostile objects
// refused with a reason before anything the size of their claims is allocated.
import t from 'tap';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';
import { loadQueryCiphertext } from '../../src/fhe/load.ts';
import { isPackedWide, packWide, primeWidth, unpackWide } from '../../src/fhe/packed-wide.ts';
import { primes as chainPrimes } from '../../src/fhe/params.ts';
import { RAW_DATA_OFFSET } from '../../src/fhe/raw-ciphertext.ts';
import { sameBytes } from '../helpers/same-bytes.ts';

// Wide and narrow data primes, at ring 8192.
const params = { scheme: 'ckks' as const, polyModulusDegree: 8192, coeffModulusBits: [53, 30, 53, 60], securityLevel: 128 as const };
const s = await CkksSession.open(params);
const holder = new SecretKeyHolder(s, generateSecretKey(s));
t.teardown(() => {
  holder.close();
  s.close();
});
const widths = chainPrimes(s.seal, s.context).slice(0, -1).map(primeWidth);
const v = Float64Array.from({ length: s.slots }, (_, i) => Math.sin(i));
const SCALE = 40;
const MOST = 2 * 3 * 8192;
const load = (bytes: Uint8Array) => loadQueryCiphertext(s, bytes, SCALE, { compression: ['none'] });

t.test('round trip: byte for byte, at the widths of the primes', async (t) => {
  t.same(widths, [53, 30, 53], 'the data primes have the widths asked for');
  const raw = holder.encryptUncompressed(v, SCALE);
  const packed = packWide(raw, widths)!;
  t.ok(isPackedWide(packed) && !isPackedWide(raw));
  sameBytes(t, unpackWide(packed, undefined, MOST), raw, 'unpacked: SEAL bytes identical to the uncompressed ones');
  // A seeded ciphertext keeps one polynomial's residues: 8192 per prime.
  const residueBytes = (8192 * (53 + 30 + 53)) / 8;
  t.equal(
    packed.length,
    raw.length - 8 * 3 * 8192 + residueBytes + 16 + 4,
    `${packed.length} bytes against ${raw.length}: the residues, a 16-byte head and a 4-byte width list`,
  );
  // An independent reading of the layout docs/wire-format.md §8 gives: residue c of block j at
  // bits c w .. c w + w - 1 of the block, the blocks one after the other from H + P.
  const N = 8192;
  const H = 16 + 4;
  const rawView = new DataView(raw.buffer, raw.byteOffset);
  const bitString = (bytes: Uint8Array, from: number, bits: number) => {
    let v = 0n;
    for (let b = bits - 1; b >= 0; b--) v = (v << 1n) | BigInt((bytes[from + ((b / 8) | 0)] >> (b % 8)) & 1);
    return v;
  };
  let checked = 0;
  let blockAt = H + RAW_DATA_OFFSET;
  for (let j = 0; j < 3; j++) {
    const w = widths[j];
    for (const c of [0, 1, 7, 4095, N - 1]) {
      // Bit c w of the block: byte (c w) div 8, from bit (c w) mod 8 on.
      const at = c * w;
      const got = bitString(packed, blockAt + (at >> 3), w + (at & 7)) >> BigInt(at & 7);
      if (got === rawView.getBigUint64(RAW_DATA_OFFSET + 8 * (j * N + c), true)) checked++;
    }
    blockAt += (N * w) / 8;
  }
  t.equal(checked, 15, 'residues read by the spec’s bit order equal SEAL’s words');
  t.equal(packWide(raw, [53, 29, 53]), undefined, 'a residue that does not fit its width: not packed');
  t.equal(packWide(raw, [53, 30]), undefined, 'widths for another prime count: not packed');
});

t.test('what the client sends loads and decrypts like SEAL’s own bytes', async (t) => {
  const compact = holder.encryptCompact(v, SCALE);
  t.ok(isPackedWide(compact), 'encryptCompact packs');
  const ct = load(compact);
  const bytes = ct.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  ct.delete();
  const back = holder.decrypt(bytes);
  let worst = 0;
  for (let i = 0; i < v.length; i++) worst = Math.max(worst, Math.abs(back[i] - v[i]));
  t.ok(worst < 1e-6, `decrypts to the values (largest error ${worst.toExponential(1)})`);
});

t.test('hostile packed objects: refused with a reason', async (t) => {
  const packed = holder.encryptCompact(v, SCALE);
  const refused = (bytes: Uint8Array, why: RegExp, name: string) => t.throws(() => load(bytes), { code: 'bad-query', message: why }, name);
  refused(packed.subarray(0, packed.length - 200), /truncated/, 'truncated');
  const extended = new Uint8Array(packed.length + 100);
  extended.set(packed);
  refused(extended, /more bytes after its residues than a seed/, 'extended past a seed');
  const width = packed.slice();
  width[16] = 61;
  refused(width, /width outside 1-60 bits/, 'a width over 60 bits');
  const primes = packed.slice();
  new DataView(primes.buffer).setUint32(12, 2, true);
  refused(primes, /disagrees with its packing/, 'a prime count the prefix does not have');
  // The bound on what unpacking allocates: an object packed at narrow widths could claim many
  // times its size in SEAL's 8-byte words. Here the model holds fewer residues than this object.
  t.throws(() => unpackWide(packed, undefined, 3 * 8192 - 1), { code: 'bad-query', message: /too many residues/ }, 'more residues than the model holds');
  // All ones in the 30-bit prime's first residue: 2^30 - 1 is above that prime.
  const high = packed.slice();
  const at = 16 + 4 + RAW_DATA_OFFSET + (8192 * 53) / 8;
  high.fill(0xff, at, at + 4);
  refused(high, /residue is not below its prime/, 'a residue above its prime: the checks after unpacking refuse it');
});
