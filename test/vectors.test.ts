// The checked-in test vectors (test/vectors, docs/wire-format.md): this build still reads the
// query, keys and result they hold, and evaluating their query gives their expected scores.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { decodeWire, type ResultHeader } from '../src/wire/format.ts';
import { startStack } from './helpers/fixture.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = fileURLToPath(new URL('./vectors/', import.meta.url));
const file = async (name: string) => new Uint8Array(await readFile(join(dir, name)));
const expected = JSON.parse(await readFile(join(dir, 'expected.json'), 'utf8')) as { model_id: string; scores: number[][]; labels: string[]; tolerance: number };
const { modelId, client } = await readClientPart(join(dir, 'model'));
const session = await ClientSession.open(modelId, client);
session.useSecretKey(await file('secret.key'));
t.teardown(() => session.close());

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const close = (got: number[][]) => Math.max(...got.flatMap((r, i) => r.map((v, c) => Math.abs(v - expected.scores[i][c]))));

t.test('the stored result decrypts to the expected scores', async (t) => {
  t.equal(modelId, expected.model_id);
  const got = session.decryptScores(await file('result.bin'));
  t.ok(close(got) < expected.tolerance, `within ${expected.tolerance}`);
  t.same(session.decrypt(await file('result.bin')).map((p) => p.label), expected.labels);
});

t.test("the stored result's header names the SHA-256 of the stored query (docs/wire-format.md)", async (t) => {
  const querySha256 = sha256(await file('query.bin'));
  const h = decodeWire<ResultHeader>('result', await file('result.bin'), 'result.bin').header;
  t.same(h, { model_id: expected.model_id, params: 'ckks-8192-60.60-128', records: 3, query_sha256: querySha256 });
  t.ok(close(session.decryptScores(await file('result.bin'), { querySha256 })) < expected.tolerance, 'accepted as the answer to query.bin');
  const stored = await file('result.bin');
  t.throws(() => session.decryptScores(stored, { querySha256: '0'.repeat(64) }), { code: 'bad-data', message: /answers another query/ }, 'refused as the answer to another query');
});

t.test('the server evaluates the stored query with the stored keys to the expected scores', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'sealed-vectors-'));
  const stack = await startStack(join(dir, 'model'), work, 1);
  t.teardown(async () => {
    await stack.close();
    await rm(work, { recursive: true, force: true });
  });
  const B = stack.bucket;
  const query = await file('query.bin');
  const keys = await file('evaluation.keys');
  const k = `k/${sha256(keys)}.keys`;
  await stack.store.put({ bucket: B, key: 'q' }, query, 'query');
  await stack.store.put({ bucket: B, key: k }, keys, 'keys');
  const res = await fetch(`${stack.server.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: `s3://${B}/q`, evaluation_keys_uri: `s3://${B}/${k}`, output_uri: `s3://${B}/r`, query_sha256: sha256(query) }),
  });
  t.equal(res.status, 200);
  t.equal(((await res.json()) as { query_sha256: string }).query_sha256, sha256(query), 'the answer names the query');
  const { bytes } = await stack.store.get({ bucket: B, key: 'r' }, 2 ** 24, 'result');
  t.ok(close(session.decryptScores(bytes, { querySha256: sha256(query) })) < expected.tolerance, 'same scores as recorded');
  t.same(decodeWire<ResultHeader>('result', bytes, 'result').header, decodeWire<ResultHeader>('result', await file('result.bin'), 'result.bin').header, 'the same header as result.bin');
});
