// The SageMaker Runtime emulator in front of the real server (real HTTP, real S3, real workers),
// driven by the real @aws-sdk/client-sagemaker-runtime with only `endpoint` overridden.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import t from 'tap';
import { InvokeEndpointAsyncCommand, InvokeEndpointCommand } from '@aws-sdk/client-sagemaker-runtime';
import { ensureKeysUploaded, invokeHttp } from '../src/client/predict.ts';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { invokeAsync, invokeRealtime, runtimeClient, sagemakerInvoke, type Invoke } from '../src/sagemaker/runtime-client.ts';
import { REALTIME_MAX_BYTES, startRuntimeEmulator } from '../src/sagemaker/runtime-emulator.ts';
import { formatS3Uri, parseS3Uri } from '../src/storage/s3.ts';
import { startStack, trainBreastCancer } from './helpers/fixture.ts';

const trained = await trainBreastCancer();
const stack = await startStack(trained.modelDir, trained.dir);
const { modelId, client: part } = await readClientPart(trained.modelDir);
const session = await ClientSession.open(modelId, part);
const keys = session.generateKeys();
const bucket = stack.bucket;
const outputPath = `s3://${bucket}/async/out`;
const failurePath = `s3://${bucket}/async/failed`;
const emulator = await startRuntimeEmulator({ containerUrl: stack.server.url, store: stack.store, outputPath, failurePath });
const sm = runtimeClient({ endpoint: emulator.url });
t.teardown(async () => {
  sm.destroy();
  await emulator.close();
  session.close();
  await stack.close();
  await trained.cleanup();
});

const transport = { store: stack.store, bucket, endpoint: stack.server.url };
// One encrypted query, evaluated three ways: the server is deterministic for a given ciphertext
// and keys, so the encrypted results must be the same bytes whichever way the request went.
const queryLoc = { bucket, key: `sealed/queries/${randomUUID()}.query` };
await stack.store.put(queryLoc, session.encrypt(trained.test.x), 'query');
const keysLoc = (await ensureKeysUploaded(transport, keys)).loc;
const bodyFor = (name: string) => ({ encrypted_query_uri: formatS3Uri(queryLoc), evaluation_keys_uri: formatS3Uri(keysLoc), output_uri: `s3://${bucket}/sealed/results/${name}-${randomUUID()}.result` });

async function run(invoke: Invoke, name: string) {
  const body = bodyFor(name);
  const answer = await invoke(body);
  const { bytes } = await stack.store.get(parseS3Uri(body.output_uri), 2 ** 31, 'result');
  return { answer, bytes, predictions: session.decrypt(bytes) };
}

const direct = await run((b) => invokeHttp(stack.server.url, b), 'direct');

t.test('InvokeEndpoint through the emulator gives the direct-HTTP result, byte for byte', async (t) => {
  const r = await run(sagemakerInvoke({ client: sm, endpointName: 'sealed-test' }), 'realtime');
  t.equal(r.answer.records, trained.test.x.length);
  t.same(Buffer.from(r.bytes), Buffer.from(direct.bytes), 'same encrypted result');
  t.same(r.predictions, direct.predictions, 'same decrypted predictions');
  const acc = r.predictions.filter((p, i) => p.label === ['malignant', 'benign'][trained.test.y[i]]).length / r.predictions.length;
  t.ok(Math.abs(acc - trained.result.metrics.test_accuracy) < 1e-6, `accuracy ${acc} equals the plaintext accuracy`);
});

t.test('InvokeEndpoint: the SDK sees the SageMaker response shape', async (t) => {
  const r = await sm.send(new InvokeEndpointCommand({ EndpointName: 'sealed-test', ContentType: 'application/json', Body: new TextEncoder().encode(JSON.stringify(bodyFor('shape'))) }));
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
  t.same(Buffer.from(viaClient.bytes), Buffer.from(direct.bytes), 'same encrypted result');
  t.same(viaClient.predictions, direct.predictions, 'same decrypted predictions');
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

  await t.rejects(invokeAsync(sm, 'sealed-test', body, { store: stack.store, inputUri, timeoutMs: 30_000 }), { name: 'SealedError', code: 'not-found' }, 'the client turns it into the server error');
  await t.rejects(invokeRealtime(sm, 'sealed-test', body), { name: 'SealedError', code: 'not-found', message: /\(404\)/ }, 'real-time: ModelError -> the same error');
});

t.test('InvokeEndpointAsync without InputLocation is a ValidationError', async (t) => {
  await t.rejects(sm.send(new InvokeEndpointAsyncCommand({ EndpointName: 'x', InputLocation: '' })), { name: 'ValidationError' });
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
  const emu = await startRuntimeEmulator({ containerUrl: fakeUrl, store: stack.store, outputPath, failurePath });
  const c = runtimeClient({ endpoint: emu.url });
  t.teardown(async () => {
    c.destroy();
    await emu.close();
    if (fake.listening) fake.close();
  });

  const r = await c.send(new InvokeEndpointCommand({ EndpointName: 'e', ContentType: 'text/csv', Accept: 'application/x-test', CustomAttributes: 'trace=abc', Body: new Uint8Array([1, 2, 3]) }));
  t.match(seen, { 'content-type': 'text/csv', accept: 'application/x-test', 'x-amzn-sagemaker-custom-attributes': 'trace=abc' }, 'request headers reach the container');
  t.equal(r.ContentType, 'application/x-test');
  t.equal(r.CustomAttributes, 'echo=1', 'response custom attributes reach the client');

  await t.rejects(c.send(new InvokeEndpointCommand({ EndpointName: 'e', Body: new Uint8Array(REALTIME_MAX_BYTES + 1) })), { name: 'ValidationError' }, 'request over 6 MB');
  reply = Buffer.alloc(REALTIME_MAX_BYTES + 1);
  await t.rejects(c.send(new InvokeEndpointCommand({ EndpointName: 'e', Body: new Uint8Array(1) })), { name: 'ModelError' }, 'response over 6 MB');

  await new Promise((r) => fake.close(r));
  fake.closeAllConnections();
  await t.rejects(invokeRealtime(c, 'e', {}), { name: 'SealedError', code: 'storage' }, 'unreachable container: a storage/unreachable error');
});
