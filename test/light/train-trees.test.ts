// `sealed train` with model=random_forest: ml-random-forest fits, the forest becomes a
// TreeEnsemble that must give the library's own predictions on every held-out record (the check
// that fails when the conversion is wrong: split rule, bootstrap column mapping, votes, leaf
// means), the bundle is a tree bundle whose client part holds no threshold, max_depth above the
// circuit's 4 is refused, and one encrypted batch gives the quantized model's classes.
import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BREAST_CANCER_CSV, splitCsv } from '../../src/cli/demo.ts';
import { parseCsv, splitTarget } from '../../src/train/csv.ts';
import { fitForest, forestOptions } from '../../src/train/trees.ts';
import { parseHyperparameters } from '../../src/train/job.ts';
import { forestToEnsemble, forestDepth, type FittedForest } from '../../src/model/trees/forest.ts';
import { predict, scores, predictionOf, type TreeEnsemble } from '../../src/model/trees/ensemble.ts';
import { compileTreeEnsemble } from '../../src/model/trees/compile.ts';
import { readTreeBundle } from '../../src/model/trees/bundle.ts';
import { binsOf, quantizedScores } from '../../src/model/trees/quantize.ts';
import { TreeClient } from '../../src/model/trees/query.ts';
import { TreeServer } from '../../src/model/trees/server.ts';
import { sealed } from '../helpers/cli.ts';
import { readRecords } from '../../src/cli/records.ts';

const HP = { model: 'random_forest', trees: '21', max_depth: '4', seed: '7', target: 'diagnosis' };

async function csv(file: string, target: string) {
  const s = splitTarget(parseCsv(await readFile(file, 'utf8'), file), target);
  return { features: s.features, x: s.x, y: s.y };
}

/** Fits as `sealed train` does, and converts. */
function fitted(x: number[][], y: number[], task: 'binary' | 'multiclass' | 'regression', classes: number, hp: Record<string, string>) {
  const o = forestOptions(parseHyperparameters(hp));
  const forest = fitForest(x, y, task, o);
  const ensemble = forestToEnsemble(forest as unknown as FittedForest, { task, features: x[0].length, classes });
  return { forest, ensemble, o };
}

/** Per-record vote fractions from the library's own per-tree predictions. */
function votes(forest: ReturnType<typeof fitForest>, rows: number[][], classes: number): number[][] {
  const per = forest.predictionValues(rows);
  return rows.map((_, i) => {
    const v = new Array<number>(classes).fill(0);
    for (const c of per.getRow(i)) v[c] += 1;
    return v.map((n) => n / per.columns);
  });
}

function sameAsLibrary(t: Test, e: TreeEnsemble, forest: ReturnType<typeof fitForest>, rows: number[][], classes: number, what: string) {
  const lib = forest.predict(rows);
  const ours = rows.map((r) => predict(e, r));
  const v = votes(forest, rows, classes);
  let worst = 0;
  // A binary forest of an odd tree count keeps one score: the vote fraction of class 1.
  const one = e.outputs === 1 && classes === 2;
  rows.forEach((r, i) => scores(e, r).forEach((s, k) => (worst = Math.max(worst, Math.abs(s - v[i][one ? 1 : k])))));
  t.ok(worst < 1e-12, `${what}: the scores are the library's vote fractions (largest difference ${worst})`);
  t.same(ours, lib, `${what}: the class the library predicts, on every one of ${rows.length} records`);
}

t.test('breast cancer: the converted forest predicts what ml-random-forest predicts', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-rf-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(dir, 'data'));
  const tr = await csv(join(trainDir, 'data.csv'), 'diagnosis');
  const te = await csv(join(testDir, 'data.csv'), 'diagnosis');
  const { forest, ensemble: e } = fitted(tr.x, tr.y, 'binary', 2, HP);
  t.equal(e.trees.length, 21);
  t.equal(e.outputs, 1, 'binary, 21 trees: one score (the vote fraction of class 1), half the circuit work of two');
  const even = fitted(tr.x, tr.y, 'binary', 2, { ...HP, trees: '4', max_depth: '2' });
  t.equal(even.ensemble.outputs, 2, 'an even tree count keeps both scores (two classes can tie; the file header says how ties go)');
  const ev = votes(even.forest, te.x, 2);
  t.ok(
    te.x.every((r, i) => scores(even.ensemble, r).every((s, k) => Math.abs(s - ev[i][k]) < 1e-12)),
    'four trees: both scores are the vote fractions',
  );
  t.ok(forestDepth(e) <= 4 && forestDepth(e) >= 3, `depth ${forestDepth(e)}: within the circuit's 4`);
  // The bootstrap draws columns with repeats: a tree that splits on column j of its subset splits
  // on the original column indexes[t][j], which is a different one for most trees.
  const remapped = (forest as unknown as FittedForest).indexes.filter((ix) => ix.some((c, j) => c !== j)).length;
  t.ok(remapped > 0, `${remapped} of 21 trees see their columns in another order`);
  sameAsLibrary(t, e, forest, te.x, 2, 'held-out records');
  sameAsLibrary(t, e, forest, tr.x, 2, 'training records');

  // `sealed train` (the same code the training container runs) writes a tree bundle of this
  // forest: compiled in process from the same fit, the model id is the same.
  const model = join(dir, 'model');
  const out = join(dir, 'out');
  const r = await sealed(['train', '--train', trainDir, '--model', model, '--output', out, ...Object.entries(HP).flatMap(([k, v]) => ['--set', `${k}=${v}`])]);
  t.equal(r.code, 0, r.stderr);
  const { client, server } = await readTreeBundle(model);
  const m = compileTreeEnsemble(e, tr.x, { features: tr.features, target: 'diagnosis' });
  t.equal(client.model_id, m.client.model_id, 'the bundle holds the forest fitted here');
  t.same(client.features, tr.features, 'feature names from the CSV header');
  // `sealed predict` reads the true labels of a test CSV by the target's name, to report accuracy.
  t.equal(client.target, 'diagnosis', 'the client part names the target column');
  const records = await readRecords(join(testDir, 'data.csv'), client);
  t.same(records.labels, te.y, 'predict reads the held-out labels from the target column');
  t.ok(server.circuit.groups.length > 0 || server.circuit.factored !== undefined, 'the server part holds the circuit');
  const metric = (name: string) => Number(new RegExp(`\\[metric\\] ${name}=([0-9.e-]+)`).exec(r.stdout)?.[1]);
  for (const name of ['test_accuracy', 'test_accuracy_simulated', 'test_agreement_simulated']) t.ok(metric(name) > 0, `${name}=${metric(name)} reported`);
  const libAcc = forest.predict(te.x).filter((p, i) => p === te.y[i]).length / te.x.length;
  t.equal(metric('test_accuracy'), Math.round(libAcc * 1e6) / 1e6, "test_accuracy is the library forest's");
  const qAcc = te.x.filter((x, i) => predictionOf(e, quantizedScores(m.quantized, binsOf(m.client.bins, x))) === te.y[i]).length / te.x.length;
  t.equal(metric('test_accuracy_simulated'), Math.round(qAcc * 1e6) / 1e6, "test_accuracy_simulated is the quantized model's");
  t.ok(qAcc >= libAcc - 0.02, `quantized ${qAcc.toFixed(4)} vs forest ${libAcc.toFixed(4)} on ${te.x.length} held-out records`);
  t.comment(`forest test accuracy ${libAcc.toFixed(4)}, quantized (${m.report.bits} bits) ${qAcc.toFixed(4)}`);
  const metrics = JSON.parse(await readFile(join(out, 'data', 'metrics.json'), 'utf8')) as Record<string, number>;
  t.equal(metrics.trees, 21);

  // No threshold or leaf value in the client part (as test/light/trees-import.test.ts checks imports).
  const text = await readFile(join(model, 'client', 'model.json'), 'utf8');
  // ml-cart's thresholds are midpoints of neighbouring values of a bootstrap sample, so one can
  // equal a value of the data itself (of any column), which the bins (the data's quantiles) may
  // hold: that is the calibration data's value, not the threshold. Any other threshold there leaks.
  const splits = e.trees.flatMap((tr) => Array.from(tr.threshold).flatMap((v, i) => (tr.left[i] >= 0 ? [{ v, f: tr.feature[i] }] : [])));
  t.ok(splits.length > 21, `${splits.length} thresholds`);
  const inText = splits.filter(({ v }) => text.includes(String(v)) && String(v).length > 6);
  const leaks = inText.filter(({ v }) => !client.bins.edges.some((es, g) => es.includes(v) && tr.x.some((r) => r[g] === v)));
  t.same(leaks, [], `no threshold appears in the client part (${inText.length} equal a quantile of the data)`);
  t.notOk(/groups|leaves|threshold|value/.test(Object.keys(JSON.parse(text) as object).join(',')), 'no model fields');
});

t.test('multiclass (iris) and regression (diabetes): votes and leaf means convert exactly', async (t) => {
  const iris = await csv(fileURLToPath(new URL('../../data/iris/iris.csv', import.meta.url)), 'species');
  const c = fitted(iris.x, iris.y, 'multiclass', 3, { model: 'random_forest', trees: '15', max_depth: '3', seed: '3' });
  t.equal(c.ensemble.outputs, 3);
  sameAsLibrary(t, c.ensemble, c.forest, iris.x, 3, 'iris');

  const dia = await csv(fileURLToPath(new URL('../../data/diabetes/diabetes.csv', import.meta.url)), 'progression');
  const r = fitted(dia.x, dia.y, 'regression', 1, { model: 'random_forest', trees: '10', max_depth: '3' });
  t.equal(r.ensemble.post, 'identity');
  const lib = r.forest.predict(dia.x);
  const worst = dia.x.reduce((w, x, i) => Math.max(w, Math.abs(predict(r.ensemble, x) - lib[i])), 0);
  t.ok(worst < 1e-9, `every value as the library computes it (largest difference ${worst})`);
  t.ok(new Set(lib).size > 10, 'the forest is not constant');
});

t.test('max_depth above the circuit limit, and bad tree hyperparameters, are refused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-rf-bad-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { trainDir } = await splitCsv(BREAST_CANCER_CSV, join(dir, 'data'));
  const model = join(dir, 'model');
  const r = await sealed([
    'train',
    '--train',
    trainDir,
    '--model',
    model,
    '--output',
    join(dir, 'out'),
    '--set',
    'model=random_forest',
    '--set',
    'max_depth=5',
  ]);
  t.equal(r.code, 2, 'bad input: exit 2');
  t.match(r.stderr, /max_depth=5 is deeper than the encrypted circuit evaluates/);
  t.match(r.stderr, /at most 4 splits/);
  t.match(r.stderr, /max_depth=4 or less/);
  t.notOk(existsSync(join(model, 'sealed.json')), 'no bundle written');
  t.match(await readFile(join(dir, 'out', 'failure'), 'utf8'), /max_depth=5/, 'the failure file says why');
  const refuse = (raw: Record<string, string>, re: RegExp) => t.throws(() => forestOptions(parseHyperparameters(raw)), re, JSON.stringify(raw));
  refuse({ max_depth: '0' }, /max_depth="0" is not a whole number from 1/);
  refuse({ trees: '2.5' }, /trees="2.5" is not a whole number/);
  refuse({ max_features: '1.5' }, /max_features="1.5" is neither a fraction/);
  refuse({ bits: '9' }, /bits="9"/);
  const o = await sealed(['train', '--train', trainDir, '--model', model, '--output', join(dir, 'out'), '--set', 'model=forest']);
  t.equal(o.code, 2);
  t.match(o.stderr, /model="forest" is not one of linear, random_forest/);
});

t.test('one encrypted batch gives the quantized forest’s class on every held-out record', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-rf-enc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(dir, 'data'));
  const tr = await csv(join(trainDir, 'data.csv'), 'diagnosis');
  const te = await csv(join(testDir, 'data.csv'), 'diagnosis');
  const { ensemble } = fitted(tr.x, tr.y, 'binary', 2, { ...HP, trees: '11', max_depth: '3' });
  // 3 bits keeps the query small (as test/trees-encrypted.test.ts does).
  const m = compileTreeEnsemble(ensemble, tr.x, { bits: 3 });
  const client = await TreeClient.open(m.client);
  const server = await TreeServer.open(m.server);
  t.teardown(() => {
    client.close();
    server.close();
  });
  const query = client.encryptQuery(te.x);
  const got = client.decryptResult(server.evaluate(query, client.keys()), query);
  const want = te.x.map((x) => predictionOf(ensemble, quantizedScores(m.quantized, binsOf(m.client.bins, x))));
  t.same(got.predictions, want, `every one of ${te.x.length} classes agrees`);
  const acc = want.filter((p, i) => p === te.y[i]).length / te.x.length;
  t.comment(`encrypted accuracy ${acc.toFixed(4)} (11 trees of depth 3, 3-bit quantization)`);
});
