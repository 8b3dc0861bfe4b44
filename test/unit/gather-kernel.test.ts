// The gather kernel (src/fhe/gather-kernel.ts, kernel.wat split/macSplit/redcSplit) against
// BigInt: sum_d m_d x_d mod q per residue, for primes of the sizes the single-record chains use
// (30, 53, 55 bits) and one near 2^60, where the accumulators hold only 8 products and the sum is
// reduced in chunks. Residues at q - 1 (the largest products) and random ones.
import t from 'tap';
import { PLAIN_DATA_OFFSET, GatherKernel, allocateSharedMasks, maskBytes, negInverse } from '../../src/fhe/gather-kernel.ts';
import { RAW_DATA_OFFSET, readRawInfo } from '../../src/fhe/raw-ciphertext.ts';
import { sameBytes } from '../helpers/same-bytes.ts';

const n = 256;
// 30, 53, 55, 60 bits, and a 53-bit prime where 2^64 mod q is 0.97 q (the float64 quotient of the masks' Montgomery form at its largest).
const primes = [1073643521n, 9007199252119553n, 36028797018652673n, 1152921504606830593n, 5136974402024449n];
const M64 = 1n << 64n;

let seed = 12345n;
const random = (q: bigint) => {
  seed = (seed * 6364136223846793005n + 1442695040888963407n) % M64;
  return ((seed >> 3n) * 0x9e3779b97f4a7c15n) % q;
};

/** A polynomial's residues (prime-major), each from `value(q, i)`. */
const residues = (value: (q: bigint, i: number) => bigint) => primes.map((q) => Array.from({ length: n }, (_, i) => value(q, i)));

function plaintextBytes(r: bigint[][]): Uint8Array {
  const b = new Uint8Array(PLAIN_DATA_OFFSET + 8 * primes.length * n);
  const v = new DataView(b.buffer);
  r.forEach((row, j) => row.forEach((x, i) => v.setBigUint64(PLAIN_DATA_OFFSET + 8 * (j * n + i), x, true)));
  return b;
}

function ciphertextBytes(polys: bigint[][][]): Uint8Array {
  const words = primes.length * n;
  const b = new Uint8Array(RAW_DATA_OFFSET + 16 * words);
  const v = new DataView(b.buffer);
  v.setUint16(0, 0xa15e, true);
  b[2] = 16;
  b[48] = 1; // NTT form
  v.setBigUint64(49, 2n, true);
  v.setBigUint64(57, BigInt(n), true);
  v.setBigUint64(65, BigInt(primes.length), true);
  v.setFloat64(73, 2 ** 40, true);
  v.setBigUint64(RAW_DATA_OFFSET - 8, BigInt(2 * words), true);
  polys.forEach((p, k) => p.forEach((row, j) => row.forEach((x, i) => v.setBigUint64(RAW_DATA_OFFSET + 8 * (k * words + j * n + i), x, true))));
  return b;
}

t.test('negInverse: q x (-q^-1) = -1 mod 2^64', async (t) => {
  for (const q of primes) t.equal((q * negInverse(q)) % M64, M64 - 1n, `q = ${q}`);
});

t.test('sums of mask x copy: what BigInt computes, residue by residue', async (t) => {
  const masks = 40;
  const copies = 40;
  const k = new GatherKernel(n, primes, masks, copies);
  // Mask 0 and copy 0 hold q - 1 everywhere: the largest product, (q - 1)^2. Mask 1 holds the
  // smallest residues and those next to q and q / 2 (the masks' Montgomery form is made in
  // float64 below 2^53: its quotient's rounding matters most there).
  const edge = (q: bigint, i: number) => [0n, 1n, 2n, q - 2n, q / 2n, q / 2n + 1n, q - 1n][i % 7];
  const maskValues = Array.from({ length: masks }, (_, d) => residues((q, i) => (d === 0 ? q - 1n : d === 1 ? edge(q, i) : random(q))));
  const copyValues = Array.from({ length: copies }, (_, c) => [0, 1].map(() => residues((q) => (c === 0 ? q - 1n : random(q)))));
  maskValues.forEach((m, d) => k.setMask(d, plaintextBytes(m)));
  copyValues.forEach((c, j) => k.setCopy(j, ciphertextBytes(c)));
  const cases: [string, { copy: number; mask: number }[]][] = [
    ['one term', [{ copy: 3, mask: 5 }]],
    ['32 terms, the largest products and the edge residues among them', Array.from({ length: 32 }, (_, i) => ({ copy: i, mask: i }))],
    ['mask 1 alone (the edge residues)', [{ copy: 5, mask: 1 }]],
    ['40 terms, copies and masks reused (five chunks at the 60-bit prime)', Array.from({ length: 40 }, (_, i) => ({ copy: 0, mask: (i * 7) % masks }))],
  ];
  for (const [name, terms] of cases) {
    const bytes = k.sum(terms, 2 ** 70);
    const v = new DataView(bytes.buffer);
    t.equal(readRawInfo(bytes).scale, 2 ** 70, `${name}: the scale given`);
    let wrong = 0;
    for (let poly = 0; poly < 2; poly++)
      primes.forEach((q, j) => {
        for (let i = 0; i < n; i++) {
          let want = 0n;
          for (const { copy, mask } of terms) want += copyValues[copy][poly][j][i] * maskValues[mask][j][i];
          if (v.getBigUint64(RAW_DATA_OFFSET + 8 * (poly * primes.length * n + j * n + i), true) !== want % q) wrong++;
        }
      });
    t.equal(wrong, 0, `${name}: every residue of both polynomials is the sum mod q`);
  }
});

t.test('masks shared by kernels (as by the threads of a process): built once, read by all; a failed build is claimed again', async (t) => {
  const masks = 6;
  const copies = 3;
  const maskValues = Array.from({ length: masks }, () => residues((q) => random(q)));
  const copyValues = Array.from({ length: copies }, () => [0, 1].map(() => residues((q) => random(q))));
  const terms = Array.from({ length: 6 }, (_, i) => ({ copy: i % copies, mask: (i * 5) % masks }));
  const own = new GatherKernel(n, primes, masks, copies);
  maskValues.forEach((m, d) => own.setMask(d, plaintextBytes(m)));
  copyValues.forEach((c, j) => own.setCopy(j, ciphertextBytes(c)));
  const want = own.sum(terms, 2 ** 70);

  const shared = allocateSharedMasks(n, primes.length, masks);
  t.equal(shared.memory.buffer.byteLength, Math.ceil(maskBytes(n, primes.length, masks) / 65536) * 65536, "the masks' pages, no more");
  const failing = new GatherKernel(n, primes, masks, copies, shared);
  t.ok(failing.buildsMasks, 'the first kernel claims the masks to build');
  failing.masksFailed();
  const builder = new GatherKernel(n, primes, masks, copies, shared);
  t.ok(builder.buildsMasks, 'after a failed build, the next kernel claims them');
  maskValues.forEach((m, d) => builder.setMask(d, plaintextBytes(m)));
  builder.masksBuilt();
  const reader = new GatherKernel(n, primes, masks, copies, shared);
  t.notOk(reader.buildsMasks, 'once built, a kernel reads them');
  t.throws(() => reader.setMask(0, plaintextBytes(maskValues[0])), { code: 'internal' }, 'and cannot write them');
  for (const k of [builder, reader]) copyValues.forEach((c, j) => k.setCopy(j, ciphertextBytes(c)));
  sameBytes(t, builder.sum(terms, 2 ** 70), want, "the builder's sums are a kernel's with masks of its own, byte for byte");
  sameBytes(t, reader.sum(terms, 2 ** 70), want, "and so are the reader's, from the masks it never set");
  t.throws(() => new GatherKernel(n, primes, masks + 40, copies, shared), { code: 'internal' }, 'shared masks too small for the form: refused');
});
