// Fuzzing with a fixed seed: mutated real queries and keys (bit flips, byte runs, truncation,
// extension, length-field edits) must each give a 4xx with a reason, never a crash, a hang or
// a 5xx, and a good request must succeed afterwards. Bigger runs: FUZZ_CASES=20000 npm test.
import t from 'tap';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { seededRandom } from '../src/train/augment.ts';
import { startStack, trainBreastCancer } from './helpers/fixture.ts';

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

const rand = seededRandom(20261125);
const int = (n: number) => Math.floor(rand() * n);

function mutate(src: Uint8Array): Uint8Array {
  const b = new Uint8Array(src);
  switch (int(6)) {
    case 0: // flip bits
      for (let i = 0, n = 1 + int(8); i < n; i++) b[int(b.length)] ^= 1 << int(8);
      return b;
    case 1: // overwrite a run with random bytes
    {
      const at = int(b.length);
      for (let i = at; i < Math.min(b.length, at + 1 + int(64)); i++) b[i] = int(256);
      return b;
    }
    case 2: // truncate
      return b.subarray(0, int(b.length));
    case 3: // extend
      return Uint8Array.from([...b, ...Array.from({ length: 1 + int(100) }, () => int(256))]);
    case 4: // edit a length or count field near the start (frame and SEAL headers live there)
    {
      const at = int(Math.min(b.length - 4, 200));
      new DataView(b.buffer).setUint32(at, [0, 1, 0xffffffff, 0x7fffffff, int(2 ** 32)][int(5)], true);
      return b;
    }
    default: // damage inside a SEAL section, past the frame
    {
      const at = 200 + int(Math.max(1, b.length - 200));
      b[at % b.length] ^= 0xff;
      return b;
    }
  }
}

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
