// Fuzzing with a fixed seed: mutated real queries and keys (bit flips, byte runs, truncation,
// extension, length-field edits) must each give a 4xx with a reason, never a crash, a hang or
// a 5xx, and a good request must succeed afterwards. Bigger runs: FUZZ_CASES=20000 npm test.
import t from 'tap';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { startStack, trainBreastCancer } from './helpers/fixture.ts';
import { mutator } from './helpers/mutate.ts';

const CASES = Number(process.env.FUZZ_CASES ?? 2000);
const tr = await trainBreastCancer();
const stack = await startStack(tr.modelDir, tr.dir);
const { modelId, client } = await readClientPart(tr.modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
const query = session.encrypt(tr.test.x.slice(0, 40));
const B = stack.bucket;
await stack.store.put({ bucket: B, key: 'k/good' }, keys.evaluationKeys, 'keys');
await stack.store.put({ bucket: B, key: 'q/good' }, query, 'query');
t.teardown(async () => {
  session.close();
  await stack.close();
  await tr.cleanup();
});

const { rand, mutate } = mutator(20261125);

t.test(`${CASES} mutated queries and keys: 4xx with a reason, never 5xx`, async (t) => {
  const statuses = new Map<number, number>();
  let bad = 0;
  for (let i = 0; i < CASES; i++) {
    const target = rand() < 0.5 ? 'query' : 'keys';
    const bytes = mutate(target === 'query' ? query : keys.evaluationKeys);
    const key = `fuzz/${i}`;
    await stack.store.put({ bucket: B, key }, bytes, 'fuzz');
    const res = await fetch(`${stack.server.url}/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        encrypted_query_uri: `s3://${B}/${target === 'query' ? key : 'q/good'}`,
        evaluation_keys_uri: `s3://${B}/${target === 'keys' ? key : 'k/good'}`,
        output_uri: `s3://${B}/out/fuzz`,
      }),
    });
    const json = (await res.json()) as { error?: string; message?: string };
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    // 200 is possible: a flipped bit in a ciphertext's data is still a valid ciphertext.
    if (res.status >= 500 || (res.status !== 200 && !json.message)) {
      bad++;
      if (bad <= 5) t.fail(`case ${i} (${target}): ${res.status} ${json.error} ${json.message}`);
    }
  }
  t.equal(bad, 0, `no 5xx and every refusal explained (${JSON.stringify(Object.fromEntries(statuses))})`);
  const good = await fetch(`${stack.server.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: `s3://${B}/q/good`, evaluation_keys_uri: `s3://${B}/k/good`, output_uri: `s3://${B}/out/good` }),
  });
  t.equal(good.status, 200, 'a good request still succeeds');
});
