// POST /invocations with the query as the body (SageMaker's direct payload, Batch Transform's
// records) over real HTTP: a real server (startServer, as `sealed serve`), the embedded S3 for
// the evaluation keys, real worker threads. The answer's body is the result, which the client
// decrypts to the plaintext model's scores.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { simulateBatch } from '../src/model/simulate-batch.ts';
import { forward } from '../src/model/network.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { MiB, splitBudget } from '../src/server/budget.ts';
import { startServer } from '../src/server/serve.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { ObjectStore } from '../src/storage/s3.ts';
import { smallCnn } from './helpers/networks.ts';
import { imageBundle } from './helpers/fixture-cache.ts';

const dir = await mkdtemp(join(tmpdir(), 'sealed-body-'));
const modelDir = join(dir, 'model');
let seed = 3;
const pixel = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256;
const images = Array.from({ length: 40 }, () => Array.from({ length: 144 }, pixel));
const plan = await imageBundle(modelDir, smallCnn, images.slice(0, 30));
const { modelId, client } = await readClientPart(modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();

const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const B = 'sealed-body';
await store.ensureBucket(B);
const keysUri = `s3://${B}/tenants/alice/keys/${keys.evaluationKeysId}.keys`;
await store.put({ bucket: B, key: `tenants/alice/keys/${keys.evaluationKeysId}.keys` }, keys.evaluationKeys, 'keys');
await store.put({ bucket: B, key: `elsewhere/${keys.evaluationKeysId}.keys` }, keys.evaluationKeys, 'keys');
const tenantRoot = `s3://${B}/tenants/`;
// As SageMaker real-time: the default 6 MB body limit.
const realtime = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 2, s3Endpoint: s3.endpoint, tenantRoot });
// As Batch Transform: a larger payload, and keys from the endpoint's environment.
const transform = await startServer({
  modelDir,
  port: 0,
  host: '127.0.0.1',
  workers: 1,
  s3Endpoint: s3.endpoint,
  tenantRoot,
  maxPayloadBytes: 40 * MiB,
  defaultKeysUri: keysUri,
});
t.teardown(async () => {
  session.close();
  await realtime.close();
  await transform.close();
  store.close();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function post(url: string, body: Uint8Array | string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', ...headers },
    body: body as Uint8Array<ArrayBuffer>,
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const json = res.headers.get('content-type')?.startsWith('application/json')
    ? (JSON.parse(new TextDecoder().decode(bytes)) as { error?: string; message?: string; hint?: string })
    : undefined;
  return { status: res.status, type: res.headers.get('content-type'), bytes, json };
}
const withKeys = (uri = keysUri) => ({ 'x-amzn-sagemaker-custom-attributes': `keys=${uri}` });

async function stillServes(t: Test, url = realtime.url) {
  const query = session.encrypt(images.slice(0, 1));
  const r = await post(url, query, withKeys());
  t.equal(r.status, 200, 'the server still evaluates');
  t.equal(session.decryptScores(r.bytes, { querySha256: sha256(query) }).length, 1);
}

const worstError = (got: number[][], want: number[][]) => Math.max(...got.flatMap((s, i) => s.map((v, o) => Math.abs(v - want[i][o]))));

t.test('single layout: the query in the body, keys named in the custom attributes; the answer is the result', async (t) => {
  const rows = images.slice(0, 4);
  const query = session.encrypt(rows);
  const r = await post(realtime.url, query, withKeys());
  t.equal(r.status, 200, JSON.stringify(r.json));
  t.equal(r.type, 'application/octet-stream');
  const scores = session.decryptScores(r.bytes, { querySha256: sha256(query) });
  const worst = worstError(
    scores,
    rows.map((x) => forward(smallCnn, preprocessRecord(x, client))),
  );
  t.equal(scores.length, 4);
  t.ok(worst < 1e-2, `worst |encrypted - plaintext| = ${worst.toExponential(2)}`);
  const again = await post(realtime.url, query, withKeys());
  t.equal(again.status, 200, 'the keys are served from the KeyStore cache the second time');
});

t.test('batch mode in the body (Batch Transform): no keys; decrypts to the plaintext plan', async (t) => {
  const query = session.encrypt(images, 'batch');
  t.ok(query.length > 6 * MiB, `the batch query (${(query.length / MiB).toFixed(1)} MiB) is over the real-time limit`);
  const tooLarge = await post(realtime.url, query);
  t.equal(tooLarge.status, 413, 'over 6 MB on the real-time server: 413');
  t.match(tooLarge.json, { error: 'bad-request', message: /larger than this endpoint takes/, hint: /up to 6 MiB.*through S3/ });
  const r = await post(transform.url, query);
  t.equal(r.status, 200, JSON.stringify(r.json));
  const scores = session.decryptScores(r.bytes, { querySha256: sha256(query) });
  const worst = worstError(
    scores,
    images.map((x) => Array.from(simulateBatch(plan!, preprocessRecord(x, client)))),
  );
  t.equal(scores.length, images.length);
  t.ok(worst < 1e-3, `worst |encrypted - plaintext| = ${worst.toExponential(2)}`);
  await stillServes(t);
});

t.test('keys from SEALED_EVALUATION_KEYS_URI when the request names none', async (t) => {
  const query = session.encrypt(images.slice(0, 2));
  const r = await post(transform.url, query);
  t.equal(r.status, 200, JSON.stringify(r.json));
  t.equal(session.decryptScores(r.bytes, { querySha256: sha256(query) }).length, 2);
  const none = await post(realtime.url, query);
  t.equal(none.status, 400, 'no keys named and no default: 400');
  t.match(none.json, { error: 'bad-request', message: /needs evaluation keys/, hint: /X-Amzn-SageMaker-Custom-Attributes: keys=s3:/ });
});

t.test('keys outside the tenants, hand-named or in another bucket are refused before any work', async (t) => {
  const query = session.encrypt(images.slice(0, 1));
  const outside = await post(realtime.url, query, withKeys(`s3://${B}/elsewhere/${keys.evaluationKeysId}.keys`));
  t.equal(outside.status, 403);
  t.match(outside.json, { error: 'forbidden', message: /keys attribute .* (outside|not inside a tenant)/ });
  const otherBucket = await post(realtime.url, query, withKeys(`s3://other-bucket/tenants/alice/keys/${keys.evaluationKeysId}.keys`));
  t.equal(otherBucket.status, 403);
  const handNamed = await post(realtime.url, query, withKeys(`s3://${B}/tenants/alice/keys/mine.keys`));
  t.equal(handNamed.status, 400);
  t.match(handNamed.json, { error: 'bad-uri', message: /SHA-256/ });
  const notS3 = await post(realtime.url, query, withKeys('https://example.com/k'));
  t.match(notS3, { status: 400, json: { error: 'bad-uri' } });
  const twice = await post(realtime.url, query, { 'x-amzn-sagemaker-custom-attributes': `keys=${keysUri}; keys=${keysUri}` });
  t.match(twice, { status: 400, json: { message: /more than once/ } });
  const missing = await post(realtime.url, query, withKeys(`s3://${B}/tenants/alice/keys/${'0'.repeat(64)}.keys`));
  t.match(missing, { status: 404, json: { error: 'not-found' } });
  await stillServes(t);
});

t.test('hostile bodies: 400/415/422 with JSON errors, and the server keeps serving', async (t) => {
  const random = await post(realtime.url, randomBytes(5000), withKeys());
  t.equal(random.status, 400, 'random bytes: 400');
  t.match(random.json, { error: 'bad-request', message: /request body is not a sealed object/, hint: /sealed predict/ });
  const empty = await post(realtime.url, new Uint8Array(0), withKeys());
  t.equal(empty.status, 400, 'an empty body: 400');
  const asJson = await post(realtime.url, JSON.stringify({ encrypted_query_uri: 's3://a/b' }), withKeys());
  t.equal(asJson.status, 400, 'JSON sent as octet-stream: 400');
  const query = session.encrypt(images.slice(0, 2));
  const truncated = await post(realtime.url, query.subarray(0, query.length - 1000), withKeys());
  t.match(truncated, { status: 422, json: { error: 'bad-query', message: /truncated/ } });
  const corrupt = new Uint8Array(query);
  for (let i = corrupt.length - 3000; i < corrupt.length - 2000; i++) corrupt[i] ^= 0x5a;
  t.match(await post(realtime.url, corrupt, withKeys()), { status: 422, json: { error: 'bad-query' } });
  const other = session.encrypt(images.slice(0, 1)).slice();
  // The same frame with another model id in its header: wrong-model, as in the JSON form.
  const text = new TextDecoder().decode(other);
  const at = text.indexOf(modelId);
  other.set(new TextEncoder().encode('f'.repeat(modelId.length)), at);
  t.match(await post(realtime.url, other, withKeys()), { status: 409, json: { error: 'wrong-model' } });
  const keysAsQuery = await post(realtime.url, keys.evaluationKeys.subarray(0, 100_000), withKeys());
  t.match(keysAsQuery, { status: 400, json: { message: /not query/ } });
  const plain = await post(realtime.url, 'hello', { 'content-type': 'text/plain', ...withKeys() });
  t.equal(plain.status, 415, 'text/plain: 415');
  t.match(plain.json, { error: 'bad-request', message: /media type text\/plain/, hint: /application\/octet-stream/ });
  const long = await post(realtime.url, query, { 'x-amzn-sagemaker-custom-attributes': `keys=${keysUri};${'x'.repeat(1100)}` });
  t.equal(long.status, 400, 'custom attributes over 1,024 characters: 400');
  t.equal((await fetch(`${realtime.url}/ping`)).status, 200);
  await stillServes(t);
});

t.test('GET /execution-parameters: SageMaker Batch Transform’s contract, from the memory budget and workers', async (t) => {
  for (const [server, mb] of [
    [realtime, 6],
    [transform, 40],
  ] as const) {
    const res = await fetch(`${server.url}/execution-parameters`);
    t.equal(res.status, 200);
    const p = (await res.json()) as Record<string, unknown>;
    t.same(Object.keys(p).sort(), ['BatchStrategy', 'MaxConcurrentTransforms', 'MaxPayloadInMB']);
    t.equal(p.BatchStrategy, 'SINGLE_RECORD');
    t.equal(p.MaxPayloadInMB, mb);
    const n = p.MaxConcurrentTransforms as number;
    t.ok(Number.isInteger(n) && n >= 1 && n <= server.pool.size, `MaxConcurrentTransforms ${n} within 1..${server.pool.size} workers`);
    t.ok(n * 4 * mb * MiB <= server.memory.requests, 'that many requests of the largest payload fit the request memory');
  }
});

t.test('a payload limit the request memory cannot hold stops the server at start', async (t) => {
  await t.rejects(
    startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, tenantRoot, maxPayloadBytes: 100 * MiB, memoryBudget: 700 * MiB }),
    { code: 'bad-request', message: /payload limit of 100 MB needs 400 MB of request memory/ },
  );
  await t.rejects(startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, tenantRoot, maxPayloadBytes: 101 * MiB }), {
    code: 'bad-request',
    message: /not between 1 MB and 100 MB/,
  });
});

t.test('bodies are paid for from the request memory as they arrive: uploads beyond it get 503 before they are read', async (t) => {
  const memoryBudget = 570 * MiB;
  const { requests } = splitBudget({ workers: 1, budget: memoryBudget });
  const payload = Math.floor(requests / 4 / MiB) * MiB;
  const small = await startServer({
    modelDir,
    port: 0,
    host: '127.0.0.1',
    workers: 1,
    s3Endpoint: s3.endpoint,
    tenantRoot,
    memoryBudget,
    maxPayloadBytes: payload,
  });
  t.teardown(() => small.close());
  const { port } = new URL(small.url);
  // Four uploads that declare the largest payload and then stall: the request memory is theirs.
  const stalled: Socket[] = [];
  for (let i = 0; i < 4; i++) {
    const s = connect(Number(port), '127.0.0.1');
    s.on('error', () => undefined);
    s.write(`POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${payload}\r\n\r\nSEALED`);
    stalled.push(s);
  }
  await new Promise((r) => setTimeout(r, 500));
  t.ok(small.memory.budgetInUse.reserved >= 4 * payload, `${(small.memory.budgetInUse.reserved / MiB).toFixed(0)} MiB reserved by 4 stalled uploads`);
  const refused = await fetch(`${small.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', ...withKeys() },
    body: new Uint8Array(payload),
  });
  t.equal(refused.status, 503, 'a fifth upload: 503');
  t.equal(refused.headers.get('retry-after'), '1');
  t.match(await refused.json(), { error: 'overloaded', message: /memory for requests is in use/ });
  for (const s of stalled) s.destroy();
  await new Promise((r) => setTimeout(r, 500));
  t.equal(small.memory.budgetInUse.reserved, 0, 'the stalled uploads gave their bytes back when their callers left');
  // The same upload now fits (this model's 63 MB keys do not fit this tiny budget, so the body is
  // one the server reads and refuses for what it is, not for memory).
  const admitted = await fetch(`${small.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', ...withKeys() },
    body: new Uint8Array(payload),
  });
  t.equal(admitted.status, 400, 'the same upload is read now');
  t.match(await admitted.json(), { error: 'bad-request', message: /not a sealed object/ });
  t.equal(small.memory.budgetInUse.reserved, 0, 'and its bytes are given back once it is answered');
});
