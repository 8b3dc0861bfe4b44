// `sealed compile` as a user runs it: a real subprocess. A supported model writes a bundle and
// prints its report; an unsupported one exits 2 naming the node, its operator and what to change.
import t from 'tap';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sealed } from '../helpers/cli.ts';
import { buildModel } from '../helpers/onnx-build.ts';

t.test('sealed compile: scikit-learn pipeline -> bundle and report (JSON on stdout)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-compile-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const onnx = new URL('../fixtures/onnx/sklearn_linear.onnx', import.meta.url).pathname;
  const csv = new URL('../../data/breast_cancer/breast_cancer.csv', import.meta.url).pathname;
  const r = await sealed(['compile', '--onnx', onnx, '--calibration', csv, '--model', join(dir, 'model'), '--limit', '100', '--json']);
  t.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!);
  t.equal(report.format, 'sealed-compile-report');
  t.equal(report.accuracy.simulated.records, 100);
  t.match(r.stderr, /compile report: sklearn_linear.onnx/);
  const manifest = JSON.parse(await readFile(join(dir, 'model', 'sealed.json'), 'utf8'));
  t.ok(manifest.metrics.accuracy_onnxruntime > 0.9);
  t.ok(manifest.files['server/compile-report.json']);
});

t.test('sealed compile: an unsupported operator exits 2 with the node, the operator and what to do', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-compile-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const onnx = join(dir, 'maxpool.onnx');
  await writeFile(
    onnx,
    buildModel({
      inputs: [['x', ['N', 1, 4, 4]]],
      outputs: [['y', ['N', 1, 2, 2]]],
      nodes: [{ op: 'MaxPool', inputs: ['x'], outputs: ['y'], name: 'pool1', attrs: { kernel_shape: [2, 2], strides: [2, 2] } }],
    }),
  );
  const csv = join(dir, 'cal.csv');
  await writeFile(csv, Array.from({ length: 5 }, (_, i) => Array.from({ length: 16 }, (_, j) => (i + j) / 20).join(',')).join('\n') + '\n');
  const r = await sealed(['compile', '--onnx', onnx, '--calibration', csv, '--model', join(dir, 'model')]);
  t.equal(r.code, 2);
  t.match(r.stderr, /error: node pool1 \(MaxPool\)/);
  t.match(r.stderr, /what to do: .*AveragePool/);
  const missing = await sealed(['compile', '--onnx', onnx, '--calibration', join(dir, 'nope.csv'), '--model', join(dir, 'model')]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /cannot read .*nope.csv/);
});
