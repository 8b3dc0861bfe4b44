// Clients isolated from each other, on real servers (HTTP, worker threads) and a real S3 server:
// the server does not start open to any S3 location unless told so; allow-lists match whole path
// segments; with a tenant root one request stays within one tenant; evaluation keys are
// content-addressed for real (a key object overwritten by another client is refused by its hash
// and the owner's next request still succeeds); and a client refuses a result that was not made
// from its own query.
import t from 'tap';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { predict } from '../../src/client/predict.ts';
import type { S3Route } from '../../src/client/route.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startServer, type RunningServer } from '../../src/server/serve.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore } from '../../src/storage/s3.ts';
import { decodeWire, type ResultHeader } from '../../src/wire/format.ts';
import { trainBreastCancer } from '../helpers/fixture.ts';

const tr = await trainBreastCancer();
const s3 = await startLocalS3({ directory: join(tr.dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const B = 'tenants-test';
await store.ensureBucket(B);
const { modelId, client } = await readClientPart(tr.modelDir);
// Two clients of the same model, each with its own keys.
const alice = await ClientSession.open(modelId, client);
const aliceKeys = alice.generateKeys();
const bob = await ClientSession.open(modelId, client);
const bobKeys = bob.generateKeys();
const servers: RunningServer[] = [];
t.teardown(async () => {
  for (const s of servers) await s.close();
  alice.close();
  bob.close();
  store.close();
  await s3.close();
  await tr.cleanup();
});

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const uri = (key: string) => `s3://${B}/${key}`;
const put = (key: string, bytes: Uint8Array) => store.put({ bucket: B, key }, bytes, 'fixture');
const head = (key: string) => store.head({ bucket: B, key });
const rows = tr.test.x.slice(0, 5);
const many = Array.from({ length: client.input.recordsPerCiphertext * 6 }, (_, i) => tr.test.x[i % tr.test.x.length]);

async function serve(o: { allowRead?: string[]; allowWrite?: string[]; allowAny?: boolean; tenantRoot?: string } = {}): Promise<RunningServer> {
  const s = await startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, ...o });
  servers.push(s);
  return s;
}
async function post(server: RunningServer, body: unknown) {
  const res = await fetch(`${server.url}/invocations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as { error?: string; message?: string; hint?: string; query_sha256?: string } };
}
// CKKS encryption is randomised: two encryptions of the same records decrypt to scores a few 1e-6 apart.
const close = (a: number[][], b: number[][]) => a.length === b.length && a.every((r, i) => r.every((v, j) => Math.abs(v - b[i][j]) < 1e-4));
const resultHeader = async (key: string) => decodeWire<ResultHeader>('result', (await store.get({ bucket: B, key }, 1 << 26, 'result')).bytes, 'result').header;

t.test('without allow-lists the server refuses to start, naming what to set', async (t) => {
  const refusal = {
    code: 'bad-request',
    message: /refusing to start without S3 allow-lists/,
    hint: /--allow-read[\s\S]*--allow-write[\s\S]*SEALED_ALLOW_READ[\s\S]*SEALED_ALLOW_WRITE[\s\S]*--tenant-prefix[\s\S]*SEALED_TENANT_ROOT[\s\S]*--allow-any[\s\S]*SEALED_ALLOW_ANY=1/,
  };
  await t.rejects(startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint }), refusal, 'no lists');
  await t.rejects(
    startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, allowRead: [uri('in/')] }),
    { code: 'bad-request', message: /--allow-write \(SEALED_ALLOW_WRITE\) is not set/ },
    'a read list alone',
  );
  await t.rejects(
    startServer({
      modelDir: tr.modelDir,
      port: 0,
      host: '127.0.0.1',
      workers: 1,
      s3Endpoint: s3.endpoint,
      allowRead: ['http://x/y'],
      allowWrite: [uri('out/')],
    }),
    { code: 'bad-request', message: /is not an s3:\/\/bucket\/prefix location/ },
    'a malformed entry',
  );
});

t.test('allow-lists match whole path segments: s3://b/res admits res/... only, not results-x/', async (t) => {
  // Written without the trailing slash on purpose: it means the same as with one.
  const srv = await serve({ allowRead: [`s3://${B}/res`], allowWrite: [`s3://${B}/out/`] });
  const keysKey = `res/keys/${aliceKeys.evaluationKeysId}.keys`;
  await put(keysKey, aliceKeys.evaluationKeys);
  const query = alice.encrypt(rows);
  await put('res/q', query);
  await put('results-x/q', query);
  await put('res-q', query);
  const body = (q: string, out = 'out/seg') => ({ encrypted_query_uri: uri(q), evaluation_keys_uri: uri(keysKey), output_uri: uri(out) });
  const inside = await post(srv, body('res/q'));
  t.equal(inside.status, 200, 'res/q is under s3://b/res');
  for (const q of ['results-x/q', 'res-q']) {
    const r = await post(srv, body(q, `out/${q.replace('/', '-')}`));
    t.equal(r.status, 403, `${q} is not under s3://b/res`);
    t.match(r.json.message, /encrypted_query_uri is outside the locations this endpoint may read/);
    t.match(r.json.hint, new RegExp(`use a location under s3://${B}/res/$`), 'the hint names the normalised prefix');
  }
  for (const out of ['out-x/r', 'outr']) {
    const r = await post(srv, body('res/q', out));
    t.equal(r.status, 403, `${out} is not under s3://b/out/`);
    t.match(r.json.message, /output_uri is outside the locations this endpoint may write/);
    t.equal(await head(out), undefined, 'nothing written there');
  }
});

t.test('with allow-lists, evaluation keys must be named by their SHA-256', async (t) => {
  const srv = await serve({ allowRead: [uri('named/')], allowWrite: [uri('named/out/')] });
  await put('named/k', aliceKeys.evaluationKeys);
  await put('named/q', alice.encrypt(rows));
  const r = await post(srv, { encrypted_query_uri: uri('named/q'), evaluation_keys_uri: uri('named/k'), output_uri: uri('named/out/r') });
  t.equal(r.status, 400);
  t.equal(r.json.error, 'bad-uri');
  t.match(r.json.message, /evaluation_keys_uri does not name the keys by their SHA-256/);
  t.equal(await head('named/out/r'), undefined);
});

t.test('tenants: query, keys and output of a request must share one tenant prefix (403 naming the field)', async (t) => {
  const srv = await serve({ tenantRoot: uri('tenants/') });
  const aKeys = `tenants/alice/keys/${aliceKeys.evaluationKeysId}.keys`;
  const bKeys = `tenants/bob/keys/${bobKeys.evaluationKeysId}.keys`;
  await put(aKeys, aliceKeys.evaluationKeys);
  await put(bKeys, bobKeys.evaluationKeys);
  await put('tenants/alice/queries/q', alice.encrypt(rows));
  await put('tenants/bob/queries/q', bob.encrypt(rows));
  await put('elsewhere/q', alice.encrypt(rows));
  await put('tenants/q', alice.encrypt(rows));
  const own = { encrypted_query_uri: uri('tenants/alice/queries/q'), evaluation_keys_uri: uri(aKeys), output_uri: uri('tenants/alice/results/r') };
  const ok = await post(srv, own);
  t.equal(ok.status, 200, 'all three in tenant alice');
  const cases: { name: string; body: Record<string, string>; field: RegExp; out: string }[] = [
    {
      name: "output in bob's prefix",
      body: { ...own, output_uri: uri('tenants/bob/results/r') },
      field: /^output_uri is in tenant bob's prefix, encrypted_query_uri in tenant alice's/,
      out: 'tenants/bob/results/r',
    },
    { name: "output over bob's keys", body: { ...own, output_uri: uri(bKeys) }, field: /^output_uri is in tenant bob's prefix/, out: '' },
    {
      name: "bob's keys with alice's query",
      body: { ...own, evaluation_keys_uri: uri(bKeys), output_uri: uri('tenants/alice/results/r2') },
      field: /^evaluation_keys_uri is in tenant bob's prefix/,
      out: 'tenants/alice/results/r2',
    },
    {
      name: "bob's query, alice's keys and output",
      body: { ...own, encrypted_query_uri: uri('tenants/bob/queries/q'), output_uri: uri('tenants/alice/results/r3') },
      field: /^evaluation_keys_uri is in tenant alice's prefix, encrypted_query_uri in tenant bob's/,
      out: 'tenants/alice/results/r3',
    },
    {
      name: 'query outside the tenant root',
      body: { ...own, encrypted_query_uri: uri('elsewhere/q'), output_uri: uri('tenants/alice/results/r4') },
      field: /^encrypted_query_uri is outside the locations this endpoint may read/,
      out: 'tenants/alice/results/r4',
    },
    {
      name: 'query directly in the root (no tenant segment)',
      body: { ...own, encrypted_query_uri: uri('tenants/q'), output_uri: uri('tenants/alice/results/r5') },
      field: /^encrypted_query_uri is not inside a tenant's prefix/,
      out: 'tenants/alice/results/r5',
    },
  ];
  for (const c of cases) {
    const r = await post(srv, c.body);
    t.equal(r.status, 403, c.name);
    t.equal(r.json.error, 'forbidden');
    t.match(r.json.message, c.field, `${c.name}: names the field`);
    if (c.out) t.equal(await head(c.out), undefined, `${c.name}: nothing written`);
  }
  t.equal((await head(bKeys))?.size, bobKeys.evaluationKeys.length, "bob's keys untouched");
  t.equal(sha256((await store.get({ bucket: B, key: bKeys }, 1 << 26, 'keys')).bytes), bobKeys.evaluationKeysId);
});

t.test("client A writes its result over B's keys: B's next requests still succeed", async (t) => {
  // An open deployment (--allow-any): A can point output_uri anywhere, B's keys object included.
  const srv = await serve({ allowAny: true });
  const bobT: S3Route = { store, bucket: B, prefix: 'bob/', endpoint: srv.url };
  const first = await predict(bob, bobKeys, rows, bobT);
  t.equal(first.stats.keys_uploaded, true);
  const bobKeysKey = `bob/keys/${bobKeys.evaluationKeysId}.keys`;
  await put('alice/q', alice.encrypt(rows));
  await put(`alice/keys/${aliceKeys.evaluationKeysId}.keys`, aliceKeys.evaluationKeys);
  const attack = await post(srv, {
    encrypted_query_uri: uri('alice/q'),
    evaluation_keys_uri: uri(`alice/keys/${aliceKeys.evaluationKeysId}.keys`),
    output_uri: uri(bobKeysKey),
  });
  t.equal(attack.status, 200, "the open server wrote A's result over B's keys object");
  t.not(sha256((await store.get({ bucket: B, key: bobKeysKey }, 1 << 26, 'x')).bytes), bobKeys.evaluationKeysId, "B's keys object now holds other bytes");

  // The same server has B's keys cached under their hash: the name fixes the content.
  const again = await predict(bob, bobKeys, rows, bobT);
  t.ok(close(again.scores, first.scores), "B's next request succeeds, same scores");
  t.equal((again.stats.server as { keys_cached: boolean }).keys_cached, true, 'served from the cache by hash');

  // A server that never saw B's keys: the object does not hash to its name, so it is refused,
  // not cached, and B's client checks its keys by hash, uploads them again and retries.
  const fresh = await serve({ allowAny: true });
  const raw = { encrypted_query_uri: uri('alice/q'), evaluation_keys_uri: uri(bobKeysKey), output_uri: uri('bob/results/raw') };
  for (let i = 0; i < 2; i++) {
    const r = await post(fresh, raw);
    t.equal(r.status, 422, `refused (${i ? 'again: nothing was cached' : 'first time'})`);
    t.equal(r.json.error, 'bad-keys');
    t.match(r.json.message, new RegExp(`are not the object their name says: their SHA-256 is [0-9a-f]{64}, the name says ${bobKeys.evaluationKeysId}`));
  }
  const healed = await predict(bob, bobKeys, rows, { ...bobT, endpoint: fresh.url });
  t.ok(close(healed.scores, first.scores), "B's request through the fresh server succeeds, same scores");
  t.equal(healed.stats.keys_uploaded, true, 'after B re-uploaded its keys');
  t.equal(sha256((await store.get({ bucket: B, key: bobKeysKey }, 1 << 26, 'x')).bytes), bobKeys.evaluationKeysId, "B's keys are back");
});

t.test('a client checks an existing key object by hash, not by size', async (t) => {
  const srv = await serve({ allowAny: true });
  const carolT: S3Route = { store, bucket: B, prefix: 'carol/', endpoint: srv.url };
  const key = `carol/keys/${bobKeys.evaluationKeysId}.keys`;
  // Same size, other content (one byte changed): a size check would reuse it.
  const lookalike = new Uint8Array(bobKeys.evaluationKeys);
  lookalike[lookalike.length >> 1] ^= 0xff;
  await put(key, lookalike);
  const r = await predict(bob, bobKeys, rows, carolT);
  t.equal(r.stats.keys_uploaded, true, 'the look-alike was replaced by the real keys');
  t.equal(sha256((await store.get({ bucket: B, key }, 1 << 26, 'x')).bytes), bobKeys.evaluationKeysId);
});

t.test("client A substitutes its result for B's output: B's client refuses it", async (t) => {
  const srv = await serve({ allowAny: true });
  await put('alice/q2', alice.encrypt(rows));
  const aliceKeysUri = uri(`alice/keys/${aliceKeys.evaluationKeysId}.keys`);
  await put(`alice/keys/${aliceKeys.evaluationKeysId}.keys`, aliceKeys.evaluationKeys);
  let substituted = 0;
  // B's transport: the real invocation, then (before B downloads its result) A has the server
  // write A's result to B's output location.
  const bobT: S3Route = {
    store,
    bucket: B,
    prefix: 'bob2/',
    endpoint: srv.url,
    invoke: async (body) => {
      const res = await fetch(`${srv.url}/invocations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const answer = (await res.json()) as Record<string, unknown>;
      const attack = await post(srv, { encrypted_query_uri: uri('alice/q2'), evaluation_keys_uri: aliceKeysUri, output_uri: body.output_uri });
      if (attack.status === 200) substituted++;
      return answer;
    },
  };
  const err = await predict(bob, bobKeys, rows, bobT).catch((e: unknown) => e);
  t.equal(substituted, 1, "A's result was written over B's output");
  t.match(
    err,
    { code: 'bad-data', message: /the result answers another query: its header names query SHA-256 [0-9a-f]{64}, the query sent has [0-9a-f]{64}/ },
    'B refuses it, naming the mismatch',
  );
  // Without the substitution the same client accepts its result.
  const fine = await predict(bob, bobKeys, rows, { store, bucket: B, prefix: 'bob2/', endpoint: srv.url });
  t.equal(fine.predictions.length, rows.length);
});

t.test('results name the query they answer; a request naming another query publishes nothing', async (t) => {
  const srv = await serve({ allowAny: true });
  const keysKey = `h/keys/${aliceKeys.evaluationKeysId}.keys`;
  await put(keysKey, aliceKeys.evaluationKeys);
  const small = alice.encrypt(rows);
  const big = alice.encrypt(many); // more ciphertexts than the window of one worker: streamed out
  await put('h/small', small);
  await put('h/big', big);
  for (const [name, bytes] of [
    ['small', small],
    ['big', big],
  ] as const) {
    const body = { encrypted_query_uri: uri(`h/${name}`), evaluation_keys_uri: uri(keysKey), output_uri: uri(`h/out/${name}`) };
    const undeclared = await post(srv, body);
    t.equal(undeclared.status, 200, `${name}: no query_sha256 in the request`);
    t.equal(undeclared.json.query_sha256, sha256(bytes), `${name}: the answer names the query`);
    t.equal((await resultHeader(`h/out/${name}`)).query_sha256, sha256(bytes), `${name}: so does the result's header`);
    const wrong = await post(srv, { ...body, output_uri: uri(`h/out/${name}-wrong`), query_sha256: sha256(name === 'small' ? big : small) });
    t.equal(wrong.status, 422, `${name}: a request naming another query's hash`);
    t.match(wrong.json.message, /the encrypted query's SHA-256 is [0-9a-f]{64}, not the query_sha256 the request names/);
    t.equal(await head(`h/out/${name}-wrong`), undefined, `${name}: no result published`);
    const right = await post(srv, { ...body, output_uri: uri(`h/out/${name}-right`), query_sha256: sha256(bytes) });
    t.equal(right.status, 200, `${name}: naming the right hash`);
    t.equal((await resultHeader(`h/out/${name}-right`)).query_sha256, sha256(bytes));
  }
  const badHash = await post(srv, { encrypted_query_uri: uri('h/small'), evaluation_keys_uri: uri(keysKey), output_uri: uri('h/out/x'), query_sha256: 'ABC' });
  t.equal(badHash.status, 400, 'query_sha256 must be 64 lowercase hex digits');
});
