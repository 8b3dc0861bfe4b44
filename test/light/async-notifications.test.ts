// Async inference waited on by its SNS notification through SQS instead of polling S3 (#17):
// SageMaker's runtime and SQS are mocked at their SDK boundary (test/helpers/aws-recording.ts),
// S3 is the real local server, whose request count shows that nothing polls it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SQSClient } from '@aws-sdk/client-sqs';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { parseNotification } from '../../src/sagemaker/async-notifications.ts';
import { invokeAsync } from '../../src/sagemaker/runtime-client.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore, parseS3Uri } from '../../src/storage/s3.ts';
import { cut, type Call } from '../helpers/aws-recording.ts';

const dir = await mkdtemp(join(tmpdir(), 'sealed-async-notify-'));
const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const B = 'notify';
await store.ensureBucket(B);
t.teardown(async () => {
  store.close();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

const creds = { region: 'us-east-1', credentials: { accessKeyId: 'TEST', secretAccessKey: 'TEST' } };
const queueUrl = 'https://sqs.us-east-1.amazonaws.com/123456789012/sealed-async';
/** SageMaker's message as SNS delivers it to an SQS queue (not raw). */
const sns = (m: Record<string, unknown>) =>
  JSON.stringify({ Type: 'Notification', TopicArn: 'arn:aws:sns:us-east-1:123456789012:sealed-x', Message: JSON.stringify(m) });
const message = (id: string, status: 'Completed' | 'Failed', extra: Record<string, unknown> = {}) => ({
  awsRegion: 'us-east-1',
  invocationStatus: status,
  inferenceId: id,
  eventSource: 'aws:sagemaker',
  eventName: 'InferenceResult',
  ...extra,
});

/** An endpoint whose request `id` ends as `finish` says, and a queue that delivers `batches` in turn. */
function world(id: string, batches: { Body: string }[][], finish: (out: string, failed: string) => Promise<void>) {
  const calls: Call[] = [];
  const output = `s3://${B}/async/out/${id}.out`;
  const failure = `s3://${B}/async/failed/${id}.out`;
  const runtime = cut(new SageMakerRuntimeClient(creds), 'runtime', calls, async () => {
    await finish(output, failure);
    return { InferenceId: id, OutputLocation: output, FailureLocation: failure };
  });
  let n = 0;
  const sqs = cut(new SQSClient(creds), 'sqs', calls, async (c) => {
    if (c.command !== 'ReceiveMessage') return {};
    await new Promise((r) => setTimeout(r, 20));
    const batch = batches[n++] ?? [];
    return { Messages: batch.map((m, k) => ({ ...m, ReceiptHandle: `rh-${n}-${k}`, MessageId: `m-${n}-${k}` })) };
  });
  t.teardown(() => {
    runtime.destroy();
    sqs.destroy();
  });
  return { calls, runtime, sqs, output };
}
const put = (uri: string, text: string) => store.put(parseS3Uri(uri, 'uri'), new TextEncoder().encode(text), 'fixture');

t.test('the answer comes when its notification does: no S3 polling, only ours deleted, others released', async (t) => {
  const w = world(
    'inf-ours',
    [
      [{ Body: sns(message('inf-other', 'Completed')) }, { Body: 'not json' }],
      [{ Body: sns(message('inf-ours', 'Completed', { responseParameters: { outputLocation: `s3://${B}/async/out/inf-ours.out` } })) }],
    ],
    (out) => put(out, JSON.stringify({ output_uri: 's3://x/y', timings_ms: { total: 5 } })),
  );
  const before = s3.requests();
  const answer = await invokeAsync(
    w.runtime,
    'sealed-ep',
    { encrypted_query_uri: 's3://x/q' },
    { store, inputUri: `s3://${B}/async/in/1.json`, notifications: { sqs: w.sqs, queueUrl } },
  );
  t.same(answer, { output_uri: 's3://x/y', timings_ms: { total: 5 } });
  // PUT request, PUT output (the mock endpoint), GET output: no HEAD of a poll.
  t.equal(s3.requests() - before, 3, 'S3 saw the request, the answer and one read of it: nothing polled');
  const sqsCalls = w.calls.filter((c) => c.service === 'sqs');
  t.same(
    sqsCalls.map((c) => c.command),
    ['ReceiveMessage', 'ChangeMessageVisibility', 'ChangeMessageVisibility', 'ReceiveMessage', 'DeleteMessage'],
  );
  t.match(sqsCalls[0].input, { QueueUrl: queueUrl, WaitTimeSeconds: 20, MaxNumberOfMessages: 10 }, 'long polling');
  t.same(
    sqsCalls.filter((c) => c.command === 'ChangeMessageVisibility').map((c) => c.input.VisibilityTimeout),
    [0, 0],
    "another request's message and a stray one go back to the queue at once",
  );
  t.equal(sqsCalls[4].input.ReceiptHandle, 'rh-2-0', 'only our notification is deleted');
});

t.test("a failure notification: the server's error from the failure location, else the reason, sanitized", async (t) => {
  const withBody = world('inf-f1', [[{ Body: sns(message('inf-f1', 'Failed', { failureReason: 'ClientError: 400' })) }]], (_, failed) =>
    put(failed, JSON.stringify({ error: 'bad-query', message: 'the query names another model', hint: 'encrypt for this model' })),
  );
  await t.rejects(invokeAsync(withBody.runtime, 'ep', {}, { store, inputUri: `s3://${B}/async/in/2.json`, notifications: { sqs: withBody.sqs, queueUrl } }), {
    message: /the query names another model/,
  });
  const bare = world('inf-f2', [[{ Body: JSON.stringify(message('inf-f2', 'Failed', { failureReason: 'Model\nerror\u0000 <x>' })) }]], async () => {});
  const err = (await invokeAsync(bare.runtime, 'ep', {}, { store, inputUri: `s3://${B}/async/in/3.json`, notifications: { sqs: bare.sqs, queueUrl } }).catch(
    (e: unknown) => e,
  )) as Error;
  t.match(err.message, /^async inference inf-f2 failed: Model\?error\?\?\?x\?$/, `raw delivery parsed, the reason sanitized (${err.message})`);
});

t.test('no notification by the deadline: the same timeout error as polling', async (t) => {
  const w = world('inf-late', [], async () => {});
  const err = (await invokeAsync(
    w.runtime,
    'ep',
    {},
    { store, inputUri: `s3://${B}/async/in/4.json`, timeoutMs: 300, notifications: { sqs: w.sqs, queueUrl } },
  ).catch((e: unknown) => e)) as { code?: string; message: string };
  t.equal(err.code, 'overloaded');
  t.match(err.message, /did not finish within 0 s/);
  t.ok(
    w.calls.filter((c) => c.command === 'ReceiveMessage').every((c) => c.input.WaitTimeSeconds === 1),
    'the last waits are cut to the deadline',
  );
});

t.test('parseNotification: SNS envelope or raw; anything else is not ours', async (t) => {
  t.match(parseNotification(sns(message('a', 'Completed', { responseParameters: { outputLocation: 's3://b/k' } }))), {
    inferenceId: 'a',
    outputLocation: 's3://b/k',
  });
  t.match(parseNotification(JSON.stringify(message('b', 'Failed'))), { inferenceId: 'b', invocationStatus: 'Failed' });
  for (const body of [undefined, '', '[]', '{"inferenceId":"c","invocationStatus":"Pending"}', JSON.stringify({ Type: 'Notification', Message: 'x' })])
    t.equal(parseNotification(body), undefined, String(body));
});
