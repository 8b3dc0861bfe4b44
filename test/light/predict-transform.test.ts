// `sealed predict --transform` end to end: the real CLI (a child process) encrypts a batch-mode
// input, writes it under the transform prefix, starts a job on the local SageMaker API
// (transform-control-plane.ts) over two real servers, and decrypts the `.out` results; a rerun
// follows the same job and decrypts nothing again; with its state gone it fetches the results
// again without a second job. The predictions equal those of `predict` over S3.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { predict } from '../../src/client/predict.ts';
import { saveKeys } from '../../src/client/key-files.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startServer } from '../../src/server/serve.ts';
import { startTransformControlPlane } from '../../src/sagemaker/transform-control-plane.ts';
import { imageBundle } from '../helpers/fixture-cache.ts';
import { tinyCnn } from '../helpers/networks.ts';
import { startStack } from '../helpers/fixture.ts';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../../bin/sealed.js', import.meta.url));

const dir = await mkdtemp(join(tmpdir(), 'sealed-predict-transform-'));
const modelDir = join(dir, 'model');
let seed = 23;
const pixel = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256;
const images = Array.from({ length: 40 }, () => Array.from({ length: 64 }, pixel));
// Compiled once and cached (test/helpers/fixture-cache.ts): compiling measures SEAL's unit costs.
// tinyCnn: this suite's subject is the CLI and the transform path, not the network.
await imageBundle(modelDir, tinyCnn, images.slice(0, 30));
// Transform containers take whole objects as bodies (SageMaker sets SEALED_MAX_PAYLOAD_MB from the job).
const payload = { maxPayloadBytes: 100 * 1024 * 1024 };
const stack = await startStack(modelDir, dir, 1, payload);
const second = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: stack.s3.endpoint, allowAny: true, ...payload });
const plane = await startTransformControlPlane({ store: stack.store, instances: [stack.server.url, second.url] });
t.teardown(async () => {
  await plane.close();
  await second.close();
  await stack.close();
  await rm(dir, { recursive: true, force: true });
});

const input = join(dir, 'images.jsonl');
await writeFile(input, images.map((r) => JSON.stringify(r)).join('\n') + '\n');
const { modelId, client } = await readClientPart(modelDir);
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
const direct = await predict(session, keys, images, { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url }, { layout: 'batch' });
// The CLI finds this key set where it looks (SEALED_HOME) rather than making one in its first run.
await saveKeys(join(dir, 'home', 'keys', modelId), session, keys);
session.close();

// The local emulator, not AWS: no AWS settings from the caller's environment.
const env = Object.fromEntries(Object.entries({ ...process.env, SEALED_HOME: join(dir, 'home') }).filter(([k]) => !k.startsWith('AWS_')));
async function sealedPredict(out: string, ...extra: string[]) {
  const args = ['predict', '--model', modelDir, '--input', input, '--output', out, '--format', 'json', '--json', '--s3-endpoint', stack.s3.endpoint];
  const r = await run(process.execPath, [bin, ...args, '--transform', `s3://${stack.bucket}/sealed/tenants/cli/`, '--sagemaker-api-url', plane.url, ...extra], {
    env,
    maxBuffer: 1 << 24,
  });
  const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
  const predictions = (await readFile(out, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { record: number; label: number | string; scores: number[] });
  return { summary, predictions };
}
const agree = (t: Test, got: { label: number | string; scores: number[] }[], what: string) => {
  t.equal(got.length, images.length, `${what}: one prediction per record`);
  // CKKS is approximate: where two classes score within the tolerance, either may win.
  const clear = direct.scores.map((s) => [...s].sort((a, b) => b - a)).map((s) => s[0] - s[1] > 2e-2);
  t.same(
    got.map((p) => p.label).filter((_, i) => clear[i]),
    direct.predictions.map((p) => p.label).filter((_, i) => clear[i]),
    `${what}: the classes of predict over S3 (${clear.filter(Boolean).length} records with a clear winner)`,
  );
  t.ok(Math.max(...got.flatMap((p, i) => p.scores.map((s, o) => Math.abs(s - direct.scores[i][o])))) < 1e-2, `${what}: the scores within 1e-2`);
};

t.test('body transport: starts the job, decrypts its results; a rerun resumes from the state', async (t) => {
  const state = join(dir, 'state-body');
  const first = await sealedPredict(join(dir, 'out1.jsonl'), '--model-name', 'sealed-local', '--instance-count', '2', '--state', state);
  t.match(first.summary, {
    transport: 'body',
    parts: 1,
    job_started: true,
    parts_uploaded: 1,
    parts_decrypted: 1,
    parts_from_state: 0,
    records: images.length,
  });
  const job = String(first.summary.transform_job);
  t.match(job, /^sealed-[0-9a-f]{24}$/, 'the job is named by the model and the input');
  t.match(plane.manifest(job), { status: 'Completed', instances: [{ objects: 1 }, { objects: 0 }] });
  agree(t, first.predictions, 'first run');
  t.equal((await stat(state)).mode & 0o777, 0o700, 'the state (plaintext predictions) is private to the user');

  const again = await sealedPredict(join(dir, 'out2.jsonl'), '--model-name', 'sealed-local', '--state', state);
  t.match(again.summary, { transform_job: job, job_started: false, parts_uploaded: 0, parts_decrypted: 0, parts_from_state: 1 }, 'a rerun does no work twice');
  agree(t, again.predictions, 'rerun');

  await rm(state, { recursive: true });
  const lost = await sealedPredict(join(dir, 'out3.jsonl'), '--state', state);
  t.match(
    lost.summary,
    { transform_job: job, job_started: false, parts_uploaded: 0, parts_decrypted: 1 },
    'state lost: the finished job is followed, not started again',
  );
  t.ok(await stack.store.head({ bucket: stack.bucket, key: `sealed/tenants/cli/transform-plan/${job}.json` }), 'its parts from the plan kept beside it in S3');
  agree(t, lost.predictions, 'state lost');
});

t.test('s3 transport: each input object names its query in S3', async (t) => {
  const r = await sealedPredict(
    join(dir, 'out-s3.jsonl'),
    '--model-name',
    'sealed-local',
    '--transport',
    's3',
    '--job-name',
    'cli-s3',
    '--state',
    join(dir, 'state-s3'),
  );
  t.match(r.summary, { transform_job: 'cli-s3', transport: 's3', parts: 1, job_started: true, parts_decrypted: 1 });
  t.ok(
    plane.manifest('cli-s3')?.objects.every((o) => o.input.endsWith('.json')),
    'the input objects are JSON requests',
  );
  agree(t, r.predictions, 's3 transport');
});

t.test('refusals say what to do', async (t) => {
  const noJob = await sealedPredict(join(dir, 'x.jsonl'), '--job-name', 'never-started', '--state', join(dir, 'state-x')).catch(
    (e: { code: number; stderr: string }) => e,
  );
  t.match(
    noJob,
    { code: 2, stderr: /there is no transform job never-started to follow[\s\S]*what to do: the parts are uploaded to s3:\/\// },
    'without --model-name nothing is started',
  );
});
