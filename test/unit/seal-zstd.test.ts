// SEAL's zstd form made by Node's zlib (seal-zstd.ts): SEAL loads it back to the same object, the
// loader's precheck reads it, and a batch result is refused on the server when a residue is not
// below its prime (the check SEAL's load made before the result was compressed here); its output
// is one zstd frame whatever its length.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { BatchSession } from '../../src/fhe/batch-io.ts';
import type { BatchPlan } from '../../src/fhe/batch-plan.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { loadCiphertext } from '../../src/fhe/load.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';
import { NATIVE_ZSTD, zstdFrameLength, zstdFromRaw } from '../../src/fhe/seal-zstd.ts';
import { release } from '../../src/fhe/seal.ts';

t.ok(NATIVE_ZSTD, 'Node compresses here (>= 22.15): the tests below exercise that path');

t.test('a ciphertext compressed by zstdFromRaw: SEAL loads it to the same object as its own zstd form', async (t) => {
  const s = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [60, 40, 40, 60], securityLevel: 128 });
  t.teardown(() => s.close());
  const key = new SecretKeyHolder(s, generateSecretKey(s));
  t.teardown(() => key.close());
  const ct = loadCiphertext(
    s,
    key.encrypt(
      Float64Array.from({ length: 4096 }, (_, i) => i / 4096),
      40,
    ),
    'a test ciphertext',
  );
  t.teardown(() => release(ct));
  const raw = ct.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  const ours = zstdFromRaw(raw)!;
  const seals = ct.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
  t.equal(ours[5], 2, 'compr_mode zstd in the header');
  t.ok(ours.length < raw.length, `compressed: ${ours.length} of ${raw.length} bytes (SEAL's own: ${seals.length})`);
  const back = loadCiphertext(s, ours, 'the zstd form');
  t.teardown(() => release(back));
  const again = back.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  t.ok(again.length === raw.length && again.every((b, i) => b === raw[i]), 'loaded (through the precheck) and saved uncompressed: the same bytes');
  // As a browser loads it: SEAL decompresses the frame itself (no precheck there).
  const direct = new s.seal.Ciphertext();
  t.teardown(() => release(direct));
  direct.loadFromArray(s.context, ours);
  const viaSeal = direct.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  t.ok(viaSeal.length === raw.length && viaSeal.every((b, i) => b === raw[i]), "SEAL's own zstd reads it to the same bytes");
  const values = key.decrypt(ours);
  t.ok(Math.abs(values[100] - 100 / 4096) < 1e-6, 'and it decrypts');
  t.throws(() => zstdFromRaw(seals), /not an uncompressed SEAL object/, 'an already compressed object is refused');
});

t.test('a batch result: compressed by Node, every residue checked below its prime first', async (t) => {
  const plan = {
    params: { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [26, 26, 26, 26], securityLevel: 128 },
    inputScaleBits: 26,
    inputs: 1,
    first: { rows: 1, start: [0, 1], index: [0], weight: [1], weightScaleBits: 0, bias: [0] },
    square: false,
    outputScaleBits: 26,
  } as BatchPlan;
  const io = await BatchSession.open(plan);
  t.teardown(() => io.close());
  const size = 3;
  const residues = new Uint32Array(size * io.lanes);
  for (let i = 0; i < residues.length; i++) residues[i] = (i * 2654435761) % io.primes[Math.floor(i / 8192) % io.primes.length];
  const result = io.encodeResult(residues, 0, size, 52);
  const ct = loadCiphertext(io.session, result, 'a batch result');
  t.teardown(() => release(ct));
  t.equal(ct.size(), size, 'SEAL loads it: three polynomials');
  const raw = ct.saveToArray(io.session.seal.ComprModeType.none) as Uint8Array;
  const words = new Uint32Array(raw.slice(raw.length - 8 * residues.length).buffer); // the residues, u64 each
  t.ok(
    residues.every((r, i) => words[2 * i] === r && words[2 * i + 1] === 0),
    'holding exactly the residues',
  );
  // The next result is built in the same reused buffer: the first one's bytes are its own.
  const other = residues.map((r, i) => (r + 1) % io.primes[Math.floor(i / 8192) % io.primes.length]);
  const second = io.encodeResult(other, 0, size, 52);
  const firstAgain = loadCiphertext(io.session, result, 'the first result');
  t.teardown(() => release(firstAgain));
  t.ok(
    (firstAgain.saveToArray(io.session.seal.ComprModeType.none) as Uint8Array).every((b, i) => b === raw[i]),
    'a second result leaves the first as it was',
  );
  t.notOk(second.length === result.length && second.every((b, i) => b === result[i]), 'and differs from it');
  // The last residue of polynomial 1's second prime, equal to that prime: a kernel fault.
  const bad = residues.slice();
  bad[io.lanes + 2 * 8192 - 1] = io.primes[1];
  t.throws(() => io.encodeResult(bad, 0, size, 52), { code: 'internal', message: /residue above its prime \(polynomial 1\)/ }, 'refused, not sent');
});

t.test('one zstd frame, also when it ends exactly where 16 KiB chunks of output would', async (t) => {
  // Random members do not compress: zstd stores them, and its frame grows byte for byte with
  // them, so some length in each window makes a frame of exactly 16 KiB or 32 KiB. Node's sync
  // zstd in its default 16 KiB chunks follows such a frame with an empty second one, which the
  // loader's precheck refuses (bytes after the end of the zstd stream).
  const lengths = [...Array.from({ length: 24 }, (_, i) => 16360 + i), ...Array.from({ length: 24 }, (_, i) => 32744 + i)];
  const frames: number[] = [];
  const notOne: string[] = [];
  for (const n of lengths) {
    const raw = new Uint8Array(16 + n);
    const v = new DataView(raw.buffer);
    v.setUint16(0, 0xa15e, true);
    raw.set([16, 4, 1, 0], 2); // header size, SEAL 4.1, compr_mode none
    v.setBigUint64(8, BigInt(raw.length), true);
    raw.set(randomBytes(n), 16);
    const body = zstdFromRaw(raw)!.subarray(16);
    frames.push(zstdFrameLength(body));
    if (frames[frames.length - 1] !== body.length) notOne.push(`${n} bytes of members: a frame of ${frames[frames.length - 1]} bytes in ${body.length}`);
  }
  t.ok(
    [16384, 32768].every((k) => frames.includes(k)),
    `the windows hold frames of exactly 16 KiB and 32 KiB (frames from ${Math.min(...frames)} to ${Math.max(...frames)} bytes)`,
  );
  t.same(notOne, [], `each of the ${lengths.length} outputs is one whole frame and nothing after it`);
});
