// The SageMaker Runtime emulator in front of the real server (real HTTP, real S3, real workers),
// driven by the real @aws-sdk/client-sagemaker-runtime with only `endpoint` overridden; and
// refusing, with SageMaker's errors, what SageMaker refuses.
import { spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { InvokeEndpointAsyncCommand, InvokeEndpointCommand, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { ensureKeysUploaded, invokeHttp } from '../../src/client/predict.ts';
import { invokeBodyHttp } from '../../src/client/invoke.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { invokeAsync, invokeRealtime, runtimeClient, sagemakerInvoke, type Invoke } from '../../src/sagemaker/runtime-client.ts';
import { REALTIME_MAX_BYTES, startRuntimeEmulator } from '../../src/sagemaker/runtime-emulator.ts';
import type { Prediction } from '../../src/model/postprocess.ts';
import { formatS3Uri, parseS3Uri } from '../../src/storage/s3.ts';
import { decodeWire } from '../../src/wire/format.ts';
import type { SealedError } from '../../src/errors.ts';
import { startStack, trainBreastCancer } from '../helpers/fixture.ts';

const trained = await trainBreastCancer();
const stack = await startStack(trained.modelDir, trained.dir);
const { modelId, client: part } = await readClientPart(trained.modelDir);
const session = await ClientSession.open(modelId, part);
const keys = session.generateKeys();
const bucket = stack.bucket;
const outputPath = `s3://${bucket}/async/out`;
const failurePath = `s3://${bucket}/async/failed`;
const emulator = await startRuntimeEmulator({ containerUrl: stack.server.url, store: stack.store, outputPath, failurePath, endpointName: 'sealed-test' });
const sm = runtimeClient({ endpoint: emulator.url });
t.teardown(async () => {
  sm.destroy();
  await emulator.close();
  session.close();
  await stack.close();
  await trained.cleanup();
});

const transport = { store: stack.store, bucket, endpoint: stack.server.url };
// One encrypted query, evaluated three ways. Results are re-randomized (circuit privacy), so
// they are never the same bytes twice; they must carry the same header and decrypt to the same
// predictions within the flood's documented precision, whichever way the request went.
const queryLoc = { bucket, key: `sealed/queries/${randomUUID()}.query` };
await stack.store.put(queryLoc, session.encrypt(trained.test.x), 'query');
const keysLoc = (await ensureKeysUploaded(transport, keys)).loc;
const bodyFor = (name: string) => ({
  encrypted_query_uri: formatS3Uri(queryLoc),
  evaluation_keys_uri: formatS3Uri(keysLoc),
  output_uri: `s3://${bucket}/sealed/results/${name}-${randomUUID()}.result`,
});

function sameResult(t: Test, a: { bytes: Uint8Array; predictions: Prediction[] }, b: { bytes: Uint8Array; predictions: Prediction[] }) {
  t.same(decodeWire('result', a.bytes, 'a').header, decodeWire('result', b.bytes, 'b').header, 'same result header (model, records, query hash)');
  t.not(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), true, 'different bytes: each result is re-randomized');
  t.same(
    a.predictions.map((p) => p.label),
    b.predictions.map((p) => p.label),
    'same decrypted labels',
  );
  const worst = Math.max(...a.predictions.flatMap((p, i) => p.scores.map((v, k) => Math.abs(v - b.predictions[i].scores[k]))));
  t.ok(worst < 1e-3, `same decrypted scores within 1e-3 (worst ${worst.toExponential(1)})`);
}

async function run(invoke: Invoke, name: string) {
  const body = bodyFor(name);
  const answer = await invoke(body);
  const { bytes } = await stack.store.get(parseS3Uri(body.output_uri), 2 ** 31, 'result');
  return { answer, bytes, predictions: session.decrypt(bytes) };
}

const direct = await run((b) => invokeHttp(stack.server.url, b), 'direct');

t.test('InvokeEndpoint through the emulator gives the direct-HTTP result', async (t) => {
  const r = await run(sagemakerInvoke({ client: sm, endpointName: 'sealed-test' }), 'realtime');
  t.equal(r.answer.records, trained.test.x.length);
  sameResult(t, r, direct);
  const acc = r.predictions.filter((p, i) => p.label === ['malignant', 'benign'][trained.test.y[i]]).length / r.predictions.length;
  t.ok(Math.abs(acc - trained.result.metrics.test_accuracy) < 1e-6, `accuracy ${acc} equals the plaintext accuracy`);
});

t.test('InvokeEndpoint: the SDK sees the SageMaker response shape', async (t) => {
  const r = await sm.send(
    new InvokeEndpointCommand({
      EndpointName: 'sealed-test',
      ContentType: 'application/json',
      Body: new TextEncoder().encode(JSON.stringify(bodyFor('shape'))),
    }),
  );
  t.equal(r.$metadata.httpStatusCode, 200);
  t.equal(r.InvokedProductionVariant, 'AllTraffic');
  t.match(r.ContentType, /^application\/json/);
  t.match(r.$metadata.requestId, /^[0-9a-f-]{36}$/, 'x-amzn-requestid');
  t.equal((JSON.parse(new TextDecoder().decode(r.Body)) as { model_id: string }).model_id, modelId);
});

t.test('InvokeEndpointAsync: 202, output at <S3OutputPath>/<id>.out, same result as direct', async (t) => {
  const inputUri = `s3://${bucket}/async/in/${randomUUID()}.json`;
  const body = bodyFor('async-raw');
  await stack.store.put(parseS3Uri(inputUri), new TextEncoder().encode(JSON.stringify(body)), 'input');
  const r = await sm.send(new InvokeEndpointAsyncCommand({ EndpointName: 'sealed-test', InputLocation: inputUri, ContentType: 'application/json' }));
  t.equal(r.$metadata.httpStatusCode, 202);
  t.match(r.InferenceId, /^[0-9a-f-]{36}$/);
  t.equal(r.OutputLocation, `${outputPath}/${r.InferenceId}.out`);
  t.equal(r.FailureLocation, `${failurePath}/${r.InferenceId}-error.out`);

  const viaClient = await run(sagemakerInvoke({ client: sm, endpointName: 'sealed-test', async: { store: stack.store, bucket, timeoutMs: 60_000 } }), 'async');
  t.equal(viaClient.answer.records, trained.test.x.length, 'the answer is the server JSON read from the output location');
  sameResult(t, viaClient, direct);
});

t.test('an async request the server refuses lands in the failure path', async (t) => {
  const body = { ...bodyFor('missing'), encrypted_query_uri: `s3://${bucket}/sealed/queries/does-not-exist.query` };
  const inputUri = `s3://${bucket}/async/in/${randomUUID()}.json`;
  await stack.store.put(parseS3Uri(inputUri), new TextEncoder().encode(JSON.stringify(body)), 'input');
  const r = await sm.send(new InvokeEndpointAsyncCommand({ EndpointName: 'sealed-test', InputLocation: inputUri, ContentType: 'application/json' }));
  const failure = parseS3Uri(r.FailureLocation!);
  for (let i = 0; i < 100 && !(await stack.store.head(failure)); i++) await new Promise((res) => setTimeout(res, 50));
  const text = new TextDecoder().decode((await stack.store.get(failure, 1e6, 'failure')).bytes);
  t.match(JSON.parse(text), { error: 'not-found' }, 'the failure object holds the server error body');
  t.equal(await stack.store.head(parseS3Uri(r.OutputLocation!)), undefined, 'no output object');

  await t.rejects(
    invokeAsync(sm, 'sealed-test', body, { store: stack.store, inputUri, timeoutMs: 30_000 }),
    { name: 'SealedError', code: 'not-found' },
    'the client turns it into the server error',
  );
  await t.rejects(
    invokeRealtime(sm, 'sealed-test', body),
    { name: 'SealedError', code: 'not-found', message: /\(404\)/ },
    'real-time: ModelError -> the same error',
  );
});

t.test('InvokeEndpointAsync without InputLocation is a ValidationError', async (t) => {
  await t.rejects(sm.send(new InvokeEndpointAsyncCommand({ EndpointName: 'sealed-test', InputLocation: '' })), {
    name: 'ValidationError',
    message: /InputLocation/,
  });
});

t.test('headers pass through both ways; 6 MB limits; an unreachable container', async (t) => {
  let seen: IncomingHttpHeaders = {};
  let reply = Buffer.from('{"ok":true}');
  const fake = createServer((req, res) => {
    seen = req.headers;
    req.resume().on('end', () => res.writeHead(200, { 'content-type': 'application/x-test', 'x-amzn-sagemaker-custom-attributes': 'echo=1' }).end(reply));
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  const fakeUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
  const emu = await startRuntimeEmulator({ containerUrl: fakeUrl, store: stack.store, outputPath, failurePath, endpointName: 'e' });
  const c = runtimeClient({ endpoint: emu.url });
  t.teardown(async () => {
    c.destroy();
    await emu.close();
    if (fake.listening) fake.close();
  });

  const r = await c.send(
    new InvokeEndpointCommand({
      EndpointName: 'e',
      ContentType: 'text/csv',
      Accept: 'application/x-test',
      CustomAttributes: 'trace=abc',
      Body: new Uint8Array([1, 2, 3]),
    }),
  );
  t.match(
    seen,
    { 'content-type': 'text/csv', accept: 'application/x-test', 'x-amzn-sagemaker-custom-attributes': 'trace=abc' },
    'request headers reach the container',
  );
  t.equal(r.ContentType, 'application/x-test');
  t.equal(r.CustomAttributes, 'echo=1', 'response custom attributes reach the client');

  await t.rejects(
    c.send(new InvokeEndpointCommand({ EndpointName: 'e', Body: new Uint8Array(REALTIME_MAX_BYTES + 1) })),
    { name: 'ValidationError' },
    'request over 6 MB',
  );
  reply = Buffer.alloc(REALTIME_MAX_BYTES + 1);
  await t.rejects(c.send(new InvokeEndpointCommand({ EndpointName: 'e', Body: new Uint8Array(1) })), { name: 'ModelError' }, 'response over 6 MB');

  await new Promise((r) => fake.close(r));
  fake.closeAllConnections();
  await t.rejects(invokeRealtime(c, 'e', {}), { name: 'SealedError', code: 'storage' }, 'unreachable container: a storage/unreachable error');
});

/** A stand-in container answering /invocations with `answer`; counts the requests it got. */
async function fakeContainer(answer: (req: IncomingMessage, res: ServerResponse) => void) {
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    req.resume().on('end', () => answer(req, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    close: () => new Promise((r) => server.close(r)).then(() => server.closeAllConnections()),
  };
}

/** A SageMaker Runtime client that does not retry: a retry would hide a failed first attempt. */
const noRetry = (endpoint: string) =>
  new SageMakerRuntimeClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'LOCAL', secretAccessKey: 'LOCAL' }, maxAttempts: 1 });

/** The emulator in front of a stand-in container, and a client of it that does not retry; closed with `t`. */
async function fakeEndpoint(
  t: Test,
  answer: (req: IncomingMessage, res: ServerResponse) => void,
  o: { endpointName?: string; region?: string } = {},
): Promise<{ fake: Awaited<ReturnType<typeof fakeContainer>>; c: SageMakerRuntimeClient }> {
  const fake = await fakeContainer(answer);
  const emu = await startRuntimeEmulator({
    containerUrl: fake.url,
    store: stack.store,
    outputPath,
    failurePath,
    endpointName: o.endpointName ?? 'e',
    region: o.region,
  });
  const c = noRetry(emu.url);
  t.teardown(async () => {
    c.destroy();
    await emu.close();
    await fake.close();
  });
  return { fake, c };
}

t.test('SageMaker refuses what it would refuse: another endpoint, a variant or model it lacks', async (t) => {
  const { fake, c } = await fakeEndpoint(t, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'), {
    endpointName: 'sealed-prod',
  });
  const body = new Uint8Array([1]);

  const ok = await c.send(new InvokeEndpointCommand({ EndpointName: 'sealed-prod', Body: body, TargetVariant: 'AllTraffic' }));
  t.equal(ok.$metadata.httpStatusCode, 200, 'its own name, and TargetVariant AllTraffic: 200');
  t.equal(ok.InvokedProductionVariant, 'AllTraffic');

  const notFound = {
    name: 'ValidationError',
    $metadata: { httpStatusCode: 400 },
    message: /^Endpoint sealed-staging of account \d{12} not found\. .*invoke that name/,
  };
  await t.rejects(
    c.send(new InvokeEndpointCommand({ EndpointName: 'sealed-staging', Body: body })),
    notFound,
    'InvokeEndpoint, another name: ValidationError, not found',
  );
  await t.rejects(
    c.send(new InvokeEndpointAsyncCommand({ EndpointName: 'sealed-staging', InputLocation: `s3://${bucket}/async/in/x.json` })),
    notFound,
    'InvokeEndpointAsync, another name: the same',
  );

  await t.rejects(
    c.send(new InvokeEndpointCommand({ EndpointName: 'sealed-prod', Body: body, TargetVariant: 'Bogus' })),
    { name: 'ValidationError', $metadata: { httpStatusCode: 400 }, message: /Variant Bogus not found .*AllTraffic/ },
    'a variant the endpoint lacks',
  );
  await t.rejects(
    c.send(new InvokeEndpointCommand({ EndpointName: 'sealed-prod', Body: body, TargetModel: 'model.tar.gz' })),
    { name: 'ValidationError', message: /not a multi-model endpoint/ },
    'a target model on a single-model endpoint',
  );
  t.equal(fake.requests(), 1, 'none of the refused requests reached the container');
});

t.test("ModelError carries a LogStreamArn, as SageMaker's does", async (t) => {
  const { c } = await fakeEndpoint(t, (_req, res) => res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"internal","message":"boom"}'), {
    region: 'eu-west-1',
  });
  const err = (await c.send(new InvokeEndpointCommand({ EndpointName: 'e', Body: new Uint8Array([1]) })).catch((e: unknown) => e)) as Record<string, unknown>;
  t.match(err, { name: 'ModelError', $metadata: { httpStatusCode: 424 }, OriginalStatusCode: 500, OriginalMessage: '{"error":"internal","message":"boom"}' });
  t.match(
    err.LogStreamArn,
    /^arn:aws:logs:eu-west-1:\d{12}:log-group:\/aws\/sagemaker\/Endpoints\/e:log-stream:\S+$/,
    `LogStreamArn ${String(err.LogStreamArn)}`,
  );
});

t.test("a container's answer that is not the server's JSON reads as over direct HTTP: status-coded, made safe to show", async (t) => {
  const page = 'no such route\n<h1>Not Found</h1>\u202e';
  const { fake, c } = await fakeEndpoint(t, (_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end(page));
  const viaSageMaker = (await invokeRealtime(c, 'e', {}).catch((e: unknown) => e)) as SealedError;
  const viaHttp = (await invokeBodyHttp(fake.url, new Uint8Array([1]), {}).catch((e: unknown) => e)) as SealedError;
  t.match(viaHttp, { name: 'SealedError', code: 'not-found' }, 'direct HTTP (the body form): a 404 is not-found');
  t.match(viaSageMaker, { name: 'SealedError', code: viaHttp.code, message: /\(404\)/ }, "SageMaker's ModelError: the same code");
  t.notMatch(viaSageMaker.message, /[\n<>\u202e]/, 'no newline, markup or bidirectional character of the page in the message');
  t.equal(viaSageMaker.message, viaHttp.message, 'the same message as over direct HTTP');
});

t.test('InvokeEndpointAsync: InvocationTimeoutSeconds 1-3600 and RequestTTLSeconds 60-21600, as SageMaker', async (t) => {
  const { c } = await fakeEndpoint(t, (_req, res) => res.writeHead(200).end('{}'));
  const inputUri = `s3://${bucket}/async/in/${randomUUID()}.json`;
  await stack.store.put(parseS3Uri(inputUri), new TextEncoder().encode('{}'), 'input');
  const send = (o: { InvocationTimeoutSeconds?: number; RequestTTLSeconds?: number }) =>
    c.send(new InvokeEndpointAsyncCommand({ EndpointName: 'e', InputLocation: inputUri, ...o }));
  for (const o of [{ InvocationTimeoutSeconds: 1 }, { InvocationTimeoutSeconds: 3600 }, { RequestTTLSeconds: 60 }, { RequestTTLSeconds: 21_600 }]) {
    t.equal((await send(o)).$metadata.httpStatusCode, 202, `${JSON.stringify(o)}: accepted`);
  }
  for (const [o, message] of [
    [
      { InvocationTimeoutSeconds: 0 },
      /'invocationTimeoutSeconds' failed to satisfy constraint: Member must have value greater than or equal to 1 \(give InvocationTimeoutSeconds from 1 to 3600 seconds/,
    ],
    [{ InvocationTimeoutSeconds: 3601 }, /'invocationTimeoutSeconds' failed to satisfy constraint: Member must have value less than or equal to 3600/],
    [
      { RequestTTLSeconds: 59 },
      /'requestTTLSeconds' failed to satisfy constraint: Member must have value greater than or equal to 60 \(give RequestTTLSeconds from 60 to 21600 seconds/,
    ],
    [{ RequestTTLSeconds: 21_601 }, /'requestTTLSeconds' failed to satisfy constraint: Member must have value less than or equal to 21600/],
  ] as const) {
    await t.rejects(send(o), { name: 'ValidationError', $metadata: { httpStatusCode: 400 }, message }, `${JSON.stringify(o)}: ValidationError`);
  }
});

t.test('`sealed sagemaker-emulator` in its own process: a body over 6 MB gets the 413 ValidationError, never EPIPE', async (t) => {
  // Its own process, as users run it: in the test's process the client happened to read the
  // answer before the connection was reset, which hid the bug.
  const fake = await fakeContainer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
  const bin = fileURLToPath(new URL('../../bin/sealed.js', import.meta.url));
  const args = [
    'sagemaker-emulator',
    '--port',
    '0',
    '--container',
    fake.url,
    '--s3-endpoint',
    stack.s3.endpoint,
    '--output-path',
    outputPath,
    '--failure-path',
    failurePath,
  ];
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stderr.on('data', (d) => (out += d));
  // Its start-up lines: the URL, and the endpoint name to give `sealed predict`.
  const [url, name] = await new Promise<string[]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the emulator did not start: ${out}`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /emulator at (http:\/\/[\d.]+:\d+)[^]*--sagemaker-endpoint (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve([m[1], m[2]]);
      }
    });
    child.once('exit', (code) => reject(new Error(`the emulator exited (${code}): ${out}`)));
  });
  const c = noRetry(url);
  t.teardown(async () => {
    c.destroy();
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    await fake.close();
  });

  const atLimit = await c.send(new InvokeEndpointCommand({ EndpointName: name, Body: new Uint8Array(REALTIME_MAX_BYTES) }));
  t.equal(atLimit.$metadata.httpStatusCode, 200, `exactly 6 MB (6,291,456 bytes) reaches the container; ${name}, the name it prints, is the one it serves`);

  const outcomes: Record<string, number> = {};
  for (const size of [7 * 1024 * 1024, 30 * 1024 * 1024]) {
    const big = new Uint8Array(size);
    for (let i = 0; i < 10; i++) {
      const e = (await c.send(new InvokeEndpointCommand({ EndpointName: name, Body: big })).catch((err: unknown) => err)) as {
        name?: string;
        message?: string;
        $metadata?: { httpStatusCode?: number };
      };
      const key = `${size} bytes: ${e.name} ${e.$metadata?.httpStatusCode ?? ''} ${e.message?.startsWith(`The request body is ${size} bytes, over the real-time limit`) ? 'says the size and the limit' : e.message}`;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    }
  }
  t.same(
    outcomes,
    { '7340032 bytes: ValidationError 413 says the size and the limit': 10, '31457280 bytes: ValidationError 413 says the size and the limit': 10 },
    'every over-limit request: a 413 ValidationError',
  );
  await t.rejects(
    c.send(new InvokeEndpointCommand({ EndpointName: name, Body: new Uint8Array(REALTIME_MAX_BYTES + 1) })),
    {
      name: 'ValidationError',
      message: /over the real-time limit of 6291456 bytes \(6 MB\)\. Send less per InvokeEndpoint request, or use InvokeEndpointAsync/,
    },
    'one byte over: the message says what to do',
  );
  t.equal(fake.requests(), 1, 'no over-limit body reached the container');
});
