// Batch Transform end to end: real encrypted batch-mode queries (no evaluation keys), two real
// sealed servers as the emulator's instances, the real SDK client through the local control
// plane, transformPredict, and decryption: the predictions equal those of `predict` over S3.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { predict } from '../../src/client/predict.ts';
import { ClientSession, type Keys } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';
import { startServer } from '../../src/server/serve.ts';
import { startTransformControlPlane } from '../../src/sagemaker/transform-control-plane.ts';
import { splitRecords, transformPredict, type TransformPredictOptions } from '../../src/sagemaker/transform.ts';

type TransformJobOptionsLeft = NonNullable<TransformPredictOptions['job']>;
import { imageBundle } from '../helpers/fixture-cache.ts';
import { tinyCnn } from '../helpers/networks.ts';
import { startStack } from '../helpers/fixture.ts';

await endToEnd();

async function endToEnd() {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-transform-e2e-'));
  const modelDir = join(dir, 'model');
  let seed = 11;
  const pixel = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256;
  const images = Array.from({ length: 60 }, () => Array.from({ length: 64 }, pixel));
  // Compiled once and cached (test/helpers/fixture-cache.ts): compiling measures SEAL's unit costs.
  // tinyCnn: this suite's subject is the transform path, not the network.
  await imageBundle(modelDir, tinyCnn, images.slice(0, 30));
  // Transform containers take whole objects as bodies: up to MaxPayloadInMB, not real-time's 6 MB.
  const transformPayload = { maxPayloadBytes: 64 * 1024 * 1024 };
  const stack = await startStack(modelDir, dir, 1, transformPayload);
  // The second instance: another server process's stand-in, same model, same S3. Its worker
  // warms up while this thread opens the client session.
  const secondReady = startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 1, s3Endpoint: stack.s3.endpoint, allowAny: true, ...transformPayload });
  const { modelId, client } = await readClientPart(modelDir);
  const session = await ClientSession.open(modelId, client);
  // Batch mode only: its secret key, and no evaluation keys (the single layout's Galois keys,
  // which session.generateKeys() would also make, are never sent on this path).
  const keys: Keys = { secretKey: new Uint8Array(0), evaluationKeys: new Uint8Array(0), evaluationKeysId: '', batchSecretKey: session.generateBatchKey() };
  const second = await secondReady;
  t.teardown(async () => {
    session.close();
    await second.close();
    await stack.close();
    await rm(dir, { recursive: true, force: true });
  });

  const direct = await predict(session, keys, images, { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url }, { layout: 'batch' });

  // Both jobs send the same three parts: each is encrypted once (a fresh encryption per job
  // would check nothing more; the jobs' objects live under their own names either way).
  const queries = new Map<string, Uint8Array>();
  const encrypted = ({ start, end }: { start: number; end: number }) => {
    const key = `${start}-${end}`;
    if (!queries.has(key)) queries.set(key, session.encrypt(images.slice(start, end), 'batch'));
    return queries.get(key)!;
  };

  /** One job over both instances; its parts' results decrypted; the split and what `check` wants of the manifest. */
  async function job(t: Test, o: { name: string; transport?: 's3' | 'body'; parts: { start: number; end: number }[]; job: TransformJobOptionsLeft }) {
    const plane = await startTransformControlPlane({ store: stack.store, instances: [stack.server.url, second.url] });
    const sagemaker = new SageMakerClient({ endpoint: plane.url, region: 'us-east-1', credentials: { accessKeyId: 'L', secretAccessKey: 'L' } });
    t.teardown(async () => {
      sagemaker.destroy();
      await plane.close();
    });
    const scores: number[][] = [];
    const summary = await transformPredict({
      sagemaker,
      store: stack.store,
      bucket: stack.bucket,
      prefix: 'sealed/tenants/e2e/',
      jobName: o.name,
      modelName: 'sealed-local',
      count: o.parts.length,
      transport: o.transport,
      job: o.job,
      query: (i) => encrypted(o.parts[i]),
      onResult: (i, bytes) => {
        session.decryptScores(bytes).forEach((s, k) => (scores[o.parts[i].start + k] = s));
      },
      wait: { pollMs: { first: 50, max: 200 } },
    });
    t.same(summary, { jobName: o.name, started: true, uploaded: 3, fetched: 3, skipped: 0 });
    const m = plane.manifest(o.name)!;
    t.same(
      m.instances.map((i) => i.objects),
      [2, 1],
      'split across the two instances',
    );
    t.equal(scores.length, images.length);
    scores.forEach((s, i) => t.ok(Math.max(...s.map((v, k) => Math.abs(v - direct.scores[i][k]))) < 1e-2, `record ${i}: transform and S3 predict agree`));
    return m;
  }

  t.test('s3 transport: JSON requests over 2 instances decrypt to the predictions of predict over S3', async (t) => {
    const parts = [0, 20, 40].map((start) => ({ start, end: start + 20 }));
    const m = await job(t, { name: 'sealed-transform-s3', transport: 's3', parts, job: { instanceCount: 2, maxConcurrentTransforms: 1 } });
    t.ok(
      m.objects.every((o) => o.output.endsWith('.json.out') && (o.bytesOut ?? 0) > 0),
      "each .out holds the server's JSON answer",
    );
  });

  t.test('body transport over 2 instances decrypts to the predictions of predict over S3', async (t) => {
    // Parts of 20 records: 3 parts, split 2 + 1 across the instances.
    const parts = splitRecords(images.length, (n) => (n <= 20 ? 1 : 2), 1);
    t.equal(parts.length, 3);
    // A batch-mode part is ~12.6 MB: over SageMaker's default MaxPayloadInMB of 6.
    const m = await job(t, { name: 'sealed-transform-e2e', parts, job: { instanceCount: 2, maxPayloadInMB: 50 } });
    t.ok(
      m.instances.every((i) => i.container?.MaxConcurrentTransforms !== undefined),
      "each instance's /execution-parameters was read",
    );
  });
}
