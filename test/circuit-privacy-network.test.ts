// Circuit privacy of networks in the single layout (compile-network.ts, privacy 'flood'): a
// small CNN and a small MLP, encrypted by the client, evaluated by the real engine, flooded by
// SinglePrivacy with the client's public key, decrypted. Checks: the outputs equal the plaintext
// network within the flood's stated precision; the flood is there (the result's noise is the
// flood's sigma, far above the honest bound B); the honest noise |v|_2, measured on the result's
// phase, stays below B.
//
// Measuring |v|_2: the message of a result is the model on what the client's plaintext holds, with
// the masks as the server's plaintexts hold them (their rounding is part of the model), which the
// test cannot compute to the noise's precision (2^-45 of the outputs). Two encryptions of the same
// plaintext have the same message, so the phase of (result 1 - result 2) is v1 - v2 exactly: its
// |.|_2 / sqrt(2) estimates |v|_2 (v1, v2 independent and centered), and |v1 - v2|_2 <= 2B must
// hold whatever they are.
import t from 'tap';
import type { Ciphertext } from 'node-seal/throws';
import { CkksSession } from '../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../src/fhe/keys.ts';
import { loadQueryCiphertext, loadQuerySection } from '../src/fhe/load.ts';
import { loadEvaluationKeys } from '../src/fhe/load-keys.ts';
import { Engine } from '../src/fhe/engine.ts';
import { primes as chainPrimes } from '../src/fhe/params.ts';
import { rotationsOf } from '../src/fhe/program.ts';
import { SinglePrivacy, makePublicKey } from '../src/fhe/single-privacy.ts';
import { FLOOD_PRECISION_BITS } from '../src/model/compile-batch.ts';
import { compileNetwork, type CompileOptions } from '../src/model/compile-network.ts';
import { packRecords, withRotations } from '../src/model/layout.ts';
import { forward, type Network } from '../src/model/network.ts';
import { differencePhaseL2 } from './helpers/phase.ts';
import { mnistShapedNetworks, rng } from './helpers/networks.ts';

const r = rng(5);
const { cnn, mlp } = mnistShapedNetworks(r, 8, 64);
const deep: Network = {
  input: { height: 8, width: 8 },
  layers: [
    { type: 'dense', weights: Array.from({ length: 32 }, () => Array.from({ length: 64 }, () => r() * 0.3)), bias: Array.from({ length: 32 }, () => r()) },
    { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 },
    { type: 'dense', weights: Array.from({ length: 16 }, () => Array.from({ length: 32 }, () => r() * 0.3)), bias: Array.from({ length: 16 }, () => r()) },
    { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 },
    { type: 'dense', weights: Array.from({ length: 10 }, () => Array.from({ length: 16 }, () => r() * 0.3)), bias: Array.from({ length: 10 }, () => r()) },
  ],
};

// 1024 inputs x 32 outputs: in 8192 slots the replicated first layer reads 4 diagonals, which
// the client's rotated copies (--input-copies) supply: their fresh noise, not key switching.
const wide: Network = {
  input: { height: 32, width: 32 },
  layers: [
    { type: 'dense', weights: Array.from({ length: 32 }, () => Array.from({ length: 1024 }, () => r() * 0.05)), bias: Array.from({ length: 32 }, () => r()) },
    ...deep.layers.slice(1),
  ],
};

const cases: [string, Network, CompileOptions?][] = [
  ['CNN conv2d-parity -> quadratic -> dense', cnn],
  ['MLP dense -> quadratic -> dense', mlp],
  ['MLP of depth 4, two squares', deep],
  // The deferred form (rescale steps, compact Galois keys) is what the MNIST MLPs get at ring 16384.
  ['MLP of depth 4, two squares, deferred form', deep, { floodForm: 'deferred' }],
  ['CNN conv2d-parity -> quadratic -> dense, deferred form', cnn, { floodForm: 'deferred' }],
  ['MLP of depth 4, deferred form, rotated copies of the input from the client', wide, { floodForm: 'deferred', inputCopies: 16 }],
];
for (const [name, net, form] of cases)
  t.test(`${name}, privacy flood: plaintext outputs within the stated precision, flood present, honest noise below B`, async (t) => {
    const n = net.input.height * net.input.width;
    const images = Array.from({ length: 20 }, () => Array.from({ length: n }, () => Math.max(0, r() * 2)));
    // privacy 'none' for comparison (depth 4 needs the larger ring there too).
    const none = net !== cnn && net !== mlp ? compileNetwork(net, images, { slots: 8192, privacy: 'none' }) : compileNetwork(net, images, { privacy: 'none' });
    const m = compileNetwork(net, images, { privacy: 'flood', ...form });
    const p = m.program;
    t.equal(none.program.privacy, undefined, "'none' programs carry no privacy field");
    t.equal(p.privacy, 'flood');
    if (form?.floodForm === 'deferred') {
      t.ok(
        p.steps.some((st) => st.op === 'rescale'),
        'the deferred form has rescale steps',
      );
      t.ok(p.galoisSteps.length < rotationsOf(p.steps).length, `${p.galoisSteps.length} Galois keys for ${rotationsOf(p.steps).length} rotation steps`);
    }
    t.ok(p.noiseL2Bits !== undefined && p.resultPrimes !== undefined, 'flooded programs state their noise bound and result primes');
    const N = p.params.polyModulusDegree;
    const B = 2 ** p.noiseL2Bits!;
    const outMax = Math.max(1, ...images.map((x) => Math.max(...forward(net, x).map(Math.abs))));
    const precision = 2 ** -FLOOD_PRECISION_BITS * outMax;

    const s = await CkksSession.open(p.params);
    const km = generateKeys(s, p.galoisSteps, p.relin);
    const holder = new SecretKeyHolder(s, km.secretKey);
    const keys = loadEvaluationKeys(s, km.galoisKeys, km.relinKeys, p.galoisSteps, p.relin);
    const engine = new Engine(s, p, m.masks);
    const privacy = new SinglePrivacy(s, makePublicKey(s, km.secretKey), B);
    const sk = new s.seal.SecretKey();
    sk.loadFromArray(s.context, km.secretKey);
    const decryptor = new s.seal.Decryptor(s.context, sk);
    t.teardown(() => {
      privacy.close();
      engine.close();
      keys.close();
      holder.close();
      decryptor.delete();
      sk.delete();
      s.close();
    });

    // The scales are tracked at the primes' nominal sizes: SEAL's primes are within 2^-10 of them.
    const actual = chainPrimes(s.seal, s.context);
    p.params.coeffModulusBits.forEach((b, i) => t.ok(Math.abs(Number(actual[i]) / 2 ** b - 1) < 2 ** -10, `prime ${i} (${b} bits) within 2^-10 of 2^${b}`));

    const diff = (a: Ciphertext, b: Ciphertext) => differencePhaseL2(s, decryptor, a, b);
    const encrypt = (v: Float64Array) => loadQueryCiphertext(s, holder.encrypt(v, p.inputScaleBits), p.inputScaleBits);
    // The query: the input and, where the program reads them, the client's rotated copies.
    const query = (v: Float64Array) =>
      loadQuerySection(s, holder.encryptSection(withRotations(m.input, v), p.inputScaleBits), engine.inputCiphertexts, p.inputScaleBits);
    if (form?.inputCopies) {
      const first = p.steps[0];
      t.ok(first.op === 'linear' && (first.inputRotations?.length ?? 0) > 0, `the client sends ${engine.inputCiphertexts - 1} rotated copies`);
    }

    // The phase extraction, checked on fresh ciphertexts: two encryptions of one plaintext differ by e1 - e2.
    const v0 = packRecords(m.input, [images[0]])[0];
    const [f1, f2] = [encrypt(v0), encrypt(v0)];
    const fresh = diff(f1, f2);
    f1.delete();
    f2.delete();
    t.ok(
      fresh > 2 * Math.sqrt(N) && fresh < 8 * Math.sqrt(N),
      `fresh noise: |e1 - e2|_2 = ${fresh.toFixed(0)} = ${(fresh / Math.sqrt(N)).toFixed(2)} sqrt(N) (SEAL's sigma 3.2: about 4.6 sqrt(N))`,
    );

    let worstFlood = 0,
      worstNone = 0,
      worstV = 0,
      floodRatioMin = Infinity,
      floodRatioMax = 0,
      runMs = 0,
      applyMs = 0,
      outScaleBits = 0;
    const runs = 3;
    for (let i = 0; i < runs; i++) {
      const x = images[i];
      const v = packRecords(m.input, [x])[0];
      const want = forward(net, x);
      let t0 = performance.now();
      const out1 = engine.run(query(v), keys);
      runMs += performance.now() - t0;
      const out2 = engine.run(query(v), keys);
      t.equal(out1.coeffModulusSize(), p.resultPrimes, `the result keeps ${p.resultPrimes} primes`);
      outScaleBits = Math.log2(out1.scale());
      // Honest noise: |v1 - v2|_2 / sqrt(2) estimates |v|_2; |v1 - v2|_2 <= 2B always.
      const dv = diff(out1, out2);
      worstV = Math.max(worstV, dv / Math.SQRT2);
      t.ok(dv <= 2 * B, `image ${i}: |v1 - v2|_2 = 2^${Math.log2(dv).toFixed(2)} <= 2B = 2^${(Math.log2(B) + 1).toFixed(2)}`);
      t0 = performance.now();
      const flooded = privacy.apply(out1);
      applyMs += performance.now() - t0;
      // The flood: |phase(flooded) - phase(honest)|_2 = |F + u e + e0 + e1 s|_2, about sigma sqrt(N).
      const df = diff(flooded, out1);
      const ratio = df / (privacy.sigma * Math.sqrt(N));
      floodRatioMin = Math.min(floodRatioMin, ratio);
      floodRatioMax = Math.max(floodRatioMax, ratio);
      const got = holder.decrypt(flooded.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
      const plain = holder.decrypt(out1.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
      want.forEach((w, c) => {
        worstFlood = Math.max(worstFlood, Math.abs(got[m.output.offsets[c]] - w));
        worstNone = Math.max(worstNone, Math.abs(plain[m.output.offsets[c]] - w));
      });
      out1.delete();
      out2.delete();
      flooded.delete();
    }
    t.ok(
      worstV < B,
      `honest noise |v|_2 ~ 2^${Math.log2(worstV).toFixed(2)} below B = 2^${p.noiseL2Bits} (${(p.noiseL2Bits! - Math.log2(worstV)).toFixed(1)} bits of slack)`,
    );
    t.ok(
      floodRatioMin > 0.9 && floodRatioMax < 1.1,
      `flood applied: |flooded - honest|_2 / (sigma sqrt(N)) in [${floodRatioMin.toFixed(3)}, ${floodRatioMax.toFixed(3)}], sigma = 2^${Math.log2(privacy.sigma).toFixed(1)} = 2^${(Math.log2(privacy.sigma) - Math.log2(B)).toFixed(1)} B`,
    );
    // The flood's error per slot has standard deviation <= precision: 6 of them bound every output.
    t.ok(
      worstFlood < 6 * precision,
      `flooded outputs within ${worstFlood.toExponential(2)} of plaintext (stated precision 2^-${FLOOD_PRECISION_BITS} max(1, |out|) = ${precision.toExponential(2)}, std)`,
    );
    t.ok(
      worstFlood > 10 * worstNone,
      `the flood's error ${worstFlood.toExponential(2)} is measurably larger than the honest result's ${worstNone.toExponential(2)}`,
    );
    console.log(
      JSON.stringify({
        figures: `flood, ${name}`,
        params: {
          none: [none.program.params.polyModulusDegree, none.program.params.coeffModulusBits, none.program.inputScaleBits],
          flood: [N, p.params.coeffModulusBits, p.inputScaleBits],
        },
        result_primes: p.resultPrimes,
        noise_l2_bits: p.noiseL2Bits,
        measured_noise_l2_bits: +Math.log2(worstV).toFixed(2),
        flood_sigma_bits: +Math.log2(privacy.sigma).toFixed(2),
        out_scale_bits: +outScaleBits.toFixed(2),
        worst_abs_error: { flood: worstFlood, honest: worstNone },
        precision_std: precision,
        engine_ms: Math.round(runMs / runs),
        apply_ms: Math.round(applyMs / runs),
      }),
    );
  });
