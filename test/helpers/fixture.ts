// Shared fixtures: a breast-cancer model trained for real, a real S3 server, a real server.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BREAST_CANCER_CSV, splitCsv } from '../../src/cli/demo.ts';
import { parseCsv, splitTarget } from '../../src/train/csv.ts';
import { parseHyperparameters, train, type TrainResult } from '../../src/train/train.ts';
import { startLocalS3, type LocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore } from '../../src/storage/s3.ts';
import { startServer, type RunningServer } from '../../src/server/serve.ts';

export interface Trained {
  dir: string;
  modelDir: string;
  trainDir: string;
  testDir: string;
  test: { x: number[][]; y: number[] };
  result: TrainResult;
  cleanup(): Promise<void>;
}

export async function trainBreastCancer(extra: Record<string, string> = {}): Promise<Trained> {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-test-'));
  const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(dir, 'data'));
  const modelDir = join(dir, 'model');
  const result = await train({ trainDir, testDir, modelDir }, parseHyperparameters({ task: 'binary', target: 'diagnosis', labels: 'malignant,benign', epochs: '150', ...extra }), () => {});
  const test = splitTarget(parseCsv(await readFile(join(testDir, 'data.csv'), 'utf8'), 'test'), 'diagnosis');
  return { dir, modelDir, trainDir, testDir, test, result, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface Stack {
  s3: LocalS3;
  store: ObjectStore;
  server: RunningServer;
  bucket: string;
  close(): Promise<void>;
}

export async function startStack(modelDir: string, dir: string, workers = 2): Promise<Stack> {
  const s3 = await startLocalS3({ directory: join(dir, 's3') });
  const store = new ObjectStore({ endpoint: s3.endpoint });
  const bucket = 'sealed-test';
  await store.ensureBucket(bucket);
  // allowAny: the tests' own S3 server and a single user; tests of the allow-lists and tenants
  // start their servers with them (test/limits.test.ts, test/tenants.test.ts).
  const server = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers, s3Endpoint: s3.endpoint, allowAny: true });
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
