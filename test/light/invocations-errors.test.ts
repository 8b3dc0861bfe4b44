// Bad input to /invocations gets a 4xx JSON error saying what is wrong, and the server keeps
// serving: after every bad request a good one still succeeds.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { predict } from '../../src/client/predict.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const trained = await trainBreastCancer();
const stack = await startStack(trained.modelDir, trained.dir);
const { modelId, client } = await readClientPart(trained.modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
// A second model (other weights, so another model id) for "made for another model".
const other = await trainBreastCancer({ epochs: '3', l2: '0.5' });
const otherPart = await readClientPart(other.modelDir);
const otherSession = await ClientSession.open(otherPart.modelId, otherPart.client);
otherSession.generateKeys();
t.teardown(async () => {
  session.close();
  otherSession.close();
  await stack.close();
  await trained.cleanup();
  await other.cleanup();
});

const B = stack.bucket;
const put = (key: string, bytes: Uint8Array) => stack.store.put({ bucket: B, key }, bytes, 'fixture');
const goodQuery = session.encrypt(trained.test.x.slice(0, 4));
await put('q/good', goodQuery);
await put('k/good', keys.evaluationKeys);
const good = { encrypted_query_uri: `s3://${B}/q/good`, evaluation_keys_uri: `s3://${B}/k/good`, output_uri: `s3://${B}/out/x` };

async function post(body: unknown, contentType = 'application/json') {
  const res = await fetch(`${stack.server.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as { error?: string; message?: string; hint?: string } };
}

async function stillServes(t: Test) {
  const ping = await fetch(`${stack.server.url}/ping`);
  t.equal(ping.status, 200, 'still answers /ping');
  const r = await predict(session, keys, trained.test.x.slice(0, 2), { store: stack.store, bucket: B, endpoint: stack.server.url });
  t.equal(r.predictions.length, 2, 'still serves a good request');
}

type Case = { name: string; body?: unknown; raw?: string; contentType?: string; setup?: () => Promise<void>; status: number; error: string; says: RegExp };
const cases: Case[] = [
  {
    name: 'missing field',
    body: { encrypted_query_uri: good.encrypted_query_uri, output_uri: good.output_uri },
    status: 400,
    error: 'bad-request',
    says: /evaluation_keys_uri/,
  },
  { name: 'extra field', body: { ...good, debug: true }, status: 400, error: 'bad-request', says: /additional properties/i },
  { name: 'not JSON', raw: '{"encrypted_query_uri": ', status: 400, error: 'bad-request', says: /JSON/i },
  { name: 'wrong type', body: { ...good, output_uri: 42 }, status: 400, error: 'bad-request', says: /output_uri/ },
  {
    name: 'non-s3 URI',
    body: { ...good, encrypted_query_uri: 'https://example.com/q' },
    status: 400,
    error: 'bad-uri',
    says: /encrypted_query_uri is not an s3:\/\/ URI/,
  },
  { name: 'bad bucket name', body: { ...good, output_uri: 's3://A_B/x' }, status: 400, error: 'bad-uri', says: /invalid bucket/ },
  {
    name: 'missing query object',
    body: { ...good, encrypted_query_uri: `s3://${B}/q/nothing-here` },
    status: 404,
    error: 'not-found',
    says: /encrypted query not found/,
  },
  {
    name: 'missing keys object',
    body: { ...good, evaluation_keys_uri: `s3://${B}/k/nothing-here` },
    status: 404,
    error: 'not-found',
    says: /evaluation keys not found/,
  },
  {
    name: 'truncated query',
    setup: () => put('q/trunc', goodQuery.subarray(0, goodQuery.length - 1000)),
    body: { ...good, encrypted_query_uri: `s3://${B}/q/trunc` },
    status: 422,
    error: 'bad-query',
    says: /truncated/,
  },
  {
    name: 'random bytes as query',
    setup: () => put('q/random', randomBytes(5000)),
    body: { ...good, encrypted_query_uri: `s3://${B}/q/random` },
    status: 422,
    error: 'bad-query',
    says: /not a sealed object/,
  },
  {
    name: 'random bytes as keys',
    setup: () => put('k/random', randomBytes(5000)),
    body: { ...good, evaluation_keys_uri: `s3://${B}/k/random` },
    status: 422,
    error: 'bad-keys',
    says: /not a sealed object/,
  },
  {
    name: 'truncated keys',
    setup: () => put('k/trunc', keys.evaluationKeys.subarray(0, 20000)),
    body: { ...good, evaluation_keys_uri: `s3://${B}/k/trunc` },
    status: 422,
    error: 'bad-keys',
    says: /truncated/,
  },
  { name: 'keys swapped for the query', body: { ...good, encrypted_query_uri: good.evaluation_keys_uri }, status: 422, error: 'bad-query', says: /not query/ },
  {
    name: 'query made for another model',
    setup: () => put('q/other', otherSession.encrypt(trained.test.x.slice(0, 2))),
    body: { ...good, encrypted_query_uri: `s3://${B}/q/other` },
    status: 409,
    error: 'wrong-model',
    says: /encrypted for model/,
  },
  {
    name: 'a corrupted ciphertext inside a well-formed query',
    setup: async () => {
      const q = new Uint8Array(goodQuery);
      for (let i = q.length - 3000; i < q.length - 2000; i++) q[i] ^= 0x5a;
      await put('q/corrupt', q);
    },
    body: { ...good, encrypted_query_uri: `s3://${B}/q/corrupt` },
    status: 422,
    error: 'bad-query',
    says: /encrypted query/,
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    await c.setup?.();
    const r = await post(c.raw ?? c.body, c.contentType);
    t.equal(r.status, c.status, `status ${c.status} (${JSON.stringify(r.json).slice(0, 300)})`);
    t.equal(r.json.error, c.error, `error code ${c.error}`);
    t.match(r.json.message ?? '', c.says, `message says what is wrong: ${r.json.message}`);
    await stillServes(t);
  });
}

t.test('keys for other encryption parameters are refused', async (t) => {
  const k = new TextDecoder().decode(
    keys.evaluationKeys.subarray(12, 12 + new DataView(keys.evaluationKeys.buffer, keys.evaluationKeys.byteOffset).getUint32(8, true)),
  );
  const header = JSON.parse(k) as { params: string };
  const forged = new TextEncoder().encode(JSON.stringify({ ...header, params: 'ckks-16384-60.40.60-128' }));
  const body = keys.evaluationKeys.subarray(12 + k.length);
  const out = new Uint8Array(12 + forged.length + body.length);
  out.set(keys.evaluationKeys.subarray(0, 8));
  new DataView(out.buffer).setUint32(8, forged.length, true);
  out.set(forged, 12);
  out.set(body, 12 + forged.length);
  await put('k/params', out);
  const r = await post({ ...good, evaluation_keys_uri: `s3://${B}/k/params` });
  t.equal(r.status, 422);
  t.match(r.json.message ?? '', /made for parameters ckks-16384/);
  await stillServes(t);
});

t.test('unknown route and wrong method give JSON 404', async (t) => {
  const res = await fetch(`${stack.server.url}/predict`, { method: 'POST' });
  t.equal(res.status, 404);
  t.match(((await res.json()) as { hint: string }).hint, /\/invocations/);
});
