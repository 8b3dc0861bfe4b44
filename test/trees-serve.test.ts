// A tree-ensemble bundle served end to end: the breast-cancer XGBoost fixture compiled into a
// bundle, a real server (worker pool, embedded S3), predictions through predictTrees (keys
// uploaded content-addressed, query in S3, result decrypted): every held-out record gets the
// quantized plaintext model's class. Wrong-model queries and bad keys are refused with a 4xx,
// and the server keeps serving. One batch of 114 records at 3 bits (~130 MB query) keeps it short.
import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { writeTreeBundle } from '../src/model/trees/bundle.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { binsOf, quantizedScores } from '../src/model/trees/quantize.ts';
import { predictionOf } from '../src/model/trees/ensemble.ts';
import { predictTrees } from '../src/client/predict-trees.ts';
import { sha256 } from '../src/client/route.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { formatS3Uri, ObjectStore } from '../src/storage/s3.ts';
import { startServer } from '../src/server/serve.ts';
import { paramsKey } from '../src/fhe/params.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader } from '../src/wire/format.ts';

const FIX = join(import.meta.dirname, 'fixtures', 'trees');

t.test('a tree bundle served: encrypted predictions, refusals, still serving', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const m = compileTreeModel(new Uint8Array(await readFile(join(FIX, 'breast-cancer.xgb.json'))), 'xgboost-json', d.train, { bits: 3 });
  const dir = await mkdtemp(join(tmpdir(), 'sealed-trees-serve-'));
  const modelDir = join(dir, 'model');
  await writeTreeBundle(modelDir, m.client, m.server);
  const s3 = await startLocalS3({ directory: join(dir, 's3') });
  const store = new ObjectStore({ endpoint: s3.endpoint });
  const bucket = 'sealed-test';
  await store.ensureBucket(bucket);
  // One worker (the circuit is one task); a deadline past one batch's evaluation on a loaded 2-core VM.
  const server = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, allowAny: true, deadlineMs: 600_000 });
  const client = await TreeClient.open(m.client);
  t.teardown(async () => {
    client.close();
    await server.close();
    store.close();
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  });
  const route = { store, bucket, prefix: 'sealed/', endpoint: server.url };
  const post = (body: unknown) => fetch(`${server.url}/invocations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
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
  await refused(await post({ encrypted_query_uri: await put('sealed/queries/other.query', other), evaluation_keys_uri: keysUri, output_uri: out }), 409, /encrypted for model f+/, 'a query for another model');
  const asBody = await fetch(`${server.url}/invocations`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'x-amzn-sagemaker-custom-attributes': `keys=${keysUri}` }, body: other as Uint8Array<ArrayBuffer> });
  await refused(asBody, 409, /encrypted for model f+/, 'a query for another model, as the body');
  // This model's header, a ciphertext short.
  const short = encodeWire<QueryHeader>('query', { model_id: m.client.model_id, params, records: 1, layout: 'batch' }, fake(m.client.inputs - 1));
  await refused(await post({ encrypted_query_uri: await put('sealed/queries/short.query', short), evaluation_keys_uri: keysUri, output_uri: out }), 422, /reads \d+ per batch/, 'a ciphertext short');
  // No keys named.
  const shaped = encodeWire<QueryHeader>('query', { model_id: m.client.model_id, params, records: 1, layout: 'batch' }, fake(m.client.inputs));
  const shapedUri = await put('sealed/queries/shaped.query', shaped);
  await refused(await post({ encrypted_query_uri: shapedUri, output_uri: out }), 400, /needs evaluation keys/, 'no keys');
  // Keys with a Galois section (a network's): refused by the KeyStore.
  const k = decodeWire<KeysHeader>('keys', keys, 'k');
  const galois = encodeWire<KeysHeader>('keys', { ...k.header, galois_steps: [1] }, [new Uint8Array(64), ...k.sections]);
  await refused(await post({ encrypted_query_uri: shapedUri, evaluation_keys_uri: await put(`sealed/keys/${sha256(galois)}.keys`, galois), output_uri: out }), 422, /hold rotations/, 'keys with rotations');
  // Truncated relinearization keys: well-formed on the wire, refused by the worker's precheck.
  const truncated = encodeWire<KeysHeader>('keys', k.header, [k.sections[0].slice(0, 64), k.sections[1]]);
  await refused(await post({ encrypted_query_uri: shapedUri, evaluation_keys_uri: await put(`sealed/keys/${sha256(truncated)}.keys`, truncated), output_uri: out }), 422, /relinearization keys/, 'truncated relinearization keys');
  // Keys whose object is not what its hash-name says.
  await refused(await post({ encrypted_query_uri: shapedUri, evaluation_keys_uri: await put(`sealed/keys/${'0'.repeat(64)}.keys`, keys), output_uri: out }), 422, /not the object their name says/, 'keys under another hash');
  t.equal(server.memory.budgetInUse.reserved, 0, 'refused requests hold no memory');

  // Still serving: the held-out records, encrypted, through S3 and the worker.
  const got = await predictTrees(client, keys, d.test, route);
  t.equal(got.predictions.length, d.test.length, 'a prediction per record');
  let same = 0;
  d.test.forEach((x, i) => {
    if (predictionOf(m.ensemble, quantizedScores(m.quantized, binsOf(m.client.bins, x))) === got.predictions[i]) same++;
  });
  t.equal(same, d.test.length, 'every held-out record gets the quantized plaintext model\'s class');
  t.equal(got.stats.keys_uploaded, false, 'the keys were found in place by their hash');
  t.ok(got.stats.query_bytes > 64 * 1024 * 1024, `the query is large (${(got.stats.query_bytes / 2 ** 20).toFixed(0)} MiB) and was admitted`);
  t.ok(server.memory.budgetInUse.peakReserved >= got.stats.query_bytes, 'the whole query was reserved from the request memory');
  t.equal(server.memory.budgetInUse.reserved, 0, 'and released');
  const ping = await fetch(`${server.url}/ping`);
  t.equal(ping.status, 200, '/ping still healthy');
});
