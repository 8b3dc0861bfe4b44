// The flood's residues without BigInt (flood-wide.ts, kernel.wat floodResidues64) are exactly the
// BigInt flood's (noise.ts floodSums, then % q): for floods from 2^20 to 2^271, primes up to 2^61,
// and the normals where a slip would show (the tails, exact powers of two, zero). And a flooded
// ciphertext (privacy.ts floodRawCiphertext) is, byte for byte, the one the BigInt flood makes.
import t from 'tap';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { floodKernel } from '../../src/fhe/flood-wide.ts';
import { floodScales, floodSums, standardNormals } from '../../src/fhe/noise.ts';
import { NegacyclicNttBig } from '../../src/fhe/ntt.ts';
import { primes } from '../../src/fhe/params.ts';
import { floodRawCiphertext } from '../../src/fhe/privacy.ts';

const Z_MAX = Math.sqrt(-2 * Math.log(2 ** -54));

/** K n standard normals with the awkward values first: the largest |z|, terms of exactly 2^53 and 2^64 where sigma reaches them, halves, zero. */
function normals(scales: number[], n: number): Float64Array {
  const z = standardNormals(scales.length * n);
  const edges = [Z_MAX, -Z_MAX, 2 ** 53 / scales[0], -(2 ** 64) / scales[0], 0, 0.5 / scales[0], -0.5 / scales[0], 2.5 / scales[0]];
  z.set(edges.filter((v) => Math.abs(v) <= Z_MAX));
  for (let k = 1; k < scales.length; k++) z.set([Z_MAX, -Z_MAX, 0], k * n);
  return z;
}

const reference = (sums: bigint[], q: bigint) => sums.map((f) => ((f % q) + q) % q);

t.test('the residues are those of the BigInt flood', async (t) => {
  const n = 1024;
  // 2^61 - 1 (the largest a kernel takes), SEAL-sized primes, a small one.
  const qs = [(1n << 61n) - 1n, 1152921504606830593n, 36028797018963841n, 1073692673n, 12289n];
  for (const sigma of [2 ** 20, 2 ** 55, 2 ** 83, 2 ** 140, 2 ** 271]) {
    const scales = floodScales(sigma);
    const z = normals(scales, n);
    const sums = floodSums(scales, z, n);
    const k = floodKernel(n, sigma, z);
    let wrong = 0;
    for (const q of qs) {
      const want = reference(sums, q);
      const got = k.residues(q);
      for (let i = 0; i < n; i++) if (got[i] !== want[i]) wrong++;
    }
    t.equal(wrong, 0, `sigma 2^${Math.log2(sigma)}: ${n * qs.length} residues (${k.limbs} limbs)`);
  }
  t.throws(() => floodKernel(n, 2 ** 20, normals(floodScales(2 ** 20), n)).residues(1n << 61n), /the prime/, 'a prime of 62 bits is refused');
});

t.test('a flooded ciphertext: byte for byte what the BigInt flood makes', async (t) => {
  const s = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [60, 55, 40, 60], securityLevel: 128 });
  t.teardown(() => s.close());
  const qs = primes(s.seal, s.context).slice(0, 3);
  const n = 8192;
  const ntts = qs.map((q) => NegacyclicNttBig.of(q, n));
  const sigma = 2 ** 83;
  const scales = floodScales(sigma);
  const z = normals(scales, n);
  // A raw ciphertext's header (its level: 3 primes at byte 65) and random residues below each prime.
  const AT = 16 + 32 + 1 + 8 + 8 + 8 + 8 + 8 + 16 + 8;
  const raw = new Uint8Array(AT + 2 * 3 * n * 8);
  new DataView(raw.buffer).setBigUint64(16 + 32 + 1 + 8 + 8, 3n, true);
  const view = new DataView(raw.buffer);
  const noise = standardNormals(2 * 3 * n);
  for (let i = 0; i < 2 * 3 * n; i++) view.setBigUint64(AT + 8 * i, BigInt(Math.floor(Math.abs(noise[i]) * 2 ** 40)) % qs[Math.floor(i / n) % 3], true);
  const want = raw.slice();
  const sums = floodSums(scales, z, n);
  ntts.forEach((ntt, p) => ntt.addForwardInto(BigUint64Array.from(reference(sums, ntt.q)), want, AT + 8 * p * n));
  const before = raw.slice();
  floodRawCiphertext(raw, ntts, sigma, z);
  t.ok(
    raw.every((b, i) => b === want[i]),
    'the same bytes',
  );
  t.ok(
    raw.subarray(AT, AT + 8 * n).some((b, i) => b !== before[AT + i]),
    'c0 moved',
  );
  t.ok(
    raw.subarray(AT + 3 * 8 * n).every((b, i) => b === before[AT + 3 * 8 * n + i]),
    'c1 did not',
  );
});
