// Benchmark of the two forms of /invocations (#17): the query as the request body (transport
// body) against query and result as S3 objects (transport s3), on the embedded stack (local S3,
// `sealed serve`), over direct HTTP and through the local SageMaker runtime emulator. Two
// queries: one MNIST image (CNN, single layout; the cached model of `npm run bench -- mnist`)
// and the breast-cancer test split (linear, its 114 records in one ciphertext).
//
//   node scripts/bench-transport.ts [--n 30] [--workers 2] [--cases mnist,breast-cancer] [--via direct,sagemaker]
//
// One request at a time (latency, not throughput), body and S3 interleaved so that a shared
// machine's noise falls on both alike; keys uploaded and cached by the workers before timing.
// Times the transport's round trip only (query bytes in, result bytes out: upload, invoke and
// download for S3; the one POST for body), not encryption or decryption; every result is
// decrypted and checked against its query's hash. Progress on stderr; the last stdout line is
// one JSON object. Needs the server side of #17 (the body form of /invocations).
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { routeTransport } from '../src/client/open-route.ts';
import { sha256, type S3Route } from '../src/client/route.ts';
import { ClientSession } from '../src/client/session.ts';
import type { Transport } from '../src/client/transport.ts';
import { BREAST_CANCER_CSV, splitCsv } from '../src/cli/demo.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { runtimeClient, sagemakerInvoke } from '../src/sagemaker/runtime-client.ts';
import { startRuntimeEmulator } from '../src/sagemaker/runtime-emulator.ts';
import { sagemakerBody } from '../src/client/invoke-sagemaker.ts';
import { parseCsv, splitTarget } from '../src/train/csv.ts';
import { CNN_DEFAULTS } from '../src/train/cnn.ts';
import { loadIdxPair, MNIST_TEST_IMAGES, MNIST_TEST_LABELS } from '../src/train/mnist.ts';
import { parseHyperparameters, train } from '../src/train/train.ts';
import { BENCH_BUCKET, startBenchStack } from './bench-stack.ts';
import { ensureMnistModel } from './mnist-model.ts';

const err = (s: string) => process.stderr.write(s + '\n');
const percentile = (v: number[], p: number) => {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const r1 = (v: number) => Math.round(v * 10) / 10;

interface Case {
  name: string;
  modelDir: string;
  rows: ArrayLike<number>[];
}

interface Measured {
  case: string;
  via: 'direct' | 'sagemaker';
  transport: 'body' | 's3';
  n: number;
  records: number;
  query_bytes: number;
  result_bytes: number;
  round_trip_ms: { p50: number; p90: number; mean: number; min: number };
  /** The transport's own steps, medians (s3: upload, invoke, download; body: keys, invoke). */
  steps_p50_ms: Record<string, number>;
}

async function mnistCase(): Promise<Case> {
  const test = await loadIdxPair(MNIST_TEST_IMAGES, MNIST_TEST_LABELS);
  const modelDir = await ensureMnistModel({ arch: 'cnn', epochs: CNN_DEFAULTS.epochs, deskew: true, retrain: false, test, log: err });
  return { name: 'mnist-one-image', modelDir, rows: [test.images[0]] };
}

async function breastCancerCase(work: string): Promise<Case> {
  err('training the breast-cancer model');
  const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(work, 'data'));
  const modelDir = join(work, 'model');
  await train(
    { trainDir, testDir, modelDir },
    parseHyperparameters({ task: 'binary', target: 'diagnosis', labels: 'malignant,benign', epochs: '150' }),
    () => {},
  );
  const { x } = splitTarget(parseCsv(await readFile(join(testDir, 'data.csv'), 'utf8'), 'test'), 'diagnosis');
  return { name: 'breast-cancer-test-split', modelDir, rows: x };
}

async function measure(c: Case, n: number, workers: number | undefined, vias: ('direct' | 'sagemaker')[]): Promise<Measured[]> {
  const stack = await startBenchStack(c.modelDir, workers);
  const emulator = vias.includes('sagemaker')
    ? await startRuntimeEmulator({
        containerUrl: stack.running.url,
        store: stack.store,
        outputPath: `s3://${BENCH_BUCKET}/async-out`,
        failurePath: `s3://${BENCH_BUCKET}/async-failed`,
        endpointName: 'bench',
      })
    : undefined;
  const sm = emulator ? runtimeClient({ endpoint: emulator.url }) : undefined;
  const { modelId, client } = await readClientPart(c.modelDir);
  const session = await ClientSession.open(modelId, client);
  const keys = session.generateKeys();
  const out: Measured[] = [];
  try {
    for (const via of vias) {
      const route: S3Route = { store: stack.store, bucket: BENCH_BUCKET, endpoint: stack.running.url };
      if (via === 'sagemaker') {
        route.invoke = sagemakerInvoke({ client: sm!, endpointName: 'bench' });
        route.invokeBody = sagemakerBody(sm!, 'bench');
      }
      const transports: Record<'body' | 's3', Transport> = { body: routeTransport(route, 'body'), s3: routeTransport(route, 's3') };
      const times: Record<'body' | 's3', number[]> = { body: [], s3: [] };
      const steps: Record<'body' | 's3', Record<string, number[]>> = { body: {}, s3: {} };
      const sizes: Record<'body' | 's3', { q: number; r: number }> = { body: { q: 0, r: 0 }, s3: { q: 0, r: 0 } };
      const once = async (kind: 'body' | 's3', record: boolean) => {
        const query = session.encrypt(c.rows);
        const querySha256 = sha256(query);
        const t0 = performance.now();
        const ev = await transports[kind].evaluate(query, { id: keys.evaluationKeysId, bytes: keys.evaluationKeys }, { querySha256 });
        const ms = performance.now() - t0;
        session.decryptScores(ev.result, { querySha256 }); // the result answers this query
        if (ev.via !== kind) throw new Error(`asked for ${kind}, the query went as ${ev.via}`);
        if (!record) return;
        times[kind].push(ms);
        for (const [k, v] of Object.entries(ev.ms)) (steps[kind][k] ??= []).push(v);
        sizes[kind] = { q: query.length, r: ev.result.length };
      };
      // Warm-up: keys uploaded, every worker has them cached, connections open.
      for (let i = 0; i < Math.max(2, stack.workers) * 2; i++) await once(i % 2 ? 'body' : 's3', false);
      for (let i = 0; i < n; i++) {
        // Interleaved, the order alternating, so neither form always runs first.
        const order: ('body' | 's3')[] = i % 2 ? ['body', 's3'] : ['s3', 'body'];
        for (const k of order) await once(k, true);
        if ((i + 1) % 10 === 0) err(`${c.name} ${via}: ${i + 1}/${n}`);
      }
      for (const kind of ['body', 's3'] as const) {
        const v = times[kind];
        out.push({
          case: c.name,
          via,
          transport: kind,
          n,
          records: c.rows.length,
          query_bytes: sizes[kind].q,
          result_bytes: sizes[kind].r,
          round_trip_ms: { p50: r1(percentile(v, 50)), p90: r1(percentile(v, 90)), mean: r1(v.reduce((a, b) => a + b, 0) / v.length), min: r1(Math.min(...v)) },
          steps_p50_ms: Object.fromEntries(Object.entries(steps[kind]).map(([k, s]) => [k, r1(percentile(s, 50))])),
        });
      }
      await Promise.all(Object.values(transports).map((t) => t.close?.()));
    }
  } finally {
    session.close();
    sm?.destroy();
    await emulator?.close();
    await stack.close();
  }
  return out;
}

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '30' },
    workers: { type: 'string' },
    cases: { type: 'string', default: 'mnist,breast-cancer' },
    via: { type: 'string', default: 'direct,sagemaker' },
  },
});
const n = Number(values.n);
const vias = values.via.split(',') as ('direct' | 'sagemaker')[];
const work = await mkdtemp(join(tmpdir(), 'sealed-bench-transport-'));
const results: Measured[] = [];
try {
  for (const name of values.cases.split(',')) {
    const c = name === 'mnist' ? await mnistCase() : name === 'breast-cancer' ? await breastCancerCase(work) : undefined;
    if (!c) throw new Error(`unknown case ${name}: use mnist and/or breast-cancer`);
    results.push(...(await measure(c, n, values.workers ? Number(values.workers) : undefined, vias)));
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
const pairs = results
  .filter((m) => m.transport === 'body')
  .map((b) => {
    const s = results.find((m) => m.transport === 's3' && m.case === b.case && m.via === b.via)!;
    return {
      case: b.case,
      via: b.via,
      body_p50_ms: b.round_trip_ms.p50,
      s3_p50_ms: s.round_trip_ms.p50,
      saved_p50_ms: r1(s.round_trip_ms.p50 - b.round_trip_ms.p50),
    };
  });
for (const p of pairs) err(`${p.case} ${p.via}: body ${p.body_p50_ms} ms, s3 ${p.s3_p50_ms} ms (p50 round trip)`);
console.log(
  JSON.stringify({
    bench: 'transport',
    date: new Date().toISOString().slice(0, 10),
    summary: pairs,
    results,
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    node: process.version,
  }),
);
