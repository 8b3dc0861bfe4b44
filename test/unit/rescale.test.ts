// Rescaling on the kernel's residues (src/fhe/rescale.ts) makes SEAL's own rescale_to_next,
// residue for residue: on a fresh ciphertext (two polynomials) and on a square left
// unrelinearized (three), as batch mode's would be. The result decrypts to the value at the
// scale divided by the dropped prime.
import t from 'tap';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { primes, sealPrimes } from '../../src/fhe/params.ts';
import { buildRaw, copyResidues, readRawInfo } from '../../src/fhe/raw-ciphertext.ts';
import { ProductRescale } from '../../src/fhe/rescale.ts';
import { NegacyclicNtt } from '../../src/fhe/ntt.ts';
import { modInverse } from '../helpers/batch-input.ts';

const N = 4096;

t.test("rescaling the kernel's residues gives SEAL's rescale_to_next, residue for residue", async (t) => {
  // Four 26-bit primes: three data primes (batch mode's size) and SEAL's special one.
  const s = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: [26, 26, 26, 26], securityLevel: 128 });
  t.teardown(() => s.close());
  const { seal, context, encoder, evaluator } = s;
  const data = primes(seal, context).map(Number).slice(0, 3);
  const kg = new seal.KeyGenerator(context);
  const sk = kg.secretKey();
  const pk = kg.createPublicKey();
  const encryptor = new seal.Encryptor(context, pk);
  const decryptor = new seal.Decryptor(context, sk);
  const values = Float64Array.from({ length: N / 2 }, (_, i) => Math.sin(i) * 3);
  const encrypt = (scale: number) => {
    const pt = new seal.Plaintext();
    encoder.encode(values, scale, pt);
    const ct = new seal.Ciphertext();
    encryptor.encrypt(pt, ct);
    pt.delete();
    return ct;
  };
  // At 2^40 the value survives the division by q_2 (~2^26) with ~14 bits to spare.
  const fresh = encrypt(2 ** 40);
  // At 2^24 its square (2^48) is within the 78 bits SEAL allows it.
  const small = encrypt(2 ** 24);
  const squared = new seal.Ciphertext();
  evaluator.square(small, squared);
  const residues = (ct: typeof fresh) => {
    const bytes = ct.saveToArray(seal.ComprModeType.none) as Uint8Array;
    const info = readRawInfo(bytes);
    const out = new Uint32Array(info.size * info.primes * info.degree);
    copyResidues(bytes, out, 0);
    return { info, out };
  };
  const rescaler = new ProductRescale(data, N, 1);
  for (const [name, ct] of [
    ['a fresh ciphertext', fresh],
    ['an unrelinearized square', squared],
  ] as const) {
    const before = residues(ct);
    const sealRescaled = new seal.Ciphertext();
    evaluator.rescaleToNext(ct, sealRescaled);
    const expected = residues(sealRescaled);
    t.equal(expected.info.primes, 2, `${name}: SEAL dropped one prime`);
    const ours = new Uint32Array(before.info.size * 2 * N);
    rescaler.ciphertext(before.out, ours, before.info.size);
    const differ = ours.findIndex((x, i) => x !== expected.out[i]);
    t.equal(differ, -1, `${name} (${before.info.size} polynomials): every residue is SEAL's`);
    // In place, as the kernel would (the buffer keeps its length; the result is its front).
    const inPlace = before.out.slice();
    rescaler.ciphertext(inPlace, inPlace, before.info.size);
    t.equal(
      inPlace.subarray(0, ours.length).findIndex((x, i) => x !== ours[i]),
      -1,
      `${name}: in place, the same residues`,
    );
    if (name === 'a fresh ciphertext') {
      // Ours, loaded into SEAL at the level below (SEAL's parms_id and scale for it), decrypted.
      const ct = new seal.Ciphertext();
      ct.loadFromArray(context, buildRaw(expected.info, before.info.size, ours, 0));
      const out = new seal.Plaintext();
      decryptor.decrypt(ct, out);
      const decoded = encoder.decodeFloat64(out) as Float64Array;
      // The scale is now 2^40 / q_2 (~2^14). The rounding's error, up to 1/2 per coefficient of
      // c0 and of c1 (times the ternary s: ~sqrt(N/3) in all), is ~sqrt(N) times that in a slot:
      // ~2^11, ~0.1-0.3 at that scale. Skip the forward transform and the values are ~10^13 off.
      const err = Math.max(...values.map((v, i) => Math.abs(decoded[i] - v)));
      t.ok(err < 1, `ours decrypts to the values (max error ${err.toExponential(2)})`);
      out.delete();
      ct.delete();
    }
    sealRescaled.delete();
  }
  for (const o of [squared, small, fresh, decryptor, encryptor, pk, sk, kg]) o.delete();
});

t.test('a rescale needs a prime to keep, and polynomials of the stated size', async (t) => {
  t.throws(() => new ProductRescale([40961], 4096, 1), /a rescale by 1 of 1 primes/);
  t.throws(() => new ProductRescale([40961, 65537], 4096, 0), /a rescale by 0 of 2 primes/);
  const r = new ProductRescale([40961, 65537], 4096, 1);
  t.throws(() => r.polynomial(new Uint32Array(4096), new Uint32Array(4096)), /primes x degree/);
});

t.test('a rescale by the product of the last k primes is round(A / D) in BigInt, coefficient for coefficient', async (t) => {
  const n = 4096;
  // Ten 26-bit primes = 1 mod 2n, as SEAL picks them: drops past four take the kernel's sums of
  // four products at a time (rescaleTermDigits), up to the compiler's eight.
  const primes = sealPrimes(n, new Array<number>(11).fill(26)).slice(0, 10);
  const ntts = primes.map((q) => NegacyclicNtt.of(q, n));
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
  for (const drop of [1, 2, 4, 5, 8]) {
    const src = new Uint32Array(primes.length * n);
    primes.forEach((q, p) => {
      for (let c = 0; c < n; c++) src[p * n + c] = c < 3 ? [0, q - 1, 1][c] : Math.floor(rand() * q);
    });
    const ours = new Uint32Array((primes.length - drop) * n);
    new ProductRescale(primes, n, drop).polynomial(src, ours);
    // The reference: A in [0, Q) by the CRT, (A + floor(D/2)) / D floored, into NTT form.
    const coeffs = primes.map((q, p) => {
      const a = Float64Array.from(src.subarray(p * n, (p + 1) * n));
      ntts[p].inverse(a);
      return a;
    });
    const Q = primes.reduce((a, q) => a * BigInt(q), 1n);
    const crt = primes.map((q) => {
      const rest = Q / BigInt(q);
      return (rest * BigInt(modInverse(Number(rest % BigInt(q)), q))) % Q;
    });
    const D = primes.slice(primes.length - drop).reduce((a, q) => a * BigInt(q), 1n);
    const kept = primes.slice(0, primes.length - drop);
    const want = kept.map(() => new Float64Array(n));
    for (let c = 0; c < n; c++) {
      let A = 0n;
      primes.forEach((_, p) => (A += BigInt(coeffs[p][c]) * crt[p]));
      const R = ((A % Q) + D / 2n) / D;
      kept.forEach((q, i) => (want[i][c] = Number(R % BigInt(q))));
    }
    want.forEach((w, i) => ntts[i].forward(w));
    const wrong = kept.findIndex((_, i) => want[i].some((x, c) => x !== ours[i * n + c]));
    t.equal(wrong, -1, `dropping ${drop} prime(s): every residue of the ${kept.length} kept equals the BigInt reference's`);
  }
});
