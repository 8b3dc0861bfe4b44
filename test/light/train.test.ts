// Training writes a verified bundle; all three linear model kinds evaluate correctly encrypted.
import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm, writeFile, mkdir, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runEncrypted } from '../helpers/encrypted.ts';
import { readClientPart, readServerPart } from '../../src/model/bundle.ts';
import { packRecords, unpackOutputs } from '../../src/model/layout.ts';
import { standardise } from '../../src/model/postprocess.ts';
import { simulate } from '../../src/model/simulate.ts';
import { parseCsv, splitTarget } from '../../src/train/csv.ts';
import { parseHyperparameters, train } from '../../src/train/train.ts';
import { trainBreastCancer } from '../helpers/fixture.ts';

const data = (p: string) => fileURLToPath(new URL(`../../data/${p}`, import.meta.url));

t.test('the bundle: verified on load, client part without weights', async (t) => {
  const tr = await trainBreastCancer();
  t.teardown(tr.cleanup);
  const manifest = JSON.parse(await readFile(join(tr.modelDir, 'sealed.json'), 'utf8'));
  t.equal(manifest.format, 'sealed-bundle');
  t.equal(manifest.version, 1);
  t.same(Object.keys(manifest.files).sort(), ['client/model.json', 'server/masks.bin', 'server/program.json']);
  const server = await readServerPart(tr.modelDir);
  const clientText = await readFile(join(tr.modelDir, 'client/model.json'), 'utf8');
  const weights = [...server.masks[0]].filter((v) => v !== 0).slice(0, 30);
  t.equal(weights.filter((w) => clientText.includes(String(w))).length, 0, 'no weight value appears in the client part');
  t.notMatch(clientText, /mask|weights/, 'no weights field in the client part');
  // Tampering is detected.
  const p = join(tr.modelDir, 'server/program.json');
  const orig = await readFile(p, 'utf8');
  await writeFile(p, orig.replace('"rescale":false', '"rescale":true'));
  await t.rejects(readServerPart(tr.modelDir), { code: 'bad-bundle', message: /does not match its hash/ });
  await writeFile(p, orig);
  // The client part stands alone (copied without the server part).
  const alone = join(tr.dir, 'client-only');
  await mkdir(alone);
  await copyFile(join(tr.modelDir, 'client/model.json'), join(alone, 'model.json'));
  const c = await readClientPart(alone);
  t.equal(c.modelId, manifest.model_id, 'same model id from the client part alone');
});

t.test('hyperparameters arrive as strings and are checked', async (t) => {
  const hp = parseHyperparameters({ epochs: '12', learning_rate: '0.5', task: 'binary' });
  t.equal(hp.epochs, 12);
  t.equal(hp.learningRate, 0.5);
  t.throws(() => parseHyperparameters({ epochs: 'many' }), { message: /epochs="many" is not a non-negative number/ });
  t.throws(() => parseHyperparameters({ task: 'ranking' }), { message: /task="ranking"/ });
});

t.test('bad training data gets a clear error', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-bad-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'train'));
  await writeFile(join(dir, 'train', 'd.csv'), 'a,b,y\n1,2,0\n3,x,1\n');
  await t.rejects(train({ trainDir: join(dir, 'train'), modelDir: join(dir, 'm') }, parseHyperparameters({})), {
    message: /line 3, column "b" is not a number/,
  });
  await t.rejects(train({ trainDir: join(dir, 'nothing'), modelDir: join(dir, 'm') }, parseHyperparameters({})), { message: /does not exist/ });
});

async function encryptedVsSimulated(t: Test, csv: string, hp: Record<string, string>) {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-kind-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'train'));
  await copyFile(csv, join(dir, 'train', 'data.csv'));
  const res = await train({ trainDir: join(dir, 'train'), modelDir: join(dir, 'model') }, parseHyperparameters(hp), () => {});
  const { client } = await readClientPart(join(dir, 'model'));
  const server = await readServerPart(join(dir, 'model'));
  const tab = splitTarget(parseCsv(await readFile(csv, 'utf8'), csv), client.target);
  const rows = tab.x.map((r) => standardise(r, client.preprocess));
  const vectors = packRecords(client.input, rows);
  const decoded = await runEncrypted(server.program, server.masks, vectors);
  const enc = unpackOutputs(client.output, client.input.recordsPerCiphertext, decoded, rows.length);
  const sim = unpackOutputs(
    client.output,
    client.input.recordsPerCiphertext,
    vectors.map((v) => simulate(server.program, server.masks, v)),
    rows.length,
  );
  const worst = Math.max(...enc.flatMap((e, i) => e.map((v, c) => Math.abs(v - sim[i][c]))));
  return { worst, res, client, enc, sim };
}

t.test('multiclass linear (iris): encrypted scores match the plaintext model', async (t) => {
  const r = await encryptedVsSimulated(t, data('iris/iris.csv'), { epochs: '200', learning_rate: '0.05', target: 'species' });
  t.equal(r.client.task, 'multiclass');
  t.equal(r.client.output.count, 3);
  t.ok(r.worst < 1e-4, `worst |encrypted - plaintext| ${r.worst.toExponential(2)} < 1e-4`);
  const argmax = (v: number[]) => v.indexOf(Math.max(...v));
  t.equal(r.enc.filter((e, i) => argmax(e) === argmax(r.sim[i])).length, r.enc.length, 'same class for every record');
  t.ok(r.res.metrics.train_accuracy > 0.9, `train accuracy ${r.res.metrics.train_accuracy}`);
});

t.test('linear regression (diabetes): encrypted predictions match the plaintext model', async (t) => {
  const r = await encryptedVsSimulated(t, data('diabetes/diabetes.csv'), { epochs: '100', task: 'regression', target: 'progression' });
  t.equal(r.client.postprocess.kind, 'affine');
  t.ok(r.worst < 1e-4, `worst |encrypted - plaintext| ${r.worst.toExponential(2)} < 1e-4 (standardised target)`);
  t.ok(r.res.metrics.train_rmse < 60, `train RMSE ${r.res.metrics.train_rmse} (target std ~77)`);
});
