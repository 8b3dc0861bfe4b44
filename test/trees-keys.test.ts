// Tree-ensemble key sets are kept like the other models' (~/.sealed/keys/<model id>): two
// `sealed predict` runs (child processes) on one tree bundle share the secret key, the second
// finds its evaluation keys already uploaded and gets the same classes; the secret key is stored
// encrypted when a passphrase is given, and a wrong passphrase is refused. `sealed keys list`
// shows the set. A 2-bit quantization keeps the query small (90 inputs for 30 features), and the
// first 8 trees of the breast-cancer model each evaluation short.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readClientPart } from '../src/model/bundle.ts';
import { readTreeBundle } from '../src/model/trees/bundle.ts';
import { isProtected, passphraseSource } from '../src/client/passphrase.ts';
import { openSingleTreeClient, openTreeClient } from '../src/client/predict-trees.ts';
import { keygenTreesCommand } from '../src/cli/predict-trees.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { ObjectStore } from '../src/storage/s3.ts';
import { startServer } from '../src/server/serve.ts';
import { create as createTar } from 'tar';
import { writeFirstTrees } from './helpers/trees.ts';

const FIX = join(import.meta.dirname, 'fixtures', 'trees');
const run = promisify(execFile);
const bin = fileURLToPath(new URL('../bin/sealed.js', import.meta.url));
const csv = (rows: number[][]) => [rows[0].map((_, j) => `f${j}`).join(','), ...rows.map((r) => r.join(','))].join('\n') + '\n';

t.test('two predict runs on a tree bundle share one saved key set', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const dir = await mkdtemp(join(tmpdir(), 'sealed-trees-keys-'));
  const modelDir = join(dir, 'model');
  const home = join(dir, 'home');
  await writeFile(join(dir, 'train.csv'), csv(d.train));
  await writeFile(join(dir, 'test.csv'), csv(d.test.slice(0, 40)));
  // Batches of 8,192 records each starting with those 40, the last holding only them: three for
  // the first run, two for the second.
  const batches = (n: number) => csv(Array.from({ length: (n - 1) * 8192 + 40 }, (_, i) => d.test[i % 8192 < 40 ? i % 8192 : i % 40]));
  await writeFile(join(dir, 'three-batches.csv'), batches(3));
  await writeFile(join(dir, 'two-batches.csv'), batches(2));
  await writeFile(join(dir, 'pass'), 'correct horse battery staple\n');
  await writeFile(join(dir, 'wrong'), 'not the passphrase\n');
  // The subject is the key set, not the model: 8 of the 50 trees keep each evaluation short.
  const xgb = join(dir, 'model.xgb.json');
  await writeFirstTrees(join(FIX, 'breast-cancer.xgb.json'), xgb, 8);
  const s3 = await startLocalS3({ directory: join(dir, 's3') });
  const env = { ...process.env, SEALED_HOME: home, SEALED_S3_ENDPOINT: s3.endpoint, SEALED_PASSPHRASE: '' };
  await run(process.execPath, [bin, 'compile', '--trees', xgb, '--calibration', join(dir, 'train.csv'), '--model', modelDir, '--bits', '2'], { env });
  const modelId = (await readTreeBundle(modelDir)).client.model_id;
  await t.rejects(
    readClientPart(modelDir),
    /holds a tree-ensemble model, which this client does not read/,
    "the network client's reader refuses a tree model by name",
  );
  const store = new ObjectStore({ endpoint: s3.endpoint });
  const bucket = 'sealed-test';
  await store.ensureBucket(bucket);
  // Four workers (on however many cores): the first run's three batches go to a thread each, the
  // second run's two batches are cut into two parts each (src/server/invoke-trees.ts).
  const serverReady = startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 4, s3Endpoint: s3.endpoint, allowAny: true, deadlineMs: 600_000 });
  // The bundle as SageMaker training writes it: model.tar.gz with the files at its root.
  const archive = join(dir, 'model.tar.gz');
  await createTar({ gzip: true, file: archive, cwd: modelDir }, ['sealed.json', 'client', 'server']);
  const server = await serverReady;
  t.teardown(async () => {
    await server.close();
    store.close();
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  });

  const predict = async (n: number, passFile: string, model = modelDir, input = 'test.csv') => {
    const output = join(dir, `predictions-${n}.jsonl`);
    const args = [bin, 'predict', '--model', model, '--input', join(dir, input), '--output', output, '--format', 'json'];
    const cli = await run(process.execPath, [...args, '--endpoint', server.url, '--bucket', bucket, '--passphrase-file', passFile, '--json'], {
      env,
      maxBuffer: 1 << 20,
    });
    const summary = JSON.parse(cli.stdout.trim().split('\n').at(-1)!) as {
      model: string;
      keys_uploaded: boolean;
      keys_created: boolean;
      server_threads?: number;
    };
    const labels = (await readFile(output, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => String((JSON.parse(l) as { label: number | string }).label));
    return { summary, labels };
  };

  // What does not depend on the predict runs' key set (`sealed keygen` into its own directory, no
  // server) runs while the server evaluates: started here, checked in order below.
  const part = (await readTreeBundle(modelDir)).client;
  const fromS3 = join(dir, 'keygen-s3');
  const kgS3Run = store
    .put({ bucket, key: 'models/model.tar.gz' }, new Uint8Array(await readFile(archive)), 'model archive')
    .then(() => run(process.execPath, [bin, 'keygen', '--model', `s3://${bucket}/models/model.tar.gz`, '--keys', fromS3], { env }));
  const firstRun = predict(1, join(dir, 'pass'), modelDir, 'three-batches.csv');
  // What keygen wrote, as predict opens it (no passphrase: SEALED_PASSPHRASE is empty).
  const keygenSets = kgS3Run.then(async () => {
    const saved = JSON.parse(await readFile(join(fromS3, 'keyset.json'), 'utf8')) as { model_id: string; evaluation_keys_id: string };
    const secretProtected = isProtected(new Uint8Array(await readFile(join(fromS3, 'secret.key'))));
    const opened = await openTreeClient(part, fromS3, passphraseSource({ env: {} }));
    opened.client.close();
    const single = await openSingleTreeClient(part, fromS3, passphraseSource({ env: {} }));
    single.client.close();
    return { saved, secretProtected, opened, single };
  });
  for (const p of [kgS3Run, keygenSets]) p.catch(() => undefined);
  const first = await firstRun;
  t.equal(first.summary.model, 'trees', 'a tree model');
  t.equal(first.summary.keys_created, true, 'the first run made the key set');
  t.equal(first.summary.keys_uploaded, true, 'and uploaded its evaluation keys');
  const keysDir = join(home, 'keys', modelId);
  const info = JSON.parse(await readFile(join(keysDir, 'keyset.json'), 'utf8')) as { model_id: string };
  t.equal(info.model_id, modelId, 'saved under ~/.sealed/keys/<model id>');
  t.equal((await stat(join(keysDir, 'secret.key'))).mode & 0o777, 0o600, 'secret.key is mode 0600');
  t.ok(isProtected(new Uint8Array(await readFile(join(keysDir, 'secret.key')))), 'the passphrase given encrypts the secret key');

  // The second run, the wrong passphrase and `keys list` only read the saved key set: at once.
  const secondRun = predict(2, join(dir, 'pass'), archive, 'two-batches.csv');
  const wrongRun = predict(3, join(dir, 'wrong')).then(
    () => undefined,
    (e: { code?: number; stderr?: string }) => e,
  );
  const listRun = run(process.execPath, [bin, 'keys', 'list', '--json'], { env });
  listRun.catch(() => undefined);
  const second = await secondRun;
  t.equal(second.summary.model, 'trees', 'model.tar.gz holds the same tree model');
  t.equal(second.summary.keys_created, false, 'the second run reuses the key set');
  t.equal(second.summary.keys_uploaded, false, 'its evaluation keys were already uploaded');
  t.equal(second.labels.length, 8192 + 40, 'a prediction per record');
  const forty = first.labels.slice(0, 40);
  t.same([first.labels.slice(8192, 8232), first.labels.slice(16384)], [forty, forty], "the first run's batches, in order");
  t.same([second.labels.slice(0, 40), second.labels.slice(8192)], [forty, forty], 'the same predictions in the second run, in order');
  t.equal(first.summary.server_threads, 3, "the first run's three batches went to a thread each");
  t.equal(second.summary.server_threads, 4, "the second run's two batches were cut into two parts each");

  const wrong = await wrongRun;
  t.equal(wrong?.code, 2, 'a wrong passphrase: exit code 2');
  t.match(wrong?.stderr ?? '', /wrong passphrase/, 'saying so');

  const list = await listRun;
  t.ok(
    (JSON.parse(list.stdout) as { model_id: string }[]).some((k) => k.model_id === modelId),
    '`sealed keys list` shows the tree key set',
  );

  // `sealed keygen` for a tree bundle (keygenTreesCommand; client.ts dispatches to it): a clear
  // key set that predict then opens instead of making one.
  const { saved, secretProtected, opened, single } = await keygenSets;
  t.equal(saved.model_id, modelId, 'keygen wrote a key set for the tree model');
  t.notOk(secretProtected, 'in the clear without a passphrase');
  t.equal(opened.created, false, 'predict opens it');
  t.equal(opened.keys.evaluationKeysId, saved.evaluation_keys_id, 'with its evaluation keys');
  t.ok(part.single, 'the bundle has a single-record form');
  const savedSingle = JSON.parse(await readFile(join(fromS3, 'single', 'keyset.json'), 'utf8')) as { model_id: string; evaluation_keys_id: string };
  t.equal(savedSingle.model_id, modelId, "keygen also wrote the single-record form's key set, in single/");
  t.equal(single.created, false, 'a one-record predict opens it instead of making one');
  t.equal(single.keys.evaluationKeysId, savedSingle.evaluation_keys_id, 'with its evaluation keys');
  t.not(savedSingle.evaluation_keys_id, saved.evaluation_keys_id, 'keys of its own (its own parameters)');

  // keygen where predict left a batch key set only: it adds the single-record set beside it and
  // leaves the batch set alone; run again, it has nothing to do.
  const batchSet = await readFile(join(keysDir, 'keyset.json'), 'utf8');
  await keygenTreesCommand(part, { keys: keysDir });
  t.equal(await readFile(join(keysDir, 'keyset.json'), 'utf8'), batchSet, 'keygen keeps the batch key set predict made');
  const added = JSON.parse(await readFile(join(keysDir, 'single', 'keyset.json'), 'utf8')) as { model_id: string };
  t.equal(added.model_id, modelId, 'and adds the single-record set in single/');
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(' '));
  try {
    await keygenTreesCommand(part, { keys: keysDir });
  } finally {
    console.log = log;
  }
  t.match(lines.join('\n'), /already exists/, 'a third keygen finds both sets and makes none');

  // The archive as an s3:// object: `sealed keygen` reads the client part from it and makes a tree key set.
  const kgS3 = await kgS3Run;
  t.match(kgS3.stdout + kgS3.stderr, `keys for tree model ${modelId}`, 'keygen reports a tree model key set');
  t.match(kgS3.stdout, 'keys for one record (the single-record form)', "and the single-record form's");
  const savedS3 = JSON.parse(await readFile(join(fromS3, 'keyset.json'), 'utf8')) as { model_id: string; params: string };
  t.equal(savedS3.model_id, modelId, 'keygen on s3://…/model.tar.gz made a key set for the tree model');
});
