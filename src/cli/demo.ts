// `sealed demo` (npm run demo): the whole story on the embedded local default. A model owner
// trains on 80% of the breast-cancer records; the server starts on loopback with a real S3
// server; a client encrypts the other 20%, gets them scored on ciphertexts only, decrypts.
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { predict } from '../client/predict.ts';
import { ClientSession } from '../client/session.ts';
import { readClientPart } from '../model/bundle.ts';
import { classOf } from '../model/postprocess.ts';
import { startServer } from '../server/serve.ts';
import { startLocalS3 } from '../storage/local-s3.ts';
import { ObjectStore } from '../storage/s3.ts';
import { parseHyperparameters, train } from '../train/train.ts';
import { parseCsv, splitTarget } from '../train/csv.ts';

export const BREAST_CANCER_CSV = fileURLToPath(new URL('../../data/breast_cancer/breast_cancer.csv', import.meta.url));

/** Deterministic 80/20 split (seeded shuffle), written as two CSV channels. */
export async function splitCsv(file: string, dir: string, testFraction = 0.2, seed = 7): Promise<{ trainDir: string; testDir: string }> {
  const lines = (await readFile(file, 'utf8')).trim().split('\n');
  const [header, ...rows] = lines;
  let s = seed;
  const rand = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = rows.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [rows[i], rows[j]] = [rows[j], rows[i]];
  }
  const nTest = Math.round(rows.length * testFraction);
  const trainDir = join(dir, 'train');
  const testDir = join(dir, 'test');
  await mkdir(trainDir, { recursive: true });
  await mkdir(testDir, { recursive: true });
  await writeFile(join(trainDir, 'data.csv'), [header, ...rows.slice(nTest)].join('\n') + '\n');
  await writeFile(join(testDir, 'data.csv'), [header, ...rows.slice(0, nTest)].join('\n') + '\n');
  return { trainDir, testDir };
}

export interface TabularRun {
  csv: string;
  hyperparameters: Record<string, string>;
  workers?: number;
  say?: (line: string) => void;
}

/**
 * The whole story on a CSV data set: train on 80%, serve on loopback with a real S3 server,
 * encrypt the other 20% on the client, evaluate, decrypt; returns the measured summary.
 */
export async function runTabular(o: TabularRun): Promise<Record<string, number | string>> {
  const work = await mkdtemp(join(tmpdir(), 'sealed-demo-'));
  const say = o.say ?? (() => {});
  try {
    say('1. model owner: training on 80% of the records (plaintext)');
    const { trainDir, testDir } = await splitCsv(o.csv, join(work, 'data'));
    const modelDir = join(work, 'model');
    const { metrics } = await train({ trainDir, testDir, modelDir }, parseHyperparameters(o.hyperparameters), (l) => say(`   ${l}`));

    say('2. server: local S3-compatible server and the inference server (worker pool) on loopback');
    const s3 = await startLocalS3({ directory: join(work, 's3') });
    // allowAny: one user, on loopback, with its own throw-away S3 server: nobody else can name objects.
    const server = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers: o.workers, s3Endpoint: s3.endpoint, allowAny: true });
    say(`   S3 at ${s3.endpoint}, server at ${server.url} with ${server.pool.size} workers`);

    say('3. client: keys, encryption of the held-out 20%, upload, invocation, download, decryption');
    const { modelId, client } = await readClientPart(modelDir);
    const session = await ClientSession.open(modelId, client);
    const tk = performance.now();
    const keys = session.generateKeys();
    const keygenMs = performance.now() - tk;
    const store = new ObjectStore({ endpoint: s3.endpoint });
    await store.ensureBucket('sealed-demo');
    const test = splitTarget(parseCsv(await readFile(join(testDir, 'data.csv'), 'utf8'), 'test'), client.target);
    const r = await predict(session, keys, test.x, { store, bucket: 'sealed-demo', endpoint: server.url });
    const correct = r.scores.filter((sc, i) => classOf(client, sc) === test.y[i]).length;
    const server_ms = (r.stats.server as { timings_ms: { total: number; evaluate: number } }).timings_ms;
    const summary = {
      records: test.x.length,
      accuracy_plain: metrics.test_accuracy,
      accuracy_encrypted: +(correct / test.x.length).toFixed(6),
      server_ms_per_record: +(server_ms.total / test.x.length).toFixed(3),
      server_ms_total: server_ms.total,
      evaluate_ms: server_ms.evaluate,
      client_ms_total: r.stats.ms.total,
      keygen_ms: +keygenMs.toFixed(1),
      query_bytes: r.stats.query_bytes,
      result_bytes: r.stats.result_bytes,
      keys_bytes: r.stats.keys_bytes,
      secret_key_bytes: keys.secretKey.length,
      ring_degree: client.params.polyModulusDegree,
      modulus_bits: client.params.coeffModulusBits.reduce((a, b) => a + b, 0),
      records_per_ciphertext: client.input.recordsPerCiphertext,
      rotation_keys: client.galois_steps.length,
      workers: server.pool.size,
    };
    say(`   plaintext accuracy ${summary.accuracy_plain}, encrypted accuracy ${summary.accuracy_encrypted} on ${summary.records} held-out records`);
    say(`   server: ${server_ms.total} ms for ${summary.records} records (${summary.server_ms_per_record} ms/record); client: ${r.stats.ms.total} ms`);
    say(`   uploaded: query ${summary.query_bytes} B + evaluation keys ${summary.keys_bytes} B (once); downloaded: result ${summary.result_bytes} B`);
    store.close();
    session.close();
    await server.close();
    await s3.close();
    return summary;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export async function demoCommand(o: { workers?: number }): Promise<void> {
  const summary = await runTabular({
    csv: BREAST_CANCER_CSV,
    hyperparameters: { task: 'binary', target: 'diagnosis', labels: 'malignant,benign' },
    workers: o.workers,
    say: (l) => console.log(l.replace('training on 80%', 'training a logistic-regression diagnosis model on 80%')),
  });
  console.log(JSON.stringify(summary));
}
