// The local Batch Transform emulator, driven by the real @aws-sdk/client-sagemaker (only its
// endpoint overridden) through deploy's startTransformJob / waitForTransformJob, over the real
// embedded S3 server, against two real HTTP "instances". Until the server's body transport and
// GET /execution-parameters are merged, the instances are small Fastify servers that implement
// that contract (POST /invocations, application/octet-stream in and out; GET
// /execution-parameters) with a transformation of the bytes the test can check; the end-to-end
// run against `sealed serve` is test/light/transform-e2e.test.ts.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore } from '../../src/storage/s3.ts';
import { startTransformJob, waitForTransformJob } from '../../src/sagemaker/transform-job.ts';
import { MANIFEST_NAME, shard, type TransformManifest } from '../../src/sagemaker/transform-emulator.ts';
import { startTransformControlPlane } from '../../src/sagemaker/transform-control-plane.ts';
import { instance } from '../helpers/transform-instance.ts';

const dir = await mkdtemp(join(tmpdir(), 'sealed-transform-'));
const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const bucket = 'sealed-transform';
await store.ensureBucket(bucket);

async function setup(opts: Parameters<typeof instance>[1][]) {
  const inst = await Promise.all(opts.map((o, i) => instance(i, o)));
  const plane = await startTransformControlPlane({ store, instances: inst.map((i) => i.url) });
  const sagemaker = new SageMakerClient({ endpoint: plane.url, region: 'us-east-1', credentials: { accessKeyId: 'LOCAL', secretAccessKey: 'LOCAL' } });
  return {
    inst,
    plane,
    sagemaker,
    async close() {
      sagemaker.destroy();
      await plane.close();
      await Promise.all(inst.map((i) => i.close()));
    },
  };
}
const put = (key: string, text: string) => store.put({ bucket, key }, Buffer.from(text, 'latin1'), 'input');
const text = async (key: string) => Buffer.from((await store.get({ bucket, key }, 1e9, 'x')).bytes).toString('latin1');
const noWait = { sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, Math.min(ms, 20))), pollMs: { first: 10, max: 20 } };

t.teardown(async () => {
  store.close();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

t.test('shard: contiguous runs in key order, sizes differing by at most one', async (t) => {
  t.same(shard([1, 2, 3, 4, 5, 6, 7], 2), [
    [1, 2, 3, 4],
    [5, 6, 7],
  ]);
  t.same(shard([1, 2], 3), [[1], [2], []]);
});

t.test('a job over 2 instances: split, execution parameters, octet-stream bodies, .out names, retries, manifest', async (t) => {
  const names = ['part-00000', 'part-00001', 'part-00002', 'part-00003', 'part-00004', 'part-00005', 'sub/part-00006'];
  for (const [i, n] of names.entries()) await put(`in/job1/${n}`, `query-${i}`);
  await put('in/job1-other/not-mine', 'outside the prefix');
  await put('in/job1/folder/', ''); // a "folder" marker is no input
  const e = await setup([
    { params: { MaxConcurrentTransforms: 3, BatchStrategy: 'SingleRecord', MaxPayloadInMB: 6 } },
    { params: { MaxConcurrentTransforms: 2, BatchStrategy: 'SingleRecord', MaxPayloadInMB: 6 }, failOnce: 'query-5' },
  ]);
  t.teardown(() => e.close());
  await startTransformJob(e, { jobName: 'job1', modelName: 'sealed-m', input: `s3://${bucket}/in/job1/`, output: `s3://${bucket}/out/job1`, instanceCount: 2 });
  const progress: number[] = [];
  const d = await waitForTransformJob(e, 'job1', {
    ...noWait,
    progress: async () => ({ done: e.inst.reduce((s, i) => s + i.seen.length, 0), total: names.length }),
    onProgress: (p) => progress.push(p.done),
  });
  t.equal(d.TransformJobStatus, 'Completed');
  t.ok(progress.length >= 1, 'progress reported while waiting');
  // SageMaker's names: <output>/<key relative to the input prefix>.out
  for (const [i, n] of names.entries()) {
    const owner = i < 4 ? 0 : 1;
    t.equal(await text(`out/job1/${n}.out`), `OUT${owner}:${[...`query-${i}`].reverse().join('')}`, `${n}.out from instance ${owner}`);
  }
  t.same(e.inst[0].seen.map((s) => s.body).sort(), ['query-0', 'query-1', 'query-2', 'query-3'], 'instance 0: the first contiguous share');
  t.same([...new Set(e.inst[1].seen.map((s) => s.body))].sort(), ['query-4', 'query-5', 'query-6'], 'instance 1: the rest');
  t.equal(e.inst[1].seen.filter((s) => s.body === 'query-5').length, 2, 'a 503 is retried');
  t.ok(
    e.inst.every((i) => i.seen.every((s) => s.type === 'application/octet-stream')),
    'bodies sent as application/octet-stream',
  );
  t.ok(e.inst[0].maxInFlight() > 1 && e.inst[0].maxInFlight() <= 3, `instance 0 ran up to its MaxConcurrentTransforms (3): ${e.inst[0].maxInFlight()}`);
  t.ok(e.inst[1].maxInFlight() <= 2, `instance 1 at most 2 at once: ${e.inst[1].maxInFlight()}`);
  const m = JSON.parse(await text(`out/job1/${MANIFEST_NAME}`)) as TransformManifest;
  t.same(e.plane.manifest('job1'), m, 'the manifest in S3 is the job record');
  t.equal(m.status, 'Completed');
  t.same(
    m.instances.map((i) => [i.objects, i.used.MaxConcurrentTransforms, i.container?.BatchStrategy]),
    [
      [4, 3, 'SingleRecord'],
      [3, 2, 'SingleRecord'],
    ],
    "split and each container's parameters",
  );
  t.same(
    m.objects.map((o) => o.output.replace(`s3://${bucket}/`, '')),
    names.map((n) => `out/job1/${n}.out`).sort(),
    'one record per object, in key order',
  );
  t.equal(m.objects.find((o) => o.input.endsWith('part-00005'))!.attempts, 2);
  t.same(m.environmentNotApplied, { SEALED_DEADLINE_MS: '590000' }, 'says which job environment the running instances did not get');
  await t.rejects(
    startTransformJob(e, { jobName: 'job1', modelName: 'sealed-m', input: `s3://${bucket}/in/job1/`, output: `s3://${bucket}/out/x/` }),
    { message: /already exists/ },
    'job names are unique',
  );
});

t.test("the request's values win over the container's; none from either: SageMaker's defaults", async (t) => {
  for (let i = 0; i < 4; i++) await put(`in/job2/p${i}`, `q${i}`);
  const e = await setup([{}, { params: { MaxConcurrentTransforms: 4, BatchStrategy: 'SingleRecord', MaxPayloadInMB: 6 } }]);
  t.teardown(() => e.close());
  await startTransformJob(e, {
    jobName: 'job2',
    modelName: 'm',
    input: `s3://${bucket}/in/job2/`,
    output: `s3://${bucket}/out/job2/`,
    instanceCount: 2,
    maxPayloadInMB: 10,
  });
  await waitForTransformJob(e, 'job2', noWait);
  const m = e.plane.manifest('job2')!;
  t.same(
    m.instances[0].used,
    { MaxConcurrentTransforms: 1, MaxPayloadInMB: 10, BatchStrategy: 'MultiRecord' },
    'no /execution-parameters: service defaults, request payload',
  );
  t.equal(m.instances[0].container, undefined);
  t.same(m.instances[1].used, { MaxConcurrentTransforms: 4, MaxPayloadInMB: 10, BatchStrategy: 'SingleRecord' });
  t.equal(e.inst[0].maxInFlight(), 1, 'concurrency 1 without parameters');
});

t.test('a refused object fails the job with the reason; the others are written; too large objects are refused unsent', async (t) => {
  await put('in/job3/a', 'good-a');
  await put('in/job3/b', 'bad');
  await put('in/job3/c', 'x'.repeat(1024 * 1024 + 1));
  const e = await setup([{ params: { MaxConcurrentTransforms: 1, BatchStrategy: 'SingleRecord', MaxPayloadInMB: 1 }, refuse: 'bad' }]);
  t.teardown(() => e.close());
  await startTransformJob(e, { jobName: 'job3', modelName: 'm', input: `s3://${bucket}/in/job3/`, output: `s3://${bucket}/out/job3/` });
  await t.rejects(waitForTransformJob(e, 'job3', noWait), {
    message: /transform job job3 ended Failed: ClientError: 2 of 3 objects failed; first: .*job3\/b: the container answered 400/,
    hint: /CloudWatch Logs/,
  });
  t.equal(await text('out/job3/a.out'), 'OUT0:a-doog');
  t.equal(e.inst[0].seen.filter((s) => s.body === 'bad').length, 1, 'a 4xx is not retried');
  t.notOk(
    e.inst[0].seen.some((s) => s.body.length > 1024 * 1024),
    'the over-limit object never reached the container',
  );
  t.match(e.plane.manifest('job3')!.objects.find((o) => o.input.endsWith('/c'))!.error, /over MaxPayloadInMB \(1 MB\)/);
});

t.test('deploy refuses what SageMaker would: limits and prefixes', async (t) => {
  const e = await setup([{}]);
  t.teardown(() => e.close());
  const base = { jobName: 'j', modelName: 'm', input: `s3://${bucket}/in/`, output: `s3://${bucket}/out/` };
  await t.rejects(startTransformJob(e, { ...base, maxPayloadInMB: 101 }), { message: /MaxPayloadInMB 101 is not a whole number from 1 to 100/ });
  await t.rejects(startTransformJob(e, { ...base, maxPayloadInMB: 30, maxConcurrentTransforms: 4 }), { message: /120 MB, over SageMaker's 100 MB/ });
  await t.rejects(startTransformJob(e, { ...base, input: 'in/' }), { code: 'bad-uri' });
  await t.rejects(startTransformJob(e, { ...base, instanceCount: 2 }), { message: /more than the 1 local instances/ });
});
