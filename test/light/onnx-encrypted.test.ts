// ONNX models compiled and run encrypted (client encryption, the server's engine and flood,
// client decryption): the decrypted outputs equal the plaintext simulation, and match
// onnxruntime within the tolerance the compile report states. And `sealed compile`'s job end to
// end: the bundle it writes loads like `sealed train`'s, with the report inside and no weights in
// the client part.
import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readClientPart, readServerPart } from '../../src/model/bundle.ts';
import { checkParams, MAX_BITS_128, totalBits } from '../../src/fhe/params.ts';
import { rotationsOf } from '../../src/fhe/program.ts';
import { classOfOutputs, classOfScores, compileOnnx, headOutputs, outputError, simulatedScores } from '../../src/model/onnx/compile.ts';
import { openReference } from '../../src/model/onnx/reference.ts';
import { statedTolerance } from '../../src/model/onnx/report.ts';
import { runEncryptedRecords } from '../../src/model/onnx/verify.ts';
import { compileOnnxJob } from '../../src/train/onnx-job.ts';
import { buildModel, gemm, gemmWeights, tensor } from '../helpers/onnx-build.ts';

// A small ReLU network (fitted quadratic, one square) and the x^2 LeNet fixture's shape in small,
// and the x^2 MLP fixture (two squares) at ring 16384; the benchmark measures the fixtures at
// scale (npm run bench -- onnx); their plaintext equivalence is in onnx-fixtures.test.ts.
const reluNet = buildModel({
  inputs: [['x', ['N', 1, 8, 8]]],
  outputs: [['p', ['N', 4]]],
  initializers: [
    tensor(
      'k',
      [3, 1, 3, 3],
      Array.from({ length: 27 }, (_, i) => Math.sin(i + 1) * 0.6),
    ),
    tensor('kb', [3], [0.1, -0.2, 0.05]),
    ...gemmWeights('fc', 27, 4, 5),
  ],
  nodes: [
    { op: 'Conv', inputs: ['x', 'k', 'kb'], outputs: ['c'], name: 'conv', attrs: { strides: [2, 2], pads: [1, 1, 1, 1] } },
    { op: 'AveragePool', inputs: ['c'], outputs: ['a'], name: 'pool', attrs: { kernel_shape: [2, 2], strides: [1, 1] } },
    { op: 'Relu', inputs: ['a'], outputs: ['r'], name: 'relu' },
    { op: 'Flatten', inputs: ['r'], outputs: ['f'], name: 'flatten' },
    gemm('fc', 'f', 'y'),
    { op: 'Softmax', inputs: ['y'], outputs: ['p'], name: 'softmax', attrs: { axis: -1 } },
  ],
});

t.test('a Conv+AveragePool+ReLU+Gemm+Softmax model: encrypted = simulated, and onnxruntime within the stated tolerance', async (t) => {
  let s = 3;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s / 2 ** 31);
  const rows = Array.from({ length: 40 }, () => Array.from({ length: 64 }, rnd));
  const m = compileOnnx(reluNet, rows);
  t.same(
    m.network.layers.map((l) => l.type),
    ['dense', 'quadratic', 'dense'],
  );
  t.notOk(m.fits[0].exact, 'ReLU is fitted');
  const ref = await openReference(reluNet, m.lowered.inputName, m.lowered.inputShape);
  const ort = await ref.run(rows);
  await ref.close();
  const sims = rows.map((x) => simulatedScores(m, x));
  let simErr = 0;
  sims.forEach((s, i) => (simErr = Math.max(simErr, outputError(m.lowered.head, headOutputs(m.lowered.head, s), ort[i]))));
  const tolerance = statedTolerance(m.lowered.head, simErr, ort, sims);
  const some = rows.slice(0, 3);
  const run = await runEncryptedRecords(m.compiled, m.client, some);
  some.forEach((x, i) => {
    const sim = simulatedScores(m, x);
    const enc = run.scores[i];
    const d = Math.max(...enc.map((v, c) => Math.abs(v - sim[c])));
    t.ok(d < 2 ** -10 * Math.max(1, ...sim.map(Math.abs)), `record ${i}: encrypted - simulated ${d.toExponential(2)}`);
    const e = outputError(m.lowered.head, headOutputs(m.lowered.head, enc), ort[i]);
    t.ok(e <= tolerance, `record ${i}: encrypted - onnxruntime ${e.toExponential(2)} <= ${tolerance.toExponential(2)}`);
  });
  t.ok(run.keysBytes > 0 && run.queryBytes > 0, `keys ${run.keysBytes} B, query ${run.queryBytes} B`);
});

t.test(
  'compileOnnxJob (sealed compile): scikit-learn pipeline on breast cancer -> a bundle that loads, report inside, no weights in the client part',
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'sealed-onnx-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const onnx = new URL('../fixtures/onnx/sklearn_linear.onnx', import.meta.url).pathname;
    const csv = new URL('../../data/breast_cancer/breast_cancer.csv', import.meta.url).pathname;
    const lines: string[] = [];
    const { manifest, report } = await compileOnnxJob({ onnx, calibration: csv, modelDir: dir, verify: 3, limit: 200, log: (s) => lines.push(s) });
    t.match(lines.join('\n'), /compile report/);
    t.equal(report.accuracy.onnxruntime.records, 200);
    t.ok(report.accuracy.onnxruntime.accuracy! > 0.9, `onnxruntime accuracy ${report.accuracy.onnxruntime.accuracy}`);
    t.equal(report.accuracy.simulated.agreement, 1, 'linear: simulation agrees with onnxruntime on every record');
    t.equal(report.accuracy.encrypted?.records, 3);
    t.equal(report.accuracy.encrypted?.agreement, 1);
    t.ok(
      report.accuracy.encrypted!.max_abs_error <= report.accuracy.tolerance,
      `encrypted error ${report.accuracy.encrypted!.max_abs_error} within the stated tolerance ${report.accuracy.tolerance}`,
    );
    t.equal(report.params.security_bits, 128);
    t.equal(report.params.privacy, 'flood');
    t.ok(report.sizes.keys_bytes > 0 && report.sizes.query_bytes > 0 && report.latency.estimated_ms > 0);
    t.same(
      report.layers.map((l) => l.kind),
      ['linear'],
    );
    t.same(report.layers[0].onnx_nodes, ['scaler', 'linear_classifier'], 'Scaler and LinearClassifier became one affine map');

    const server = await readServerPart(dir);
    const { client, modelId } = await readClientPart(dir);
    t.equal(modelId, manifest.model_id);
    t.equal(server.privacy.single, 'flood');
    t.equal(client.task, 'binary');
    t.equal(client.postprocess.kind, 'sigmoid');
    t.same(client.features.slice(0, 2), ['mean_radius', 'mean_texture'], 'feature names from the CSV header');
    const stored = JSON.parse(await readFile(join(dir, 'server', 'compile-report.json'), 'utf8'));
    t.same(stored, JSON.parse(JSON.stringify(report)), 'the report is stored in the bundle');
    t.ok(manifest.files['server/compile-report.json'], 'and hashed in the manifest');
    // No weight in the client part: none of the score row's masks values appears in it.
    const clientText = await readFile(join(dir, 'client', 'model.json'), 'utf8');
    const weights = server.masks.flatMap((mk) => Array.from(mk).filter((v) => v !== 0 && Math.abs(v) > 1e-6)).slice(0, 30);
    t.ok(weights.length > 0);
    for (const w of weights) t.notOk(clientText.includes(String(w)), `weight ${w} not in the client part`);
  },
);

t.test('the x^2 MLP 784-128-64-10 fixture (two squares) compiles to ring 16384 with the flood, and agrees with onnxruntime encrypted', async (t) => {
  const fx = JSON.parse(await readFile(new URL('../fixtures/onnx/mlp_square.json', import.meta.url), 'utf8')) as { inputs: number[][] };
  const bytes = new Uint8Array(await readFile(new URL('../fixtures/onnx/mlp_square.onnx', import.meta.url)));
  const m = compileOnnx(bytes, fx.inputs);
  const p = m.compiled.program;
  t.equal(p.privacy, 'flood');
  t.equal(p.params.polyModulusDegree, 16384, `ring 16384 (chain ${p.params.coeffModulusBits.join('+')})`);
  t.ok(totalBits(p.params) <= MAX_BITS_128[16384], `${totalBits(p.params)} modulus bits within the 128-bit bound ${MAX_BITS_128[16384]}`);
  t.doesNotThrow(() => checkParams(p.params), '128-bit parameters');
  const ref = await openReference(bytes, m.lowered.inputName, m.lowered.inputShape);
  const ort = await ref.run(fx.inputs);
  await ref.close();
  // The tolerance the compile report states (report.ts): 1.5x the simulation's error plus 1e-3
  // of the largest score (the flood's error is 2^-12 of it, one standard deviation).
  const sims = fx.inputs.map((x) => simulatedScores(m, x));
  let simErr = 0;
  sims.forEach((s, i) => (simErr = Math.max(simErr, outputError(m.lowered.head, headOutputs(m.lowered.head, s), ort[i]))));
  const tolerance = statedTolerance(m.lowered.head, simErr, ort, sims);
  const some = fx.inputs.slice(0, 3);
  const run = await runEncryptedRecords(m.compiled, m.client, some);
  some.forEach((x, i) => {
    const e = outputError(m.lowered.head, headOutputs(m.lowered.head, run.scores[i]), ort[i]);
    t.ok(e <= tolerance, `record ${i}: encrypted - onnxruntime ${e.toExponential(2)} <= ${tolerance.toExponential(2)}`);
    t.equal(classOfScores(m.client, run.scores[i]), classOfOutputs(m.lowered.head, ort[i]), `record ${i}: encrypted class = onnxruntime's`);
  });
  // Baby steps by their binary digits, giant steps by Horner's rule: fewer keys, same rotations.
  t.ok(p.galoisSteps.length < rotationsOf(p.steps).length, `${p.galoisSteps.length} Galois keys for ${rotationsOf(p.steps).length} rotation steps`);
  t.ok(run.keysBytes <= 128 * 2 ** 20, `keys ${(run.keysBytes / 2 ** 20).toFixed(1)} MiB <= 128 MiB (issue 13's target)`);
});
