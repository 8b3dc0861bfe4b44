// The TypeScript precheck of untrusted SEAL objects (src/fhe/seal-precheck.ts): real queries
// and keys pass; every kind of bad section is refused with a SealedError that says what is
// wrong, and SEAL never sees it (this thread's SEAL exception counter does not move). node-seal
// leaks WASM stack on every exception it throws, so this is what keeps workers alive.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart, readServerPart } from '../../src/model/bundle.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { packResidues } from '../../src/fhe/raw-ciphertext.ts';
import { SecretKeyHolder, generateKeys, generateSecretKey } from '../../src/fhe/keys.ts';
import { loadCiphertext, loadQueryCiphertext } from '../../src/fhe/load.ts';
import { loadEvaluationKeys } from '../../src/fhe/load-keys.ts';
import { BatchSession } from '../../src/fhe/batch-io.ts';
import { compileBatch } from '../../src/model/compile-batch.ts';
import { sealExceptionCount } from '../../src/fhe/seal.ts';
import { DEEP_CHECKS, precheckKeys } from '../../src/fhe/seal-precheck.ts';
import { galoisElement } from '../../src/fhe/params.ts';
import { decodeWire, type KeysHeader, type QueryHeader } from '../../src/wire/format.ts';
import { SealedError } from '../../src/errors.ts';
import { mutator } from '../helpers/mutate.ts';
import { CT, editBytes, editMembers, membersOf, wrap } from '../helpers/seal-bytes.ts';
import type { Network } from '../../src/model/network.ts';

const dir = fileURLToPath(new URL('../vectors/', import.meta.url));
const modelDir = join(dir, 'model');
const { modelId, client } = await readClientPart(modelDir);
const { program } = await readServerPart(modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
const records = [
  [5.1, 3.5, 1.4, 0.2],
  [7, 3.2, 4.7, 1.4],
];
const query = decodeWire<QueryHeader>('query', session.encrypt(records), 'the query').sections[0];
// What clients send: packed keys (packed-keys.ts, tested in packed-keys.test.ts), checked as SEAL's bytes once unpacked.
const packedGalois = decodeWire<KeysHeader>('keys', keys.evaluationKeys, 'the keys').sections[0];
// The server's side: a session of the model's parameters, as a worker opens it.
const s = await CkksSession.open(program.params);
const scaleBits = program.inputScaleBits;

/** Keys as SEAL saves them (seeded, zstd), as clients sent them before packing: the format this suite checks. */
function sealKeys(c: CkksSession, steps: number[]): { galoisKeys: Uint8Array; relinKeys: Uint8Array } {
  const kg = new c.seal.KeyGenerator(c.context);
  const gk = kg.createGaloisKeysSerializableWithSteps(Int32Array.from(steps));
  const rk = kg.createRelinKeysSerializable();
  const zstd = c.seal.ComprModeType.zstd;
  const out = { galoisKeys: gk.saveToArray(zstd) as Uint8Array, relinKeys: rk.saveToArray(zstd) as Uint8Array };
  for (const o of [gk, rk, kg]) o.delete();
  return out;
}
const galois = sealKeys(s, program.galoisSteps.length ? program.galoisSteps : [1]).galoisKeys;
// Relinearization keys and lower levels need a deeper chain than the stored model has.
const deep = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [60, 40, 40, 60], securityLevel: 128 });
const deepKeys = generateKeys(deep, [1, 2], true);
const deepSealKeys = sealKeys(deep, [1, 2]);
const deepHolder = new SecretKeyHolder(deep, deepKeys.secretKey);
t.teardown(() => {
  deepHolder.close();
  deep.close();
  s.close();
  session.close();
});

const what = 'ciphertext 3 of the encrypted query';
const loadQuery = (bytes: Uint8Array) => loadQueryCiphertext(s, bytes, scaleBits, { what }).delete();
const loadKeys = (g: Uint8Array) => loadEvaluationKeys(s, g, undefined, program.galoisSteps, false).close();

/** Refused with a SealedError of `code` matching `message`, and SEAL threw nothing. */
function refused(t: Test, name: string, fn: () => void, code: string, message: RegExp): void {
  const before = sealExceptionCount();
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof SealedError, `${name}: a SealedError`);
  t.match({ code: (err as SealedError)?.code, message: (err as Error)?.message }, { code, message }, name);
  t.equal(sealExceptionCount(), before, `${name}: SEAL never saw it`);
}

t.test('real queries and keys pass, and SEAL loads them without an exception', async (t) => {
  t.ok(DEEP_CHECKS, 'this Node has zstd: compressed objects are checked whole');
  const before = sealExceptionCount();
  t.doesNotThrow(() => loadQuery(query), 'a query from a ClientSession');
  t.doesNotThrow(() => loadKeys(packedGalois), 'Galois keys from a ClientSession');
  t.doesNotThrow(() => loadKeys(galois), 'Galois keys as SEAL saves them (zstd), as clients sent them before');
  const stored = decodeWire<QueryHeader>('query', new Uint8Array(await readFile(join(dir, 'query.bin'))), 'q').sections;
  for (const c of stored) t.doesNotThrow(() => loadQuery(c), 'the stored test-vector query');
  const storedKeys = decodeWire<KeysHeader>('keys', new Uint8Array(await readFile(join(dir, 'evaluation.keys'))), 'k').sections[0];
  t.doesNotThrow(() => loadKeys(storedKeys), 'the stored test-vector keys');
  t.doesNotThrow(() => loadEvaluationKeys(deep, deepKeys.galoisKeys, deepKeys.relinKeys, [1, 2], true).close(), 'Galois and relinearization keys');
  const shared = new Uint8Array(new SharedArrayBuffer(galois.length));
  shared.set(galois);
  t.doesNotThrow(() => loadKeys(shared), 'keys in shared memory (as the key store hands them to workers)');
  const v = Float64Array.from({ length: 8 }, (_, i) => i / 8);
  const ct = loadQueryCiphertext(deep, deepHolder.encrypt(v, 40), 40);
  deep.evaluator.cipherModSwitchToNextInplace(ct);
  const lower = ct.saveToArray(deep.seal.ComprModeType.zstd) as Uint8Array;
  ct.delete();
  t.ok(Math.abs(deepHolder.decrypt(lower)[3] - v[3]) < 1e-6, 'a result at a lower level loads (and decrypts) as a result');
  t.equal(sealExceptionCount(), before, 'no SEAL exception');
});

t.test('checked keys reach SEAL uncompressed: the same members, so SEAL does not decompress them again', (t) => {
  const checked = precheckKeys(galois, s.shape, { what: 'the Galois keys', kind: 'galois', required: [] });
  t.equal(checked[5], 0, 'compression mode none in the SEAL header');
  t.equal(new DataView(checked.buffer, checked.byteOffset).getBigUint64(8, true), BigInt(checked.length), 'the header declares the new size');
  t.ok(Buffer.from(checked.subarray(16)).equals(membersOf(galois)), 'the members are the decompressed members of what came');
  const before = sealExceptionCount();
  const keys = new s.seal.GaloisKeys();
  keys.loadFromArray(s.context, checked);
  t.ok(keys.hasKey(galoisElement(program.galoisSteps[0] ?? 1, program.params.polyModulusDegree)), 'SEAL loads them, rotation keys and all');
  keys.delete();
  t.equal(sealExceptionCount(), before, 'no SEAL exception');
  t.end();
});

t.test('bad query sections are refused in TypeScript, saying what is wrong', async (t) => {
  const frame = (why: string) => new RegExp(`^${what}: the data ${why}`);
  const is = (why: string) => new RegExp(`^${what} ${why}`);
  const n = query.length;
  const zstdBomb = wrap(new Uint8Array(16 << 20), 'zstd');
  const random = wrap(new Uint8Array(randomBytes(300_000)), 'zstd');
  const square = (() => {
    const ct = loadQueryCiphertext(s, query, scaleBits);
    s.evaluator.squareInplace(ct);
    const b = ct.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
    ct.delete();
    return b;
  })();
  const cases: [string, Uint8Array, RegExp][] = [
    ['16 random bytes', Uint8Array.from([7, 201, 33, 90, 18, 250, 3, 77, 140, 61, 9, 222, 180, 45, 12, 99]), frame('is not a SEAL object \\(bad magic\\)')],
    ['an empty section', new Uint8Array(0), frame('is not a SEAL object \\(shorter than a SEAL header\\)')],
    ['bad magic', editBytes(query, (b) => (b[1] ^= 0x40)), frame('is not a SEAL object \\(bad magic\\)')],
    ['bad header size', editBytes(query, (b) => (b[2] = 8)), frame('is not a SEAL object \\(bad header size\\)')],
    ['SEAL 3.4 header', editBytes(query, (b) => ((b[3] = 3), (b[4] = 4))), frame('was written by another SEAL version than 4.1')],
    ['SEAL 4.0 header', editBytes(query, (b) => (b[4] = 0)), frame('was written by another SEAL version')],
    ['zlib compression', editBytes(query, (b) => (b[5] = 1)), frame('uses SEAL compression mode "zlib"; this model\'s clients write "zstd"')],
    ["uncompressed (the single layout's client writes zstd)", wrap(membersOf(query), 'none'), frame('uses SEAL compression mode "none"')],
    ['unknown compression mode', editBytes(query, (b) => (b[5] = 9)), frame('is not a SEAL object \\(unknown compression mode\\)')],
    ['reserved bytes set', editBytes(query, (b) => (b[6] = 1)), frame('is not a SEAL object \\(reserved header bytes are set\\)')],
    ['size field above the length', editBytes(query, (_b, v) => v.setBigUint64(8, BigInt(n + 1), true)), frame('is truncated')],
    ['size field below the length', editBytes(query, (_b, v) => v.setBigUint64(8, BigInt(n - 1), true)), frame('has bytes after the end of the SEAL object')],
    ['truncated', query.subarray(0, n - 100), frame('is truncated')],
    ['oversized (300 KB that do not compress)', random, frame('is larger than any such object of this model')],
    ['a zstd bomb (16 MiB of zeros)', zstdBomb, frame('is corrupted \\(it decompresses to more than any such object of this model\\)')],
    ['not a zstd stream', editBytes(query, (b) => (b[16] ^= 0xff)), frame('is corrupted \\(not a zstd stream\\)')],
    [
      'truncated zstd stream (size field fixed)',
      editBytes(query.subarray(0, n - 500), (_b, v) => v.setBigUint64(8, BigInt(n - 500), true)),
      frame('is corrupted \\(not one whole zstd frame\\)'),
    ],
    [
      'bytes after the zstd stream (size field fixed)',
      editBytes(Uint8Array.from([...query, 1, 2, 3, 4]), (_b, v) => v.setBigUint64(8, BigInt(n + 4), true)),
      frame('has bytes after the end of its zstd stream'),
    ],
    ['damaged zstd block headers', editBytes(query, (b) => b.fill(0x55, 24, 40)), frame('(is corrupted|has bytes after the end of its zstd stream)')],
    [
      'wrong parms_id',
      editMembers(query, (m) => (m[CT.parmsId + 5] ^= 1)),
      is('was made for other encryption parameters \\(or is at another level\\) than this model uses'),
    ],
    ['a polynomial count of 3', editMembers(query, (_m, v) => v.setBigUint64(CT.size, 3n, true)), is('has 3 polynomials, expected 2')],
    ['a real 3-polynomial ciphertext (squared, not relinearized)', square, frame('is larger than any such object of this model')],
    ['not in NTT form', editMembers(query, (m) => (m[CT.ntt] = 0)), is('is not in NTT form')],
    ['another ring degree', editMembers(query, (_m, v) => v.setBigUint64(CT.degree, 4096n, true)), is("has another ring degree than this model's 8192")],
    ['a prime count off its level', editMembers(query, (_m, v) => v.setBigUint64(CT.primes, 2n, true)), is('has a prime count that does not match its level')],
    ['another scale', editMembers(query, (_m, v) => v.setFloat64(CT.scale, 2 ** 30, true)), is(`has scale 2\\^30.00, expected 2\\^${scaleBits}`)],
    ['a NaN scale', editMembers(query, (_m, v) => v.setFloat64(CT.scale, NaN, true)), is('has a scale that is not a positive number')],
    ['correction factor 2', editMembers(query, (_m, v) => v.setBigUint64(CT.correction, 2n, true)), is('has a correction factor other than 1')],
    ['residue count off', editMembers(query, (_m, v) => v.setBigUint64(CT.count, 100n, true)), frame('has an unexpected layout')],
    ['residue array header damaged', editMembers(query, (m) => (m[CT.dynHeader] ^= 1)), frame('is not a SEAL object \\(bad magic\\)')],
    [
      'a residue above its prime',
      editMembers(query, (_m, v) => v.setBigUint64(CT.data + 8 * 1234, 2n ** 64n - 1n, true)),
      frame('is corrupted \\(a residue is not below its prime\\)'),
    ],
    ['unknown random generator', editMembers(query, (m) => (m[m.length - 65] = 9)), frame('has an unexpected layout \\(unknown random generator\\)')],
    ['seed record cut', editMembers(query, (m) => m.subarray(0, m.length - 10)), frame('has an unexpected layout \\(bad seed record\\)')],
    [
      'bytes after the ciphertext',
      editMembers(query, (m) => Uint8Array.from([...m, 1, 2, 3, 4, 5, 6, 7, 8])),
      frame('has bytes after the end of the ciphertext'),
    ],
    ['Galois keys sent as a query', galois, frame('is larger than any such object of this model')],
  ];
  for (const [name, bytes, message] of cases) refused(t, name, () => loadQuery(bytes), 'bad-query', message);
  refused(
    t,
    'a zstd bomb through the generic loader (results)',
    () => loadCiphertext(s, zstdBomb, 'the encrypted result').delete(),
    'bad-query',
    /^the encrypted result: the data is corrupted/,
  );
});

t.test('bad keys are refused in TypeScript, saying what is wrong', async (t) => {
  const other = await CkksSession.open({ ...program.params, polyModulusDegree: 16384 });
  const otherKeys = generateKeys(other, [1], false);
  other.close();
  const fewer = generateKeys(s, [1, 2], false);
  const cases: [string, Uint8Array, RegExp][] = [
    ['16 random bytes', Uint8Array.from({ length: 16 }, (_, i) => i * 31), /^the Galois keys: the data is not a SEAL object/],
    ['bad magic', editBytes(galois, (b) => (b[0] ^= 1)), /^the Galois keys: the data is not a SEAL object \(bad magic\)/],
    ['truncated', galois.subarray(0, galois.length - 1000), /^the Galois keys: the data is truncated/],
    ['uncompressed', wrap(membersOf(galois), 'none'), /^the Galois keys: the data uses SEAL compression mode "none"/],
    ['a zstd bomb (512 MiB claimed)', wrap(new Uint8Array(64 << 20), 'zstd'), /decompresses to more than any such object/],
    ['keys of another ring degree', otherKeys.galoisKeys, /^the Galois keys (were made for other encryption parameters|: the data)/],
    ['keys lacking a rotation the model needs', fewer.galoisKeys, /^the evaluation keys lack the rotation by 3 this model needs/],
    ['wrong parms_id', editMembers(galois, (m) => (m[3] ^= 1)), /^the Galois keys were made for other encryption parameters/],
    [
      'more key slots than the ring has',
      editMembers(galois, (_m, v) => v.setBigUint64(32, 2n ** 40n, true)),
      /^the Galois keys hold more key slots than a ring of this degree has/,
    ],
    ['a key part header damaged', editMembers(galois, (m) => (m[40 + 8 + 8] ^= 1)), /^the Galois keys: the data is not a SEAL object \(bad magic\)/],
    // The first key: slot 0 is empty, slot 1 holds one part (a PublicKey, header included).
    [
      'a residue above its prime',
      editMembers(galois, (_m, v) => v.setBigUint64(40 + 8 + 8 + 16 + CT.data + 8 * 10, 2n ** 64n - 1n, true)),
      /^the Galois keys: the data is corrupted \(a residue is not below its prime\)/,
    ],
    ['bytes after the keys', editMembers(galois, (m) => Uint8Array.from([...m, 0, 0, 0, 0])), /^the Galois keys: the data has bytes after the end of the keys/],
  ];
  for (const [name, bytes, message] of cases) refused(t, name, () => loadKeys(bytes), 'bad-keys', message);
  refused(
    t,
    'Galois keys sent as relinearization keys',
    () => loadEvaluationKeys(deep, deepSealKeys.galoisKeys, deepSealKeys.galoisKeys, [1, 2], true).close(),
    'bad-keys',
    /^the relinearization keys(: the data is (larger than|corrupted \(it decompresses to more than) any such object| do not hold exactly one)/,
  );
  refused(
    t,
    'packed Galois keys sent as relinearization keys',
    () => loadEvaluationKeys(deep, deepKeys.galoisKeys, deepKeys.galoisKeys, [1, 2], true).close(),
    'bad-keys',
    /^the relinearization keys declare \d+ bytes unpacked, more than any key set of this model/,
  );
  refused(
    t,
    'relinearization keys sent as Galois keys',
    () => loadEvaluationKeys(deep, deepSealKeys.relinKeys, deepSealKeys.relinKeys, [1, 2], true).close(),
    'bad-keys',
    /^the evaluation keys lack the rotation by 1/,
  );
  refused(
    t,
    'packed relinearization keys sent as Galois keys',
    () => loadEvaluationKeys(deep, deepKeys.relinKeys!, deepKeys.relinKeys, [1, 2], true).close(),
    'bad-keys',
    /^the evaluation keys lack the rotation by 1/,
  );
});

t.test('batch mode: packed sections are checked after unpacking', async (t) => {
  const linear: Network = { input: { height: 1, width: 6 }, layers: [{ type: 'dense', weights: [[1, 2, 3, 4, 5, 6]], bias: [0.5] }] };
  const plan = compileBatch(linear, [[1, 2, 3, 4, 5, 6]])!;
  const bs = await BatchSession.open(plan);
  const holder = new SecretKeyHolder(bs.session, generateSecretKey(bs.session));
  t.teardown(() => {
    holder.close();
    bs.close();
  });
  const v = Float64Array.from({ length: 64 }, (_, i) => i / 64);
  // SEAL's bytes packed in 26 bits (P26): what clients sent before seeded sections, still read.
  const packed = packResidues(holder.encryptUncompressed(v, plan.inputScaleBits))!;
  const lanes = new Uint32Array(2 * bs.lanes);
  const before = sealExceptionCount();
  t.doesNotThrow(() => bs.decodeInto(packed, lanes, 0), 'a packed section');
  t.doesNotThrow(() => bs.decodeInto(holder.encrypt(v, plan.inputScaleBits), lanes, 0), 'a zstd section');
  t.equal(sealExceptionCount(), before);
  const w = 'ciphertext 2 of a batch';
  const decode = (b: Uint8Array) => () => bs.decodeInto(b, lanes, 0, w);
  // Packed residues sit after the 12-byte pack header and SEAL's 113-byte prefix; 13 bytes per 4.
  refused(
    t,
    'a packed residue above its prime',
    decode(editBytes(packed, (b) => b.fill(0xff, 125, 138))),
    'bad-query',
    /^ciphertext 2 of a batch: the data is corrupted \(a residue is not below its prime\)/,
  );
  refused(
    t,
    'a packed section truncated',
    decode(packed.subarray(0, 5000)),
    'bad-query',
    /^ciphertext 2 of a batch is truncated or declares too many residues/,
  );
  refused(t, 'a packed section declaring 2^20 residues', decode(editBytes(packed, (_b, v) => v.setUint32(8, 2 ** 20, true))), 'bad-query', /too many residues/);
  refused(
    t,
    'a packed section with a damaged SEAL prefix',
    decode(editBytes(packed, (b) => (b[12 + 16 + 3] ^= 1))),
    'bad-query',
    /other encryption parameters/,
  );
  refused(
    t,
    'a packed section with bytes after its seed',
    decode(Uint8Array.from([...packed, 1, 2, 3])),
    'bad-query',
    /^ciphertext 2 of a batch has more bytes after its residues than a seed/,
  );
  refused(
    t,
    'a packed section with its seed cut',
    decode(packed.subarray(0, packed.length - 30)),
    'bad-query',
    /^ciphertext 2 of a batch: the data is truncated/,
  );
});

t.test('mutated real objects (test/helpers/mutate.ts): refused in TypeScript, almost never by SEAL', async (t) => {
  const { rand, mutate } = mutator(20261130);
  const stats = { query: { passed: 0, ts: 0, seal: 0 }, keys: { passed: 0, ts: 0, seal: 0 } };
  const N = 400;
  for (let i = 0; i < N; i++) {
    const target = rand() < 0.75 ? 'query' : 'keys';
    const bytes = mutate(target === 'query' ? query : galois);
    const before = sealExceptionCount();
    try {
      if (target === 'query') loadQuery(bytes);
      else loadKeys(bytes);
      stats[target].passed++;
    } catch (e) {
      t.ok(e instanceof SealedError && e.status === 422, 'a 422 SealedError');
      stats[target][sealExceptionCount() === before ? 'ts' : 'seal']++;
    }
  }
  const reachedSeal = stats.query.seal + stats.keys.seal;
  const garbage = Uint8Array.from({ length: 16 }, () => Math.floor(rand() * 256));
  t.comment(`mutated sections: ${JSON.stringify(stats)} (passed: still valid, e.g. a flipped bit in a residue)`);
  t.ok(reachedSeal <= N / 100, `at most 1% of ${N} mutated objects reach a SEAL exception (${reachedSeal})`);
  const cost = (fn: () => void, n: number) => {
    fn();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    return (performance.now() - t0) / n;
  };
  t.comment(
    `checked load of one query ciphertext: ${cost(() => loadQuery(query), 100).toFixed(2)} ms; SEAL's load alone: ${cost(() => {
      const ct = new s.seal.Ciphertext();
      ct.loadFromArray(s.context, query);
      ct.delete();
    }, 100).toFixed(2)} ms; refusing 16 garbage bytes: ${(
      cost(() => {
        try {
          loadQuery(garbage);
        } catch {
          // refused
        }
      }, 1000) * 1000
    ).toFixed(1)} us`,
  );
});
