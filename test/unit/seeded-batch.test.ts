// Batch mode's own encryption (src/fhe/seeded-batch.ts, chacha20.ts, ckks-encode.ts): ChaCha20 is
// RFC 8439's and OpenSSL's; the uniform half is exactly the rejection rule's; the encoding is
// SEAL's; SEAL decrypts what the client makes and the server decodes; the noise is SEAL's width,
// never zero; two encryptions of the same values share nothing; a section that does not match
// the batch parameters is refused.
import { createCipheriv, randomBytes } from 'node:crypto';
import t from 'tap';
import { BatchSession } from '../../src/fhe/batch-io.ts';
import { chacha20Blocks, keystream } from '../../src/fhe/chacha20.ts';
import { CkksEncoder } from '../../src/fhe/ckks-encode.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';
import { primes as chainPrimes } from '../../src/fhe/params.ts';
import { mulmod, NegacyclicNtt, secretKeyResidues } from '../../src/fhe/privacy.ts';
import { buildRaw, pack4x26 } from '../../src/fhe/raw-ciphertext.ts';
import { expandUniform, isSeededSection, seededSectionBytes, type SeededLevel } from '../../src/fhe/seeded-batch.ts';
import { decodeSeededPrime, decodeSeededSection, unpack26 } from '../../src/fhe/seeded-decode.ts';
import type { BatchPlan } from '../../src/fhe/batch-plan.ts';
import { sameBytes } from '../helpers/same-bytes.ts';

t.test("unpack26 (kernel.wat) reads pack4x26's bytes, and finds a residue at or above its prime wherever it lies in a group", async (t) => {
  const N = 64;
  const primes = [(1 << 26) - 5, (1 << 26) - 27];
  const residues = Uint32Array.from({ length: 2 * N }, (_, i) =>
    i === 5 ? primes[0] - 1 : i === 70 ? primes[1] - 1 : (i * 2654435761) % primes[i < N ? 0 : 1],
  );
  const pack = (r: Uint32Array) => {
    const out = new Uint8Array(3 + (r.length / 4) * 13);
    for (let i = 0; i < r.length; i += 4) pack4x26(out, 3 + (i / 4) * 13, r[i], r[i + 1], r[i + 2], r[i + 3]);
    return out;
  };
  const dst = new Uint32Array(2 * N + 8);
  t.equal(unpack26(pack(residues), 3, primes, N, dst, 4), -1, 'every residue below its prime');
  sameBytes(t, dst.subarray(4, 4 + 2 * N), residues, 'the residues, at the offset');
  t.ok(dst.subarray(0, 4).every((x) => x === 0) && dst.subarray(4 + 2 * N).every((x) => x === 0), 'nothing written outside them');
  for (const at of [0, 1, 2, 3, N + 4 * 7 + 1, N + 4 * 7 + 2, 2 * N - 1]) {
    for (const bad of [at < N ? primes[0] : primes[1], (1 << 26) - 1]) {
      const r = residues.slice();
      r[at] = bad;
      t.equal(unpack26(pack(r), 3, primes, N, dst, 4), at < N ? 0 : 1, `${bad} at ${at}: refused at its prime`);
    }
  }
});

t.test("ChaCha20: RFC 8439's block test vector, and OpenSSL's keystream", async (t) => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  const block = new Uint32Array(16);
  chacha20Blocks(key, 1, block, [0x09000000, 0x4a000000, 0]);
  // RFC 8439, 2.3.2: the serialized block 10 f1 e7 e4 d1 3b 59 15 ..., as little-endian words.
  const expected = [
    0xe4e7f110, 0x15593bd1, 0x1fdd0f50, 0xc47120a3, 0xc7f4d1c7, 0x0368c033, 0x9aaa2204, 0x4e6cd4c3, 0x466482d2, 0x09aa9f07, 0x05d7c214, 0xa2028bd9, 0xd19c12b5,
    0xb94e16de, 0xe883d0cb, 0x4e3c50a2,
  ];
  t.same([...block], expected, 'the RFC block');
  for (const blocks of [1, 3, 70]) {
    const k = new Uint8Array(randomBytes(32));
    const ours = new Uint32Array(16 * blocks);
    chacha20Blocks(k, 0, ours);
    // OpenSSL's iv: the 32-bit block counter, then the 96-bit nonce.
    const theirs = createCipheriv('chacha20', k, Buffer.alloc(16)).update(Buffer.alloc(64 * blocks));
    t.same(Buffer.from(ours.buffer), theirs, `${blocks} blocks under a random key: OpenSSL's bytes`);
  }
});

t.test('expandUniform keeps exactly the words below the largest multiple of q, reduced', async (t) => {
  const seed = new Uint8Array(randomBytes(32));
  const words = new Uint32Array(1024);
  chacha20Blocks(seed, 0, words);
  // q = 3 x 2^30: a quarter of all words are rejected (those >= q), the rest kept as they are.
  const q = 3 * 2 ** 30;
  const out = new Uint32Array(100);
  expandUniform(seed, [q], 100, out, 0);
  t.same([...out], [...words].filter((w) => w < q).slice(0, 100), 'the kept words, in order');
  // Two primes: the second continues the same stream.
  const q2 = 67108859; // below 2^26
  const both = new Uint32Array(200);
  expandUniform(seed, [q, q2], 100, both, 0);
  const limit = Math.floor(2 ** 32 / q2) * q2;
  const expected: number[] = [];
  let i = 0;
  for (let kept = 0; kept < 100; i++) if (words[i] < q) kept++;
  for (; expected.length < 100; i++) if (words[i] < limit) expected.push(words[i] % q2);
  t.same([...both.subarray(0, 100)], [...out], 'the first prime as alone');
  t.same([...both.subarray(100)], expected, 'the second prime reads on from where the first stopped');
  const again = new Uint32Array(200);
  expandUniform(seed, [q, q2], 100, again, 0);
  t.same(again, both, 'the same seed, the same residues');
});

t.test("expandUniform: the same residues from OpenSSL's keystream (Node) and chacha20.ts (browsers)", async (t) => {
  // Three primes of 16,384 residues: the keystream's pieces (16,384 words) end inside a prime.
  const seed = new Uint8Array(randomBytes(32));
  const ps = [67043329, 66813953, 66584577];
  const node = new Uint32Array(3 * 16384 + 1).fill(7);
  expandUniform(seed, ps, 16384, node, 1);
  const proc = process as { getBuiltinModule?: unknown };
  const builtin = proc.getBuiltinModule;
  proc.getBuiltinModule = undefined; // as in a browser: no node:crypto
  const portable = new Uint32Array(3 * 16384 + 1).fill(7);
  try {
    expandUniform(seed, ps, 16384, portable, 1);
  } finally {
    proc.getBuiltinModule = builtin;
  }
  t.same(portable, node, 'identical residues');
  t.equal(node[0], 7, 'nothing written before the offset');
  t.ok(
    ps.every((q, p) => node.subarray(1 + p * 16384, 1 + (p + 1) * 16384).every((r) => r < q)),
    'every residue below its prime',
  );
});

t.test('the keystream resumed at a word gives the words the stream from word 0 gives there (OpenSSL and chacha20.ts)', async (t) => {
  const seed = new Uint8Array(randomBytes(32));
  const whole = new Uint32Array(40000);
  chacha20Blocks(seed, 0, whole);
  const read = (from: number, piece: number, n: number) => {
    const next = keystream(seed, from, piece);
    const out: number[] = [];
    while (out.length < n) out.push(...next());
    return out.slice(0, n);
  };
  const proc = process as { getBuiltinModule?: unknown };
  const builtin = proc.getBuiltinModule;
  for (const runtime of ['Node', 'browsers']) {
    if (runtime === 'browsers') proc.getBuiltinModule = undefined; // as in a browser: no node:crypto
    try {
      // Word positions inside a block, at its start and at 0; pieces of a whole and a partial block.
      for (const [from, piece] of [
        [0, 16384],
        [17, 100],
        [16400, 16384],
        [33333, 531],
      ])
        t.same(read(from, piece, 3000), [...whole.subarray(from, from + 3000)], `${runtime}: from word ${from}, pieces of ${piece}`);
    } finally {
      proc.getBuiltinModule = builtin;
    }
  }
});

t.test('expandUniform a prime at a time, each from where the last stopped, gives the residues of all primes at once', async (t) => {
  const seed = new Uint8Array(randomBytes(32));
  const ps = [67043329, 66813953, 66584577, 40961];
  const all = new Uint32Array(ps.length * 4096);
  const end = expandUniform(seed, ps, 4096, all, 0);
  const one = new Uint32Array(ps.length * 4096);
  let from = 0;
  ps.forEach((q, p) => (from = expandUniform(seed, [q], 4096, one, p * 4096, from)));
  t.same(one, all, 'the same residues');
  t.equal(from, end, 'ending at the same word');
  // The rule word by word, over the same words (the kernel takes four at a time where none is skipped).
  const words = new Uint32Array(16 * Math.ceil(end / 16 + 1));
  chacha20Blocks(seed, 0, words);
  const expected: number[] = [];
  let w = 0;
  for (const q of ps) {
    const limit = Math.floor(2 ** 32 / q) * q;
    for (let kept = 0; kept < 4096; w++) {
      if (words[w] >= limit) continue;
      expected.push(words[w] % q);
      kept++;
    }
  }
  t.same([...all], expected, 'the words below each limit, reduced, in order');
  t.equal(end, w, 'and the word after the last one kept');
  // A prime far below 2^26 skips almost no word; 2^26-sized ones about one in 2^7 to 2^6.
  t.ok(end > ps.length * 4096 && end < ps.length * 4096 * 1.05, `${end} words read for ${ps.length * 4096} residues`);
});

const N = 8192;
const bits = [26, 26, 26, 26, 26];

async function setup() {
  const s = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: bits, securityLevel: 128 }, { topLevelOnly: true });
  const sk = generateSecretKey(s);
  const holder = new SecretKeyHolder(s, sk);
  const all = chainPrimes(s.seal, s.context).map(Number);
  const level: SeededLevel = { parmsId: s.shape.data[0].parmsId, primes: all.slice(0, -1), degree: N };
  return { s, sk, holder, all, level };
}

for (const scaleBits of [26, 62])
  t.test(`SEAL decrypts what the client encrypts and the server decodes; the noise is SEAL-sized (scale 2^${scaleBits})`, async (t) => {
    // 2^62: circuit privacy's input scale, where the coefficients pass 2^53 and the noise must not round away.
    const { s, sk, holder, all, level } = await setup();
    t.teardown(() => {
      holder.close();
      s.close();
    });
    const k = level.primes.length;
    const values = Float64Array.from({ length: N / 2 }, (_, i) => Math.sin(i / 7) * 3);
    const section = holder.encryptPacked(values, scaleBits);
    t.ok(isSeededSection(section), 'a seeded section');
    t.equal(section.length, seededSectionBytes(level), 'of the stated size');
    const residues = new Uint32Array(2 * k * N);
    decodeSeededSection(section, level, 2 ** scaleBits, residues, 0, 'the section');
    const raw = buildRaw({ parmsId: level.parmsId, degree: N, primes: k, scale: 2 ** scaleBits }, 2, residues, 0);
    const back = holder.decrypt(raw);
    const err = Math.max(...values.map((v, i) => Math.abs(v - back[i])));
    t.ok(err < 2 ** -12, `decrypted within 2^-12 of the values (largest error 2^${Math.log2(err).toFixed(1)})`);

    // e = c0 + c1 s - m, per prime, back in the coefficient domain: small, of SEAL's width, not zero.
    const sRes = secretKeyResidues(rawSecret(s, sk), N, all.length, k);
    // m from our encoder, reduced exactly (BigInt): at 2^62 SEAL's own rounding of m differs from
    // ours by more than the noise, so only this m leaves e alone.
    const coeffs = new Float64Array(N);
    CkksEncoder.of(N).encode(values, 2 ** scaleBits, coeffs);
    const m = new Uint32Array(k * N);
    level.primes.forEach((q, p) => {
      const mp = Float64Array.from(coeffs, (c) => Number(((BigInt(c) % BigInt(q)) + BigInt(q)) % BigInt(q)));
      new NegacyclicNtt(q, N).forward(mp);
      m.set(mp, p * N);
    });
    const e0: number[] = [];
    level.primes.forEach((q, p) => {
      const x = new Float64Array(N);
      for (let i = 0, j = p * N; i < N; i++, j++) x[i] = (residues[j] + mulmod(residues[k * N + j], sRes[j], q) + q - m[j]) % q;
      new NegacyclicNtt(q, N).inverse(x);
      const centered = Array.from(x, (v) => (v > q / 2 ? v - q : v));
      if (p === 0) e0.push(...centered);
      else t.same(centered, e0, `prime ${p + 1}: the same noise polynomial as prime 1`);
    });
    const variance = e0.reduce((a, v) => a + v * v, 0) / N;
    t.ok(Math.max(...e0.map(Math.abs)) <= 21, 'every noise coefficient within 21');
    t.ok(variance > 8 && variance < 13, `noise variance ${variance.toFixed(2)} (SEAL's centered binomial: 21/2)`);

    const other = holder.encryptPacked(values, scaleBits);
    t.notSame(other.subarray(52, 84), section.subarray(52, 84), 'a second encryption of the same values has its own seed');
    let same = 0;
    for (let i = 84; i < section.length; i++) if (section[i] === other[i]) same++;
    t.ok(same < (section.length - 84) / 100, `and shares no more bytes of c0 than chance (${same})`);
  });

t.test("our CKKS encoding is SEAL's: the same slot order, the same coefficients but for rounding", async (t) => {
  const { s, holder, all, level } = await setup();
  t.teardown(() => {
    holder.close();
    s.close();
  });
  const k = level.primes.length;
  const q = level.primes[0];
  for (const [name, values, scale] of [
    ['a full vector', Float64Array.from({ length: N / 2 }, (_, i) => Math.sin(i / 3) * 5 - 1), 2 ** 26],
    ['a short vector, the other slots zero, a larger scale', Float64Array.from({ length: 100 }, (_, i) => i - 50), 2 ** 30],
  ] as const) {
    const ours = new Float64Array(N);
    CkksEncoder.of(N).encode(values, scale, ours);
    const pt = new s.seal.Plaintext();
    s.encoder.encode(values, scale, pt);
    const theirs = Float64Array.from(secretKeyResidues(pt.saveToArray(s.seal.ComprModeType.none) as Uint8Array, N, k, k).subarray(0, N));
    pt.delete();
    new NegacyclicNtt(q, N).inverse(theirs);
    // Modulo q (coefficients at scale 2^30 pass q/2): equal, or one apart where rounding differs.
    let same = 0;
    let near = 0;
    for (let i = 0; i < N; i++) {
      const d = (((theirs[i] - ours[i]) % q) + q) % q;
      if (d === 0) same++;
      else if (d === 1 || d === q - 1) near++;
    }
    t.ok(same >= 0.999 * N && same + near === N, `${name}: ${same} of ${N} coefficients SEAL's, ${near} one apart`);
  }
  void all;
  t.throws(
    () => holder.encryptPacked(Float64Array.from([1, NaN]), 26),
    { code: 'bad-data', message: /not a finite number/ },
    'a value that is not a number is refused',
  );
  t.throws(
    () => holder.encryptPacked(Float64Array.from([2 ** 100]), 26),
    { code: 'bad-data', message: /too large for the batch scale/, hint: /--layout single/ },
    'so is one whose encoding passes half the modulus',
  );
});

t.test('coefficients past 2^84 (reduced whole, prime by prime) still decrypt', async (t) => {
  const { s, holder, level } = await setup();
  t.teardown(() => {
    holder.close();
    s.close();
  });
  const k = level.primes.length;
  const values = Float64Array.from([2 ** 40, -(2 ** 39), 3]);
  const coeffs = new Float64Array(N);
  const most = CkksEncoder.of(N).encode(values, 2 ** 62, coeffs);
  t.ok(most > 2 ** 84, `the largest coefficient is 2^${Math.log2(most).toFixed(1)}`);
  const residues = new Uint32Array(2 * k * N);
  decodeSeededSection(holder.encryptPacked(values, 62), level, 2 ** 62, residues, 0, 'the section');
  const back = holder.decrypt(buildRaw({ parmsId: level.parmsId, degree: N, primes: k, scale: 2 ** 62 }, 2, residues, 0));
  t.ok(
    [...values].every((v, i) => Math.abs(back[i] - v) < 2 ** -20 * 2 ** 40),
    `decrypted: ${[...back.subarray(0, 3)].map((x) => x.toExponential(6)).join(', ')}`,
  );
});

function rawSecret(s: CkksSession, sk: Uint8Array): Uint8Array {
  const key = new s.seal.SecretKey();
  key.loadFromArray(s.context, sk);
  const raw = key.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  key.delete();
  return raw;
}

t.test('the server refuses a section that does not match the batch parameters, saying what is wrong', async (t) => {
  const { s, holder, level } = await setup();
  t.teardown(() => {
    holder.close();
    s.close();
  });
  const good = holder.encryptPacked(
    Float64Array.from({ length: N / 2 }, (_, i) => i / N),
    26,
  );
  const dst = new Uint32Array(2 * level.primes.length * N);
  const decode =
    (b: Uint8Array, scale = 2 ** 26) =>
    () =>
      decodeSeededSection(b, level, scale, dst, 0, 'ciphertext 3 of a batch');
  const edit = (f: (b: Uint8Array, v: DataView) => void) => {
    const b = Uint8Array.from(good);
    f(b, new DataView(b.buffer));
    return b;
  };
  t.throws(decode(good.subarray(0, 40)), { code: 'bad-query', message: /ciphertext 3 of a batch is not a seeded batch ciphertext/ });
  t.throws(decode(good.subarray(0, good.length - 13)), { message: /has \d+ bytes, expected \d+/ });
  t.throws(decode(edit((_, v) => v.setUint32(4, 4096, true))), { message: /ring degree 4096 and 4 primes, the model uses 8192 and 4/ });
  t.throws(decode(edit((_, v) => v.setUint32(8, 5, true))), { message: /5 primes/ });
  t.throws(decode(good, 2 ** 30), { message: /has scale 2\^26\.00, expected 2\^30/ });
  t.throws(decode(edit((_, v) => v.setFloat64(12, NaN, true))), { message: /not a power of two/ });
  t.throws(decode(edit((b) => (b[20] ^= 1))), { message: /top level/ });
  // The last four residues of prime 2 set to 2^26 - 1, above every prime below 2^26.
  const at = 84 + (((2 * N) / 4) * 13 - 13);
  t.throws(decode(edit((b) => b.fill(0xff, at, at + 13))), { message: /a residue above its prime \(prime 2 of 4\)/ });
  t.doesNotThrow(decode(good), 'the section itself decodes');
});

t.test('decoded a prime at a time, a section gives the residues decoded whole; a bad residue is refused at its prime', async (t) => {
  const { s, holder, level } = await setup();
  t.teardown(() => {
    holder.close();
    s.close();
  });
  const k = level.primes.length;
  const section = holder.encryptPacked(
    Float64Array.from({ length: N / 2 }, (_, i) => Math.sin(i)),
    26,
  );
  const whole = new Uint32Array(2 * k * N);
  decodeSeededSection(section, level, 2 ** 26, whole, 0, 'the section');
  const prime = new Uint32Array(1 + 2 * N);
  let from = 0;
  for (let p = 0; p < k; p++) {
    from = decodeSeededPrime(section, level, 2 ** 26, p, prime, 1, from, 'the section');
    sameBytes(t, prime.subarray(1, 1 + N), whole.subarray(p * N, (p + 1) * N), `prime ${p + 1}: c0`);
    sameBytes(t, prime.subarray(1 + N), whole.subarray((k + p) * N, (k + p + 1) * N), `prime ${p + 1}: c1, from the keystream where prime ${p} stopped`);
  }
  // The last four residues of prime 3 set to 2^26 - 1: primes 1 and 2 decode, prime 3 is refused.
  const bad = Uint8Array.from(section);
  const at = 84 + (((3 * N) / 4) * 13 - 13);
  bad.fill(0xff, at, at + 13);
  from = 0;
  for (let p = 0; p < 2; p++) from = decodeSeededPrime(bad, level, 2 ** 26, p, prime, 0, from, 'ciphertext 9 of a batch');
  t.throws(() => decodeSeededPrime(bad, level, 2 ** 26, 2, prime, 0, from, 'ciphertext 9 of a batch'), {
    code: 'bad-query',
    message: /ciphertext 9 of a batch has a residue above its prime \(prime 3 of 4\)/,
  });
  // Every prime checks the section: a later prime of a section of other parameters is refused too.
  const other = Uint8Array.from(section);
  other[20] ^= 1;
  t.throws(() => decodeSeededPrime(other, level, 2 ** 26, 3, prime, 0, 0, 'ciphertext 9 of a batch'), { message: /top level/ });
});

t.test('BatchSession decodes a seeded section as it decodes the SEAL-packed form of the same encryption', async (t) => {
  const plan = { params: { scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: bits, securityLevel: 128 }, inputScaleBits: 26 } as unknown as BatchPlan;
  const io = await BatchSession.open(plan);
  t.teardown(() => io.close());
  const holder = new SecretKeyHolder(io.session, generateSecretKey(io.session));
  t.teardown(() => holder.close());
  const values = Float64Array.from({ length: N / 2 }, (_, i) => Math.cos(i));
  const section = holder.encryptPacked(values, 26);
  const lanes = io.lanes;
  const dst = new Uint32Array(4 * lanes);
  io.decodeInto(section, dst, 2 * lanes);
  const raw = buildRaw({ parmsId: io.session.shape.data[0].parmsId, degree: N, primes: io.primes.length, scale: 2 ** 26 }, 2, dst, 2 * lanes);
  const back = holder.decrypt(raw);
  t.ok(
    values.every((v, i) => Math.abs(v - back[i]) < 2 ** -12),
    'decoded at the offset given, and decrypts to the values',
  );
  t.ok(
    dst.subarray(0, 2 * lanes).every((x) => x === 0),
    'nothing written before the offset',
  );
});
