// The SageMaker container contract, exercised on the real images (`npm run test:container`; not
// part of `npm test`, whose include pattern is test/**/*.test.ts). Builds nothing: it expects
// sealed-training:$TAG and sealed-inference:$TAG from scripts/docker/build-images.sh.
// Subtests are awaited one by one: each needs what the previous one made (bundle, container).
// The containers use the host network, so the S3 server, the client and the SageMaker Runtime
// emulator all run on the host's loopback, as they would outside the instance.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { BREAST_CANCER_CSV, splitCsv } from '../../src/cli/demo.ts';
import { predict } from '../../src/client/predict.ts';
import { ClientSession, type Keys } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { runtimeClient, sagemakerInvoke } from '../../src/sagemaker/runtime-client.ts';
import { startRuntimeEmulator } from '../../src/sagemaker/runtime-emulator.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore, parseS3Uri } from '../../src/storage/s3.ts';
import { parseCsv, splitTarget } from '../../src/train/csv.ts';

const exec = promisify(execFile);
const DOCKER = process.env.DOCKER ?? '/usr/bin/docker';
const TAG = process.env.TAG ?? 'dev';
const TRAINING = `sealed-training:${TAG}`;
const INFERENCE = `sealed-inference:${TAG}`;
const LABELS = ['malignant', 'benign'];

async function docker(args: string[], timeoutMs = 120_000): Promise<{ code: number; out: string }> {
  try {
    const r = await exec(DOCKER, args, { maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { code?: unknown; stdout?: string; stderr?: string; message: string };
    if ((err as { killed?: boolean }).killed) return { code: -1, out: `${err.stdout ?? ''}${err.stderr ?? ''}(timed out after ${timeoutMs} ms)` };
    if (typeof err.code !== 'number') throw e; // docker itself did not run
    return { code: err.code, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

for (const image of [TRAINING, INFERENCE]) {
  if ((await docker(['image', 'inspect', image])).code !== 0) {
    t.fail(`image ${image} not found: run scripts/docker/build-images.sh first`);
    process.exit(1);
  }
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (since: number) => ((performance.now() - since) / 1000).toFixed(2);

const dir = await mkdtemp(join(tmpdir(), 'sealed-contract-'));
const optMl = join(dir, 'opt-ml'); // mounted as /opt/ml for `train`
const { testDir } = await splitCsv(BREAST_CANCER_CSV, join(optMl, 'input', 'data'));
await mkdir(join(optMl, 'input', 'config'), { recursive: true });
// SageMaker passes every hyperparameter as a string.
await writeFile(
  join(optMl, 'input', 'config', 'hyperparameters.json'),
  JSON.stringify({ task: 'binary', target: 'diagnosis', labels: LABELS.join(','), epochs: '150' }),
);
const test = splitTarget(parseCsv(await readFile(join(testDir, 'data.csv'), 'utf8'), 'test'), 'diagnosis');
const modelDir = join(optMl, 'model');

const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const bucket = 'sealed-contract';
await store.ensureBucket(bucket);

const containers: string[] = [];
t.teardown(async () => {
  if (containers.length) await docker(['rm', '-f', ...containers]);
  store.close();
  await s3.close();
  // The containers write as root; when this test does not run as root, let a container delete.
  await rm(dir, { recursive: true, force: true }).catch(() =>
    docker(['run', '--rm', '-v', `${dir}:/x`, '--entrypoint', 'rm', TRAINING, '-rf', '/x/opt-ml', '/x/bad']).then(() =>
      rm(dir, { recursive: true, force: true }),
    ),
  );
});

/** `docker run -d IMAGE serve` on the host network; resolves once /ping answers 200. */
async function startServe(): Promise<{ id: string; url: string; pingSeconds: string }> {
  const port = await freePort();
  const t0 = performance.now();
  // The allow-lists as SageMaker would pass them (environment only): the client's prefix, and
  // async/ where the emulator test below puts its query and results.
  const allow = [
    '-e',
    `SEALED_ALLOW_READ=s3://${bucket}/sealed/,s3://${bucket}/async/`,
    '-e',
    `SEALED_ALLOW_WRITE=s3://${bucket}/sealed/results/,s3://${bucket}/async/`,
  ];
  const r = await docker([
    'run',
    '-d',
    '--network',
    'host',
    '-e',
    `SAGEMAKER_BIND_TO_PORT=${port}`,
    '-e',
    `SEALED_S3_ENDPOINT=${s3.endpoint}`,
    ...allow,
    '-v',
    `${modelDir}:/opt/ml/model:ro`,
    INFERENCE,
    'serve',
  ]);
  if (r.code !== 0) throw new Error(`docker run failed: ${r.out}`);
  const id = r.out.trim();
  containers.push(id);
  const url = `http://127.0.0.1:${port}`;
  while (performance.now() - t0 < 30_000) {
    const ok = await fetch(`${url}/ping`).then(
      (res) => res.ok,
      () => false,
    );
    if (ok) return { id, url, pingSeconds: seconds(t0) };
    await sleep(50);
  }
  throw new Error(`no /ping answer within 30 s: ${(await docker(['logs', id])).out.slice(-2000)}`);
}

await t.test('train: a mounted /opt/ml gives a bundle in /opt/ml/model', async (t) => {
  const t0 = performance.now();
  const r = await docker(['run', '--rm', '-v', `${optMl}:/opt/ml`, TRAINING, 'train'], 300_000);
  t.comment(`docker run ${TRAINING} train: ${seconds(t0)} s`);
  t.equal(r.code, 0, 'exit code 0');
  const manifest = JSON.parse(await readFile(join(modelDir, 'sealed.json'), 'utf8')) as { format: string; model_id: string };
  t.equal(manifest.format, 'sealed-bundle', 'sealed.json written');
  t.match(manifest.model_id, /^[0-9a-f]{32}$/);
  t.match(r.out, /\[metric\] test_accuracy=([0-9.]+)/, 'metric line matches the documented MetricDefinitions regex');
  const metrics = JSON.parse(await readFile(join(optMl, 'output', 'data', 'metrics.json'), 'utf8')) as { test_accuracy: number };
  t.ok(metrics.test_accuracy > 0.9, `test_accuracy ${metrics.test_accuracy} in /opt/ml/output/data/metrics.json`);
});

await t.test('train: bad data writes /opt/ml/output/failure and exits non-zero', async (t) => {
  const bad = join(dir, 'bad');
  await mkdir(join(bad, 'input', 'data', 'train'), { recursive: true });
  await writeFile(join(bad, 'input', 'data', 'train', 'data.csv'), 'a,b,diagnosis\n1,not-a-number,0\n2,3\n');
  const r = await docker(['run', '--rm', '-v', `${bad}:/opt/ml`, TRAINING, 'train'], 120_000);
  t.not(r.code, 0, `exit code ${r.code}`);
  const reason = await readFile(join(bad, 'output', 'failure'), 'utf8');
  t.ok(reason.trim().length > 0, `failure reason: ${reason.trim()}`);
  await t.rejects(stat(join(bad, 'model', 'sealed.json')), 'no bundle');
});

// One container for these; if it does not start (or train made no bundle) they fail together.
await t.test('inference image: docker run IMAGE serve without allow-lists refuses to start', async (t) => {
  const r = await docker(
    ['run', '--rm', '--network', 'host', '-e', `SEALED_S3_ENDPOINT=${s3.endpoint}`, '-v', `${modelDir}:/opt/ml/model:ro`, INFERENCE, 'serve'],
    60_000,
  );
  t.equal(r.code, 2, 'exit 2: told what to set');
  t.match(r.out, /refusing to start without S3 allow-lists[\s\S]*SEALED_ALLOW_READ[\s\S]*SEALED_ALLOW_ANY=1/);
});

await t.test('inference image: docker run IMAGE serve', async (t) => {
  const serve = await startServe();
  const { modelId, client: part } = await readClientPart(modelDir);
  const session = await ClientSession.open(modelId, part);
  const keys: Keys = session.generateKeys();
  t.teardown(() => session.close());
  const accuracy = (labels: unknown[]) => labels.filter((l, i) => l === LABELS[test.y[i]]).length / labels.length;
  let expected: unknown[] = [];

  await t.test('serve: /ping, then an encrypted prediction end to end', async (t) => {
    t.comment(`/ping answered ${serve.pingSeconds} s after docker run`);
    t.ok(Number(serve.pingSeconds) < 10, 'within 10 s');
    const ping = (await (await fetch(`${serve.url}/ping`)).json()) as { model_id: string };
    t.equal(ping.model_id, modelId, 'serves the mounted model');
    const r = await predict(session, keys, test.x, { store, bucket, endpoint: serve.url });
    expected = r.predictions.map((p) => p.label);
    const metrics = JSON.parse(await readFile(join(optMl, 'output', 'data', 'metrics.json'), 'utf8')) as { test_accuracy: number };
    t.equal(r.predictions.length, test.x.length);
    t.ok(Math.abs(accuracy(expected) - metrics.test_accuracy) < 1e-6, `encrypted accuracy ${accuracy(expected)} equals the training job's test_accuracy`);
    t.comment(
      `${test.x.length} records: ${r.stats.ms.total} ms on the client, ${JSON.stringify((r.stats.server as { timings_ms: unknown }).timings_ms)} on the server`,
    );
  });

  await t.test('serve: InvokeEndpoint and InvokeEndpointAsync through the runtime emulator', async (t) => {
    const emulator = await startRuntimeEmulator({
      endpointName: 'sealed-contract',
      containerUrl: serve.url,
      store,
      outputPath: `s3://${bucket}/async/out`,
      failurePath: `s3://${bucket}/async/failed`,
    });
    const sm = runtimeClient({ endpoint: emulator.url });
    t.teardown(async () => {
      sm.destroy();
      await emulator.close();
    });
    const query = session.encrypt(test.x);
    const body = {
      encrypted_query_uri: `s3://${bucket}/async/q.query`,
      evaluation_keys_uri: `s3://${bucket}/sealed/keys/${keys.evaluationKeysId}.keys`,
      output_uri: `s3://${bucket}/async/r.result`,
    };
    await store.put(parseS3Uri(body.encrypted_query_uri), query, 'query');
    const labelsAt = async (uri: string) => session.decrypt((await store.get(parseS3Uri(uri), 2 ** 31, 'result')).bytes).map((p) => p.label);

    const realtime = await sagemakerInvoke({ client: sm, endpointName: 'sealed-contract' })(body);
    t.equal(realtime.model_id, modelId, 'real-time: the server answer');
    t.same(await labelsAt(body.output_uri), expected, 'real-time: same predictions as over direct HTTP');

    const asyncBody = { ...body, output_uri: `s3://${bucket}/async/r2.result` };
    const answer = await sagemakerInvoke({ client: sm, endpointName: 'sealed-contract', async: { store, bucket, timeoutMs: 60_000 } })(asyncBody);
    t.equal(answer.model_id, modelId, 'async: the server answer arrives via the output location');
    t.same(await labelsAt(asyncBody.output_uri), expected, 'async: same predictions as over direct HTTP');
  });

  await t.test('serve: SIGTERM with a request in flight: it completes, then exit 0', async (t) => {
    // Big enough to keep the server busy for seconds (measured: about 11 ms per ciphertext of 128).
    const rows = Array.from({ length: 128 * 128 }, (_, i) => test.x[i % test.x.length]);
    const countInvocations = async () => ((await docker(['logs', serve.id])).out.match(/"url":"\/invocations"[^\n]*"incoming request"/g) ?? []).length;
    const before = await countInvocations();
    let settledAt = 0;
    const inflight = predict(session, keys, rows, { store, bucket, endpoint: serve.url }).finally(() => (settledAt = performance.now()));
    inflight.catch(() => {}); // awaited below; do not let an early rejection go unhandled
    while ((await countInvocations()) === before && !settledAt) await sleep(20);
    const termAt = performance.now();
    await docker(['kill', '--signal', 'TERM', serve.id]);
    let refusedAt = 0;
    while (!refusedAt && !settledAt) {
      const ok = await fetch(`${serve.url}/ping`, { signal: AbortSignal.timeout(1000) }).then(
        (res) => res.ok,
        () => false,
      );
      if (!ok) refusedAt = performance.now();
      else await sleep(20);
    }
    const r = await inflight;
    t.ok(termAt < settledAt, `SIGTERM sent while the request was in flight (it answered ${seconds(termAt)} s after SIGTERM)`);
    t.ok(refusedAt > 0 && refusedAt < settledAt, 'new requests are refused while the in-flight one finishes');
    t.equal(r.predictions.length, rows.length, 'the in-flight request completed');
    t.same(
      r.predictions.slice(0, test.x.length).map((p) => p.label),
      expected,
      'with the right predictions',
    );
    const code = await docker(['wait', serve.id], 40_000);
    t.comment(`container exited ${seconds(termAt)} s after SIGTERM`);
    const logs = (await docker(['logs', serve.id])).out;
    if (!t.equal(code.out.trim(), '0', 'exit code 0')) t.comment(`container log, last lines:\n${logs.trim().split('\n').slice(-6).join('\n')}`);
    t.match(logs, /stopping: no new requests/);
  });
});

// A PID 1 without a SIGTERM handler ignores the signal; tini is PID 1 in the image and forwards
// it to node, so a SIGTERM during start-up (before node's handler exists) still ends it.
await t.test('serve: SIGTERM during start-up ends the container promptly', async (t) => {
  const port = await freePort();
  // The allow-lists as SageMaker would pass them (environment only): the client's prefix, and
  // async/ where the emulator test below puts its query and results.
  const allow = [
    '-e',
    `SEALED_ALLOW_READ=s3://${bucket}/sealed/,s3://${bucket}/async/`,
    '-e',
    `SEALED_ALLOW_WRITE=s3://${bucket}/sealed/results/,s3://${bucket}/async/`,
  ];
  const r = await docker([
    'run',
    '-d',
    '--network',
    'host',
    '-e',
    `SAGEMAKER_BIND_TO_PORT=${port}`,
    '-e',
    `SEALED_S3_ENDPOINT=${s3.endpoint}`,
    ...allow,
    '-v',
    `${modelDir}:/opt/ml/model:ro`,
    INFERENCE,
    'serve',
  ]);
  const id = r.out.trim();
  containers.push(id);
  await docker(['kill', '--signal', 'TERM', id]);
  const t0 = performance.now();
  const waited = await docker(['wait', id], 5_000);
  t.ok(waited.code === 0, `exited within 5 s of SIGTERM (waited ${seconds(t0)} s; ${waited.code === 0 ? `exit code ${waited.out.trim()}` : 'still running'})`);
});
