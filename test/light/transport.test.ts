// The client's transports (src/client/transport*.ts, issue #17): the rule that picks body or S3,
// and the body form end to end. Until the server takes bodies itself (test/light/transport-body.test.ts
// runs against it), a small real HTTP server here plays the body contract in front of the real
// inference server: it takes the query as the body and the keys' URI from
// X-Amzn-SageMaker-Custom-Attributes, puts the query in S3, calls the real server's JSON
// /invocations and answers the real encrypted result as the body. It can also play a server that
// predates bodies (415) or has a smaller limit (413).
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { createClient, choosePayload, BODY_LIMIT, PayloadRefused, sizeSwitch, type Transport } from '../../src/client/index.ts';
import { invokeHttp, keysAttribute, resultBytes } from '../../src/client/invoke.ts';
import { predict as nodePredict, sha256 } from '../../src/client/predict.ts';
import { ClientSession } from '../../src/client/session.ts';
import { isSealedError } from '../../src/errors.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startRuntimeEmulator } from '../../src/sagemaker/runtime-emulator.ts';
import { formatS3Uri, parseS3Uri } from '../../src/storage/s3.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../../bin/sealed.js', import.meta.url));

// --- The body form end to end, over a real inference server ---
// Set up before the first t.test: with the four pure subtests queued ahead of this setup, their
// end let tap run the file's teardown (closing this server) while the setup was still awaited
// (seen with tap's unused plugins dropped: ECONNREFUSED in reference(), 4 runs in 5).

const trained = await trainBreastCancer();
const stack = await startStack(trained.modelDir, trained.dir);
const { modelId, client: part } = await readClientPart(trained.modelDir);

interface Seen {
  type: string | undefined;
  attributes: string | undefined;
  bytes: number;
}
const seen: Seen[] = [];
let play: 'contract' | 'old-server' | 413 = 'contract';
let n = 0;

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/** The body contract in front of the real server (see the top of this file). */
const contract = createServer((req, res) => {
  void (async () => {
    const body = await readAll(req);
    const type = req.headers['content-type'];
    if (type?.startsWith('application/json')) return json(res, 200, await invokeHttp(stack.server.url, JSON.parse(body.toString('utf8'))));
    const attributes = req.headers['x-amzn-sagemaker-custom-attributes'] as string | undefined;
    seen.push({ type, attributes, bytes: body.length });
    if (play === 'old-server')
      return json(res, 415, {
        error: 'bad-request',
        message: 'Unsupported Media Type: application/octet-stream',
        hint: 'POST a JSON body with Content-Type: application/json',
      });
    if (play === 413) return json(res, 413, { error: 'bad-request', message: 'the query is larger than this server takes as a body' });
    if (type !== 'application/octet-stream') return json(res, 415, { error: 'bad-request', message: 'not a wire-format body' });
    const keys = /^keys=(\S+)$/.exec(attributes ?? '')?.[1];
    const id = ++n;
    const queryLoc = { bucket: stack.bucket, key: `contract/q${id}.query` };
    const outLoc = { bucket: stack.bucket, key: `contract/r${id}.result` };
    await stack.store.put(queryLoc, body, 'query');
    const request: Record<string, string> = { encrypted_query_uri: formatS3Uri(queryLoc), output_uri: formatS3Uri(outLoc), query_sha256: sha256(body) };
    if (keys) request.evaluation_keys_uri = keys;
    await invokeHttp(stack.server.url, request);
    const { bytes } = await stack.store.get(outLoc, 2 ** 31, 'result');
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-sealed-server': JSON.stringify({ played_by: 'test' }) }).end(bytes);
  })().catch((e: unknown) => (isSealedError(e) ? json(res, e.status, e.toJSON()) : json(res, 500, { error: 'internal', message: String(e) })));
});
await new Promise<void>((r) => contract.listen(0, '127.0.0.1', r));
const contractUrl = `http://127.0.0.1:${(contract.address() as AddressInfo).port}`;
const emulator = await startRuntimeEmulator({
  containerUrl: contractUrl,
  store: stack.store,
  outputPath: `s3://${stack.bucket}/async-out`,
  failurePath: `s3://${stack.bucket}/async-failed`,
  endpointName: 'sealed-body',
});

t.teardown(async () => {
  await emulator.close();
  await new Promise((r) => contract.close(r));
  await stack.close();
  await trained.cleanup();
});
t.beforeEach(() => {
  seen.length = 0;
  play = 'contract';
});

const s3 = { s3Endpoint: stack.s3.endpoint, bucket: stack.bucket };
const rows = trained.test.x.slice(0, 20);

/** The S3 form's answer for these records (sealed predict's path before #17). */
async function reference() {
  const session = await ClientSession.open(modelId, part);
  const keys = session.generateKeys();
  const r = await nodePredict(session, keys, rows, { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url });
  session.close();
  return r;
}
const ref = await reference();

t.test('choosePayload: auto sends a query as the body up to the limit, else through S3', async (t) => {
  const pick = (mode: 'auto' | 'body' | 's3', queryBytes: number, bodyAvailable = true, limit?: number) =>
    choosePayload({ mode, queryBytes, bodyAvailable, limit });
  t.equal(BODY_LIMIT, 6_291_456, "SageMaker InvokeEndpoint's Body limit");
  t.equal(pick('auto', 65_850), 'body', 'a breast-cancer query (66 KB): body');
  t.equal(pick('auto', BODY_LIMIT), 'body', 'exactly at the limit: body');
  t.equal(pick('auto', BODY_LIMIT + 1), 's3', 'one byte over: S3');
  t.equal(pick('auto', 5000, true, 4999), 's3', 'a configured limit is used');
  t.equal(pick('auto', 5000, true, 5000), 'body', 'and is inclusive');
  t.equal(pick('auto', 10, false), 's3', 'a channel without a body form (async endpoint): S3 whatever the size');
  t.equal(pick('s3', 10), 's3', 's3 is always S3');
  t.equal(pick('body', 10), 'body');
  t.throws(
    () => pick('body', BODY_LIMIT + 1),
    { code: 'bad-request', message: /6291457 bytes, more than the request body limit of 6291456/, hint: /auto or s3/ },
    'body refuses a query over the limit before any traffic',
  );
  t.throws(() => pick('body', 10, false), { code: 'bad-request', hint: /s3 or auto/ }, 'body refuses a channel without a body form');
});

t.test('sizeSwitch: 415 switches to S3 for good, 413 for that query, other errors pass', async (t) => {
  const calls: string[] = [];
  let answer: 'ok' | 413 | 415 | 'boom' = 'ok';
  const fake = (name: string, batch?: boolean): Transport => ({
    async evaluate(query) {
      calls.push(`${name}:${query.length}`);
      if (name === 'body' && answer === 'boom') throw new Error('boom');
      if (name === 'body' && typeof answer === 'number') throw new PayloadRefused(answer, `refused ${answer}`);
      return { result: query, keysUploaded: false, ms: {}, via: name };
    },
    batch,
  });
  const auto = sizeSwitch(fake('body'), fake('s3', true), { limit: 100 });
  t.equal(auto.batch, true, 'takes batch-mode queries as the S3 form does');
  const q = (n: number) => new Uint8Array(n);
  t.equal((await auto.evaluate(q(100), undefined)).via, 'body');
  t.equal((await auto.evaluate(q(101), undefined)).via, 's3');
  answer = 413;
  t.equal((await auto.evaluate(q(50), undefined)).via, 's3', '413: this query through S3');
  answer = 'ok';
  t.equal((await auto.evaluate(q(50), undefined)).via, 'body', 'and the next one as a body again');
  answer = 'boom';
  await t.rejects(auto.evaluate(q(50), undefined), { message: 'boom' }, 'another failure is not hidden by a retry through S3');
  answer = 415;
  t.equal((await auto.evaluate(q(50), undefined)).via, 's3', '415: through S3');
  answer = 'ok';
  t.equal((await auto.evaluate(q(50), undefined)).via, 's3', 'and from then on, without asking again');
  t.same(calls, ['body:100', 's3:101', 'body:50', 's3:50', 'body:50', 'body:50', 'body:50', 's3:50', 's3:50']);
  const none = sizeSwitch(undefined, fake('s3'));
  t.equal((await none.evaluate(q(1), undefined)).via, 's3', 'no body form: S3');
});

t.test('keysAttribute and resultBytes refuse what the body form cannot carry', async (t) => {
  const uri = `s3://bucket/team-1/sealed/keys/${'ab'.repeat(32)}.keys`;
  t.equal(keysAttribute(uri), `keys=${uri}`);
  t.throws(
    () => keysAttribute('s3://bucket/my keys,x/k.keys'),
    { code: 'bad-request', hint: /plain characters, or transport s3/ },
    'spaces and commas would split the attributes',
  );
  t.throws(() => keysAttribute(`s3://bucket/${'k'.repeat(1020)}`), { code: 'bad-request' }, 'SageMaker passes at most 1,024 characters');
  t.throws(
    () => resultBytes(new TextEncoder().encode('{"records":1}'), 'application/json; charset=utf-8'),
    { name: 'SealedError', hint: /does not take queries as request bodies/ },
    'a JSON answer is not taken for a result',
  );
  t.equal(resultBytes(new Uint8Array([1, 2]), 'application/octet-stream').length, 2);
});

t.test('an endpoint where nothing listens: the error says why, not only "fetch failed"', async (t) => {
  // A port that was just free: bound, then closed.
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const { port } = closed.address() as AddressInfo;
  await new Promise<void>((r) => closed.close(() => r()));
  await t.rejects(
    invokeHttp(`http://127.0.0.1:${port}`, {}),
    { code: 'storage', message: /cannot reach the inference server at http:\/\/127\.0\.0\.1:\d+ \(fetch failed: ECONNREFUSED\)/, hint: /sealed serve/ },
    'the cause (ECONNREFUSED) is named',
  );
});

t.test('a transport mode or body limit that does not exist is refused, saying what to give', async (t) => {
  await t.rejects(
    createClient({ model: 'anything', transport: 'fast' as never }),
    { name: 'SealedError', code: 'bad-request', hint: /auto, body, s3/ },
    'createClient',
  );
  const cli = (...args: string[]) =>
    run(process.execPath, [bin, 'predict', '--model', 'nowhere', '--input', 'nothing.csv', ...args]).catch((e: { code: number; stderr: string }) => e);
  const limit = (await cli('--body-limit', '6MB')) as { code: number; stderr: string };
  t.equal(limit.code, 2, 'sealed predict --body-limit 6MB exits 2');
  t.match(limit.stderr, /--body-limit must be a whole number of bytes/);
  const mode = (await cli('--transport', 'fast')) as { code: number; stderr: string };
  t.not(mode.code, 0, 'sealed predict --transport fast fails');
  t.match(mode.stderr, /auto, body, s3/, 'naming the choices');
});

t.test('the SDK with transport body: the query and result are the bodies, the keys named by a header', async (t) => {
  const client = await createClient({ model: part, endpoint: contractUrl, transport: 'body', ...s3 });
  t.teardown(() => client.close());
  const r = await client.predictWithStats(rows);
  t.equal(r.stats.via, 'body');
  t.same(
    r.predictions.map((p) => p.label),
    ref.predictions.map((p) => p.label),
    'the same classes as the S3 form',
  );
  t.ok(Math.max(...r.scores.map((s, i) => Math.abs(s[0] - ref.scores[i][0]))) < 1e-4, 'the same scores within 1e-4');
  t.same(Object.keys(r.stats.transport_ms).sort(), ['invoke', 'keys']);
  t.same(r.stats.server, { played_by: 'test' }, "the server's x-sealed-server header is reported");
  t.equal(seen.length, 1, 'one body request');
  t.equal(seen[0].type, 'application/octet-stream');
  t.equal(seen[0].bytes, r.stats.query_bytes, 'the body is the query');
  const keys = client.keys!;
  const uri = /^keys=(s3:\/\/\S+)$/.exec(seen[0].attributes ?? '')?.[1];
  t.equal(uri, `s3://${stack.bucket}/sealed/keys/${keys.evaluationKeysId}.keys`, 'keys=<s3 uri>, content-addressed as in the S3 form');
  const stored = await stack.store.get(parseS3Uri(uri), 2 ** 30, 'keys');
  t.equal(sha256(stored.bytes), keys.evaluationKeysId, 'the object there holds the evaluation keys');
  t.equal(r.stats.keys_uploaded, true);
  const again = await client.predictWithStats(rows.slice(0, 1));
  t.equal(again.stats.keys_uploaded, false, 'keys uploaded once');
  t.notOk(Buffer.from(seen[1].attributes ?? '').includes(Buffer.from(keys.secretKey).subarray(0, 16)), 'nothing of the secret key in the header');
});

t.test('auto: a small query as the body, a query over the limit through S3', async (t) => {
  const client = await createClient({ model: part, endpoint: contractUrl, ...s3 });
  t.teardown(() => client.close());
  const small = await client.predictWithStats(rows);
  t.equal(small.stats.via, 'body', `default auto, ${small.stats.query_bytes} bytes: body`);
  // Half the size: compressed ciphertexts differ by a few bytes from one encryption to the next.
  const capped = await createClient({ model: part, endpoint: contractUrl, bodyLimit: Math.floor(small.stats.query_bytes / 2), ...s3 });
  t.teardown(() => capped.close());
  const big = await capped.predictWithStats(rows);
  t.equal(big.stats.via, 's3', 'over bodyLimit: S3');
  t.same(Object.keys(big.stats.transport_ms).sort(), ['download', 'invoke', 'upload']);
  t.same(
    big.predictions.map((p) => p.label),
    ref.predictions.map((p) => p.label),
  );
  t.equal(seen.length, 1, 'only the small query came as a body');
});

t.test('auto against a server without the body form (415): S3, and it is not asked again', async (t) => {
  play = 'old-server';
  const client = await createClient({ model: part, endpoint: contractUrl, ...s3 });
  t.teardown(() => client.close());
  const first = await client.predictWithStats(rows);
  const second = await client.predictWithStats(rows.slice(0, 2));
  t.same([first.stats.via, second.stats.via], ['s3', 's3']);
  t.same(
    first.predictions.map((p) => p.label),
    ref.predictions.map((p) => p.label),
  );
  t.equal(seen.length, 1, 'one body attempt in all');
  const body = await createClient({ model: part, endpoint: contractUrl, transport: 'body', ...s3 });
  t.teardown(() => body.close());
  await t.rejects(
    body.predict(rows),
    { name: 'SealedError', code: 'bad-request', httpStatus: 415, hint: /update it, or use transport s3/ },
    'transport body says what to do',
  );
});

t.test('auto and a 413: that query through S3, the next as a body', async (t) => {
  const client = await createClient({ model: part, endpoint: contractUrl, ...s3 });
  t.teardown(() => client.close());
  play = 413;
  t.equal((await client.predictWithStats(rows)).stats.via, 's3');
  play = 'contract';
  t.equal((await client.predictWithStats(rows)).stats.via, 'body');
});

t.test('keys deleted from S3 after this process saw them: re-uploaded once, the body sent again', async (t) => {
  const client = await createClient({ model: part, endpoint: contractUrl, transport: 'body', ...s3 });
  t.teardown(() => client.close());
  await client.predict(rows.slice(0, 1));
  const keys = client.keys!;
  await stack.store.client.send(new DeleteObjectCommand({ Bucket: stack.bucket, Key: `sealed/keys/${keys.evaluationKeysId}.keys` }));
  const r = await client.predictWithStats(rows.slice(0, 1));
  t.equal(r.stats.keys_uploaded, true, 'uploaded again');
  t.equal(seen.length, 3, 'first call, the refused one, the retry');
  t.same(
    r.predictions.map((p) => p.label),
    ref.predictions.slice(0, 1).map((p) => p.label),
  );
});

t.test('a key prefix the header cannot carry: refused before any request', async (t) => {
  const client = await createClient({ model: part, endpoint: contractUrl, transport: 'body', ...s3, prefix: 'my keys/' });
  t.teardown(() => client.close());
  await t.rejects(client.predict(rows.slice(0, 1)), { code: 'bad-request', hint: /transport s3/ });
  t.equal(seen.length, 0);
});

t.test('over SageMaker InvokeEndpoint (the local emulator): the same body contract', async (t) => {
  const client = await createClient({ model: part, sagemaker: { endpointName: 'sealed-body', url: emulator.url }, transport: 'body', ...s3 });
  t.teardown(() => client.close());
  const r = await client.predictWithStats(rows);
  t.equal(r.stats.via, 'body');
  t.same(
    r.predictions.map((p) => p.label),
    ref.predictions.map((p) => p.label),
  );
  t.equal(seen[0].type, 'application/octet-stream', 'ContentType reaches the container');
  t.match(seen[0].attributes, /^keys=s3:\/\/sealed-test\/sealed\/keys\/[0-9a-f]{64}\.keys$/, 'CustomAttributes reach the container');
  play = 'old-server';
  const auto = await createClient({ model: part, sagemaker: { endpointName: 'sealed-body', url: emulator.url }, ...s3 });
  t.teardown(() => auto.close());
  t.equal((await auto.predictWithStats(rows)).stats.via, 's3', "a container's 415 (SageMaker's ModelError) sends auto through S3");
  const async = await createClient({ model: part, sagemaker: { endpointName: 'sealed-body', url: emulator.url, async: true }, transport: 'body', ...s3 });
  t.teardown(() => async.close());
  await t.rejects(async.predict(rows), { code: 'bad-request', hint: /s3 or auto/ }, 'async endpoints take S3 only');
});

t.test('sealed predict path: predictBatches with transport auto uses one transport for every request', async (t) => {
  const { predictBatches } = await import('../../src/client/predict.ts');
  const session = await ClientSession.open(modelId, part);
  t.teardown(() => session.close());
  const keys = session.generateKeys();
  play = 'old-server';
  const route = { store: stack.store, bucket: stack.bucket, endpoint: contractUrl };
  // Three requests of one ciphertext each.
  const many = Array.from({ length: part.input.recordsPerCiphertext * 2 + 1 }, (_, i) => trained.test.x[i % trained.test.x.length]);
  const r = await predictBatches(session, keys, many, route, { transport: 'auto', perRequest: 1 });
  t.equal(r.stats.length, 3, 'three requests');
  t.ok(r.stats.every((s) => s.transport === 's3'));
  t.ok(seen.length <= 2, `the 415 is learnt once per transport (two requests in flight): ${seen.length} body attempts`);
  play = 'contract';
  const b = await predictBatches(session, keys, many, route, { transport: 'body', perRequest: 1 });
  t.ok(b.stats.every((s) => s.transport === 'body' && s.ms.download === 0));
  t.same(
    b.predictions.map((p) => p.label),
    r.predictions.map((p) => p.label),
  );
  await t.rejects(
    nodePredict(session, keys, trained.test.x.slice(0, 2), route, { layout: 'batch', transport: 'body' }),
    { code: 'bad-request' },
    'batch layout refuses body (before it needs a batch mode)',
  );
});
