// Constant plaintexts built in NTT form (constant.ts) are the bytes SEAL's encoder makes for the
// same value in every slot: at the tree evaluator's scales (leaf constants at 2^30, the constant 1
// at the input scale, up to 2^63), for negative values, zero, halves (SEAL rounds half away from
// zero) and values from 1e-9 to 1e4; and a product with one decrypts to the product.
import t from 'tap';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { constantPlaintext } from '../../src/fhe/constant.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';
import { loadQueryCiphertext } from '../../src/fhe/load.ts';
import type { CkksParams } from '../../src/fhe/params.ts';
import { rng } from '../helpers/networks.ts';

const params: CkksParams = { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [58, 58, 60], securityLevel: 128 };
const s = await CkksSession.open(params);
t.teardown(() => s.close());
const r = rng(31);

t.test("the same bytes as SEAL's encoder", async (t) => {
  const cases: [number, number][] = [
    [1, 63],
    [-1, 63],
    [0, 30],
    [0.5, 30],
    [-0.123456789, 30],
    [0.5 / 2 ** 30, 30],
    [-2.5 / 2 ** 30, 30],
    [1.5 / 2 ** 30, 30],
    [12345.678, 30],
  ];
  for (let i = 0; i < 40; i++) cases.push([r() * 10 ** ((i % 14) - 9), 30 + (i % 34)]);
  let differ = 0;
  for (const [v, bits] of cases) {
    const want = new s.seal.Plaintext();
    s.encoder.encode(new Float64Array(s.slots).fill(v), 2 ** bits, want);
    const got = constantPlaintext(s, v, bits);
    const a = want.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    const b = got.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
      differ++;
      if (differ <= 3) t.fail(`${v} at 2^${bits}: the bytes differ`);
    }
    want.delete();
    got.delete();
  }
  t.equal(differ, 0, `${cases.length} values: identical plaintexts`);
});

t.test('a ciphertext times a constant plaintext decrypts to the product', async (t) => {
  const holder = new SecretKeyHolder(s, generateSecretKey(s));
  t.teardown(() => holder.close());
  const x = Float64Array.from({ length: s.slots }, () => r() * 4);
  const ct = loadQueryCiphertext(s, holder.encrypt(x, 40), 40);
  const pt = constantPlaintext(s, -0.75, 30);
  const out = new s.seal.Ciphertext();
  s.evaluator.multiplyPlain(ct, pt, out);
  const got = holder.decrypt(out.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
  const worst = Math.max(...Array.from(x, (v, i) => Math.abs(got[i] - -0.75 * v)));
  t.ok(worst < 1e-6, `|decrypted - (-0.75 x)| <= ${worst.toExponential(2)}`);
  ct.delete();
  pt.delete();
  out.delete();
});
