// Evaluation keys packed at their primes' widths (src/fhe/packed-keys.ts): what clients send.
// Round trip byte for byte, smaller than zstd, loaded and used by SEAL; hostile objects refused
// with a reason (bad-keys), never allocating more than the model's keys can take.
import t from 'tap';
import { ByteArena } from '../../src/fhe/byte-arena.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys, saveGaloisKeys } from '../../src/fhe/keys.ts';
import { isPackedKeys, packKeys, unpackKeys } from '../../src/fhe/packed-keys.ts';
import { inKeyOrder, PackedGaloisWriter } from '../../src/fhe/packed-galois.ts';
import { loadCiphertext } from '../../src/fhe/load.ts';
import { loadEvaluationKeys } from '../../src/fhe/load-keys.ts';
import { primeWidth } from '../../src/fhe/packed-wide.ts';
import { precheckKeys } from '../../src/fhe/seal-precheck.ts';
import { galoisElement } from '../../src/fhe/params.ts';
import { SealedError } from '../../src/errors.ts';
import { sameBytes } from '../helpers/same-bytes.ts';

// Wide and narrow primes (and a 60-bit special prime), at ring 8192.
const params = { scheme: 'ckks' as const, polyModulusDegree: 8192, coeffModulusBits: [53, 30, 53, 60], securityLevel: 128 as const };
const s = await CkksSession.open(params);
t.teardown(() => s.close());
const widths = s.shape.key.primes.map(primeWidth);
const STEPS = [1, 2, 5];
const kg = new s.seal.KeyGenerator(s.context);
const gk = kg.createGaloisKeysSerializableWithSteps(Int32Array.from(STEPS));
const rk = kg.createRelinKeysSerializable();
const raw = gk.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
const rawRelin = rk.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
const zstd = gk.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
gk.delete();
rk.delete();
kg.delete();
const required = STEPS.map((step) => ({ step, element: galoisElement(step, 8192) }));
const check = (bytes: Uint8Array) => precheckKeys(bytes, s.shape, { what: 'the Galois keys', kind: 'galois', required, maxKeys: 30 });
const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof SealedError && e.code === 'bad-keys') return e.message;
    throw e;
  }
  return 'accepted';
};

t.test('round trip: byte for byte, smaller than zstd by the high bits the primes leave empty', async (t) => {
  t.same(widths, [53, 30, 53, 60], 'the key level has the widths asked for');
  for (const [name, bytes] of [
    ['Galois keys', raw],
    ['relinearization keys', rawRelin],
  ] as const) {
    const packed = packKeys(bytes, widths)!;
    t.ok(isPackedKeys(packed) && !isPackedKeys(bytes), `${name}: packed, recognisably`);
    sameBytes(t, unpackKeys(packed, name, bytes.length), bytes, `${name}: unpacked, SEAL's uncompressed bytes exactly`);
  }
  // Seeded keys keep one polynomial per part: per key, 3 parts x 8192 residues of each of the
  // 4 key-level primes; packing saves 64 - w bits of each.
  const packed = packKeys(raw, widths)!;
  const saved = (STEPS.length * 3 * 8192 * widths.reduce((a, w) => a + 64 - w, 0)) / 8;
  t.equal(
    raw.length - packed.length + 8 + 4,
    saved,
    `${packed.length} bytes against ${raw.length}: the residues' empty high bits, less an 8-byte head and 4 widths`,
  );
  t.ok(packed.length < 0.95 * zstd.length, `smaller than SEAL's zstd (${packed.length} against ${zstd.length})`);
});

t.test('unpacked into a reused arena: every byte written, whatever the arena held', async (t) => {
  const arena = new ByteArena();
  // Garbage where the keys will go: an unpacker that skipped a byte (counting on a fresh, zeroed
  // array) would leave 0xa5 there.
  const rooms = [arena.take(raw.length).fill(0xa5), arena.take(rawRelin.length).fill(0xa5)];
  arena.reset();
  const galois = unpackKeys(packKeys(raw, widths)!, 'the Galois keys', raw.length, arena);
  const relin = unpackKeys(packKeys(rawRelin, widths)!, 'the relinearization keys', rawRelin.length, arena);
  sameBytes(t, galois, raw, 'the Galois keys, byte for byte, from the arena');
  sameBytes(t, relin, rawRelin, 'the relinearization keys after them, byte for byte');
  t.ok(galois.buffer === rooms[0].buffer && relin.buffer === rooms[1].buffer, 'each in the room the same take had before the reset (no allocation)');
  arena.reset();
  const again = unpackKeys(packKeys(rawRelin, widths)!, 'the relinearization keys', rawRelin.length, arena);
  t.equal(again.buffer, rooms[0].buffer, "after a reset, the first take uses the first take's room again");
  sameBytes(t, again, rawRelin, 'and is written whole');
  const bigger = arena.take(raw.length + 1);
  t.ok(bigger.buffer !== rooms[1].buffer && bigger.length === raw.length + 1, 'a take larger than its room gets a room of its size');
  // loadEvaluationKeys unpacks into its thread's arena: three key sets in turn load and hold their keys.
  for (const steps of [STEPS, [3], STEPS]) {
    const k = generateKeys(s, steps, true);
    const keys = loadEvaluationKeys(s, k.galoisKeys, k.relinKeys, steps, true);
    t.ok(steps.every((step) => keys.rotation(step).hasKey(galoisElement(step, 8192))) && keys.relin !== undefined, `keys for steps ${steps.join(', ')} loaded`);
    keys.close();
  }
});

t.test('what the client writes loads, with every key the model needs', async (t) => {
  const k = generateKeys(s, STEPS, true);
  t.ok(isPackedKeys(k.galoisKeys) && isPackedKeys(k.relinKeys!), 'generateKeys writes packed Galois and relinearization keys');
  const keys = loadEvaluationKeys(s, k.galoisKeys, k.relinKeys, STEPS, true);
  t.teardown(() => keys.close());
  for (const step of STEPS) t.ok(keys.rotation(step).hasKey(galoisElement(step, 8192)), `the key for step ${step}`);
  sameBytes(t, check(packKeys(raw, widths)!), raw, 'the precheck hands SEAL the unpacked bytes');
  t.same(check(zstd).length, raw.length, 'zstd keys, as clients wrote them before, still accepted');
  const whole = loadEvaluationKeys(s, zstd, undefined, STEPS, false);
  t.ok(
    STEPS.every((step) => whole.rotation(step).hasKey(galoisElement(step, 8192))),
    'and loaded whole, one GaloisKeys for every step, as before',
  );
  whole.close();
});

t.test('hostile packed keys: refused with a reason, never a crash', async (t) => {
  const packed = packKeys(raw, widths)!;
  const pv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const head = 8 + 4;
  const edit = (f: (b: Uint8Array) => void) => {
    const b = packed.slice();
    f(b);
    return b;
  };
  // The unpacked size (the inner SEAL header's) is bounded before the one allocation is made.
  const huge = edit((b) => pv(b).setUint32(head + 8 + 4, 0x40, true));
  t.match(
    refusal(() => check(huge)),
    /^the Galois keys declare 2748\d+ bytes unpacked, more than any key set of this model/,
    'a claim of 275 GB',
  );
  t.match(
    refusal(() => unpackKeys(packed, 'the Galois keys', raw.length - 1)),
    /more than any key set of this model/,
    'one byte over the bound',
  );
  t.match(
    refusal(() => check(packed.subarray(0, packed.length - 100))),
    /^the Galois keys are truncated/,
    'truncated',
  );
  t.match(
    refusal(() => check(edit((b) => pv(b).setUint32(4, 3, true)))),
    /^the Galois keys have a key part whose prime count disagrees/,
    'another prime count',
  );
  t.match(
    refusal(() => check(edit((b) => (b[8] = 61)))),
    /^the Galois keys declare a residue width outside 1-60 bits/,
    'a width over 60',
  );
  // All ones in the first 53-bit residue: fits its width, not its prime. The precheck after
  // unpacking refuses it, as it does SEAL's own bytes.
  const body = head + 16 + 40 + 8 * 1;
  let firstPart = body;
  for (let slot = 0; pv(packed).getUint32(firstPart - 8, true) === 0; slot++) firstPart += 8;
  const residues = firstPart + 16 + 97;
  const overPrime = edit((b) => b.fill(0xff, residues, residues + 7));
  t.match(
    refusal(() => check(overPrime)),
    /^the Galois keys: the data is corrupted \(a residue is not below its prime\)/,
    'a residue at or above its prime',
  );
  // Bit flips near the front (headers, counts, widths, the first residues) and truncations
  // anywhere: a refusal naming the keys, or keys that pass every check; a truncation never passes.
  let truncations = 0;
  let truncationsRefused = 0;
  const loadedTruncations: string[] = [];
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 300; i++) {
    const truncated = rand() < 0.2;
    const b = truncated ? packed.slice(0, Math.floor(rand() * packed.length)) : packed.slice();
    for (let f = 0; f < 1 + Math.floor(rand() * 4) && b.length; f++) b[Math.floor(rand() * Math.min(b.length, 4096))] ^= 1 << Math.floor(rand() * 8);
    const why = refusal(() => check(b));
    if (why !== 'accepted' && !/^the Galois keys|^the evaluation keys lack/.test(why)) t.fail(`case ${i}: ${why}`);
    // One case in three as a worker loads it, one key at a time (src/fhe/load.ts).
    const loaded = i % 3 === 0 ? refusal(() => loadEvaluationKeys(s, b, undefined, STEPS, false).close()) : undefined;
    if (loaded !== undefined && loaded !== 'accepted' && !/^the Galois keys|^the evaluation keys lack/.test(loaded)) t.fail(`case ${i}, loaded: ${loaded}`);
    if (truncated) {
      truncations++;
      if (why !== 'accepted') truncationsRefused++;
      if (loaded !== undefined) loadedTruncations.push(loaded);
    }
  }
  t.ok(truncations > 30, `${truncations} truncated objects among the 300`);
  t.equal(truncationsRefused, truncations, 'every truncated object refused');
  t.ok(loadedTruncations.length > 10 && !loadedTruncations.includes('accepted'), `and the ${loadedTruncations.length} loaded key by key too`);
});

t.test('Galois keys made one at a time, each packed in its place: the size of all at once, every key loads and rotates', async (t) => {
  const kg = new s.seal.KeyGenerator(s.context);
  const sk = kg.secretKey();
  const secretKey = sk.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  const merged = saveGaloisKeys(s, kg, STEPS);
  sk.delete();
  kg.delete();
  t.equal(merged.length, packKeys(raw, widths)!.length, 'as many bytes as the keys made all at once, packed');
  const keys = loadEvaluationKeys(s, merged, undefined, STEPS, false);
  t.teardown(() => keys.close());
  t.ok(
    STEPS.every((step) => keys.rotation(step).hasKey(galoisElement(step, 8192))),
    'SEAL loads them with a key for every step',
  );
  // Each key rotates: what the secret key decrypts is the vector rotated by its step.
  const holder = new SecretKeyHolder(s, secretKey);
  t.teardown(() => holder.close());
  const v = Float64Array.from({ length: 4096 }, (_, i) => Math.sin(i));
  for (const step of STEPS) {
    const ct = loadCiphertext(s, holder.encrypt(v, 40), 'the query');
    s.evaluator.rotateVector(ct, step, keys.rotation(step), ct);
    const back = holder.decrypt(ct.saveToArray(s.seal.ComprModeType.none) as Uint8Array);
    ct.delete();
    const worst = Math.max(...Array.from({ length: 4096 }, (_, i) => Math.abs(back[i] - v[(i + step) % 4096])));
    t.ok(worst < 1e-6, `rotated by ${step}: within ${worst.toExponential(1)}`);
  }
  // What is not one-key GaloisKeys of one context, in SEAL's order, is refused (the caller then makes the keys all at once).
  const one = (step: number) => {
    const g = new s.seal.KeyGenerator(s.context);
    const gk = g.createGaloisKeysSerializableWithSteps(Int32Array.of(step));
    const bytes = gk.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    gk.delete();
    g.delete();
    return bytes;
  };
  const [a, b] = [one(1), one(2)];
  const written = (count: number, ...keys: Uint8Array[]) => {
    const w = new PackedGaloisWriter(widths, count);
    const added = keys.map((k) => w.add(k));
    return { added, result: w.result() };
  };
  const both = written(2, a, b);
  t.same(both.added, [true, true], 'two one-key objects, in order, are added');
  const unpacked = unpackKeys(both.result!, 'two keys', 1 << 30);
  sameBytes(t, unpacked.subarray(16, 16 + 32), a.subarray(16, 16 + 32), "the unpacked keys carry the keys' parms_id");
  t.equal(unpacked.length, 2 * a.length - (16 + 40 + 8 * 8192), 'and are as long as two one-key objects less the header and slots one of them repeats');
  t.equal(both.result!.length, written(2, a, one(2)).result!.length, 'every pair of such keys takes the same bytes');
  t.equal(written(2, b, a).result, undefined, 'keys out of SEAL order: refused');
  // saveGaloisKeys makes them in inKeyOrder: SEAL's order for left and right rotations alike.
  const mixed = inKeyOrder([5, -1, 1, 2, -64, 100, 1], 8192);
  t.equal(mixed.length, 6, 'each step once');
  const inOrder = written(mixed.length, ...mixed.map(one));
  t.ok(inOrder.added.every(Boolean) && inOrder.result, `keys made in inKeyOrder (${mixed.join(', ')}) are all added`);
  const mixedKeys = loadEvaluationKeys(s, inOrder.result!, undefined, mixed, false);
  t.ok(
    mixed.every((step) => mixedKeys.rotation(step).hasKey(galoisElement(step, 8192))),
    'and SEAL loads them with a key for every step',
  );
  mixedKeys.close();
  t.equal(written(2, a, a).result, undefined, 'the same slot twice: refused');
  const otherParms = b.slice();
  otherParms[16 + 5] ^= 1;
  t.equal(written(2, a, otherParms).result, undefined, 'a key of another parms_id: refused');
  t.equal(written(2, a, raw).result, undefined, 'an object holding three keys: refused');
  t.equal(written(2, a, packKeys(b, widths)!).result, undefined, 'bytes that are not SEAL uncompressed: refused');
  t.equal(written(2, a).result, undefined, 'fewer keys than announced: no result');
  t.same(written(1, a, b).added, [true, false], 'more keys than announced: refused');
});
