// The server over real HTTP, with a real S3-compatible server and real worker threads.
import t from 'tap';
import { predict } from '../../src/client/predict.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart, readServerPart } from '../../src/model/bundle.ts';
import { packRecords, unpackOutputs } from '../../src/model/layout.ts';
import { standardise } from '../../src/model/postprocess.ts';
import { simulate } from '../../src/model/simulate.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const trained = await trainBreastCancer();
const stack = await startStack(trained.modelDir, trained.dir);
const { modelId, client } = await readClientPart(trained.modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
t.teardown(async () => {
  session.close();
  await stack.close();
  await trained.cleanup();
});

const transport = { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url };

t.test('GET /ping answers 200 with the model id', async (t) => {
  const res = await fetch(`${stack.server.url}/ping`);
  t.equal(res.status, 200);
  t.equal(((await res.json()) as { model_id: string }).model_id, modelId);
});

// Tolerance: CKKS is approximate. With the 28-bit input scale and the 22-30-bit weight scale the
// compiler chooses, scores carry errors of a few 1e-6; we require every score within 1e-4.
const TOLERANCE = 1e-4;

t.test('every held-out record: encrypted score equals plaintext score within tolerance', async (t) => {
  const server = await readServerPart(trained.modelDir);
  const std = trained.test.x.map((r) => standardise(r, client.preprocess));
  const plain = unpackOutputs(
    client.output,
    client.input.recordsPerCiphertext,
    packRecords(client.input, std).map((v) => simulate(server.program, server.masks, v)),
    std.length,
  );
  const r = await predict(session, keys, trained.test.x, transport);
  t.equal(r.scores.length, trained.test.x.length, 'one result per record');
  const worst = Math.max(...r.scores.map((s, i) => Math.abs(s[0] - plain[i][0])));
  t.ok(worst < TOLERANCE, `largest |encrypted - plaintext| = ${worst.toExponential(2)} < ${TOLERANCE}`);
  const agree = r.scores.filter((s, i) => s[0] >= 0 === plain[i][0] >= 0).length;
  t.equal(agree, r.scores.length, 'every encrypted class equals the plaintext class');
  const acc = r.predictions.filter((p, i) => p.label === ['malignant', 'benign'][trained.test.y[i]]).length / r.predictions.length;
  t.ok(
    Math.abs(acc - trained.result.metrics.test_accuracy) < 1e-6,
    `encrypted accuracy ${acc} equals plaintext accuracy ${trained.result.metrics.test_accuracy}`,
  );
  const timings = (r.stats.server as { timings_ms: Record<string, number> }).timings_ms;
  for (const k of ['download', 'deserialize', 'evaluate', 'serialize', 'upload', 'pool_wall', 'total'])
    t.type(timings[k], 'number', `server reports ${k} time`);
  // Each rounded to 0.01 ms; one ciphertext: reading, evaluating and writing follow each other.
  t.ok(
    timings.download + timings.pool_wall + timings.upload <= timings.total + 0.03,
    `download ${timings.download} + pool ${timings.pool_wall} + upload ${timings.upload} ms within the total ${timings.total} ms`,
  );
  t.equal((r.stats.server as { ciphertexts: number }).ciphertexts, 1, 'one ciphertext');
  t.ok(timings.deserialize + timings.evaluate + timings.serialize <= timings.pool_wall + 0.03, "the worker's phases within the pool's wall time");
});

t.test('evaluation keys are uploaded once and cached by the server', async (t) => {
  const a = await predict(session, keys, trained.test.x.slice(0, 3), transport);
  const b = await predict(session, keys, trained.test.x.slice(3, 6), transport);
  t.equal(a.stats.keys_uploaded, false, 'already uploaded by the earlier test');
  t.equal(b.stats.keys_uploaded, false);
  t.equal((b.stats.server as { keys_cached: boolean }).keys_cached, true, 'the server reused its cached keys');
});

t.test('a batch larger than one ciphertext spans several ciphertexts', async (t) => {
  const rows = Array.from({ length: client.input.recordsPerCiphertext + 5 }, (_, i) => trained.test.x[i % trained.test.x.length]);
  const r = await predict(session, keys, rows, transport);
  t.equal((r.stats.server as { ciphertexts: number }).ciphertexts, 2);
  t.equal(r.predictions.length, rows.length);
  const R = client.input.recordsPerCiphertext;
  const n = trained.test.x.length;
  t.equal(r.predictions[R].label, r.predictions[R % n].label, 'a record repeated in the second ciphertext gets the same class');
  t.ok(Math.abs(r.scores[R][0] - r.scores[R % n][0]) < TOLERANCE, 'and the same score');
  t.not(r.predictions[R].probabilities![1], r.predictions[(R + 1) % n].probabilities![1], 'and a different record a different one');
});
