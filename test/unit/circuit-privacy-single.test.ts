// Circuit privacy in the single layout (src/fhe/single-privacy.ts). The evaluation is
// deterministic: two crafted queries that share c1 (SEAL refuses c1 = 0 as "transparent") get
// the same key-switching terms, so the difference of their results is plaintext arithmetic on
// the difference of their c0: without privacy it reads the server's encoded weights out
// exactly; re-randomized and flooded, it reads noise.
import t, { type Test } from 'tap';
import type { Ciphertext } from 'node-seal/throws';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../../src/fhe/keys.ts';
import { loadQueryCiphertext } from '../../src/fhe/load.ts';
import { loadEvaluationKeys } from '../../src/fhe/load-keys.ts';
import { Engine } from '../../src/fhe/engine.ts';
import { SinglePrivacy, makePublicKey } from '../../src/fhe/single-privacy.ts';
import { compileLinear } from '../../src/model/compile-linear.ts';
import { packRecords } from '../../src/model/layout.ts';

const RAW_AT = 16 + 32 + 1 + 8 + 8 + 8 + 8 + 8 + 16 + 8;

function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  };
}

/** A flooded linear model ready to run in process: session, keys, engine and its SinglePrivacy, closed at teardown. */
async function floodedRunner(t: Test, model: ReturnType<typeof compileLinear>) {
  const s = await CkksSession.open(model.program.params);
  const km = generateKeys(s, model.program.galoisSteps, false);
  const holder = new SecretKeyHolder(s, km.secretKey);
  const keys = loadEvaluationKeys(s, km.galoisKeys, undefined, model.program.galoisSteps, false);
  const engine = new Engine(s, model.program, model.masks);
  const publicKey = makePublicKey(s, km.secretKey);
  const privacy = new SinglePrivacy(s, publicKey, 2 ** model.program.noiseL2Bits!);
  t.teardown(() => {
    privacy.close();
    engine.close();
    keys.close();
    holder.close();
    s.close();
  });
  return { s, holder, keys, engine, privacy, publicKey };
}

t.test('single layout: crafted queries sharing c1, privacy none vs flood', async (t) => {
  const r = rng(7);
  const n = 30;
  const weights = [Array.from({ length: n }, () => r())];
  const model = compileLinear(
    { weights, bias: [0.3] },
    Array.from({ length: 100 }, () => Array.from({ length: n }, () => 4 * r())),
    { privacy: 'none' },
  );
  const s = await CkksSession.open(model.program.params);
  const N = s.params.polyModulusDegree;
  const km = generateKeys(s, model.program.galoisSteps, false);
  const holder = new SecretKeyHolder(s, km.secretKey);
  const keys = loadEvaluationKeys(s, km.galoisKeys, undefined, model.program.galoisSteps, false);
  const engine = new Engine(s, model.program, model.masks);
  const sk = new s.seal.SecretKey();
  sk.loadFromArray(s.context, km.secretKey);
  const decryptor = new s.seal.Decryptor(s.context, sk);
  t.teardown(() => {
    engine.close();
    keys.close();
    holder.close();
    decryptor.delete();
    sk.delete();
    s.close();
  });
  const primes = s.shape.data[0].primes;
  t.equal(primes.length, 1, 'depth 0: one data prime');
  const q = primes[0];

  // A template query, then (c0, c1) replaced: c0 = the NTT vector `c0`, c1 = one NTT point (fixed).
  const template = holder.encrypt(packRecords(model.input, [new Array<number>(n).fill(0)])[0], model.program.inputScaleBits);
  const crafted = (c0: BigUint64Array): Ciphertext => {
    const ct = loadQueryCiphertext(s, template, model.program.inputScaleBits);
    const raw = ct.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    ct.delete();
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < N; i++) {
      v.setBigUint64(RAW_AT + 8 * i, c0[i], true);
      v.setBigUint64(RAW_AT + 8 * (N + i), i === 7 ? 1n : 0n, true);
    }
    const out = new s.seal.Ciphertext();
    out.loadFromArray(s.context, raw);
    return out;
  };
  /** The result's phase c0 + c1 s (NTT residues), what the client gets with its secret key. */
  const phase = (ct: Ciphertext): BigUint64Array => {
    const pt = new s.seal.Plaintext();
    decryptor.decrypt(ct, pt);
    const bytes = pt.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    pt.delete();
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = bytes.length - 8 * N;
    return BigUint64Array.from({ length: N }, (_, i) => v.getBigUint64(at + 8 * i, true));
  };
  const c1Of = (ct: Ciphertext) => {
    const raw = ct.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    return raw.slice(RAW_AT + 8 * N, RAW_AT + 16 * N).join(',');
  };

  // The server's encoded weight mask, as the engine encodes it (the secret the attack reads).
  const maskPt = new s.seal.Plaintext();
  s.encoder.encode(model.masks[0], 2 ** (model.program.steps[0] as { weightScaleBits: number }).weightScaleBits, maskPt);
  const maskBytes = maskPt.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  maskPt.delete();
  const mv = new DataView(maskBytes.buffer, maskBytes.byteOffset, maskBytes.byteLength);
  const mask = BigUint64Array.from({ length: N }, (_, i) => mv.getBigUint64(maskBytes.length - 8 * N + 8 * i, true));

  const publicKey = makePublicKey(s, km.secretKey);
  // The bound for this program is not derived yet (see the report): 2^20 stands in for it.
  const privacy = new SinglePrivacy(s, publicKey, 2 ** 20);
  t.teardown(() => privacy.close());

  const run = (c0: BigUint64Array, flood: boolean) => {
    const out = engine.run(crafted(c0), keys);
    if (!flood) return out;
    const f = privacy.apply(out);
    out.delete();
    return f;
  };
  const probes = [5, 1234, 4000, N - 3].filter((k) => k < N);
  for (const flood of [false, true]) {
    const zero = run(new BigUint64Array(N), flood);
    const again = run(new BigUint64Array(N), flood);
    const bias = phase(zero);
    t.equal(
      c1Of(zero) === c1Of(again),
      !flood,
      flood ? 'flooded: the same query twice gives different c1' : 'none: the same query twice gives the same result',
    );
    zero.delete();
    again.delete();
    let exact = 0;
    for (const k of probes) {
      const c0 = new BigUint64Array(N);
      c0[k] = 1n;
      const out = run(c0, flood);
      const ph = phase(out);
      out.delete();
      // phase - bias = fold(mask * indicator_k): mask[k] at the (up to 32) NTT points the fold
      // reaches; the key-switching terms, the bias and c1's share cancel (same c1 in both queries).
      const diff = Array.from(ph, (x, i) => (x - bias[i] + q) % q);
      const nonzero = diff.filter((x) => x !== 0n);
      if (nonzero.length > 0 && nonzero.length <= 64 && nonzero.every((x) => x === mask[k])) exact++;
    }
    if (!flood)
      t.equal(
        exact,
        probes.length,
        `none: every probe reads the encoded weight mask's NTT residue exactly (${exact}/${probes.length}); N probes (64 with packing) give the whole mask, hence the exact weights`,
      );
    else t.equal(exact, 0, `flood: no probe reads the mask (${exact}/${probes.length}); the phase differs from the bias in every NTT point`);
  }

  // Honest queries still decrypt to the model's outputs (flood sigma 2^{20+29}: this program's
  // scales have room for it only because they are large; the compiler must add the headroom).
  const x = Array.from({ length: n }, () => 4 * r());
  const honest = loadQueryCiphertext(s, holder.encrypt(packRecords(model.input, [x])[0], model.program.inputScaleBits), model.program.inputScaleBits);
  const out = engine.run(honest, keys);
  const t0 = performance.now();
  const flooded = privacy.apply(out);
  const ms = performance.now() - t0;
  const want = 0.3 + weights[0].reduce((a, w, j) => a + w * x[j], 0);
  const got = holder.decrypt(flooded.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array)[model.output.offsets[0]];
  const plain = holder.decrypt(out.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array)[model.output.offsets[0]];
  console.log(
    JSON.stringify({
      figures: 'single layout, 30 features',
      params: model.program.params.coeffModulusBits,
      N,
      out_scale_bits: Math.log2(out.scale()),
      flood_sigma_bits: Math.log2(privacy.sigma),
      public_key_zstd_seeded: publicKey.length,
      apply_ms: Math.round(ms),
      err_plain: Math.abs(plain - want),
      err_flood: Math.abs(got - want),
      result_zstd_bytes: {
        plain: (out.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array).length,
        flood: (flooded.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array).length,
      },
    }),
  );
  t.ok(Number.isFinite(got), 'flooded result decrypts');
  out.delete();
  flooded.delete();
});

t.test('single layout, privacy flood: the compiler adds headroom, outputs keep their precision and decisions', async (t) => {
  const r = rng(11);
  const n = 30;
  const weights = [Array.from({ length: n }, () => r())];
  const train = Array.from({ length: 200 }, () => Array.from({ length: n }, () => 4 * r()));
  const none = compileLinear({ weights, bias: [0.1] }, train, { privacy: 'none' });
  const model = compileLinear({ weights, bias: [0.1] }, train, { privacy: 'flood' });
  t.equal(model.program.privacy, 'flood');
  t.equal(none.program.privacy, undefined, "'none' programs are as before");
  const { s, holder, keys, engine, privacy, publicKey } = await floodedRunner(t, model);
  const records = Array.from({ length: 2 * model.input.recordsPerCiphertext }, () => Array.from({ length: n }, () => 4 * r()));
  let worst = 0,
    worstNone = 0,
    agree = 0,
    applyMs = 0,
    queryBytes = 0,
    resultBytes = 0;
  for (const [ci, v] of packRecords(model.input, records).entries()) {
    const q = holder.encrypt(v, model.program.inputScaleBits);
    queryBytes = q.length;
    const out = engine.run(loadQueryCiphertext(s, q, model.program.inputScaleBits), keys);
    const t0 = performance.now();
    const flooded = privacy.apply(out);
    applyMs += performance.now() - t0;
    const bytes = flooded.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
    resultBytes = bytes.length;
    const got = holder.decrypt(bytes);
    const plain = holder.decrypt(out.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
    out.delete();
    flooded.delete();
    for (let k = 0; k < model.input.recordsPerCiphertext; k++) {
      const x = records[ci * model.input.recordsPerCiphertext + k];
      const want = 0.1 + weights[0].reduce((a, w, j) => a + w * x[j], 0);
      const at = k * model.output.recordStride + model.output.offsets[0];
      worst = Math.max(worst, Math.abs(got[at] - want));
      worstNone = Math.max(worstNone, Math.abs(plain[at] - want));
      if (got[at] > 0 === want > 0) agree++;
    }
  }
  t.ok(worst < 1e-3, `flooded outputs within ${worst.toExponential(2)} of plaintext (before the flood: ${worstNone.toExponential(2)})`);
  t.equal(agree, records.length, `every decision equals plaintext's (${records.length} records)`);
  console.log(
    JSON.stringify({
      figures: 'single layout flood vs none, 30 features',
      params: {
        none: [none.program.params.polyModulusDegree, none.program.params.coeffModulusBits],
        flood: [model.program.params.polyModulusDegree, model.program.params.coeffModulusBits],
      },
      input_scale_bits: { none: none.program.inputScaleBits, flood: model.program.inputScaleBits },
      noise_l2_bits: model.program.noiseL2Bits,
      flood_sigma_bits: Math.log2(privacy.sigma),
      public_key_seeded_zstd: publicKey.length,
      query_bytes_flood: queryBytes,
      result_bytes_flood: resultBytes,
      apply_ms_per_result: Math.round(applyMs / 2),
      worst_abs_error: { flood: worst, before_flood: worstNone },
    }),
  );
});

t.test('flood masks made ahead (prepareAhead): each added to one result only, results as precise', async (t) => {
  const r = rng(13);
  const n = 30;
  const weights = [Array.from({ length: n }, () => r())];
  const train = Array.from({ length: 200 }, () => Array.from({ length: n }, () => 4 * r()));
  const model = compileLinear({ weights, bias: [0.1] }, train, { privacy: 'flood' });
  const { s, holder, keys, engine, privacy } = await floodedRunner(t, model);
  const N = s.params.polyModulusDegree;
  const records = Array.from({ length: model.input.recordsPerCiphertext }, () => Array.from({ length: n }, () => 4 * r()));
  const q = holder.encrypt(packRecords(model.input, records)[0], model.program.inputScaleBits);
  const out = engine.run(loadQueryCiphertext(s, q, model.program.inputScaleBits), keys);
  t.teardown(() => out.delete());
  // Every flooded result of the same evaluation: its c1 is the mask's (u pk_1 + e1) plus out's.
  const seen = new Set<string>();
  let worst = 0;
  const flood = () => {
    const f = privacy.apply(out);
    const raw = f.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
    seen.add(Buffer.from(raw.subarray(RAW_AT + 8 * N, RAW_AT + 16 * N)).toString('base64'));
    const got = holder.decrypt(f.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
    f.delete();
    records.forEach((x, k) => {
      const want = 0.1 + weights[0].reduce((a, w, j) => a + w * x[j], 0);
      worst = Math.max(worst, Math.abs(got[k * model.output.recordStride + model.output.offsets[0]] - want));
    });
  };
  t.notOk(privacy.prepareAhead(), 'nothing to make ahead before a result took a mask');
  flood();
  t.ok(privacy.prepareAhead(), 'a result took one mask: one made ahead');
  t.notOk(privacy.prepareAhead(), '... and no more');
  t.equal(privacy.spareCount, 1);
  flood(); // takes the one made ahead
  t.equal(privacy.spareCount, 0, 'the mask made ahead was taken');
  flood(); // none waiting: made on the spot
  t.ok(privacy.prepareAhead() && privacy.prepareAhead(), 'two results took two masks: two made ahead');
  t.notOk(privacy.prepareAhead(), `at most ${privacy.spareCount} wait`);
  for (let i = 0; i < 3; i++) flood(); // two made ahead, one on the spot
  t.equal(seen.size, 6, 'six results, six different masks: none added twice');
  t.ok(worst < 1e-3, `results flooded with masks made ahead within ${worst.toExponential(2)} of plaintext`);
});

t.test('breast cancer logistic regression: encrypted accuracy with the flood equals plaintext accuracy', async (t) => {
  const { readFile, mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { BREAST_CANCER_CSV, splitCsv } = await import('../../src/cli/demo.ts');
  const { parseCsv, splitTarget } = await import('../../src/train/csv.ts');
  const { cachedJson } = await import('../helpers/fixture-cache.ts');
  const { standardise } = await import('../../src/model/postprocess.ts');
  const dir = await mkdtemp(join(tmpdir(), 'sealed-privacy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(dir, 'data'));
  const read = async (d: string) => splitTarget(parseCsv(await readFile(join(d, 'data.csv'), 'utf8'), d), 'diagnosis');
  const tr = await read(trainDir);
  const te = await read(testDir);
  const features = tr.x[0].length;
  const mean = Array.from({ length: features }, (_, j) => tr.x.reduce((a, r) => a + r[j], 0) / tr.x.length);
  const std = Array.from({ length: features }, (_, j) => Math.sqrt(tr.x.reduce((a, r) => a + (r[j] - mean[j]) ** 2, 0) / tr.x.length) || 1);
  const xs = tr.x.map((r) => standardise(r, { mean, std }));
  // Fitting (TensorFlow.js) is deterministic and costs seconds: cached with the data and src/.
  const fit = { task: 'binary', classes: 2, epochs: 150, learningRate: 0.02, batchSize: 64, l2: 1e-4, seed: 42 } as const;
  const fitted = await cachedJson('breast-cancer-linear-fit', { fit, xs, y: tr.y }, async () => {
    const { fitLinear } = await import('../../src/train/fit.ts');
    return fitLinear(xs, tr.y, fit);
  });
  const model = compileLinear(fitted, xs, { privacy: 'flood' });
  const { s, holder, keys, engine, privacy } = await floodedRunner(t, model);
  const test = te.x.map((r) => standardise(r, { mean, std }));
  const plainScore = test.map((x) => fitted.bias[0] + fitted.weights[0].reduce((a, w, j) => a + w * x[j], 0));
  const R = model.input.recordsPerCiphertext;
  let correctPlain = 0,
    correctEnc = 0,
    worst = 0;
  for (const [ci, v] of packRecords(model.input, test).entries()) {
    const out = engine.run(loadQueryCiphertext(s, holder.encrypt(v, model.program.inputScaleBits), model.program.inputScaleBits), keys);
    const flooded = privacy.apply(out);
    out.delete();
    const dec = holder.decrypt(flooded.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
    flooded.delete();
    for (let k = 0; k < R && ci * R + k < test.length; k++) {
      const i = ci * R + k;
      const got = dec[k * model.output.recordStride + model.output.offsets[0]];
      worst = Math.max(worst, Math.abs(got - plainScore[i]));
      if ((plainScore[i] > 0 ? 1 : 0) === te.y[i]) correctPlain++;
      if ((got > 0 ? 1 : 0) === te.y[i]) correctEnc++;
    }
  }
  t.equal(
    correctEnc,
    correctPlain,
    `accuracy: encrypted with flood ${(correctEnc / test.length).toFixed(4)} = plaintext ${(correctPlain / test.length).toFixed(4)} (${test.length} test records; worst |score diff| ${worst.toExponential(2)})`,
  );
  t.ok(worst < 1e-4, 'scores within 1e-4 of plaintext');
});
