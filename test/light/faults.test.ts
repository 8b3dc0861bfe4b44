// Faults: a worker thread that dies mid-request fails only that request; the pool replaces it
// and the server keeps serving.
import t from 'tap';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const tr = await trainBreastCancer();
const stack = await startStack(tr.modelDir, tr.dir, 1);
const { modelId, client } = await readClientPart(tr.modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
t.teardown(async () => {
  session.close();
  await stack.close();
  await tr.cleanup();
});
const B = stack.bucket;
await stack.store.put({ bucket: B, key: 'k' }, keys.evaluationKeys, 'keys');
await stack.store.put(
  { bucket: B, key: 'big' },
  session.encrypt(Array.from({ length: client.input.recordsPerCiphertext * 80 }, (_, i) => tr.test.x[i % tr.test.x.length])),
  'query',
);
await stack.store.put({ bucket: B, key: 'small' }, session.encrypt(tr.test.x.slice(0, 2)), 'query');
const post = (q: string) =>
  fetch(`${stack.server.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: `s3://${B}/${q}`, evaluation_keys_uri: `s3://${B}/k`, output_uri: `s3://${B}/out/${q}` }),
  });

t.test('a worker dies during a request', async (t) => {
  t.equal((await post('small')).status, 200, 'warm');
  const before = stack.server.pool.threads[0];
  const inFlight = post('big');
  // Wait until its ciphertexts are being evaluated (80 tasks, one worker: a queue forms).
  for (let i = 0; i < 500 && stack.server.pool.queued === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(stack.server.pool.queued > 0, 'the request is being evaluated');
  await before.terminate(); // as if the thread crashed (WASM abort, out of memory)
  const res = await inFlight;
  const body = (await res.json()) as { error: string; hint: string };
  t.equal(res.status, 500, 'that request fails');
  t.equal(body.error, 'internal');
  t.match(body.hint, /retry/);
  t.equal((await fetch(`${stack.server.url}/ping`)).status, 200, 'the server is up');
  const again = await post('small');
  t.equal(again.status, 200, 'the next request is served by a replacement worker');
  t.not(stack.server.pool.threads[0], before, 'a new thread');
});
