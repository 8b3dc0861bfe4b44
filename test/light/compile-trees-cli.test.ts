// `sealed compile --trees` as a user runs it (subprocesses): the same bundle as the deprecated
// `sealed compile-trees`, which says it is deprecated; a label column left out as `sealed compile
// --onnx` leaves it out; an ONNX-ML forest given with --onnx compiled as a tree ensemble, saying
// so; options of the other kind of model, or two models, or none, refused with exit code 2.
import t from 'tap';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sealed } from '../helpers/cli.ts';
import { readTreeBundle } from '../../src/model/trees/bundle.ts';
import { treeOpCounts } from '../../src/fhe/tree-circuit.ts';
import { singleKeysBytesBound, singleMasksBytes, singleWorkerBytes } from '../../src/model/trees/single.ts';

const FIX = join(import.meta.dirname, '..', 'fixtures', 'trees');
const csv = (rows: number[][], extra?: { name: string; values: number[] }) =>
  [
    [...rows[0].map((_, j) => `f${j}`), ...(extra ? [extra.name] : [])].join(','),
    ...rows.map((r, i) => [...r, ...(extra ? [extra.values[i]] : [])].join(',')),
  ].join('\n') + '\n';

t.test('sealed compile --trees, the deprecated alias, and a forest given with --onnx', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-compile-trees-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bc = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][] };
  const xgb = join(FIX, 'breast-cancer.xgb.json');
  await writeFile(join(dir, 'train.csv'), csv(bc.train));
  await writeFile(join(dir, 'labelled.csv'), csv(bc.train, { name: 'label', values: bc.train.map((_, i) => i % 2) }));

  const viaCompile = await sealed(['compile', '--trees', xgb, '--calibration', join(dir, 'labelled.csv'), '--model', join(dir, 'a'), '--bits', '2', '--json']);
  t.equal(viaCompile.code, 0, viaCompile.stderr);
  const report = JSON.parse(viaCompile.stdout.trim().split('\n').at(-1)!) as {
    model_id: string;
    model: string;
    bits: number;
    features: number;
    target: string;
    circuit_form: string;
    operations_per_batch: Record<string, number>;
    estimated_batch_server_ms: number;
    unit_costs_ms: Record<string, number>;
    single_record: { keys_bytes_bound?: number; worker_bytes?: number; shared_bytes?: number };
  };
  t.equal(report.model, 'trees', 'the report names a tree model');
  const server = (await readTreeBundle(join(dir, 'a'))).server;
  t.match(
    report.single_record,
    { keys_bytes_bound: singleKeysBytesBound(server.single!), worker_bytes: singleWorkerBytes(server.single!), shared_bytes: singleMasksBytes(server.single!) },
    "the single-record form's keys, each worker's memory for it and the masks the workers share",
  );
  t.match(viaCompile.stderr, /its own keys, up to \d+ MB; each server worker holds \d+ MB for it and the workers share \d+ MB/, 'printed too');
  t.equal(report.circuit_form, server.circuit.factored ? 'factored' : 'grouped', "the report names the bundle's circuit form");
  t.same(report.operations_per_batch, treeOpCounts(server.circuit), "and the circuit's operations per batch");
  t.match(viaCompile.stderr, new RegExp(`${report.operations_per_batch.relinearize} relinearizations`), 'printed too');
  // The estimate is the counts times the unit costs measured at compile time (one flood per output).
  const u = report.unit_costs_ms;
  for (const op of ['load', 'multiply', 'multiplyPlain', 'relinearize', 'flood']) t.ok(u[op] > 0, `${op} timed: ${u[op]} ms`);
  const expected = Object.entries(report.operations_per_batch).reduce((acc, [op, n]) => acc + n * (u[op] ?? 0), u.flood);
  t.ok(
    Math.abs(report.estimated_batch_server_ms - expected) <= 1 + 1e-3 * expected,
    `estimate ${report.estimated_batch_server_ms} ms = counts x unit costs (${expected.toFixed(0)} ms)`,
  );
  t.match(viaCompile.stderr, /estimated on this machine: [0-9.]+ s server time per batch/, 'and printed');
  t.equal(report.bits, 2, 'at the bits asked');
  t.equal(report.target, 'label', 'the label column left out by default');
  t.equal(report.features, 30, 'the other 30 columns are the features');
  t.equal((await readTreeBundle(join(dir, 'a'))).client.model_id, report.model_id, 'the bundle holds the reported model');

  const viaAlias = await sealed(['compile-trees', '--trees', xgb, '--calibration', join(dir, 'train.csv'), '--model', join(dir, 'b'), '--bits', '2']);
  t.equal(viaAlias.code, 0, viaAlias.stderr);
  t.match(viaAlias.stderr, /`sealed compile-trees` is deprecated; use `sealed compile --trees/, 'the alias says it is deprecated');
  t.equal((await readTreeBundle(join(dir, 'b'))).client.model_id, report.model_id, 'and compiles the same model');

  // A scikit-learn forest exported by skl2onnx, given as users give any ONNX file.
  const digits = JSON.parse(await readFile(join(FIX, 'digits.data.json'), 'utf8')) as { train: number[][] };
  await writeFile(join(dir, 'digits.csv'), csv(digits.train.slice(0, 300)));
  const forest = join(FIX, 'digits-rf.onnx');
  const routed = await sealed([
    'compile',
    '--onnx',
    forest,
    '--calibration',
    join(dir, 'digits.csv'),
    '--model',
    join(dir, 'c'),
    '--bits',
    '2',
    '--no-single-record',
    '--json',
  ]);
  t.equal(routed.code, 0, routed.stderr);
  t.match(routed.stderr, /digits-rf\.onnx holds a TreeEnsembleClassifier: compiling it as a tree ensemble/, 'says where the file went');
  const routedReport = JSON.parse(routed.stdout.trim().split('\n').at(-1)!) as { model_id: string; source: string; outputs: number; single_record: unknown };
  t.equal(routedReport.source, 'onnx-ml', 'read as ONNX-ML');
  t.equal(routedReport.outputs, 10, "the forest's ten classes");
  const c = await readTreeBundle(join(dir, 'c'));
  t.equal(c.client.model_id, routedReport.model_id, 'a tree bundle');
  t.same(routedReport.single_record, { refused: 'left out by --no-single-record' }, '--no-single-record: the report says the form was left out');
  t.ok(c.client.single === undefined && c.server.single === undefined, 'and neither part holds it');

  const verify = await sealed(['compile', '--onnx', forest, '--calibration', join(dir, 'digits.csv'), '--model', join(dir, 'd'), '--verify', '5']);
  t.equal(verify.code, 2, 'a network-only option with a tree ensemble: exit 2');
  t.match(verify.stderr, /--verify applies to networks, and .*digits-rf\.onnx is a tree ensemble/, verify.stderr);

  const network = new URL('../fixtures/onnx/sklearn_linear.onnx', import.meta.url).pathname;
  const bits = await sealed(['compile', '--onnx', network, '--calibration', join(dir, 'train.csv'), '--model', join(dir, 'e'), '--bits', '3']);
  t.equal(bits.code, 2, '--bits with a network: exit 2');
  t.match(bits.stderr, /--bits applies to tree ensembles, and .*sklearn_linear\.onnx holds a network/, bits.stderr);
  const noSingle = await sealed(['compile', '--onnx', network, '--calibration', join(dir, 'train.csv'), '--model', join(dir, 'e'), '--no-single-record']);
  t.equal(noSingle.code, 2, '--no-single-record with a network: exit 2');
  t.match(noSingle.stderr, /--no-single-record applies to tree ensembles/, noSingle.stderr);

  const both = await sealed(['compile', '--onnx', network, '--trees', xgb, '--calibration', join(dir, 'train.csv'), '--model', join(dir, 'f')]);
  t.equal(both.code, 2, 'two models: exit 2');
  t.match(both.stderr, /--onnx and --trees both given/, both.stderr);
  const none = await sealed(['compile', '--calibration', join(dir, 'train.csv'), '--model', join(dir, 'g')]);
  t.equal(none.code, 2, 'no model: exit 2');
  t.match(none.stderr, /no model to compile[\s\S]*--onnx FILE .* or --trees FILE/, none.stderr);
});
