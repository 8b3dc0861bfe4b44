// transformPredict, the client's Batch Transform call: parts uploaded, one job started (or
// followed), results handed back in part order, and a rerun that resumes: no part uploaded
// twice, no second job, no result fetched that the caller already has. Real SDK client, real
// embedded S3, the local control plane and two stand-in instances (test/helpers/transform-instance.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore } from '../../src/storage/s3.ts';
import { startTransformControlPlane } from '../../src/sagemaker/transform-control-plane.ts';
import { splitRecords, transformLayout, transformPredict } from '../../src/sagemaker/transform.ts';
import { instance } from '../helpers/transform-instance.ts';

const dir = await mkdtemp(join(tmpdir(), 'sealed-transform-sdk-'));
const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const bucket = 'sealed-tsdk';
await store.ensureBucket(bucket);
const params = { MaxConcurrentTransforms: 2, BatchStrategy: 'SingleRecord', MaxPayloadInMB: 6 };
const inst = await Promise.all([instance(0, { params }), instance(1, { params })]);
const plane = await startTransformControlPlane({ store, instances: inst.map((i) => i.url) });
const sagemaker = new SageMakerClient({ endpoint: plane.url, region: 'us-east-1', credentials: { accessKeyId: 'L', secretAccessKey: 'L' } });
t.teardown(async () => {
  sagemaker.destroy();
  await plane.close();
  await Promise.all(inst.map((i) => i.close()));
  store.close();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});
const wait = { sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, Math.min(ms, 20))), pollMs: { first: 10, max: 20 } };
const expected = (i: number) => [...`query ${i}`].reverse().join('');
const body = (b: Uint8Array) =>
  Buffer.from(b)
    .toString('latin1')
    .replace(/^OUT\d:/, '');

t.test('splitRecords: as few parts as fit the payload limit, consecutive', async (t) => {
  t.same(
    splitRecords(10, (n) => 100 + 30 * n, 200),
    [0, 3, 6, 9].map((s) => ({ start: s, end: Math.min(10, s + 3) })),
  );
  t.same(
    splitRecords(5, (n) => n, 100),
    [{ start: 0, end: 5 }],
  );
  t.throws(() => splitRecords(5, () => 300, 200), /one record encrypts to 300 bytes, over the payload limit of 200/);
});

t.test('start, wait, results in order; then a rerun resumes', async (t) => {
  const count = 9;
  const asked: number[] = [];
  const got: string[] = [];
  const progress: string[] = [];
  const o = {
    sagemaker,
    store,
    bucket,
    prefix: 'sealed/tenants/acme/',
    jobName: 'sealed-transform-abc123',
    count,
    modelName: 'sealed-m',
    job: { instanceCount: 2 },
    query: (i: number) => {
      asked.push(i);
      return Buffer.from(`query ${i}`, 'latin1');
    },
    wait,
  };
  // The first run stops while fetching result 5 (as an interrupted download would).
  await t.rejects(
    transformPredict({
      ...o,
      onProgress: (p) => progress.push(p.status),
      onResult: (i, b) => {
        if (i === 5) throw new Error('interrupted');
        got[i] = body(b);
      },
    }),
    { message: 'interrupted' },
  );
  t.same(asked, [0, 1, 2, 3, 4, 5, 6, 7, 8], 'every part encrypted once');
  t.same(got, [0, 1, 2, 3, 4].map(expected), 'results 0-4 in order, each the answer to its own part');
  t.ok(progress.length > 0, 'progress reported');
  const L = transformLayout(bucket, 'sealed/tenants/acme/', 'sealed-transform-abc123');
  t.equal(L.out(3).key, 'sealed/tenants/acme/transform-out/sealed-transform-abc123/part-000003.query.out');
  const m = plane.manifest('sealed-transform-abc123')!;
  t.same(
    m.instances.map((i) => i.objects),
    [5, 4],
    'split across the two instances',
  );

  asked.length = 0;
  const order: number[] = [];
  const again = await transformPredict({
    ...o,
    have: (i) => got[i] !== undefined,
    onResult: (i, b) => {
      order.push(i);
      got[i] = body(b);
    },
  });
  t.same(
    again,
    { jobName: 'sealed-transform-abc123', started: false, uploaded: 0, fetched: 4, skipped: 5 },
    'followed the same job, fetched only what was missing',
  );
  t.same(asked, [], 'nothing encrypted or uploaded again');
  t.same(order, [5, 6, 7, 8]);
  t.same(
    got,
    Array.from({ length: count }, (_, i) => expected(i)),
    'all results, each its own part',
  );
});

t.test('refusals: a part over the payload limit, a stray object, no job and no model', async (t) => {
  const base = { sagemaker, store, bucket, prefix: 'sealed/tenants/bob/', count: 2, wait, onResult: () => {} };
  await t.rejects(transformPredict({ ...base, jobName: 'big', modelName: 'm', job: { maxPayloadInMB: 1 }, query: () => new Uint8Array(1024 * 1024 + 1) }), {
    message: /part 0 is 1048577 bytes, over the transform payload limit of 1048576/,
    hint: /splitRecords/,
  });
  await store.put(transformLayout(bucket, 'sealed/tenants/bob/', 'stray').part(7), new Uint8Array(1), 'x');
  await t.rejects(transformPredict({ ...base, jobName: 'stray', modelName: 'm', query: () => new Uint8Array(1) }), {
    message: /holds an object that is not a part of this job/,
  });
  await t.rejects(transformPredict({ ...base, jobName: 'nomodel', query: () => new Uint8Array(1) }), {
    code: 'not-found',
    hint: /npm run deploy -- transform --model-name MODEL --input s3:\/\/sealed-tsdk\/sealed\/tenants\/bob\/transform-in\/nomodel\//,
  });
});
