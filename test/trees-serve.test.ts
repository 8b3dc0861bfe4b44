// A tree-ensemble bundle served end to end: the first 8 trees of the breast-cancer XGBoost fixture
// compiled into a bundle by `sealed compile-trees`, a real server (worker pool, embedded S3), predictions by
// `sealed predict` (predictTrees: keys uploaded content-addressed, query in S3, result
// decrypted): every held-out record gets the quantized plaintext model's class. Wrong-model queries and bad keys are refused with a 4xx,
// and the server keeps serving. One batch of 114 records at 3 bits (~130 MB query) keeps it short.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFirstTrees } from './helpers/trees.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { readTreeBundle } from '../src/model/trees/bundle.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { binsOf, quantizedScores } from '../src/model/trees/quantize.ts';
import { predictionOf } from '../src/model/trees/ensemble.ts';
import { sha256 } from '../src/client/route.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { formatS3Uri, ObjectStore } from '../src/storage/s3.ts';
import { startServer } from '../src/server/serve.ts';
import { singleMasksBytes, singleWorkerBytes } from '../src/model/trees/single.ts';
import { MiB, splitBudget } from '../src/server/budget.ts';
import { paramsKey } from '../src/fhe/params.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader } from '../src/wire/format.ts';

const FIX = join(import.meta.dirname, 'fixtures', 'trees');
const run = promisify(execFile);
const bin = fileURLToPath(new URL('../bin/sealed.js', import.meta.url));
const csv = (rows: number[][]) => [rows[0].map((_, j) => `f${j}`).join(','), ...rows.map((r) => r.join(','))].join('\n') + '\n';

t.test('a tree bundle served: encrypted predictions, refusals, still serving', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const dir = await mkdtemp(join(tmpdir(), 'sealed-trees-serve-'));
  const modelDir = join(dir, 'model');
  await writeFile(join(dir, 'train.csv'), csv(d.train));
  await writeFile(join(dir, 'test.csv'), csv(d.test));
  // The subject is serving, not the model: 8 of the 50 trees keep the evaluation short.
  const xgb = join(dir, 'model.xgb.json');
  await writeFirstTrees(join(FIX, 'breast-cancer.xgb.json'), xgb, 8);
  const s3 = await startLocalS3({ directory: join(dir, 's3') });
  const env = { ...process.env, SEALED_HOME: join(dir, 'home'), SEALED_S3_ENDPOINT: s3.endpoint };
  await run(process.execPath, [bin, 'compile-trees', '--trees', xgb, '--calibration', join(dir, 'train.csv'), '--model', modelDir, '--bits', '3'], { env });
  // The same compile in process: the quantized model the encrypted circuit must match.
  const m = compileTreeModel(new Uint8Array(await readFile(xgb)), 'xgboost-json', d.train, { bits: 3 });
  t.equal((await readTreeBundle(modelDir)).client.model_id, m.client.model_id, 'compile-trees wrote this model');
  const store = new ObjectStore({ endpoint: s3.endpoint });
  const bucket = 'sealed-test';
  await store.ensureBucket(bucket);
  // Two workers: the query's one batch is cut into a part per thread (invoke-trees.ts); a deadline
  // past one batch's evaluation on a loaded 2-core VM. A memory budget leaving ~220 MiB for
  // requests after the two workers (budget.ts), each also holding the bundle's single-record
  // form (singleWorkerBytes), and the masks they share (singleMasksBytes): a query fits, a
  // larger object does not.
  const workerModel = m.server.single ? singleWorkerBytes(m.server.single) : 0;
  const sharedModel = m.server.single ? singleMasksBytes(m.server.single) : 0;
  const requests = splitBudget({ workers: 2, budget: 1033 * MiB }).requests;
  let memoryBudget = 1033 * MiB + 2 * workerModel + sharedModel;
  while (splitBudget({ workers: 2, budget: memoryBudget, workerModel, sharedModel }).requests < requests) memoryBudget += MiB;
  const serverReady = startServer({
    modelDir,
    port: 0,
    host: '127.0.0.1',
    workers: 2,
    s3Endpoint: s3.endpoint,
    allowAny: true,
    deadlineMs: 600_000,
    memoryBudget,
  });
  // The client's keys are made while the server's worker warms up.
  serverReady.catch(() => undefined);
  const client = await TreeClient.open(m.client);
  const server = await serverReady.catch((e: unknown) => {
    client.close();
    throw e;
  });
  t.teardown(async () => {
    client.close();
    await server.close();
    store.close();
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  });
  const post = (body: unknown) =>
    fetch(`${server.url}/invocations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const put = async (key: string, bytes: Uint8Array) => {
    const loc = { bucket, key };
    await store.put(loc, bytes, 'test object');
    return formatS3Uri(loc);
  };
  const refused = async (res: Response, status: number, re: RegExp, what: string) => {
    const body = (await res.json()) as { message?: string };
    t.equal(res.status, status, `${what}: ${status}`);
    t.match(body.message ?? '', re, `${what}: ${body.message}`);
  };

  const keys = client.keys();
  const keysUri = await put(`sealed/keys/${sha256(keys)}.keys`, keys);
  const params = paramsKey(m.client.params);
  const fake = (n: number) => Array.from({ length: n }, () => new Uint8Array(80).fill(7));
  const out = formatS3Uri({ bucket, key: 'sealed/results/refused.result' });

  // Another model's query: refused from its header, before anything is evaluated (both forms).
  const other = encodeWire<QueryHeader>('query', { model_id: 'f'.repeat(32), params, records: 1, layout: 'batch' }, fake(m.client.inputs));
  await refused(
    await post({ encrypted_query_uri: await put('sealed/queries/other.query', other), evaluation_keys_uri: keysUri, output_uri: out }),
    409,
    /encrypted for model f+/,
    'a query for another model',
  );
  const asBody = await fetch(`${server.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', 'x-amzn-sagemaker-custom-attributes': `keys=${keysUri}` },
    body: other as Uint8Array<ArrayBuffer>,
  });
  await refused(asBody, 409, /encrypted for model f+/, 'a query for another model, as the body');
  // This model's header, a ciphertext short.
  const short = encodeWire<QueryHeader>('query', { model_id: m.client.model_id, params, records: 1, layout: 'batch' }, fake(m.client.inputs - 1));
  await refused(
    await post({ encrypted_query_uri: await put('sealed/queries/short.query', short), evaluation_keys_uri: keysUri, output_uri: out }),
    422,
    /reads \d+ per batch/,
    'a ciphertext short',
  );
  // No keys named.
  const shaped = encodeWire<QueryHeader>('query', { model_id: m.client.model_id, params, records: 1, layout: 'batch' }, fake(m.client.inputs));
  const shapedUri = await put('sealed/queries/shaped.query', shaped);
  await refused(await post({ encrypted_query_uri: shapedUri, output_uri: out }), 400, /needs evaluation keys/, 'no keys');
  // Keys with a Galois section (a network's): refused by the KeyStore.
  const k = decodeWire<KeysHeader>('keys', keys, 'k');
  const galois = encodeWire<KeysHeader>('keys', { ...k.header, galois_steps: [1] }, [new Uint8Array(64), ...k.sections]);
  await refused(
    await post({ encrypted_query_uri: shapedUri, evaluation_keys_uri: await put(`sealed/keys/${sha256(galois)}.keys`, galois), output_uri: out }),
    422,
    /hold rotations/,
    'keys with rotations',
  );
  // Truncated relinearization keys: well-formed on the wire, refused by the worker's precheck.
  const truncated = encodeWire<KeysHeader>('keys', k.header, [k.sections[0].slice(0, 64), k.sections[1]]);
  await refused(
    await post({ encrypted_query_uri: shapedUri, evaluation_keys_uri: await put(`sealed/keys/${sha256(truncated)}.keys`, truncated), output_uri: out }),
    422,
    /relinearization keys/,
    'truncated relinearization keys',
  );
  // Keys whose object is not what its hash-name says.
  await refused(
    await post({ encrypted_query_uri: shapedUri, evaluation_keys_uri: await put(`sealed/keys/${'0'.repeat(64)}.keys`, keys), output_uri: out }),
    422,
    /not the object their name says/,
    'keys under another hash',
  );
  // Memory: the whole query is reserved before it is read; too large for the budget is a 400,
  // larger than what is free now a 503 (its bytes are never downloaded).
  const budget = server.memory.budgetInUse;
  const huge = await put('sealed/queries/huge.query', new Uint8Array(budget.capacity + 2 ** 20));
  await refused(
    await post({ encrypted_query_uri: huge, evaluation_keys_uri: keysUri, output_uri: out }),
    400,
    /more than this server's request budget/,
    'a query larger than the request memory',
  );
  const held = budget.reserve(budget.capacity - 8 * 2 ** 20, 'the test');
  const mid = await put('sealed/queries/mid.query', new Uint8Array(16 * 2 ** 20));
  const busy = await post({ encrypted_query_uri: mid, evaluation_keys_uri: keysUri, output_uri: out });
  t.ok(busy.headers.get('retry-after') !== null, '503 says when to retry');
  await refused(busy, 503, /memory for requests is in use/, 'a query while the request memory is in use');
  held.release();
  t.equal(budget.reserved, 0, 'refused requests hold no memory');

  // Still serving: the held-out records, encrypted by `sealed predict`, through S3 and the worker.
  const output = join(dir, 'predictions.jsonl');
  const cli = await run(
    process.execPath,
    [
      bin,
      'predict',
      '--model',
      modelDir,
      '--input',
      join(dir, 'test.csv'),
      '--output',
      output,
      '--format',
      'json',
      '--endpoint',
      server.url,
      '--bucket',
      bucket,
      '--json',
    ],
    { env, maxBuffer: 1 << 20 },
  );
  const summary = JSON.parse(cli.stdout.trim().split('\n').at(-1)!) as {
    model: string;
    records: number;
    query_bytes: number;
    keys_uploaded: boolean;
    server_threads?: number;
  };
  const got = (await readFile(output, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { record: number; label: number | string });
  t.equal(got.length, d.test.length, 'a prediction per record');
  let same = 0;
  d.test.forEach((x, i) => {
    const want = predictionOf(m.ensemble, quantizedScores(m.quantized, binsOf(m.client.bins, x)));
    if (String(got[i].label) === String(m.client.labels?.[want] ?? want)) same++;
  });
  t.equal(same, d.test.length, "every held-out record gets the quantized plaintext model's class");
  t.equal(summary.model, 'trees', 'predicted as a tree model');
  t.equal(summary.keys_uploaded, true, 'the client uploaded its keys, under their hash');
  t.equal(summary.server_threads, 2, "the batch was cut into a part per worker thread, and the parts' sum decrypts as above");
  t.ok(summary.query_bytes > 64 * 1024 * 1024, `the query is large (${(summary.query_bytes / 2 ** 20).toFixed(0)} MiB) and was admitted`);
  t.equal(server.memory.budgetInUse.reserved, 0, 'and released');
  const ping = await fetch(`${server.url}/ping`);
  t.equal(ping.status, 200, '/ping still healthy');
});
