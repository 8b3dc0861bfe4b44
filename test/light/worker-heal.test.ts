// Workers heal: a real pool of one worker thread (real SEAL, a trained model), driven past
// the SEAL exception budget, into a WASM trap, and into a silently broken instance. Each time
// the worker is retired and replaced, no queued task is lost, a task that hit the trap gets a
// 500 'internal' with a retry hint (never a wrong result), and the next valid query decrypts to
// the plaintext model's scores. The test-only task kinds (pool.runTest) bypass the precheck,
// which otherwise keeps garbage away from SEAL, as the last test shows on 20,000 sections.
import t, { type Test } from 'tap';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart, readServerPart } from '../../src/model/bundle.ts';
import { packRecords, unpackOutputs } from '../../src/model/layout.ts';
import { standardise } from '../../src/model/postprocess.ts';
import { simulate } from '../../src/model/simulate.ts';
import { EvaluationPool } from '../../src/server/pool.ts';
import { SEAL_EXCEPTION_BUDGET } from '../../src/fhe/seal.ts';
import type { EvaluateResult, EvaluateTask, Retirement } from '../../src/server/worker.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader, type ResultHeader } from '../../src/wire/format.ts';
import { trainBreastCancer } from '../helpers/fixture.ts';
import { mutator } from '../helpers/mutate.ts';
import { wrap } from '../helpers/seal-bytes.ts';

const tr = await trainBreastCancer();
const { modelId, client } = await readClientPart(tr.modelDir);
const server = await readServerPart(tr.modelDir);
const session = await ClientSession.open(modelId, client);
const keys = decodeWire<KeysHeader>('keys', session.generateKeys().evaluationKeys, 'the keys');
/** In shared memory, as the server's key store hands keys to workers (no copy per task). */
function shared(b: Uint8Array): Uint8Array {
  const s = new Uint8Array(new SharedArrayBuffer(b.length));
  s.set(b);
  return s;
}
const keySet: EvaluateTask['keys'] = {
  id: 'keys',
  galois: shared(keys.sections[0]),
  relin: keys.header.relin ? shared(keys.sections[1]) : undefined,
  publicKey: keys.header.public_key ? shared(keys.sections[keys.sections.length - 1]) : undefined,
  bytes: keys.sections[0].length,
  params: keys.header.params,
};
const rows = tr.test.x.slice(0, 6);
const query = decodeWire<QueryHeader>('query', session.encrypt(rows), 'the query');
const std = rows.map((r) => standardise(r, client.preprocess));
const plain = unpackOutputs(
  client.output,
  client.input.recordsPerCiphertext,
  packRecords(client.input, std).map((v) => simulate(server.program, server.masks, v)),
  rows.length,
);

const retired: Retirement[] = [];
const pool = new EvaluationPool({ modelDir: tr.modelDir, workers: 1, testHooks: true, onRetire: (r) => retired.push(r) });
await pool.ready();
t.teardown(async () => {
  await pool.close();
  session.close();
  await tr.cleanup();
});

/** The query through the pool: its scores, or the first error a task returned. */
async function evaluate(): Promise<{ scores?: number[][]; error?: EvaluateResult['error'] }> {
  const results = await Promise.all(query.sections.map((ciphertext, index) => pool.run({ ciphertext, keys: keySet, index })));
  const failed = results.find((r) => r.error);
  if (failed) return { error: failed.error };
  const wire = encodeWire<ResultHeader>(
    'result',
    { model_id: modelId, params: query.header.params, records: rows.length },
    results.map((r) => r.result!),
  );
  return { scores: session.decryptScores(wire) };
}

/** Scores within 1e-4 of the plaintext model's (CKKS errors here are a few 1e-6). */
function correct(t: Test, got: { scores?: number[][]; error?: unknown }, name: string): void {
  t.notOk(got.error, `${name}: no error`);
  const worst = Math.max(...(got.scores ?? [[Infinity]]).flatMap((r, i) => r.map((v, c) => Math.abs(v - plain[i][c]))));
  t.ok(worst < 1e-4, `${name}: decrypts to the plaintext scores (worst |diff| ${worst.toExponential(2)})`);
}

/** Waits for piscina to have replaced `old` (the exit of a terminated thread is asynchronous). */
async function replaced(old: unknown): Promise<boolean> {
  for (let i = 0; i < 500; i++) {
    if (pool.threads.length === 1 && pool.threads[0] !== old) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

t.test('past the SEAL exception budget the worker is replaced; the task queued behind it is not lost', async (t) => {
  correct(t, await evaluate(), 'before');
  t.equal(pool.workersReplaced, 0);
  const first = pool.threads[0];
  const firstId = first.threadId; // -1 once the thread has stopped
  const under = await pool.runTest({ test: 'seal-exceptions', count: 600 });
  t.same([under.exceptions, under.retire], [600, undefined], '600 exceptions: under the budget, the worker stays');
  // The evaluation is queued while the worker crosses the budget: it must run on the replacement.
  const [over, after] = await Promise.all([pool.runTest({ test: 'seal-exceptions', count: 600 }), evaluate()]);
  t.equal(over.exceptions, 1200);
  t.match(over.retire?.reason, new RegExp(`1200 SEAL exceptions reached the budget of ${SEAL_EXCEPTION_BUDGET}`), 'retired, saying why');
  t.equal(over.retire?.threadId, firstId, 'the worker names its own thread');
  correct(t, after, 'the queued query, on the replacement');
  t.equal(pool.workersReplaced, 1, 'workersReplaced counts it');
  t.ok(await replaced(first), 'a new thread');
  t.match(pool.retirements[0], { threadId: firstId, reason: /budget/, at: /^\d{4}-/ }, 'a log-friendly record');
  t.same(
    retired.map((r) => r.threadId),
    [firstId],
    'onRetire was called',
  );
});

t.test('a worker whose SEAL traps is replaced; the task that hit the trap gets a 500 with a retry hint', async (t) => {
  const before = pool.threads[0];
  const trap = await pool.runTest({ test: 'seal-exceptions', count: 5000 });
  t.ok(trap.exceptions > SEAL_EXCEPTION_BUDGET && trap.exceptions < 5000, `the instance trapped after ${trap.exceptions} exceptions`);
  t.match(trap.error, { code: 'internal', hint: /retry/ }, 'internal, with a retry hint');
  t.match(trap.retire?.reason, /its SEAL runtime trapped \(RuntimeError: /);
  t.equal(pool.workersReplaced, 2);
  correct(t, await evaluate(), 'the next query');
  t.ok(await replaced(before));
});

t.test('a valid query on a silently broken instance fails with 500 and retry, never a wrong result', async (t) => {
  const broken = await pool.runTest({ test: 'break-seal' });
  t.same([broken.exceptions, broken.error, broken.retire], [0, undefined, undefined], 'no counter saw the corruption: the worker stays');
  const hit = await evaluate();
  t.notOk(hit.scores, 'no scores');
  t.match(hit.error, { code: 'internal', message: /SEAL runtime of its worker thread trapped/, hint: /retry/ });
  t.equal(pool.workersReplaced, 3, 'the worker is replaced');
  correct(t, await evaluate(), 'the retry');
});

t.test('the health probe finds a broken instance, answers false, and heals the pool', async (t) => {
  t.equal(await pool.probe(0), true, 'a healthy pool');
  t.equal(await pool.probe(), true, 'cached');
  await pool.runTest({ test: 'break-seal' });
  t.equal(await pool.probe(0), false, 'the broken worker fails the known-answer probe');
  t.equal(pool.workersReplaced, 4, 'and is replaced');
  // Until the replacement has started (loaded SEAL and the model), probe() answers false.
  let healed = false;
  for (let i = 0; i < 60 && !healed; i++) healed = await pool.probe(0);
  t.ok(healed, 'the replacement passes');
  correct(t, await evaluate(), 'and evaluates');
});

t.test('20,000 garbage sections are refused without wearing the worker out; a valid query is still correct', async (t) => {
  const { int, mutate } = mutator(20261130);
  const real = query.sections[0];
  const kinds = [
    () => Uint8Array.from({ length: 16 }, () => int(256)),
    () => Uint8Array.from({ length: int(400) }, () => int(256)),
    () =>
      wrap(
        Uint8Array.from({ length: 200 + int(2000) }, () => int(256)),
        'zstd',
      ),
    () =>
      wrap(
        Uint8Array.from({ length: 97 + int(200) }, () => int(256)),
        'none',
      ),
  ];
  const TOTAL = 20_000;
  const MUTATED = 1_000;
  const statuses = new Map<string, number>();
  const before = (await pool.runTest({ test: 'seal-exceptions', count: 0 })).exceptions;
  const replacedBefore = pool.workersReplaced;
  const WINDOW = 64;
  for (let i = 0; i < TOTAL; i += WINDOW) {
    const batch = Array.from({ length: Math.min(WINDOW, TOTAL - i) }, (_, j) =>
      (i + j) % (TOTAL / MUTATED) === 0 ? mutate(real) : kinds[int(kinds.length)](),
    );
    const results = await Promise.all(batch.map((ciphertext, j) => pool.run({ ciphertext, keys: keySet, index: i + j })));
    for (const r of results) {
      const k = r.error ? r.error.code : 'evaluated';
      statuses.set(k, (statuses.get(k) ?? 0) + 1);
    }
  }
  const exceptions = (await pool.runTest({ test: 'seal-exceptions', count: 0 })).exceptions - before;
  t.comment(`outcomes: ${JSON.stringify(Object.fromEntries(statuses))}; SEAL exceptions: ${exceptions}`);
  t.equal(statuses.get('internal') ?? 0, 0, 'no 500');
  t.ok((statuses.get('bad-query') ?? 0) >= TOTAL - MUTATED, 'every garbage section refused as a bad query');
  t.ok(exceptions < SEAL_EXCEPTION_BUDGET / 10, `SEAL threw ${exceptions} times for ${TOTAL} sections`);
  t.equal(pool.workersReplaced, replacedBefore, 'no worker needed replacing');
  correct(t, await evaluate(), 'the valid query after them');
});
