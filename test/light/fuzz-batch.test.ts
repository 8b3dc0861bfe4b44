// Fuzzing batch mode: mutated real batch-mode queries (wire frame, header, packed sections, SEAL
// prefixes, seeds) must each give a 4xx with a reason or a result, never a 5xx, and a good
// request must succeed afterwards. Each run draws its own seed (printed; FUZZ_SEED=<seed>
// replays it), so every run tries new cases. More: FUZZ_BATCH_CASES=2000 npm test.
// The network is tinyCnn: the fuzzer aims at the path around the kernel, which is the same for
// every network, and each case that is served costs a third of smallCnn's evaluation (64 query
// ciphertexts and 4 results instead of 144 and 10; 12.6 instead of 27.5 MB through S3).
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { imageBundle, startStack } from '../helpers/fixture.ts';
import { fuzzSeed, mutator } from '../helpers/mutate.ts';
import { tinyCnn } from '../helpers/networks.ts';

const CASES = Number(process.env.FUZZ_BATCH_CASES ?? 60);
const LANES = Number(process.env.FUZZ_LANES ?? 2);
const dir = await mkdtemp(join(tmpdir(), 'sealed-fuzz-batch-'));
const modelDir = join(dir, 'model');
const SEED = fuzzSeed(t);
const { rand, int, mutate } = mutator(SEED);
const images = Array.from({ length: 20 }, () => Array.from({ length: 64 }, () => int(256)));
await imageBundle(modelDir, tinyCnn, images);
const stack = await startStack(modelDir, dir);
const { modelId, client } = await readClientPart(modelDir);
const session = await ClientSession.open(modelId, client);
session.generateKeys();
const query = session.encrypt(images.slice(0, 3), 'batch');
const B = stack.bucket;
await stack.store.put({ bucket: B, key: 'q/good' }, query, 'query');
t.teardown(async () => {
  session.close();
  await stack.close();
  await rm(dir, { recursive: true, force: true });
});

t.test(`${CASES} mutated batch-mode queries: 4xx with a reason, never 5xx`, async (t) => {
  const statuses = new Map<number, number>();
  let bad = 0;
  // Cases are drawn in order (each draw is synchronous, so the seeded sequence is the one a
  // sequential loop makes) and run LANES at once, as many as the server's batch slots (2): one
  // case's seeding, download and header checks overlap another's evaluation. Each lane writes its
  // results to its own object, so no two 200s race on one key.
  let next = 0;
  const draw = () => {
    const i = next++;
    // Half the mutations aim at the wire header and the first sections, where the frame, the
    // packed-section header and SEAL's prefix live.
    return { i, bytes: rand() < 0.5 ? mutate(query) : mutateNearStart(query) };
  };
  const lane = async (l: number) => {
    while (next < CASES) {
      const { i, bytes } = draw();
      const key = `fuzz/${i}`;
      await stack.s3.putDirect(B, key, bytes);
      const res = await fetch(`${stack.server.url}/invocations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ encrypted_query_uri: `s3://${B}/${key}`, output_uri: `s3://${B}/out/fuzz-${l}` }),
      });
      const json = (await res.json()) as { error?: string; message?: string };
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500 || (res.status !== 200 && !json.message)) {
        bad++;
        if (bad <= 5) t.fail(`case ${i} of seed ${SEED}: ${res.status} ${json.error} ${json.message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)));
  t.equal(bad, 0, `no 5xx and every refusal explained (${JSON.stringify(Object.fromEntries(statuses))})`);
  t.ok((statuses.get(422) ?? 0) + (statuses.get(409) ?? 0) > 0, 'some mutations were refused (the fuzzer reaches the checks)');
  t.notOk(statuses.has(404), 'every mutated object was found (seeded into the store directly, s3.putDirect)');
  const good = await fetch(`${stack.server.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: `s3://${B}/q/good`, output_uri: `s3://${B}/out/good` }),
  });
  t.equal(good.status, 200, 'a good request still succeeds');
});

function mutateNearStart(src: Uint8Array): Uint8Array {
  const b = new Uint8Array(src);
  const at = int(Math.min(b.length - 8, 600));
  if (rand() < 0.5) b[at] ^= 1 << int(8);
  else new DataView(b.buffer).setUint32(at, [0, 1, 0xffffffff, 0x7fffffff, int(2 ** 32)][int(5)], true);
  return b;
}
