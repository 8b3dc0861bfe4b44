// Writes the test vectors of docs/wire-format.md. A client or server in another language (with
// Microsoft SEAL 4.1) can check itself against them; test/light/vectors.test.ts checks that ours still
// reads and produces them. Run again only when the wire format changes.
//
//   node scripts/make-test-vectors.ts single [dir]   test/vectors/: a small real model (iris,
//       multiclass linear) and, for three records, the secret key, evaluation keys, query,
//       result and expected scores (single layout)
//   node scripts/make-test-vectors.ts batch [dir]    test/vectors/batch/: a tiny image model
//       (3x3 pixels, deskewed, one dense layer, circuit privacy 'flood') with a batch plan and,
//       for five records, the batch secret key, a batch query (re-randomization key first),
//       its result and the expected outputs; and deskew.json (two MNIST test images, deskewed)
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClientSession } from '../src/client/session.ts';
import { BatchSession } from '../src/fhe/batch-io.ts';
import { evaluateLanes, prepareKernel } from '../src/fhe/batch-kernel.ts';
import { outputsOf, resultSize, type BatchPlan } from '../src/fhe/batch-plan.ts';
import { BatchPrivacy } from '../src/fhe/batch-privacy.ts';
import { CkksSession } from '../src/fhe/ckks.ts';
import { loadQueryCiphertext } from '../src/fhe/load.ts';
import { loadEvaluationKeys } from '../src/fhe/load-keys.ts';
import { Engine } from '../src/fhe/engine.ts';
import { primes as chainPrimes } from '../src/fhe/params.ts';
import { FLOOD_SECURITY_BITS, NegacyclicNtt, floodSigma, loadRerandKey, secretKeyResidues } from '../src/fhe/privacy.ts';
import { SinglePrivacy } from '../src/fhe/single-privacy.ts';
import { readClientPart, readServerPart } from '../src/model/bundle.ts';
import { simulateBatch } from '../src/model/simulate-batch.ts';
import { deskew } from '../src/model/deskew.ts';
import type { Network } from '../src/model/network.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { CHUNK } from '../src/server/batch-constants.ts';
import { parseCsv, splitTarget } from '../src/train/csv.ts';
import { imageRows, readIdx } from '../src/train/idx.ts';
import { addBatchMode, compileImageModel, writeImageBundle } from '../src/train/image-model.ts';
import { MNIST_TEST_IMAGES } from '../src/train/mnist.ts';
import { parseHyperparameters, train } from '../src/train/train.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader, type ResultHeader } from '../src/wire/format.ts';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const vectors = fileURLToPath(new URL('../test/vectors/', import.meta.url));

/** The single-layout set (test/vectors/): iris, three records. */
async function makeSingle(out: string): Promise<void> {
  const iris = fileURLToPath(new URL('../data/iris/iris.csv', import.meta.url));
  const work = await mkdtemp(join(tmpdir(), 'sealed-vectors-'));
  await mkdir(join(work, 'train'));
  await copyFile(iris, join(work, 'train', 'iris.csv'));
  // Only this set's files: the batch set lives in out/batch/.
  for (const f of ['model', 'secret.key', 'evaluation.keys', 'query.bin', 'result.bin', 'expected.json'])
    await rm(join(out, f), { recursive: true, force: true });
  await train(
    { trainDir: join(work, 'train'), modelDir: join(out, 'model') },
    parseHyperparameters({ target: 'species', epochs: '200', learning_rate: '0.05', labels: 'setosa,versicolor,virginica' }),
    () => {},
  );
  const { modelId, client } = await readClientPart(join(out, 'model'));
  const server = await readServerPart(join(out, 'model'));
  const session = await ClientSession.open(modelId, client);
  const keys = session.generateKeys();
  const records = splitTarget(parseCsv(await readFile(iris, 'utf8'), 'iris'), 'species').x.filter((_, i) => i % 50 === 0);
  const query = session.encrypt(records);

  // The server's side, exactly as a worker does it (with circuit privacy: re-randomized with the
  // client's public key, the last section of the keys, and flooded).
  const s = await CkksSession.open(client.params);
  const kh = decodeWire<KeysHeader>('keys', keys.evaluationKeys, 'keys');
  const ek = loadEvaluationKeys(s, kh.sections[0], kh.header.relin ? kh.sections[1] : undefined, server.program.galoisSteps, server.program.relin);
  const privacy = server.program.privacy === 'flood' ? new SinglePrivacy(s, kh.sections[kh.sections.length - 1], 2 ** server.program.noiseL2Bits!) : undefined;
  const engine = new Engine(s, server.program, server.masks);
  const q = decodeWire<QueryHeader>('query', query, 'query');
  // The flood's standard deviation in the slots: sigma sqrt(N/2) / the result's scale.
  let floodSd = 0;
  const results = q.sections.map((b) => {
    const ct = loadQueryCiphertext(s, b, server.program.inputScaleBits);
    let r = engine.run(ct, ek);
    ct.delete();
    if (privacy) {
      const plain = r;
      r = privacy.apply(plain);
      plain.delete();
      floodSd = Math.max(floodSd, (privacy.sigma * Math.sqrt(client.params.polyModulusDegree / 2)) / r.scale());
    }
    const bytes = r.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
    r.delete();
    return bytes;
  });
  // The result names the query it answers (its SHA-256), as the server writes it.
  const result = encodeWire('result', { ...q.header, query_sha256: sha256(query) }, results);
  const scores = session.decryptScores(result);

  await writeFile(join(out, 'secret.key'), keys.secretKey);
  await writeFile(join(out, 'evaluation.keys'), keys.evaluationKeys);
  await writeFile(join(out, 'query.bin'), query);
  await writeFile(join(out, 'result.bin'), result);
  await writeFile(
    join(out, 'expected.json'),
    JSON.stringify(
      { model_id: modelId, records, scores, labels: session.decrypt(result).map((p) => p.label), tolerance: Math.max(1e-4, 8 * floodSd) },
      null,
      1,
    ) + '\n',
  );
  privacy?.close();
  engine.close();
  ek.close();
  s.close();
  session.close();
  await rm(work, { recursive: true, force: true });
  console.log(`single-layout test vectors for model ${modelId} in ${out}`);
}

/** A fixed generator (the model and its records are the same on every run; the keys are not). */
function lcg(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
}

const SIDE = 3;

/** The batch records: a diagonal and an anti-diagonal stroke, an empty image (deskew leaves it), ink in one row (no shear), noise. */
function batchRecords(): number[][] {
  const r = lcg(29);
  return [
    [200, 40, 0, 30, 255, 20, 0, 60, 180],
    [0, 90, 230, 10, 250, 60, 220, 80, 0],
    new Array<number>(9).fill(0),
    [0, 0, 0, 120, 255, 90, 0, 0, 0],
    Array.from({ length: 9 }, () => Math.floor(r() * 256)),
  ];
}

/**
 * The server's side of a batch query, as a worker does it (src/server/worker.ts): load every
 * ciphertext, evaluate all lanes, re-randomize and flood each output, save it.
 */
async function evaluateBatchQuery(plan: BatchPlan, query: Uint8Array): Promise<Uint8Array> {
  const q = decodeWire<QueryHeader>('query', query, 'query');
  const batch = await BatchSession.open(plan);
  try {
    const LN = batch.lanes;
    const N = plan.params.polyModulusDegree;
    const key = loadRerandKey(q.sections[0], batch.primes, N, resultSize(plan));
    const privacy = new BatchPrivacy(plan, batch.primes);
    const kernel = prepareKernel(plan, batch.primes);
    const batches = (q.sections.length - 1) / plan.inputs;
    const results: Uint8Array[] = [];
    for (let b = 0; b < batches; b++) {
      const input = new Uint32Array(plan.inputs * 2 * LN);
      for (let i = 0; i < plan.inputs; i++) batch.decodeInto(q.sections[1 + b * plan.inputs + i], input, i * 2 * LN);
      const output = new Uint32Array(outputsOf(plan) * resultSize(plan) * LN);
      for (let l = 0; l < LN;) {
        const end = Math.min(l + CHUNK, LN, (Math.floor(l / N) + 1) * N);
        evaluateLanes(kernel, input, output, l, end);
        l = end;
      }
      for (let o = 0; o < outputsOf(plan); o++) {
        privacy.apply(key, output, o, LN);
        results.push(batch.encodeResult(output, o * resultSize(plan) * LN, resultSize(plan), plan.outputScaleBits));
      }
    }
    // The header the server writes: the query's, without rerand_key, with the query's hash.
    const h = q.header;
    return encodeWire<ResultHeader>(
      'result',
      { model_id: h.model_id, params: h.params, records: h.records, layout: 'batch', query_sha256: sha256(query) },
      results,
    );
  } finally {
    batch.close();
  }
}

const centered = (x: number, q: number) => (x > q / 2 ? x - q : x);

/** The batch set (test/vectors/batch/). */
async function makeBatch(out: string): Promise<void> {
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  // A tiny model: 3x3 pixels, deskewed by the client, one dense layer (linear: results of two
  // polynomials), three classes. Weights and samples from a fixed generator.
  const r = lcg(17);
  const net: Network = {
    input: { height: SIDE, width: SIDE },
    layers: [{ type: 'dense', weights: Array.from({ length: 3 }, () => Array.from({ length: SIDE * SIDE }, () => 2 * r() - 1)), bias: [0.25, -0.5, 0.125] }],
  };
  const samples = Array.from({ length: 40 }, () => Array.from({ length: SIDE * SIDE }, () => Math.floor(r() * 256)));
  const built = compileImageModel(net, samples, true, { privacy: 'flood' });
  const plan = await addBatchMode(net, built, samples);
  if (!plan) throw new Error('the vector model has no batch plan');
  if (plan.privacy !== 'flood' || plan.square) throw new Error('the vector model should be linear with circuit privacy');
  await writeImageBundle(join(out, 'model'), net, built, {}, plan);

  const { modelId, client } = await readClientPart(join(out, 'model'));
  const session = await ClientSession.open(modelId, client);
  const secretKey = session.generateBatchKey()!;
  const records = batchRecords();
  const query = session.encrypt(records, 'batch');
  const result = await evaluateBatchQuery(plan, query);
  const scores = session.decryptScores(result, { querySha256: sha256(query) });
  const predictions = session.decrypt(result, { querySha256: sha256(query) });
  const inputs = records.map((x) => preprocessRecord(x, client));

  // The flood's standard deviation per output, in the slots (privacy.ts): sigma sqrt(N/2) / Delta_out.
  const N = plan.params.polyModulusDegree;
  const floodSd = plan.noiseL2Bits!.map(
    (b) => (floodSigma(2 ** b, plan.floodSecurityBits ?? FLOOD_SECURITY_BITS) * Math.sqrt(N / 2)) / 2 ** plan.outputScaleBits,
  );

  // What the spec says about SEAL's NTT and key layout, as numbers a client can check itself against.
  const s = await CkksSession.open(plan.params);
  const all = chainPrimes(s.seal, s.context).map(Number);
  const data = all.slice(0, -1);
  const sk = new s.seal.SecretKey();
  sk.loadFromArray(s.context, secretKey);
  const raw = sk.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  sk.delete();
  s.close();
  const sHat = secretKeyResidues(raw, N, all.length, data.length);
  const ntts = data.map((q) => new NegacyclicNtt(q, N));
  const coeffs = Float64Array.from(sHat.subarray(0, N));
  ntts[0].inverse(coeffs);
  const key = loadRerandKey(decodeWire<QueryHeader>('query', query, 'query').sections[0], data, N, resultSize(plan));
  // e = a_0 + a_1 s (NTT form, prime 0), back to coefficients.
  const e = new Float64Array(N);
  for (let c = 0; c < N; c++) e[c] = (key.residues[c] + Number((BigInt(key.residues[N * data.length + c]) * BigInt(sHat[c])) % BigInt(data[0]))) % data[0];
  ntts[0].inverse(e);
  const psi = data.map((q) => {
    const t = new Float64Array(N);
    t[1] = 1; // the polynomial X: its NTT holds psi^(2 bitrev(i) + 1); entry 0 is psi itself
    new NegacyclicNtt(q, N).forward(t);
    return t[0];
  });

  await writeFile(join(out, 'secret.key'), secretKey);
  await writeFile(join(out, 'query.bin'), query);
  await writeFile(join(out, 'result.bin'), result);
  await writeFile(
    join(out, 'expected.json'),
    JSON.stringify(
      {
        model_id: modelId,
        layout: 'batch',
        query_sha256: sha256(query),
        records,
        inputs,
        scores,
        plaintext_scores: inputs.map((x) => Array.from(simulateBatch(plan, x))),
        labels: predictions.map((p) => p.label),
        probabilities: predictions.map((p) => p.probabilities),
        flood_sd: floodSd,
        decrypt_tolerance: 1e-6,
        tolerance: 8 * Math.max(...floodSd),
        ntt: {
          primes: data,
          psi,
          secret_key_coefficients: Array.from(coeffs.subarray(0, 16), (x) => centered(x, data[0])),
          rerand_key_noise: Array.from(e.subarray(0, 16), (x) => centered(x, data[0])),
        },
      },
      null,
      1,
    ) + '\n',
  );

  // Deskew at MNIST's size: two official test images and what the client encrypts of them.
  const mnist = imageRows(await readIdx(MNIST_TEST_IMAGES)).slice(0, 2);
  await writeFile(
    join(out, 'deskew.json'),
    JSON.stringify({ side: 28, images: mnist.map((img) => Array.from(img)), deskewed: mnist.map((img) => deskew(img, 28)) }) + '\n',
  );
  session.close();
  console.log(`batch test vectors for model ${modelId} in ${out}`);
}

const [what, dir] = process.argv.slice(2);
if (what === 'single') await makeSingle(dir ?? vectors);
else if (what === 'batch') await makeBatch(dir ?? join(vectors, 'batch'));
else {
  console.error('usage: node scripts/make-test-vectors.ts single|batch [dir]');
  process.exitCode = 2;
}
