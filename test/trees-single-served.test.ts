// One tree-ensemble record served: the breast-cancer bundle's single-record form behind a real
// server (two workers: the gather in two parts, then the finish) and a real S3-compatible store.
// The record's prediction is the quantized model's; the single-record keys are not taken for a
// batch query nor the batch keys for a record; a record query of the wrong shape is refused;
// and the server still answers correctly afterwards.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../src/client/route.ts';
import { paramsKey } from '../src/fhe/params.ts';
import { FLOOD_PRECISION_BITS } from '../src/model/compile-batch.ts';
import { writeTreeBundle } from '../src/model/trees/bundle.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { predictionOf } from '../src/model/trees/ensemble.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { binsOf, quantizedScores } from '../src/model/trees/quantize.ts';
import { SingleTreeClient } from '../src/model/trees/single-query.ts';
import { startServer } from '../src/server/serve.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { formatS3Uri, ObjectStore } from '../src/storage/s3.ts';
import { decodeWire, encodeWire, type QueryHeader } from '../src/wire/format.ts';

const FIX = join(import.meta.dirname, 'fixtures', 'trees');
const run = promisify(execFile);
const bin = fileURLToPath(new URL('../bin/sealed.js', import.meta.url));

t.test('one record through /invocations: parts on two workers, the quantized prediction, refusals', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const dir = await mkdtemp(join(tmpdir(), 'sealed-trees-single-'));
  const modelDir = join(dir, 'model');
  const m = compileTreeModel(new Uint8Array(await readFile(join(FIX, 'breast-cancer.xgb.json'))), 'xgboost-json', d.train);
  await writeTreeBundle(modelDir, m.client, m.server);
  const s3 = await startLocalS3({ directory: join(dir, 's3') });
  const store = new ObjectStore({ endpoint: s3.endpoint });
  const bucket = 'sealed-test';
  await store.ensureBucket(bucket);
  // Each worker holds the form's plaintexts and one loaded key set (~338 MiB here): a budget
  // that has no room for them is refused at start, before a worker runs.
  await t.rejects(
    startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 2, s3Endpoint: s3.endpoint, allowAny: true, memoryBudget: 1200 * 2 ** 20 }),
    { code: 'bad-request', message: /leaves -?\d+ MiB for requests after 2 workers/ },
    'a memory budget without room for the single-record form in each worker',
  );
  const serverReady = startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 2, s3Endpoint: s3.endpoint, allowAny: true, deadlineMs: 600_000 });
  serverReady.catch(() => undefined);
  // The client's keys are made while the workers start.
  const client = await SingleTreeClient.open(m.client);
  const batchClient = await TreeClient.open(m.client);
  const keys = client.keys();
  const server = await serverReady;
  t.equal(server.pool.singleMasksBuilds, 1, "the two workers built the gather's masks once between them (shared memory)");
  t.teardown(async () => {
    client.close();
    batchClient.close();
    await server.close();
    store.close();
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  });
  const put = async (key: string, bytes: Uint8Array) => {
    await store.put({ bucket, key }, bytes, 'test object');
    return formatS3Uri({ bucket, key });
  };
  const post = async (query: Uint8Array, keysUri: string, name: string) => {
    const output = { bucket, key: `sealed/results/${name}.result` };
    const res = await fetch(`${server.url}/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        encrypted_query_uri: await put(`sealed/queries/${name}.query`, query),
        evaluation_keys_uri: keysUri,
        output_uri: formatS3Uri(output),
      }),
    });
    return { res, body: (await res.json()) as Record<string, unknown>, output };
  };
  const keysUri = await put(`sealed/keys/${sha256(keys)}.keys`, keys);
  const post1 = { post: m.ensemble.post, outputs: 1 };
  const precision = 2 ** -FLOOD_PRECISION_BITS * 9.15;

  const predict = async (record: number[], name: string) => {
    const query = client.encryptRecord(record);
    const { res, body, output } = await post(query, keysUri, name);
    t.equal(res.status, 200, `${name}: 200 (${JSON.stringify(body.message ?? body.timings_ms)})`);
    t.match(body, { layout: 'slots', records: 1, ciphertexts: 32, threads: 2 }, `${name}: one record, 32 ciphertexts, two threads`);
    const got = client.decryptResult((await store.get(output, 64 * 2 ** 20, 'result')).bytes, query);
    const want = quantizedScores(m.quantized, binsOf(m.client.bins, record))[0];
    t.ok(Math.abs(got.scores[0][0] - want) < 6 * precision, `${name}: score ${got.scores[0][0].toFixed(5)}, quantized ${want.toFixed(5)}`);
    t.equal(got.predictions[0], predictionOf(post1, [want]), `${name}: the quantized model's class`);
  };
  await predict(d.test[0], 'first');

  const query = client.encryptRecord(d.test[1]);
  const q = decodeWire<QueryHeader>('query', query, 'q');
  const batchKeys = batchClient.keys();
  const batchKeysUri = await put(`sealed/keys/${sha256(batchKeys)}.keys`, batchKeys);
  const refusals: [Uint8Array, string, number, RegExp, string][] = [
    [query, batchKeysUri, 422, /not made for this model's single-record form/, 'the batch keys for a record'],
    [
      encodeWire('query', q.header, q.sections.slice(1)),
      keysUri,
      422,
      /declares 1 record in 31 ciphertexts; a single-record query holds 1 record in 32/,
      'a copy left out',
    ],
    [encodeWire('query', { ...q.header, records: 3 }, q.sections), keysUri, 422, /declares 3 records/, 'three records declared'],
    [encodeWire('query', { ...q.header, params: 'other' }, q.sections), keysUri, 422, /other encryption parameters/, 'other parameters'],
  ];
  for (const [bytes, uri, status, message, what] of refusals) {
    const { res, body } = await post(bytes, uri, 'refused');
    t.equal(res.status, status, `${what}: ${status}`);
    t.match(String(body.message), message, `${what}: ${String(body.message)}`);
  }
  // A batch query with the single-record keys: refused before a worker loads a section (these are filler).
  const filler = Array.from({ length: m.client.inputs }, () => new Uint8Array(80).fill(7));
  const batchQuery = encodeWire<QueryHeader>('query', { model_id: m.client.model_id, params: paramsKey(m.client.params), records: 1, layout: 'batch' }, filler);
  const { res, body } = await post(batchQuery, keysUri, 'batch-with-record-keys');
  t.equal(res.status, 422, 'the single-record keys for a batch query: 422');
  t.match(String(body.message), /single-record form, and the query is a batch/, String(body.message));

  await predict(d.test[2], 'after-refusals');

  // `sealed predict` with one record takes the single-record form, with a key set of its own.
  const csv = (rows: number[][]) => [rows[0].map((_, j) => `f${j}`).join(','), ...rows.map((r) => r.join(','))].join('\n') + '\n';
  await writeFile(join(dir, 'one.csv'), csv([d.test[3]]));
  const env = { ...process.env, SEALED_HOME: join(dir, 'home'), SEALED_S3_ENDPOINT: s3.endpoint, SEALED_PASSPHRASE: '' };
  const args = [
    bin,
    'predict',
    '--model',
    modelDir,
    '--input',
    join(dir, 'one.csv'),
    '--format',
    'json',
    '--endpoint',
    server.url,
    '--bucket',
    bucket,
    '--json',
  ];
  const cli = await run(process.execPath, args, { env, maxBuffer: 1 << 20 });
  const summary = JSON.parse(cli.stdout.trim().split('\n').at(-1)!) as { layout: string; query_bytes: number; keys_created: boolean; server_threads: number };
  t.match(summary, { layout: 'slots', keys_created: true, server_threads: 2 }, `sealed predict, one record: layout slots (${JSON.stringify(summary)})`);
  t.ok(summary.query_bytes < 40e6, `a query of ${(summary.query_bytes / 1e6).toFixed(1)} MB, not a batch's hundreds`);
  const keyset = JSON.parse(await readFile(join(dir, 'home', 'keys', m.client.model_id, 'single', 'keyset.json'), 'utf8')) as { params: string };
  t.equal(keyset.params, paramsKey(m.client.single!.params), "its key set is kept beside the batch one, at the form's parameters");
});
