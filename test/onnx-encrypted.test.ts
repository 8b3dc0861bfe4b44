// ONNX models compiled and run encrypted (client encryption, the server's engine and flood,
// client decryption): the decrypted outputs equal the plaintext simulation, and match
// onnxruntime within the tolerance the compile report states. And `sealed compile`'s job end to
// end: the bundle it writes loads like `sealed train`'s, with the report inside and no weights in
// the client part.
import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readClientPart, readServerPart } from '../src/model/bundle.ts';
import { compileOnnx, headOutputs, outputError, simulatedScores } from '../src/model/onnx/compile.ts';
import { openReference } from '../src/model/onnx/reference.ts';
import { runEncryptedRecords } from '../src/model/onnx/verify.ts';
import { compileOnnxJob } from '../src/train/onnx-job.ts';

const fixture = async (name: string) => ({
  bytes: new Uint8Array(await readFile(new URL(`./fixtures/onnx/${name}.onnx`, import.meta.url))),
  fx: JSON.parse(await readFile(new URL(`./fixtures/onnx/${name}.json`, import.meta.url), 'utf8')) as { inputs: number[][] },
});

for (const [name, records] of [['mlp_square', 2], ['cnn3', 2]] as const)
  t.test(`${name}: encrypted = simulated (flood precision), and onnxruntime within the stated tolerance`, async (t) => {
    const { bytes, fx } = await fixture(name);
    const m = compileOnnx(bytes, fx.inputs);
    const rows = fx.inputs.slice(0, records);
    const run = await runEncryptedRecords(m.compiled, m.client, rows);
    const ref = await openReference(bytes, m.lowered.inputName, m.lowered.inputShape);
    const ort = await ref.run(rows);
    await ref.close();
    // The tolerance as the report states it (report.ts): 1.5 x the simulated error on calibration + 1e-3 x max(1, |output|).
    let simErr = 0, outMax = 1;
    fx.inputs.forEach((x) => {
      const s = simulatedScores(m, x);
      outMax = Math.max(outMax, ...s.map(Math.abs));
    });
    const ortAll = await (async () => {
      const r = await openReference(bytes, m.lowered.inputName, m.lowered.inputShape);
      const o = await r.run(fx.inputs);
      await r.close();
      return o;
    })();
    fx.inputs.forEach((x, i) => (simErr = Math.max(simErr, outputError(m.lowered.head, headOutputs(m.lowered.head, simulatedScores(m, x)), ortAll[i]))));
    const tolerance = 1.5 * simErr + 1e-3 * outMax;
    rows.forEach((x, i) => {
      const sim = simulatedScores(m, x);
      const enc = run.scores[i];
      const d = Math.max(...enc.map((v, c) => Math.abs(v - sim[c])));
      t.ok(d < 2 ** -10 * Math.max(1, ...sim.map(Math.abs)), `record ${i}: encrypted - simulated ${d.toExponential(2)}`);
      const e = outputError(m.lowered.head, headOutputs(m.lowered.head, enc), ort[i]);
      t.ok(e <= tolerance, `record ${i}: encrypted - onnxruntime ${e.toExponential(2)} <= ${tolerance.toExponential(2)}`);
    });
    t.ok(run.keysBytes > 0 && run.queryBytes > 0, `keys ${run.keysBytes} B, query ${run.queryBytes} B`);
  });

t.test('compileOnnxJob (sealed compile): scikit-learn pipeline on breast cancer -> a bundle that loads, report inside, no weights in the client part', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-onnx-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const onnx = new URL('./fixtures/onnx/sklearn_linear.onnx', import.meta.url).pathname;
  const csv = new URL('../data/breast_cancer/breast_cancer.csv', import.meta.url).pathname;
  const lines: string[] = [];
  const { manifest, report } = await compileOnnxJob({ onnx, calibration: csv, modelDir: dir, verify: 3, limit: 200, log: (s) => lines.push(s) });
  t.match(lines.join('\n'), /compile report/);
  t.equal(report.accuracy.onnxruntime.records, 200);
  t.ok(report.accuracy.onnxruntime.accuracy! > 0.9, `onnxruntime accuracy ${report.accuracy.onnxruntime.accuracy}`);
  t.equal(report.accuracy.simulated.agreement, 1, 'linear: simulation agrees with onnxruntime on every record');
  t.equal(report.accuracy.encrypted?.records, 3);
  t.equal(report.accuracy.encrypted?.agreement, 1);
  t.ok(report.accuracy.encrypted!.max_abs_error <= report.accuracy.tolerance, `encrypted error ${report.accuracy.encrypted!.max_abs_error} within the stated tolerance ${report.accuracy.tolerance}`);
  t.equal(report.params.security_bits, 128);
  t.equal(report.params.privacy, 'flood');
  t.ok(report.sizes.keys_bytes > 0 && report.sizes.query_bytes > 0 && report.latency.estimated_ms > 0);
  t.same(report.layers.map((l) => l.kind), ['linear']);
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
});
