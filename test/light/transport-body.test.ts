// The body transport (#17) against the real inference server: the query as the body of
// POST /invocations, the result as the answer, the keys named by X-Amzn-SageMaker-Custom-Attributes.
//
// NEEDS THE SERVER SIDE OF #17: on a server without the body form, /invocations answers 415 to
// application/octet-stream and these tests fail (test/light/transport.test.ts covers the client against
// a stand-in of the contract meanwhile).
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { BODY_LIMIT, createClient } from '../../src/client/index.ts';
import { predict as nodePredict } from '../../src/client/predict.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startRuntimeEmulator } from '../../src/sagemaker/runtime-emulator.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../../bin/sealed.js', import.meta.url));

const trained = await trainBreastCancer();
const stack = await startStack(trained.modelDir, trained.dir);
const { modelId, client: part } = await readClientPart(trained.modelDir);
const emulator = await startRuntimeEmulator({
  containerUrl: stack.server.url,
  store: stack.store,
  outputPath: `s3://${stack.bucket}/async-out`,
  failurePath: `s3://${stack.bucket}/async-failed`,
  endpointName: 'sealed-body',
});
t.teardown(async () => {
  await emulator.close();
  await stack.close();
  await trained.cleanup();
});
const s3 = { s3Endpoint: stack.s3.endpoint, bucket: stack.bucket };
const rows = trained.test.x;

const session = await ClientSession.open(modelId, part);
const keys = session.generateKeys();
const ref = await nodePredict(session, keys, rows, { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url });
t.teardown(() => session.close());

t.test('the SDK: body, auto and s3 give the same predictions', async (t) => {
  for (const transport of ['body', 'auto'] as const) {
    const client = await createClient({ model: part, endpoint: stack.server.url, transport, ...s3 });
    const r = await client.predictWithStats(rows);
    await client.close();
    t.equal(r.stats.via, 'body', `${transport}: the ${r.stats.query_bytes}-byte query went as the body`);
    t.same(
      r.predictions.map((p) => p.label),
      ref.predictions.map((p) => p.label),
      `${transport}: the same classes as the S3 form`,
    );
    t.ok(Math.max(...r.scores.map((s, i) => Math.abs(s[0] - ref.scores[i][0]))) < 1e-4, `${transport}: the same scores within 1e-4`);
  }
});

t.test('the body contract as the client relies on it: JSON errors, 415, 413', async (t) => {
  const post = (body: Uint8Array, headers: Record<string, string>) =>
    fetch(`${stack.server.url}/invocations`, { method: 'POST', headers, body: body as Uint8Array<ArrayBuffer> });
  const query = session.encrypt(rows.slice(0, 1));
  const noKeys = await post(query, { 'content-type': 'application/octet-stream' });
  t.ok(noKeys.status >= 400 && noKeys.status < 500, `a single-layout query without keys=: ${noKeys.status}`);
  t.match(await noKeys.json(), { message: String, hint: String }, 'a JSON error saying what to do');
  const wrongType = await post(query, { 'content-type': 'text/plain' });
  t.equal(wrongType.status, 415, 'a wrong content type: 415');
  const tooBig = await post(new Uint8Array(BODY_LIMIT + 1), { 'content-type': 'application/octet-stream' });
  t.equal(tooBig.status, 413, 'more than 6 MB: 413');
});

t.test('over SageMaker InvokeEndpoint (the local emulator): body', async (t) => {
  const client = await createClient({ model: part, sagemaker: { endpointName: 'sealed-body', url: emulator.url }, transport: 'body', ...s3 });
  t.teardown(() => client.close());
  const r = await client.predictWithStats(rows);
  t.equal(r.stats.via, 'body');
  t.same(
    r.predictions.map((p) => p.label),
    ref.predictions.map((p) => p.label),
  );
});

t.test('sealed predict --transport body and s3: the same accuracy, the transport reported', async (t) => {
  const env = { ...process.env, SEALED_S3_ENDPOINT: stack.s3.endpoint };
  for (const transport of ['body', 's3']) {
    const r = await run(
      process.execPath,
      [
        bin,
        'predict',
        '--model',
        trained.modelDir,
        '--input',
        join(trained.testDir, 'data.csv'),
        '--endpoint',
        stack.server.url,
        '--bucket',
        stack.bucket,
        '--keys',
        join(trained.dir, 'keys'),
        '--transport',
        transport,
        '--json',
      ],
      { env },
    );
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { transport: string; accuracy: number };
    t.equal(summary.transport, transport);
    t.ok(Math.abs(summary.accuracy - trained.result.metrics.test_accuracy) < 1e-6, `${transport}: accuracy ${summary.accuracy}`);
  }
});
