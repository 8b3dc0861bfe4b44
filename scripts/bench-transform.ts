// node scripts/bench-transform.ts [--n 40000] [--instances 2] [--transport s3|body] [--workers W]
//
// A Batch Transform job through the local emulator: N MNIST test images (repeated past 10,000)
// in batch mode, one part per 4,096-image batch, split by the emulator across --instances local
// servers (each with W workers, default cores / instances), driven by `sealed predict
// --transform`'s own code (predictTransform) through the real SageMaker SDK client. Reports accuracy (and agreement with the plaintext plan), wall
// time by phase, and the split across instances. Last stdout line: one JSON object.
import { availableParallelism, cpus } from 'node:os';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart, readServerPart } from '../src/model/bundle.ts';
import { simulateBatch } from '../src/model/simulate-batch.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { startServer } from '../src/server/serve.ts';
import { startTransformControlPlane } from '../src/sagemaker/transform-control-plane.ts';
import type { TransformTransport } from '../src/sagemaker/transform.ts';
import { predictTransform } from '../src/cli/predict-transform.ts';
import { TRANSFORM_LIMITS, transformDeadlineMs } from '../src/sagemaker/transform-job.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { ObjectStore } from '../src/storage/s3.ts';
import { CNN_DEFAULTS } from '../src/train/cnn.ts';
import { loadIdxPair, MNIST_TEST_IMAGES, MNIST_TEST_LABELS } from '../src/train/mnist.ts';
import { ensureMnistModel } from './mnist-model.ts';

const err = (s: string) => process.stderr.write(s + '\n');
const argmax = (v: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
};

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '40000' },
    instances: { type: 'string', default: '2' },
    transport: { type: 'string', default: 's3' },
    workers: { type: 'string' },
  },
});
const n = Number(values.n);
const instances = Number(values.instances);
const transport = values.transport as TransformTransport;
const workers = Number(values.workers ?? Math.max(1, Math.floor(availableParallelism() / instances)));
const test = await loadIdxPair(MNIST_TEST_IMAGES, MNIST_TEST_LABELS);
const modelDir = await ensureMnistModel({ arch: 'cnn', epochs: CNN_DEFAULTS.epochs, deskew: true, retrain: false, test, log: err });
const { modelId, client } = await readClientPart(modelDir);
const plan = (await readServerPart(modelDir)).batch!;
const images = Array.from({ length: n }, (_, i) => test.images[i % test.images.length]);
const labels = Array.from({ length: n }, (_, i) => test.labels[i % test.labels.length]);

const work = await mkdtemp(join(tmpdir(), 'sealed-bench-transform-'));
const s3 = await startLocalS3({ directory: join(work, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const bucket = 'sealed-bench';
await store.ensureBucket(bucket);
// The emulator's instances: servers of W workers each (in this process: the machine is shared).
// On SageMaker the job's Environment sets their deadline from the invocation timeout; these are
// already running, so they get it here (with the real-time 55 s a loaded machine fails batches).
const deadlineMs = transformDeadlineMs(TRANSFORM_LIMITS.timeoutSeconds.default);
const servers = await Promise.all(
  Array.from({ length: instances }, () => startServer({ modelDir, port: 0, host: '127.0.0.1', workers, s3Endpoint: s3.endpoint, allowAny: true, deadlineMs })),
);
const plane = await startTransformControlPlane({ store, instances: servers.map((s) => s.url) });
const session = await ClientSession.open(modelId, client);
session.generateKeys();

const jobName = `bench-${transport}-${n}`;
// The CLI's own path (`sealed predict --transform`): parts encrypted on every core, uploaded, the
// job started on the emulator's SageMaker API, results decrypted in order into a state directory.
const t0 = performance.now();
const { predictions, summary } = await predictTransform(session, images, store, {
  transform: `s3://${bucket}/sealed/tenants/bench/`,
  modelName: 'sealed-local',
  jobName,
  instanceCount: instances,
  transport,
  sagemakerApiUrl: plane.url,
  state: join(work, 'state'),
  json: true,
});
const predicted = predictions.map((p) => Number(p.label));
const wall = (performance.now() - t0) / 1000;
const m = plane.manifest(jobName)!;
// The plaintext plan's classes (what the encrypted evaluation must reproduce).
const plainPlan = (i: number) => argmax(simulateBatch(plan, preprocessRecord(images[i], client)));
const sample = Array.from({ length: Math.min(n, 2000) }, (_, k) => Math.floor((k * n) / Math.min(n, 2000)));
const result = {
  bench: 'transform',
  transport,
  n,
  parts: summary.parts,
  records_per_part: summary.records_per_part,
  instances,
  workers_per_instance: workers,
  accuracy_encrypted: predicted.filter((c, i) => c === labels[i]).length / n,
  agreement_with_plaintext_plan_sample: sample.filter((i) => plainPlan(i) === predicted[i]).length / sample.length,
  wall_s: +wall.toFixed(1),
  job_s: +m.seconds.toFixed(1),
  images_per_s: +(n / wall).toFixed(1),
  split: m.instances.map((i) => ({
    instance: i.index,
    objects: i.objects,
    bytes_in: i.bytesIn,
    seconds: +i.seconds.toFixed(1),
    execution_parameters: i.container ?? null,
  })),
  summary,
  client_threads: availableParallelism(),
  machine: `${cpus().length}-core ${cpus()[0]?.model ?? ''}`.trim(),
};
session.close();
await plane.close();
await Promise.all(servers.map((s) => s.close()));
store.close();
await s3.close();
await rm(work, { recursive: true, force: true });
console.log(JSON.stringify(result));
