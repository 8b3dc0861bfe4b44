// The SDK (src/client/index.ts) against a real server: the five-line example as a program,
// the step-by-step example, the S3 and web-proxy transports from Node, key directories, and
// the pure-TS SHA-256 that replaced node:crypto in the client (same ids as before).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { buildWeb } from '../../scripts/build-web.ts';
import { createClient, loadClientPart, proxyTransport, SealedError, type Transport } from '../../src/client/index.ts';
import { predict as nodePredict } from '../../src/client/predict.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startWebServer } from '../../src/web/server.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const TOLERANCE = 1e-4;

const trained = await trainBreastCancer();
const stack = await startStack(trained.modelDir, trained.dir);
const { modelId, client: part } = await readClientPart(trained.modelDir);
const home = await mkdtemp(join(tmpdir(), 'sealed-sdk-home-'));
t.teardown(async () => {
  await stack.close();
  await trained.cleanup();
  await rm(home, { recursive: true, force: true });
});
const s3 = { endpoint: stack.server.url, s3Endpoint: stack.s3.endpoint, bucket: stack.bucket };
const env = { ...process.env, SEALED_S3_ENDPOINT: stack.s3.endpoint, SEALED_HOME: home };

/** What the path of `sealed predict` (ClientSession + predict.ts) answers for these records. */
async function reference(rows: number[][]) {
  const session = await ClientSession.open(modelId, part);
  const keys = session.generateKeys();
  const r = await nodePredict(session, keys, rows, { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url });
  session.close();
  return r;
}

t.test('the five-line example runs against the server and answers as `sealed predict`', async (t) => {
  const csv = (await readFile(join(root, 'data', 'breast_cancer', 'breast_cancer.csv'), 'utf8')).split('\n')[1].split(',').map(Number);
  const ref = await reference([csv.slice(0, 30)]);
  const { stdout } = await run(process.execPath, [join(root, 'examples', 'predict.ts'), trained.modelDir, stack.server.url], {
    env,
    cwd: root,
    timeout: 120_000,
  });
  const m = /^(\w+) \[\s*([-0-9.e]+),\s*([-0-9.e]+)\s*\]/.exec(stdout.trim());
  t.ok(m, `prints the label and the probabilities: ${stdout.trim()}`);
  t.equal(m![1], ref.predictions[0].label, 'same class');
  t.ok(Math.abs(Number(m![3]) - ref.predictions[0].probabilities![1]) < TOLERANCE, 'same probability within 1e-4');
  const src = await readFile(join(root, 'examples', 'predict.ts'), 'utf8');
  const code = src.split('\n').filter((l) => /^(import|const client|const \[p\]|console|await client)/.test(l));
  t.equal(code.length, 5, `the SDK part is five lines:\n${code.join('\n')}`);
});

t.test('the step-by-step example runs: keys on disk, named records, separate stages', async (t) => {
  const args = [join(root, 'examples', 'step-by-step.ts'), trained.modelDir, stack.server.url];
  const first = await run(process.execPath, args, { env, cwd: root, timeout: 120_000 });
  t.match(first.stdout, /record 5: (malignant|benign) \(/, 'five predictions');
  t.match(first.stdout, /uploaded now/, 'the evaluation keys are uploaded the first time');
  const keysDir = join(home, 'keys', modelId);
  t.equal((await stat(join(keysDir, 'secret.key'))).mode & 0o777, 0o600, 'the secret key is saved with mode 0600');
  const second = await run(process.execPath, args, { env, cwd: root, timeout: 120_000 });
  t.match(second.stdout, /already uploaded/, 'the second run reuses the saved keys: nothing uploaded again');
});

t.test('createClient with an endpoint: predictions and stats equal the CLI path', async (t) => {
  const rows = trained.test.x;
  const ref = await reference(rows);
  // The S3 form, whose steps the transport_ms check below names (auto would send this query as a body).
  const client = await createClient({ model: trained.modelDir, ...s3, transport: 's3' });
  t.equal(client.modelId, modelId);
  t.equal(client.features.length, 30);
  t.same(client.labels, ['malignant', 'benign']);
  const r = await client.predictWithStats(rows);
  t.equal(r.predictions.length, rows.length);
  const worst = Math.max(...r.scores.map((s, i) => Math.abs(s[0] - ref.scores[i][0])));
  t.ok(worst < TOLERANCE, `largest |SDK - CLI path| score difference ${worst.toExponential(2)} < 1e-4`);
  t.same(
    r.predictions.map((p) => p.label),
    ref.predictions.map((p) => p.label),
    'the same class for every record',
  );
  t.equal(r.stats.keys_uploaded, true, 'fresh keys are uploaded on the first call');
  t.ok(r.stats.ms.keygen > 0 && r.stats.ms.encrypt > 0 && r.stats.ms.evaluate > 0 && r.stats.ms.decrypt > 0, `stages timed: ${JSON.stringify(r.stats.ms)}`);
  t.same(Object.keys(r.stats.transport_ms).sort(), ['download', 'invoke', 'upload']);
  const again = await client.predictWithStats(rows.slice(0, 2));
  t.equal(again.stats.keys_uploaded, false, 'and only once');
  t.equal(again.stats.ms.keygen, 0, 'keys are not made again');

  // Records by feature name give the same answer; a missing feature is a clear error.
  const named = rows.slice(0, 2).map((r) => Object.fromEntries(part.features.map((f, j) => [f, r[j]])));
  const byName = await client.predict(named);
  t.same(
    byName.map((p) => p.label),
    ref.predictions.slice(0, 2).map((p) => p.label),
    'records as objects keyed by feature name',
  );
  const missing = { ...named[0] } as Record<string, number>;
  delete missing[part.features[3]];
  t.throws(() => client.encrypt([missing]), { name: 'SealedError', code: 'bad-data', message: new RegExp(part.features[3]) });
  await client.close();
});

t.test('generateKeys / encrypt / decrypt with a custom transport: it never sees the secret key', async (t) => {
  const seen: unknown[] = [];
  const inner = (await import('../../src/client/index.ts')).s3Transport({ endpoint: stack.server.url, s3Endpoint: stack.s3.endpoint, bucket: stack.bucket });
  const spy: Transport = {
    evaluate(query, keys) {
      seen.push(query, keys);
      return inner.evaluate(query, keys);
    },
  };
  const client = await createClient({ model: JSON.stringify(part), transport: spy });
  const keys = client.generateKeys();
  const query = client.encrypt(trained.test.x.slice(0, 3));
  t.equal(new TextDecoder().decode(query.subarray(0, 6)), 'SEALED', 'the query is a wire-format object');
  const ev = await spy.evaluate(query, { id: keys.evaluationKeysId, bytes: keys.evaluationKeys });
  const preds = client.decrypt(ev.result);
  t.equal(preds.length, 3);
  const ref = await reference(trained.test.x.slice(0, 3));
  t.same(
    preds.map((p) => p.label),
    ref.predictions.map((p) => p.label),
  );
  await client.predict(trained.test.x.slice(0, 1));
  const secret = Buffer.from(keys.secretKey);
  const leaks = seen.filter((x) => {
    if (x instanceof Uint8Array) return Buffer.from(x).includes(secret.subarray(0, 64));
    return (
      Object.keys(x as object).some((k) => !['id', 'bytes'].includes(k)) || Buffer.from((x as { bytes: Uint8Array }).bytes).includes(secret.subarray(0, 64))
    );
  });
  t.same(leaks, [], 'the transport got queries and {id, bytes} of the evaluation keys only');
  await client.close();
  await inner.close?.();
});

t.test('a model from a URL and the web proxy transport, from Node', async (t) => {
  const web = await buildWeb({ outDir: join(trained.dir, 'web-sdk') });
  const server = await startWebServer({
    modelDir: trained.modelDir,
    endpoint: stack.server.url,
    store: stack.store,
    bucket: stack.bucket,
    assetsDir: web.outDir,
  });
  t.teardown(() => server.close());
  const loaded = await loadClientPart(`${server.url}/model/client.json`);
  t.equal(loaded.model_id, modelId, 'the client part served by the web server');
  const client = await createClient({ model: new URL('/model/client.json', server.url), proxy: server.url });
  const r = await client.predictWithStats(trained.test.x.slice(0, 4));
  const ref = await reference(trained.test.x.slice(0, 4));
  t.same(
    r.predictions.map((p) => p.label),
    ref.predictions.map((p) => p.label),
    'same classes through the proxy',
  );
  t.ok(Math.max(...r.scores.map((s, i) => Math.abs(s[0] - ref.scores[i][0]))) < TOLERANCE, 'same scores within 1e-4');
  t.equal(r.stats.keys_uploaded, true);
  t.ok((r.stats.server as { proxy_ms?: object }).proxy_ms, 'the proxy reports its own timings');
  const again = await client.predictWithStats(trained.test.x.slice(0, 1));
  t.equal(again.stats.keys_uploaded, false, 'keys uploaded once');
  await client.close();

  // Bad input to the proxy gets a JSON error that says what to do.
  const plain = await fetch(`${server.url}/api/predict?keys=${'0'.repeat(64)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: '{"mean_radius": 17.99}',
  });
  t.equal(plain.status, 422, 'a body that is not a wire-format object is refused');
  t.match(await plain.json(), { error: 'bad-query', hint: /wire format/ });
  const other = await createClient({ model: part, transport: proxyTransport(server.url) });
  other.generateKeys();
  const q = other.encrypt(trained.test.x.slice(0, 1));
  const noKeys = await fetch(`${server.url}/api/predict?keys=${other.keys!.evaluationKeysId}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: q as Uint8Array<ArrayBuffer>,
  });
  t.equal(noKeys.status, 404, 'a query whose keys were never uploaded is refused');
  t.match(await noKeys.json(), { hint: /PUT them to \/api\/keys\// });
  const wrongId = await fetch(`${server.url}/api/keys/${'ab'.repeat(32)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream' },
    body: other.keys!.evaluationKeys as Uint8Array<ArrayBuffer>,
  });
  t.equal(wrongId.status, 422, 'keys whose hash is not their id are refused');
  await other.close();
});

t.test('a model.tar.gz as SageMaker training writes it', async (t) => {
  const { create } = await import('tar');
  const file = join(trained.dir, 'model.tar.gz');
  await create({ gzip: true, file, cwd: trained.modelDir }, ['.']);
  const client = await createClient({ model: file });
  t.equal(client.modelId, modelId, 'the client part is read from the archive');
  await client.close();
});

t.test('errors say what to do', async (t) => {
  const client = await createClient({ model: part });
  await t.rejects(
    client.predict(trained.test.x.slice(0, 1)),
    { name: 'SealedError', code: 'bad-request', hint: /endpoint.*proxy.*transport/ },
    'no transport: the hint names the options',
  );
  t.ok(new SealedError('bad-data', 'x') instanceof Error, 'SealedError is exported for instanceof checks');
  await client.close();
  await t.rejects(createClient({ model: join(trained.dir, 'nowhere') }), { name: 'SealedError' }, 'a missing model directory');
  await t.rejects(createClient({ model: '{"format": "other"}' }), { name: 'SealedError', code: 'bad-bundle' }, 'JSON that is not a client part');
});
