// Hostile clients against a real server (real S3-compatible server, real worker threads):
// many-section queries, memory admission, slow request bodies, and a stop with a slow socket.
// Each case is an attack that worked against the server before its defence.
import './helpers/product-gc.ts';
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { ClientSession } from '../src/client/session.ts';
import { paramsKey } from '../src/fhe/params.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { MemoryBudget, MiB, splitBudget } from '../src/server/budget.ts';
import { startServer } from '../src/server/serve.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { ObjectStore } from '../src/storage/s3.ts';
import { encodeWire } from '../src/wire/format.ts';
import { trainBreastCancer } from './helpers/fixture.ts';

const tr = await trainBreastCancer();
const s3 = await startLocalS3({ directory: join(tr.dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const bucket = 'hostile';
await store.ensureBucket(bucket);
const { modelId, client } = await readClientPart(tr.modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
const perCt = client.input.recordsPerCiphertext;
const params = paramsKey(client.params);
const at = (key: string) => ({ bucket, key });
const uri = (key: string) => `s3://${bucket}/${key}`;
await store.put(at('keys'), keys.evaluationKeys, 'keys');
await store.put(at('valid'), session.encrypt(tr.test.x), 'query');
const big = Array.from({ length: perCt * 40 }, (_, i) => tr.test.x[i % tr.test.x.length]);
await store.put(at('big'), session.encrypt(big), 'query');
// One server with the default options answers the reference and the first two attacks (each
// checks afterwards that it still serves correctly); the other cases need their own options.
const shared = await startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, allowAny: true });
const reference = session.decryptScores(await oneShot());
t.teardown(async () => {
  await shared.close();
  session.close();
  store.close();
  await s3.close();
  await tr.cleanup();
});

async function oneShot(): Promise<Uint8Array> {
  const r = await post(shared.url, 'valid', 'ref');
  if (r.status !== 200) throw new Error(`reference request failed: ${r.status}`);
  return (await store.get(at('out/ref'), 64 * MiB, 'result')).bytes;
}

async function post(url: string, query: string, out: string) {
  const res = await fetch(`${url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: uri(query), evaluation_keys_uri: uri('keys'), output_uri: uri(`out/${out}`) }),
  });
  return { status: res.status, json: (await res.json()) as { error?: string; message?: string } };
}

/** A valid request, its result decrypted and compared with the reference scores. */
async function validStillCorrect(t: Test, url: string, name: string) {
  const r = await post(url, 'valid', name);
  t.equal(r.status, 200, `${name}: a valid request is served`);
  const scores = session.decryptScores((await store.get(at(`out/${name}`), 64 * MiB, 'result')).bytes);
  const worst = Math.max(...scores.flatMap((s, i) => s.map((v, j) => Math.abs(v - reference[i][j]))));
  t.ok(worst < 1e-4, `${name}: its result decrypts to the reference scores (max diff ${worst.toExponential(1)})`);
}

/** A query frame: a valid header, `count` declared sections, each `sectionBytes` of garbage. */
function frame(count: number, sectionBytes: number, present = count): Uint8Array {
  const head = encodeWire('query', { model_id: modelId, params, records: perCt * count }, []);
  const out = new Uint8Array(head.length + present * (4 + sectionBytes));
  out.set(head);
  const view = new DataView(out.buffer);
  view.setUint32(head.length - 4, count, true);
  for (let i = 0, o = head.length; i < present; i++, o += 4 + sectionBytes) {
    view.setUint32(o, sectionBytes, true);
    for (let k = 0; k < sectionBytes; k++) out[o + 4 + k] = (i * 31 + k * 7) & 0xff;
  }
  return out;
}

t.test('a small object declaring millions of sections is refused at its header, without buffering', async (t) => {
  const srv = shared;
  // 3,000,000 empty sections: 12 MB on S3. Before: every section was buffered (and then sent
  // to SEAL), ~1.3 GB of RSS for 20 million of them.
  await store.put(at('many-empty'), frame(3_000_000, 0), 'query');
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const r = await post(srv.url, 'many-empty', 'many-empty');
  const ms = performance.now() - t0;
  const grew = (process.memoryUsage().rss - rss0) / MiB;
  t.equal(r.status, 422, 'refused as a bad query');
  t.match(r.json.message, /declares 3000000 sections/, 'the message says why');
  t.ok(grew < 64, `the server's memory did not grow with the section count (+${grew.toFixed(0)} MiB)`);
  t.ok(ms < 5000, `refused without reading the object (${ms.toFixed(0)} ms)`);
  await validStillCorrect(t, srv.url, 'after-many-empty');
});

t.test('empty and tiny sections are refused before SEAL sees them: the worker is not poisoned', async (t) => {
  const srv = shared;
  // 9,000 sections of 16 garbage bytes in one query, twice: before, each went to SEAL, and some
  // 3,800 C++ exceptions break node-seal's WASM instance for good.
  await store.put(at('poison-16'), frame(9000, 16), 'query');
  await store.put(at('poison-0'), frame(50_000, 0), 'query');
  for (const [key, n] of [
    ['poison-16', 2],
    ['poison-0', 1],
  ] as const) {
    for (let i = 0; i < n; i++) {
      const r = await post(srv.url, key, `${key}-${i}`);
      t.equal(r.status, 422, `${key} #${i}: 422`);
      t.match(r.json.message, /section of \d+ bytes/, `${key} #${i}: names the section size`);
    }
  }
  await validStillCorrect(t, srv.url, 'after-poison');
});

t.test('requests are admitted by the memory they will hold', async (t) => {
  const b = new MemoryBudget(100 * MiB);
  const a = b.reserve(60 * MiB, 'a');
  t.throws(() => b.reserve(50 * MiB, 'b'), { code: 'overloaded' }, 'over the free bytes: 503');
  t.throws(() => b.reserve(101 * MiB, 'c'), { code: 'bad-request' }, 'over the whole budget: 400');
  a.release();
  a.release();
  t.equal(b.reserved, 0, 'release is exact and idempotent');
  const split = splitBudget({ workers: 4, memory: 8 * 1024 * MiB });
  t.equal(split.budget, 6 * 1024 * MiB, 'an 8 GiB instance: 6 GiB budget, 2 GiB to spare');
  t.equal(split.main + split.workers * split.perWorker + split.keyCache + split.requests, split.budget, 'the parts add up to the budget');
  const withModel = splitBudget({ workers: 4, memory: 8 * 1024 * MiB, workerModel: 100 * MiB, sharedModel: 300 * MiB });
  t.equal(
    withModel.main + withModel.shared + withModel.workers * withModel.perWorker + withModel.keyCache + withModel.requests,
    withModel.budget,
    'with a model held per worker and one shared by them: the parts add up to the budget',
  );
  t.equal(split.requests - withModel.requests, (4 * 100 + 300) * MiB, 'the shared part counted once, the per-worker part four times');
  t.ok(split.requests > 2 * 1024 * MiB, `requests get ${Math.round(split.requests / MiB)} MiB`);

  // A server whose request budget holds one streamed query at a time: of two at once, one is
  // refused with 503 before anything is read, and both succeed when sent one after the other.
  // Budget B with requests R: B - 256 - (192 + B/24) - B/12 = R (MiB); R = 60 gives B = 581.
  const srv = await startServer({
    modelDir: tr.modelDir,
    port: 0,
    host: '127.0.0.1',
    workers: 1,
    s3Endpoint: s3.endpoint,
    memoryBudget: 582 * MiB,
    allowAny: true,
  });
  t.teardown(() => srv.close());
  t.ok(srv.memory.requests < 70 * MiB && srv.memory.requests > 50 * MiB, `request budget ${Math.round(srv.memory.requests / MiB)} MiB`);
  const both = await Promise.all([post(srv.url, 'big', 'big-1'), post(srv.url, 'big', 'big-2')]);
  const statuses = both.map((r) => r.status).sort();
  t.same(statuses, [200, 503], 'one admitted, one refused for memory');
  t.match(both.find((r) => r.status === 503)?.json.message, /memory for requests is in use/);
  t.equal(srv.memory.budgetInUse.reserved, 0, 'everything reserved was given back');
  t.ok(srv.memory.budgetInUse.peakReserved <= srv.memory.requests, 'the peak stayed within the budget');
  t.equal((await post(srv.url, 'big', 'big-3')).status, 200, 'admitted once the memory is free');

  // Evaluation keys are paid for too: a download reserves the object (read into shared memory,
  // where the key set's sections stay as views of it) before reading.
  await store.put(at('fat-keys'), new Uint8Array(70 * MiB).fill(7), 'keys');
  const fat = await fetch(`${srv.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: uri('valid'), evaluation_keys_uri: uri('fat-keys'), output_uri: uri('out/fat') }),
  });
  t.equal(fat.status, 400, 'keys that could never fit the request budget: 400');
  t.match(((await fat.json()) as { message: string }).message, /downloading evaluation keys needs 70 MiB/);
  t.equal(srv.memory.budgetInUse.reserved, 0, 'nothing left reserved');
});

t.test('the deadline stops the work, and the slot is held until it has', async (t) => {
  const srv = await startServer({
    modelDir: tr.modelDir,
    port: 0,
    host: '127.0.0.1',
    workers: 1,
    s3Endpoint: s3.endpoint,
    deadlineMs: 30,
    maxInFlight: 1,
    allowAny: true,
  });
  t.teardown(() => srv.close());
  const r = await post(srv.url, 'big', 'late');
  t.equal(r.status, 504);
  await srv.app.sealed.drained();
  t.equal(srv.memory.budgetInUse.reserved, 0, 'its memory is given back once the work stopped');
  await new Promise((res) => setTimeout(res, 500));
  t.equal(await store.head(at('out/late')), undefined, 'nothing written after the deadline');
});

/** A socket that sends a request's headers and a few bytes of its body, then stalls. */
function slowBody(url: string): { closed: Promise<number> } {
  const { port } = new URL(url);
  const s = connect(Number(port), '127.0.0.1');
  const t0 = performance.now();
  s.on('connect', () => {
    s.write('POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"encr');
  });
  s.on('error', () => undefined);
  s.resume(); // read what the server sends, so its close is seen
  return { closed: new Promise((res) => s.on('close', () => res(performance.now() - t0))) };
}

t.test('a request body that never arrives is timed out', async (t) => {
  const srv = await startServer({
    modelDir: tr.modelDir,
    port: 0,
    host: '127.0.0.1',
    workers: 1,
    s3Endpoint: s3.endpoint,
    requestTimeoutMs: 1000,
    allowAny: true,
  });
  t.teardown(() => srv.close());
  const slow = slowBody(srv.url);
  const ms = await Promise.race([slow.closed, new Promise<number>((res) => setTimeout(() => res(Infinity), 8000))]);
  t.ok(ms < 3500, `the server closed the slow socket after ${ms.toFixed(0)} ms (timeout 1000 ms)`);
  t.equal((await fetch(`${srv.url}/ping`)).status, 200);
});

t.test('close() does not wait for a slow socket', async (t) => {
  const srv = await startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, allowAny: true });
  const slow = slowBody(srv.url);
  await new Promise((res) => setTimeout(res, 200));
  const t0 = performance.now();
  await srv.close();
  const ms = performance.now() - t0;
  t.ok(ms < 3000, `closed in ${ms.toFixed(0)} ms with a slow-body socket open`);
  t.ok((await slow.closed) >= 0, 'the slow socket was closed');
});

t.test('sealed serve: SIGTERM with a slow socket open exits 0, promptly', async (t) => {
  const port = 20000 + Math.floor(Math.random() * 10000);
  const child = spawn(
    process.execPath,
    [
      'src/cli/main.ts',
      'serve',
      '--model',
      tr.modelDir,
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--workers',
      '1',
      '--s3-endpoint',
      s3.endpoint,
      '--allow-any',
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  for (let i = 0; i < 200 && !log.includes('sealed server ready'); i++) await new Promise((res) => setTimeout(res, 100));
  t.match(log, /sealed server ready/, 'started');
  t.match(log, /"memory_mb":\{"container":\d+,"budget":\d+/, 'logs its memory budget');
  const url = `http://127.0.0.1:${port}`;
  slowBody(url);
  await new Promise((res) => setTimeout(res, 300));
  const t0 = performance.now();
  child.kill('SIGTERM');
  const code = await exited;
  const ms = performance.now() - t0;
  t.equal(code, 0, 'exit code 0');
  t.ok(ms < 10_000, `stopped in ${ms.toFixed(0)} ms`);
});

t.test('at capacity, a request that can never succeed gets its 4xx, not a 503 to retry', async (t) => {
  const srv = await startServer({ modelDir: tr.modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: s3.endpoint, maxInFlight: 1, allowAny: true });
  t.teardown(() => srv.close());
  const busy = post(srv.url, 'big', 'busy');
  for (let i = 0; i < 100 && srv.app.sealed.inFlight === 0; i++) await new Promise((res) => setTimeout(res, 5));
  t.equal(srv.app.sealed.inFlight, 1, 'one request in flight');
  const res = await fetch(`${srv.url}/invocations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ encrypted_query_uri: 's3://hostile/q\u0000', evaluation_keys_uri: uri('keys'), output_uri: uri('out/x') }),
  });
  t.equal(res.status, 400, 'a key with a NUL: 400 at once');
  t.equal((await post(srv.url, 'valid', 'refused')).status, 503, 'a valid one: 503 while at capacity');
  t.equal((await busy).status, 200);
  const ping = (await (await fetch(`${srv.url}/ping`)).json()) as { status: string; workers_replaced: number };
  t.same(ping, { status: 'ok', model_id: modelId, workers_replaced: 0 }, '/ping says how many workers were replaced');
});
