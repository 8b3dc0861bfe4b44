// What `sealed train` accepts as data, and what it refuses: test columns matched by name, text
// class labels through to `predict`, CSV layouts, the help text, the progress of long trainings.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readClientPart } from '../../src/model/bundle.ts';
import { parseCsv } from '../../src/train/csv.ts';
import { parseHyperparameters, train } from '../../src/train/train.ts';
import { startStack } from '../helpers/fixture.ts';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../../bin/sealed.js', import.meta.url));
const SPECIES = ['setosa', 'versicolor', 'virginica'];

const dir = await mkdtemp(join(tmpdir(), 'sealed-data-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

// Iris, the species as names; every fifth record held out for testing.
const iris = (await readFile(fileURLToPath(new URL('../../data/iris/iris.csv', import.meta.url)), 'utf8'))
  .trim()
  .split('\n')
  .map((l) => l.split(','));
const header = iris[0];
const named = iris.slice(1).map((r) => [...r.slice(0, -1), SPECIES[Number(r.at(-1))]]);
const numbered = iris.slice(1);
const trainRows = (rows: string[][]) => rows.filter((_, i) => i % 5 !== 0);
const testRows = (rows: string[][]) => rows.filter((_, i) => i % 5 === 0);

/** A channel directory holding one CSV; `order`: the columns to write, by name. */
async function channel(name: string, rows: string[][], order = header): Promise<string> {
  const d = join(dir, name);
  await mkdir(d, { recursive: true });
  const idx = order.map((c) => header.indexOf(c));
  await writeFile(join(d, 'data.csv'), [order, ...rows.map((r) => idx.map((i) => r[i]))].map((r) => r.join(',')).join('\n') + '\n');
  return d;
}

const hp = (extra: Record<string, string> = {}) => parseHyperparameters({ epochs: '60', learning_rate: '0.05', target: 'species', ...extra });
const quiet = () => {};

t.test('the test channel is matched by column name, and a missing column is refused', async (t) => {
  const trainDir = await channel('num-train', trainRows(numbered));
  const inOrder = await train({ trainDir, testDir: await channel('num-test', testRows(numbered)), modelDir: join(dir, 'm1') }, hp(), quiet);
  t.ok(inOrder.metrics.test_accuracy > 0.8, `test accuracy ${inOrder.metrics.test_accuracy}`);
  const reversed = await train(
    { trainDir, testDir: await channel('num-test-rev', testRows(numbered), [...header].reverse()), modelDir: join(dir, 'm2') },
    hp(),
    quiet,
  );
  t.equal(reversed.metrics.test_accuracy, inOrder.metrics.test_accuracy, 'the same test records with the columns reversed score the same');
  const lacking = await channel('num-test-lacking', testRows(numbered), header.slice(1));
  await t.rejects(train({ trainDir, testDir: lacking, modelDir: join(dir, 'm3') }, hp(), quiet), {
    code: 'bad-data',
    message: /num-test-lacking\/data\.csv lacks the column sepal_length of the training data/,
    hint: /every column of the training data .*sepal_length, sepal_width, petal_length, petal_width, species/,
  });
  // As the user ran it: the command fails (exit 2) instead of reporting test_accuracy=0.
  const err = await run(process.execPath, [
    bin,
    'train',
    '--train',
    trainDir,
    '--test',
    lacking,
    '--model',
    join(dir, 'm4'),
    '--output',
    join(dir, 'out'),
    '--hyperparameters',
    join(dir, 'none.json'),
    '--set',
    'epochs=5',
    '--set',
    'target=species',
  ]).catch((e) => e);
  t.equal(err.code, 2, 'exit code 2');
  t.match(err.stderr, /lacks the column sepal_length/);
  t.match(err.stderr, /what to do: give it every column of the training data/);
  t.match(await readFile(join(dir, 'out', 'failure'), 'utf8'), /lacks the column sepal_length/, 'the SageMaker failure file says why');
});

t.test('a channel of several CSV files matches their columns by name', async (t) => {
  const d = await channel('multi', trainRows(numbered).slice(0, 60));
  const order = [header[4], header[2], header[0], header[3], header[1]];
  const rest = trainRows(numbered).slice(60);
  await writeFile(join(d, 'more.csv'), [order, ...rest.map((r) => order.map((c) => r[header.indexOf(c)]))].map((r) => r.join(',')).join('\n') + '\n');
  const res = await train({ trainDir: d, modelDir: join(dir, 'm-multi') }, hp(), quiet);
  t.ok(res.metrics.train_accuracy > 0.9, `train accuracy ${res.metrics.train_accuracy} over both files`);
  await writeFile(join(d, 'more.csv'), [header.slice(1), ...rest.map((r) => r.slice(1))].map((r) => r.join(',')).join('\n') + '\n');
  await t.rejects(train({ trainDir: d, modelDir: join(dir, 'm-multi2') }, hp(), quiet), { message: /more\.csv lacks the column sepal_length/ });
});

t.test('text class labels: sorted, or in the order of `labels`; other names refused', async (t) => {
  const trainDir = await channel('txt-train', trainRows(named));
  const testDir = await channel('txt-test', testRows(named));
  const sorted = await train({ trainDir, testDir, modelDir: join(dir, 'txt-sorted') }, hp(), quiet);
  const c1 = (await readClientPart(join(dir, 'txt-sorted'))).client;
  t.same(c1.labels, ['setosa', 'versicolor', 'virginica'], 'sorted names in the client part');
  t.equal(c1.task, 'multiclass');
  t.ok(
    sorted.metrics.train_accuracy > 0.9 && sorted.metrics.test_accuracy > 0.8,
    `accuracy train ${sorted.metrics.train_accuracy}, test ${sorted.metrics.test_accuracy}`,
  );
  await train({ trainDir, testDir, modelDir: join(dir, 'txt-given') }, hp({ labels: 'virginica,setosa,versicolor' }), quiet);
  t.same((await readClientPart(join(dir, 'txt-given'))).client.labels, ['virginica', 'setosa', 'versicolor'], 'the order given by labels');
  await t.rejects(train({ trainDir, modelDir: join(dir, 'txt-bad') }, hp({ labels: 'virginica,setosa' }), quiet), {
    message: /class "versicolor" in column "species", which is not among the labels virginica, setosa/,
    hint: /--set labels=/,
  });
  await t.rejects(train({ trainDir, modelDir: join(dir, 'txt-reg') }, hp({ task: 'regression' }), quiet), {
    message: /holds text \("setosa"\), and regression needs numbers/,
  });
  // Two names: a binary model, its labels in the client part.
  const two = await channel(
    'txt-two',
    trainRows(named).filter((r) => r[4] !== 'virginica'),
  );
  await train({ trainDir: two, modelDir: join(dir, 'txt-two-m') }, hp(), quiet);
  const c2 = (await readClientPart(join(dir, 'txt-two-m'))).client;
  t.equal(c2.task, 'binary');
  t.same(c2.labels, ['setosa', 'versicolor']);
  // A test class the model never saw.
  const odd = await channel('txt-odd', [...testRows(named).slice(0, 5), ['5.0', '3.0', '1.5', '0.2', 'iris-x']]);
  await t.rejects(train({ trainDir, testDir: odd, modelDir: join(dir, 'txt-odd-m') }, hp(), quiet), {
    message: /class "iris-x" .* not among the labels setosa, versicolor, virginica/,
  });
});

t.test('predict prints the text labels and scores them against a text target', async (t) => {
  const modelDir = join(dir, 'txt-sorted');
  const stack = await startStack(modelDir, join(dir, 'stack'), 1);
  t.teardown(() => stack.close());
  const input = join(dir, 'txt-test', 'data.csv');
  const env = { ...process.env, SEALED_HOME: join(dir, 'home'), SEALED_S3_ENDPOINT: stack.s3.endpoint };
  const out = join(dir, 'pred.csv');
  const r = await run(
    process.execPath,
    [
      bin,
      'predict',
      '--model',
      modelDir,
      '--input',
      input,
      '--endpoint',
      stack.server.url,
      '--bucket',
      stack.bucket,
      '--keys',
      join(dir, 'keys'),
      '--output',
      out,
      '--json',
    ],
    { env },
  );
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
  const lines = (await readFile(out, 'utf8')).trim().split('\n');
  t.equal(lines.length, testRows(named).length + 1);
  t.ok(
    lines.slice(1).every((l) => /^\d+,(setosa|versicolor|virginica),/.test(l)),
    'every prediction is a species name',
  );
  const metrics = JSON.parse(await readFile(join(modelDir, 'sealed.json'), 'utf8')).metrics;
  t.ok(
    Math.abs(summary.accuracy - metrics.test_accuracy) < 1e-6,
    `accuracy ${summary.accuracy} against the text labels, as in training (${metrics.test_accuracy})`,
  );
});

t.test('CSV layouts: a headerless file whose first record has a class name; a header with no records', async (t) => {
  const tab = parseCsv('5.1,3.5,setosa\n6.2,2.9,versicolor\n', 'x.csv');
  t.same(tab.columns, ['x0', 'x1', 'x2'], 'the first record is a record, not a header');
  t.equal(tab.rows.length, 2);
  t.same(tab.text.get('x2')?.cells, ['setosa', 'versicolor']);
  t.throws(() => parseCsv('a,b,species\n', 'h.csv'), { message: /h\.csv has a header row but no records/, hint: /add one record per line/ });
  const d = await channel('header-only', []);
  await t.rejects(train({ trainDir: d, modelDir: join(dir, 'm-h') }, hp(), quiet), { message: /has a header row but no records/ });
});

t.test('train --help says which data it takes', async (t) => {
  const r = await run(process.execPath, [bin, 'train', '--help']);
  const help = r.stdout.replace(/\s+/g, ' ');
  t.match(help, /--train <dir> training data .*CSV files/);
  t.match(help, /IDX pair \(…images-idx3-ubyte\[\.gz\] and …labels-idx1-ubyte\[\.gz\]\)/);
  t.match(help, /--test <dir> .*matched by name/);
});
