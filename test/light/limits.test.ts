// Admission control, deadlines and S3 allow-lists on a real server.
import t from 'tap';
import { join } from 'node:path';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startServer } from '../../src/server/serve.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore } from '../../src/storage/s3.ts';
import { trainBreastCancer } from '../helpers/fixture.ts';

const tr = await trainBreastCancer();
const s3 = await startLocalS3({ directory: join(tr.dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
await store.ensureBucket('allowed');
await store.ensureBucket('other');
const { modelId, client } = await readClientPart(tr.modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
const big = Array.from({ length: client.input.recordsPerCiphertext * 60 }, (_, i) => tr.test.x[i % tr.test.x.length]);
// Under allow-lists the server takes only keys named by their SHA-256.
const keysKey = `in/${keys.evaluationKeysId}.keys`;
await store.put({ bucket: 'allowed', key: keysKey }, keys.evaluationKeys, 'keys');
await store.put({ bucket: 'allowed', key: 'in/small' }, session.encrypt(tr.test.x.slice(0, 3)), 'query');
await store.put({ bucket: 'allowed', key: 'in/big' }, session.encrypt(big), 'query');
await store.put({ bucket: 'other', key: 'in/small' }, session.encrypt(tr.test.x.slice(0, 3)), 'query');
t.teardown(async () => {
  session.close();
  store.close();
  await s3.close();
  await tr.cleanup();
});

const body = (q: string, out = 's3://allowed/out/r') => ({ encrypted_query_uri: q, evaluation_keys_uri: `s3://allowed/${keysKey}`, output_uri: out });
const post = async (url: string, b: unknown) => {
  const res = await fetch(`${url}/invocations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(b) });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), json: (await res.json()) as { error?: string; message?: string } };
};

t.test('allow-lists: the server reads and writes only where it is told', async (t) => {
  const srv = await startServer({
    modelDir: tr.modelDir,
    port: 0,
    host: '127.0.0.1',
    workers: 1,
    s3Endpoint: s3.endpoint,
    allowRead: ['s3://allowed/in/'],
    allowWrite: ['s3://allowed/out/'],
  });
  t.teardown(() => srv.close());
  t.equal((await post(srv.url, body('s3://allowed/in/small'))).status, 200, 'inside the lists');
  const r1 = await post(srv.url, body('s3://other/in/small'));
  t.equal(r1.status, 403);
  t.match(r1.json.message, /encrypted_query_uri is outside the locations this endpoint may read/);
  const r2 = await post(srv.url, body('s3://allowed/in/small', `s3://allowed/${keysKey}`));
  t.equal(r2.status, 403, 'cannot overwrite the keys');
  t.match(r2.json.message, /output_uri is outside the locations this endpoint may write/);
  t.equal((await store.head({ bucket: 'allowed', key: keysKey }))?.size, keys.evaluationKeys.length, 'keys untouched');
});

t.test('beyond capacity: 503 with Retry-After, and the admitted request completes', async (t) => {
  const srv = await startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, maxInFlight: 1, allowAny: true });
  t.teardown(() => srv.close());
  const first = post(srv.url, body('s3://allowed/in/big', 's3://allowed/out/big'));
  await new Promise((r) => setTimeout(r, 30));
  const second = await post(srv.url, body('s3://allowed/in/small'));
  t.equal(second.status, 503);
  t.equal(second.json.error, 'overloaded');
  t.equal(second.retryAfter, '1');
  const ping = await fetch(`${srv.url}/ping`);
  t.equal(ping.status, 200, '/ping answers while at capacity');
  t.equal((await first).status, 200, 'the admitted request completes');
  t.equal((await post(srv.url, body('s3://allowed/in/small'))).status, 200, 'capacity is back');
});

t.test('deadline: 504, no result written, the server keeps serving', async (t) => {
  const srv = await startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, deadlineMs: 20, allowAny: true });
  t.teardown(() => srv.close());
  const r = await post(srv.url, body('s3://allowed/in/big', 's3://allowed/out/late'));
  t.equal(r.status, 504);
  t.equal(r.json.error, 'deadline');
  await new Promise((res) => setTimeout(res, 1500));
  t.equal(await store.head({ bucket: 'allowed', key: 'out/late' }), undefined, 'nothing written after the deadline');
  t.equal((await fetch(`${srv.url}/ping`)).status, 200);
});
