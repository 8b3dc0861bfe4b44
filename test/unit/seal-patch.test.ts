// seal-patch.ts: node-seal with SEAL's bit-serial 128-bit division replaced must compute what
// node-seal computes, bit for bit. Three checks: the replacement against BigInt division (the
// contract SEAL relies on: quotient out, remainder in place); SEAL built both ways producing the
// same bytes from the same inputs (encoding, multiplication, relinearization, rescaling: all use
// the NTT tables and constants the division derives); and the patch leaving any other build alone.
import t from 'tap';
import { readFileSync } from 'node:fs';
import SEAL from 'node-seal/throws';
import { SEAL_DIV128_WASM, wasmBytes } from '../../src/fhe/kernel-wasm.ts';
import { bodyDigest, codeSection, patchSealWasm } from '../../src/fhe/seal-patch.ts';
import { loadSeal, sealPatched, type Seal } from '../../src/fhe/seal.ts';

const WASM = new Uint8Array(readFileSync(new URL('seal_throws.wasm', import.meta.resolve('node-seal/throws'))));

t.test('the replacement divides exactly: 128-bit by 64-bit, quotient and remainder', async (t) => {
  const { instance } = await WebAssembly.instantiate(wasmBytes(SEAL_DIV128_WASM));
  const { div128, memory } = instance.exports as { div128(num: number, d: bigint, quo: number): void; memory: WebAssembly.Memory };
  const m = new BigUint64Array(memory.buffer);
  const M64 = (1n << 64n) - 1n;
  let x = 20261201n;
  const rnd = () => (x = (x * 6364136223846793005n + 1442695040888963407n) & M64);
  const cases: [bigint, bigint, bigint][] = [];
  for (const d of [1n, 2n, 3n, (1n << 63n) - 1n, 1n << 63n, M64, 0x3fffffffffffffffn, 1n << 32n, (1n << 32n) + 1n])
    for (const hi of [0n, 1n, d - 1n, d, M64]) for (const lo of [0n, 1n, M64, 1n << 63n]) cases.push([hi, lo, d]);
  for (let i = 0; i < 200_000; i++) {
    const d = rnd() >> (rnd() % 64n) || 1n;
    // SEAL's own calls: numerator = operand * 2^64 with operand < modulus; and any other shape.
    const hi = i % 3 === 0 ? rnd() % d : i % 3 === 1 ? rnd() : rnd() >> (rnd() % 64n);
    cases.push([hi, i % 3 === 0 ? 0n : rnd(), d]);
  }
  let wrong = 0;
  for (const [hi, lo, d] of cases) {
    m[0] = lo;
    m[1] = hi;
    m[2] = m[3] = 12345n; // garbage the function must overwrite
    div128(0, d, 16);
    const n = (hi << 64n) | lo;
    const q = n / d;
    const r = n % d;
    if (m[2] !== (q & M64) || m[3] !== q >> 64n || m[0] !== r || m[1] !== 0n) {
      if (wrong++ < 3) t.fail(`${n} / ${d}: got quotient ${(m[3] << 64n) | m[2]} remainder ${(m[1] << 64n) | m[0]}, want ${q} and ${r}`);
    }
  }
  t.equal(wrong, 0, `${cases.length} divisions equal BigInt's quotient and remainder`);
  m[0] = 7n;
  m[1] = 9n;
  div128(0, 0n, 16);
  t.same([m[0], m[1], m[2], m[3]], [7n, 9n, 0n, 0n], 'a zero divisor leaves the numerator and writes a zero quotient instead of trapping');
});

t.test("the installed node-seal's division is found and replaced, and loadSeal runs the patched build", async (t) => {
  const p = patchSealWasm(WASM);
  t.ok(p.patched, 'node-seal 7.0.0 seal_throws.wasm: patched (a new node-seal build needs its body digest in seal-patch.ts)');
  t.ok(WebAssembly.validate(new Uint8Array(p.wasm)), 'the patched module validates');
  const before = codeSection(WASM).bodies;
  const after = codeSection(p.wasm).bodies;
  t.equal(after.length, before.length, 'same number of functions');
  const changed = before.filter((b, i) => bodyDigest(WASM, b) !== bodyDigest(p.wasm, after[i])).length;
  t.equal(changed, 1, 'exactly one function body differs');
  await loadSeal();
  t.ok(sealPatched(), 'this thread runs the patched build');
});

t.test('another build is left exactly as it is', async (t) => {
  const { bodies } = codeSection(WASM);
  const target = bodies.find((b) => b.end - b.start === 923)!; // the only body of the division's size
  const other = new Uint8Array(WASM);
  other[target.end - 2] ^= 1; // one byte of the division's body: no longer the function the patch knows
  const p = patchSealWasm(other);
  t.notOk(p.patched, 'not patched');
  t.equal(p.wasm, other, 'the same bytes returned');
});

t.test('SEAL built both ways computes the same bytes from the same inputs', async (t) => {
  const original = await SEAL(); // node-seal as published
  const patched = await loadSeal();
  const run = (seal: Seal, keys?: { sk: Uint8Array; rk: Uint8Array; ct: Uint8Array }) => {
    const parms = new seal.EncryptionParameters(seal.SchemeType.ckks);
    parms.setPolyModulusDegree(8192);
    parms.setCoeffModulus(seal.CoeffModulus.Create(8192, Int32Array.from([60, 40, 40, 60])));
    const ctx = new seal.SEALContext(parms, true, seal.SecLevelType.tc128);
    const encoder = new seal.CKKSEncoder(ctx);
    const evaluator = new seal.Evaluator(ctx);
    const none = seal.ComprModeType.none;
    let sk, rk, ct;
    if (!keys) {
      const gen = new seal.KeyGenerator(ctx);
      sk = gen.secretKey();
      const pk = gen.createPublicKey();
      rk = gen.createRelinKeys();
      const pt = new seal.Plaintext();
      encoder.encode(
        Float64Array.from({ length: 4096 }, (_, i) => Math.sin(i) / 2),
        2 ** 40,
        pt,
      );
      ct = new seal.Ciphertext();
      new seal.Encryptor(ctx, pk).encrypt(pt, ct);
    } else {
      sk = new seal.SecretKey();
      sk.loadFromArray(ctx, keys.sk);
      rk = new seal.RelinKeys();
      rk.loadFromArray(ctx, keys.rk);
      ct = new seal.Ciphertext();
      ct.loadFromArray(ctx, keys.ct);
    }
    const inputs = { sk: sk.saveToArray(none), rk: rk.saveToArray(none), ct: ct.saveToArray(none) };
    const pt = new seal.Plaintext();
    encoder.encode(
      Float64Array.from({ length: 4096 }, (_, i) => Math.cos(i) / 3),
      2 ** 40,
      pt,
    );
    const prod = new seal.Ciphertext();
    evaluator.multiply(ct, ct, prod);
    evaluator.relinearize(prod, rk, prod);
    evaluator.rescaleToNext(prod, prod);
    const withPlain = new seal.Ciphertext();
    evaluator.multiplyPlain(ct, pt, withPlain);
    evaluator.rescaleToNext(withPlain, withPlain);
    const out = new seal.Plaintext();
    new seal.Decryptor(ctx, sk).decrypt(prod, out);
    const decoded = encoder.decodeFloat64(out) as Float64Array;
    return {
      inputs,
      encoded: pt.saveToArray(none),
      squared: prod.saveToArray(none),
      timesPlain: withPlain.saveToArray(none),
      decoded: Array.from(decoded.subarray(0, 4)),
    };
  };
  const a = run(original);
  const b = run(patched, a.inputs);
  const same = (x: Uint8Array, y: Uint8Array) => x.length === y.length && x.every((v, i) => v === y[i]);
  t.ok(same(a.encoded, b.encoded), `the encoded plaintext (${a.encoded.length} bytes) is identical`);
  t.ok(same(a.squared, b.squared), `ct * ct, relinearized, rescaled (${a.squared.length} bytes) is identical`);
  t.ok(same(a.timesPlain, b.timesPlain), `ct * plaintext, rescaled (${a.timesPlain.length} bytes) is identical`);
  t.same(b.decoded, a.decoded, 'and decrypts to the same values');
  t.ok(Math.abs(a.decoded[1] - Math.sin(1) ** 2 / 4) < 1e-6, 'which are the squares of the inputs');
});
