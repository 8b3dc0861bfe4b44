// A tree-ensemble batch is one long task (minutes for big models), and /ping must not call a
// pool stuck while such a task makes progress: the worker beats after every product (every group of leaves in the grouped form) and
// the pool counts a beat as progress (pool.ts). Shown with a stall threshold far below the
// task's length: every probe during the task answers healthy. Without the heartbeat the probes
// after the threshold answer "stuck" (and SageMaker would replace a healthy instance).
import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTreeBundle } from '../src/model/trees/bundle.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { EvaluationPool } from '../src/server/pool.ts';
import { decodeWire, encodeWire, type QueryHeader, type ResultHeader } from '../src/wire/format.ts';
import { usedInputs } from '../src/fhe/tree-circuit.ts';
import { sha256Hex } from '../src/util/sha256.ts';

const FIX = join(import.meta.dirname, 'fixtures', 'trees');
const STALL_MS = 1000;

t.test('probes during a long tree task answer healthy: the worker beats as it progresses', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const dir = await mkdtemp(join(tmpdir(), 'sealed-trees-beat-'));
  const modelDir = join(dir, 'model');
  // The grouped form: a batch several times longer than the factored form's (one task of seconds).
  const m = compileTreeModel(new Uint8Array(await readFile(join(FIX, 'breast-cancer.xgb.json'))), 'xgboost-json', d.train, { bits: 2, form: 'grouped' });
  await writeTreeBundle(modelDir, m.client, m.server);
  const client = await TreeClient.open(m.client);
  const keys = decodeWire('keys', client.keys(), 'keys').sections;
  // One batch of 8,192 records (2-bit quantization: 90 ciphertexts) makes a task of seconds,
  // several times the threshold; the assertion below checks it outlasted it.
  const records = Array.from({ length: 8192 }, (_, i) => d.test[i % d.test.length]);
  const query = client.encryptQuery(records);
  const q = decodeWire<QueryHeader>('query', query, 'query');
  const inputs = usedInputs(m.server.circuit).map((i) => q.sections[i]);
  const pool = new EvaluationPool({ modelDir, workers: 1, stallMs: STALL_MS });
  t.teardown(async () => {
    client.close();
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });
  await pool.ready(); // the worker has loaded SEAL and the model
  t.equal(await pool.probe(0), true, 'the idle pool is healthy');

  const t0 = performance.now();
  let done = false;
  const task = pool.runTrees({ treeBatch: true, inputs, keys: { id: 'heartbeat', relin: keys[0], publicKey: keys[1] } }).finally(() => (done = true));
  const answers: { at: number; ok: boolean }[] = [];
  while (!done) {
    const ok = await pool.probe(0);
    if (!done) answers.push({ at: performance.now() - t0, ok });
    await new Promise((r) => setTimeout(r, 200));
  }
  const r = await task;
  const ms = performance.now() - t0;
  t.notOk(r.error, 'the task succeeded');
  const header: ResultHeader = { ...q.header, query_sha256: sha256Hex(query) };
  const got = client.decryptResult(encodeWire('result', header, r.results!), query);
  t.equal(got.predictions.length, records.length, 'and its result decrypts to a prediction per record');
  const late = answers.filter((a) => a.at > STALL_MS + 1000);
  // Without probes past the threshold the test could not fail: the task must outlast it.
  t.ok(late.length >= 2, `the task (${ms.toFixed(0)} ms) outlasted the ${STALL_MS} ms threshold by several probes (${late.length})`);
  t.same(
    answers.filter((a) => !a.ok).map((a) => Math.round(a.at)),
    [],
    `every probe during the task answered healthy (${answers.length} probes)`,
  );
});
