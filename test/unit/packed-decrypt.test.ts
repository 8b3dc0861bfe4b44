// Batch results decrypted by our own code (src/fhe/packed-decrypt.ts): slot for slot what SEAL
// decrypts from the same bytes, for fresh (size 2) and squared (size 3, 5: powers of s) results,
// at the top level and below it, at scales past 2^53; the decode is SEAL's; a result that does not
// fit the parameters is refused with a message, never decrypted into garbage. The server's side:
// a result holds exactly the kernel's residues, each checked below its prime before it is sent.
import t from 'tap';
import { BatchSession } from '../../src/fhe/batch-io.ts';
import type { BatchPlan } from '../../src/fhe/batch-plan.ts';
import { CkksEncoder } from '../../src/fhe/ckks-encode.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';
import { loadCiphertext } from '../../src/fhe/load.ts';
import { mulmod } from '../../src/fhe/ntt.ts';
import { primes as chainPrimes } from '../../src/fhe/params.ts';
import { isPacked, packedFromResidues, unpackResidues } from '../../src/fhe/raw-ciphertext.ts';
import { release } from '../../src/fhe/seal.ts';
import { decodeSeededSection } from '../../src/fhe/seeded-decode.ts';

const N = 8192;
const bits = [26, 26, 26, 26, 26, 26, 26];

async function setup() {
  const s = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: bits, securityLevel: 128 });
  const holder = new SecretKeyHolder(s, generateSecretKey(s));
  const primes = chainPrimes(s.seal, s.context).map(Number).slice(0, -1);
  t.teardown(() => {
    holder.close();
    s.close();
  });
  return { s, holder, primes, k: primes.length };
}

/** (c0, c1)^(2^squarings) as its tensor powers: size 2^squarings + 1, [poly][prime][coeff]. */
function tensorPower(c: Uint32Array, k: number, primes: number[], squarings: number): Uint32Array {
  let cur = c;
  let size = 2;
  for (let r = 0; r < squarings; r++) {
    const next = new Uint32Array((2 * size - 1) * k * N);
    for (let a = 0; a < size; a++)
      for (let b = 0; b < size; b++)
        for (let j = 0; j < k; j++) {
          const q = primes[j];
          for (let x = 0; x < N; x++) {
            const at = (a + b) * k * N + j * N + x;
            next[at] = (next[at] + mulmod(cur[a * k * N + j * N + x], cur[b * k * N + j * N + x], q)) % q;
          }
        }
    cur = next;
    size = 2 * size - 1;
  }
  return cur;
}

/** The first `L` primes of each polynomial. */
const keepPrimes = (c: Uint32Array, size: number, k: number, L: number) => {
  const out = new Uint32Array(size * L * N);
  for (let p = 0; p < size; p++) out.set(c.subarray(p * k * N, p * k * N + L * N), p * L * N);
  return out;
};

t.test('decode is the inverse of encode (SEAL order)', async (t) => {
  const enc = CkksEncoder.of(N);
  const values = Float64Array.from({ length: N / 2 }, (_, i) => Math.cos(i / 3) * 5 - 1);
  const coeffs = new Float64Array(N);
  enc.encode(values, 2 ** 40, coeffs);
  for (let i = 0; i < N; i++) coeffs[i] /= 2 ** 40;
  const back = new Float64Array(N / 2);
  enc.decode(coeffs, back);
  const err = Math.max(...values.map((v, i) => Math.abs(v - back[i])));
  t.ok(err < 1e-9, `largest error ${err.toExponential(2)}`);
});

for (const [squarings, L, scaleBits] of [
  [0, 6, 30],
  [1, 6, 30],
  [2, 6, 30],
  [1, 3, 30],
  [0, 6, 62],
] as const)
  t.test(`size ${2 ** squarings + 1}, ${L} primes, input scale 2^${scaleBits}: the slots SEAL decrypts`, async (t) => {
    const { s, holder, primes, k } = await setup();
    const values = Float64Array.from({ length: N / 2 }, (_, i) => Math.sin(i / 5) * 2);
    const fresh = new Uint32Array(2 * k * N);
    decodeSeededSection(
      holder.encryptPacked(values, scaleBits),
      { parmsId: s.shape.data[0].parmsId, primes, degree: N },
      2 ** scaleBits,
      fresh,
      0,
      'the query',
    );
    const size = 2 ** squarings + 1;
    const c = keepPrimes(tensorPower(fresh, k, primes, squarings), size, k, L);
    const scale = 2 ** (scaleBits * 2 ** squarings);
    const packed = packedFromResidues({ parmsId: s.shape.data[k - L].parmsId, degree: N, primes: L, scale }, size, c, 0);
    t.ok(isPacked(packed), 'packed');
    const ours = holder.decrypt(packed);
    // SEAL's: the same bytes unpacked into its own layout (not packed: our path does not take them).
    const seals = holder.decrypt(unpackResidues(packed));
    t.equal(ours.length, N / 2, 'N/2 slots');
    let worst = 0;
    for (let i = 0; i < N / 2; i++) worst = Math.max(worst, Math.abs(ours[i] - seals[i]) / Math.max(1, Math.abs(seals[i])));
    t.ok(worst < 1e-9, `every slot as SEAL's (largest relative difference ${worst.toExponential(2)})`);
    const expected = values.map((v) => v ** (2 ** squarings));
    const err = Math.max(...expected.map((v, i) => Math.abs(v - ours[i])));
    t.ok(err < 1e-3, `the values to the power ${2 ** squarings} (largest error ${err.toExponential(2)})`);
  });

t.test('results that do not fit are refused, naming what is wrong', async (t) => {
  const { s, holder, primes, k } = await setup();
  const fresh = new Uint32Array(2 * k * N);
  decodeSeededSection(
    holder.encryptPacked(Float64Array.from([1, 2]), 30),
    { parmsId: s.shape.data[0].parmsId, primes, degree: N },
    2 ** 30,
    fresh,
    0,
    'the query',
  );
  const make = () => packedFromResidues({ parmsId: s.shape.data[0].parmsId, degree: N, primes: k, scale: 2 ** 30 }, 2, fresh, 0);
  const above = make();
  // The first residue of polynomial 2, prime 1: all 26 bits set, above every prime.
  const at = above.length - (2 * k * N * 13) / 4 / 2;
  above.set([0xff, 0xff, 0xff], at);
  above[at + 3] |= 3;
  t.throws(() => holder.decrypt(above), { code: 'bad-query', message: /residue above its prime \(polynomial 2, prime 1\)/ });
  t.throws(() => holder.decrypt(make().subarray(0, 1000)), { code: 'bad-query', message: /unexpected layout|truncated/ });
  const longer = new Uint8Array(make().length + 13);
  longer.set(make());
  t.throws(() => holder.decrypt(longer), { code: 'bad-query', message: /unexpected layout/ });
  const tooMany = packedFromResidues({ parmsId: s.shape.data[0].parmsId, degree: N, primes: k + 1, scale: 2 ** 30 }, 2, new Uint32Array(2 * (k + 1) * N), 0);
  t.throws(() => holder.decrypt(tooMany), { code: 'bad-query', message: new RegExp(`has ${k + 1} primes`) });
  const badScale = packedFromResidues({ parmsId: s.shape.data[0].parmsId, degree: N, primes: k, scale: -1 }, 2, fresh, 0);
  t.throws(() => holder.decrypt(badScale), { code: 'bad-query', message: /scale/ });
  // Still decrypts a good one afterwards.
  const back = holder.decrypt(make());
  t.ok(Math.abs(back[0] - 1) < 1e-3 && Math.abs(back[1] - 2) < 1e-3, 'a good result still decrypts');
});

t.test('a batch result: packed, SEAL loads exactly its residues, every residue checked below its prime first', async (t) => {
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
  t.ok(isPacked(result), 'packed');
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
