// Load test: drives POST /invocations with autocannon against a real `sealed serve` process
// and a real S3-compatible server on loopback, at a multiple of the pool's capacity, for a
// bounded time. Last line: one JSON object (requests, errors by kind, throughput, latency
// p50/p99, peak RSS and RSS growth of the server process).
//
//   npm run load -- [--seconds 120] [--warmup 20] [--overload 2] [--workers N]
import { spawn } from 'node:child_process';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { BREAST_CANCER_CSV, splitCsv } from '../src/cli/demo.ts';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { ObjectStore } from '../src/storage/s3.ts';
import { parseCsv, splitTarget } from '../src/train/csv.ts';
import { parseHyperparameters, train } from '../src/train/train.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '120' }, warmup: { type: 'string', default: '20' }, overload: { type: 'string', default: '2' }, workers: { type: 'string' } } });
const seconds = Number(values.seconds);
const workers = Number(values.workers ?? availableParallelism());
const err = (s: string) => process.stderr.write(s + '\n');

const work = await mkdtemp(join(tmpdir(), 'sealed-load-'));
const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(work, 'data'));
const modelDir = join(work, 'model');
await train({ trainDir, modelDir }, parseHyperparameters({ task: 'binary', target: 'diagnosis', epochs: '100' }), () => {});
const s3 = await startLocalS3({ directory: join(work, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
await store.ensureBucket('load');
const { modelId, client } = await readClientPart(modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
const test = splitTarget(parseCsv(await readFile(join(testDir, 'data.csv'), 'utf8'), 'test'), 'diagnosis');
await store.put({ bucket: 'load', key: 'k' }, keys.evaluationKeys, 'keys');
await store.put({ bucket: 'load', key: 'q' }, session.encrypt(test.x), 'query');

const port = 19000 + Math.floor(Math.random() * 1000);
const maxInFlight = workers * 4;
const server = spawn(process.execPath, ['src/cli/main.ts', 'serve', '--model', modelDir, '--port', String(port), '--host', '127.0.0.1', '--workers', String(workers), '--max-in-flight', String(maxInFlight), '--s3-endpoint', s3.endpoint], {
  env: { ...process.env, LOG_LEVEL: 'warn' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
const url = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${url}/ping`)).ok) break;
  } catch {
    if (i > 300) throw new Error('server did not start');
  }
  await new Promise((r) => setTimeout(r, 100));
}
const rss = async () => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${server.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
const body = JSON.stringify({ encrypted_query_uri: 's3://load/q', evaluation_keys_uri: 's3://load/k', output_uri: 's3://load/out' });
const connections = Math.ceil(maxInFlight * Number(values.overload));
// Warm-up under the same load, not measured: workers load the keys, WASM heaps and SEAL's
// memory pools grow to their working size, V8 settles. Growth is measured after it.
const load = (duration: number, setupClient?: autocannon.Options['setupClient']) =>
  autocannon({ url: `${url}/invocations`, method: 'POST', headers: { 'content-type': 'application/json' }, body, connections, duration, timeout: 60, setupClient } as autocannon.Options);
err(`warm-up: ${values.warmup} s`);
await load(Number(values.warmup));
const rssStart = await rss();
let rssPeak = rssStart;
const series: number[] = [];
const sampler = setInterval(
  () =>
    void rss().then((v) => {
      rssPeak = Math.max(rssPeak, v);
      series.push(+(v / 2 ** 20).toFixed(0));
    }),
  5000,
);

err(`load: ${connections} connections (${values.overload}x the ${maxInFlight} admitted) for ${seconds} s against ${workers} workers`);
const statuses: Record<string, number> = {};
const result = await load(seconds, ((c: { on(ev: 'response', fn: (status: number) => void): void }) => c.on('response', (status) => (statuses[status] = (statuses[status] ?? 0) + 1))) as autocannon.Options['setupClient']);
err(`server RSS every 5 s (MB): ${series.join(' ')}`);
clearInterval(sampler);
const rssEnd = await rss();
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));
session.close();
store.close();
await s3.close();
await rm(work, { recursive: true, force: true });

const ok = statuses['200'] ?? 0;
const errors = Object.fromEntries(Object.entries(statuses).filter(([s]) => s !== '200'));
console.log(
  JSON.stringify({
    load: 'invocations',
    seconds,
    workers,
    connections,
    max_in_flight: maxInFlight,
    records_per_request: test.x.length,
    requests: result.requests.total,
    ok,
    errors_by_status: errors,
    errors_other: result.errors + result.timeouts,
    failures_other_than_503: Object.entries(errors).filter(([s]) => s !== '503').reduce((a, [, n]) => a + n, 0) + result.errors + result.timeouts,
    throughput_ok_per_s: +(ok / seconds).toFixed(1),
    latency_ms_p50: result.latency.p50,
    latency_ms_p99: result.latency.p99,
    latency_ms_max: result.latency.max,
    rss_start_mb: +(rssStart / 2 ** 20).toFixed(1),
    rss_peak_mb: +(rssPeak / 2 ** 20).toFixed(1),
    rss_end_mb: +(rssEnd / 2 ** 20).toFixed(1),
    rss_growth_pct: +((100 * (rssEnd - rssStart)) / rssStart).toFixed(1),
    warmup_s: Number(values.warmup),
  }),
);
