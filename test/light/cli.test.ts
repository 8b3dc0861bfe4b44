// The `sealed` command as users run it: separate processes for server and client, the
// embedded local S3 shared between them, keys on disk with the secret key at mode 0600.
import t from 'tap';
import { spawn, execFile } from 'node:child_process';
import { stat, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { trainBreastCancer } from '../helpers/fixture.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';

const run = promisify(execFile);
const bin = fileURLToPath(new URL('../../bin/sealed.js', import.meta.url));

const tr = await trainBreastCancer();
const s3 = await startLocalS3({ directory: join(tr.dir, 's3') });
const env = { ...process.env, SEALED_HOME: join(tr.dir, 'home'), SEALED_S3_ENDPOINT: s3.endpoint, LOG_LEVEL: 'info' };
const port = 18000 + Math.floor(Math.random() * 2000);
// SEALED_ALLOW_ANY=1: the container's way of saying --allow-any (SageMaker passes no flags).
const server = spawn(process.execPath, [bin, 'serve', '--model', tr.modelDir, '--port', String(port), '--host', '127.0.0.1', '--workers', '1'], {
  env: { ...env, SEALED_ALLOW_ANY: '1' },
  stdio: ['ignore', 'pipe', 'pipe'],
});
let logs = '';
server.stdout.on('data', (d) => (logs += d));
server.stderr.on('data', (d) => (logs += d));
await new Promise<void>((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`server did not start: ${logs}`)), 60_000);
  server.stdout.on('data', () => {
    if (logs.includes('sealed server ready')) {
      clearTimeout(timer);
      resolve();
    }
  });
});
t.teardown(async () => {
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  await s3.close();
  await tr.cleanup();
});

t.test('keygen writes the secret key with mode 0600', async (t) => {
  const keys = join(tr.dir, 'keys');
  const r = await run(process.execPath, [bin, 'keygen', '--model', tr.modelDir, '--keys', keys], { env });
  t.match(r.stdout, /secret\.key .* mode 0600: never leaves this machine/);
  t.equal((await stat(join(keys, 'secret.key'))).mode & 0o777, 0o600);
  const again = await run(process.execPath, [bin, 'keygen', '--model', tr.modelDir, '--keys', keys], { env });
  t.match(again.stdout, /already exists/, 'does not overwrite without --force');
});

t.test('predict: CSV in, predictions out, accuracy as trained', async (t) => {
  const out = join(tr.dir, 'pred.csv');
  const r = await run(
    process.execPath,
    [
      bin,
      'predict',
      '--model',
      tr.modelDir,
      '--input',
      join(tr.testDir, 'data.csv'),
      '--endpoint',
      `http://127.0.0.1:${port}`,
      '--keys',
      join(tr.dir, 'keys'),
      '--output',
      out,
      '--json',
    ],
    { env },
  );
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
  t.equal(summary.records, tr.test.x.length);
  t.ok(Math.abs(summary.accuracy - tr.result.metrics.test_accuracy) < 1e-6, `accuracy ${summary.accuracy}`);
  const lines = (await readFile(out, 'utf8')).trim().split('\n');
  t.equal(lines[0], 'record,prediction,p0,p1');
  t.equal(lines.length, tr.test.x.length + 1);
  t.match(lines[1], /^1,(malignant|benign),0\.\d+,0\.\d+$/);
});

t.test('predict through the local SageMaker Runtime emulator, real-time and async', async (t) => {
  const { startRuntimeEmulator } = await import('../../src/sagemaker/runtime-emulator.ts');
  const { ObjectStore } = await import('../../src/storage/s3.ts');
  const store = new ObjectStore({ endpoint: s3.endpoint });
  await store.ensureBucket('sm-async');
  const emu = await startRuntimeEmulator({
    containerUrl: `http://127.0.0.1:${port}`,
    store,
    outputPath: 's3://sm-async/out',
    failurePath: 's3://sm-async/failed',
  });
  t.teardown(async () => {
    await emu.close();
    store.close();
  });
  for (const mode of [[], ['--async']]) {
    const r = await run(
      process.execPath,
      [
        bin,
        'predict',
        '--model',
        tr.modelDir,
        '--input',
        join(tr.testDir, 'data.csv'),
        '--sagemaker-endpoint',
        'local',
        '--sagemaker-url',
        emu.url,
        ...mode,
        '--keys',
        join(tr.dir, 'keys'),
        '--json',
      ],
      { env },
    );
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
    t.ok(Math.abs(summary.accuracy - tr.result.metrics.test_accuracy) < 1e-6, `${mode.length ? 'async' : 'real-time'}: accuracy ${summary.accuracy}`);
  }
});

t.test('predict with a wrong input file says what to do and exits 2', async (t) => {
  const bad = join(tr.dir, 'bad.csv');
  await writeFile(bad, 'a,b\n1,2\n');
  const err = await run(
    process.execPath,
    [bin, 'predict', '--model', tr.modelDir, '--input', bad, '--endpoint', `http://127.0.0.1:${port}`, '--keys', join(tr.dir, 'keys')],
    { env },
  ).catch((e) => e);
  t.equal(err.code, 2);
  t.match(err.stderr, /lacks the model's feature columns mean_radius/);
  t.match(err.stderr, /what to do: the header must name the 30 features/);
});

t.test('predict refuses a CSV with a header and no records, and an IDX labels file, saying what to give', async (t) => {
  const predict = (input: string) =>
    run(
      process.execPath,
      [bin, 'predict', '--model', tr.modelDir, '--input', input, '--endpoint', `http://127.0.0.1:${port}`, '--keys', join(tr.dir, 'keys')],
      { env },
    ).catch((e) => e);
  const headerOnly = join(tr.dir, 'header-only.csv');
  await writeFile(headerOnly, (await readFile(join(tr.testDir, 'data.csv'), 'utf8')).split('\n')[0] + '\n');
  const empty = await predict(headerOnly);
  t.equal(empty.code, 2, 'not "0 records predicted" with exit 0');
  t.match(empty.stderr, /header-only\.csv has a header row but no records/);
  t.match(empty.stderr, /what to do: add one record per line below the header/);
  // MNIST's labels file: magic 0x00000801, the count, one byte per label.
  const labels = join(tr.dir, 't10k-labels-idx1-ubyte');
  await writeFile(labels, Buffer.from([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]));
  const idx = await predict(labels);
  t.equal(idx.code, 2);
  t.match(idx.stderr, /t10k-labels-idx1-ubyte is an IDX labels file \(3 labels, no images\)/);
  t.match(idx.stderr, /what to do: give the images file \(…images-idx3-ubyte\[\.gz\]\) with --input/);
});

t.test('serve: a malformed SEALED_* limit in the environment is refused with exit 2', async (t) => {
  const err = await run(process.execPath, [bin, 'serve', '--model', tr.modelDir, '--port', '0', '--workers', '1', '--allow-any'], {
    env: { ...env, SEALED_MAX_BATCH_IN_FLIGHT: 'two' },
  }).catch((e) => e);
  t.equal(err.code, 2);
  t.match(err.stderr, /SEALED_MAX_BATCH_IN_FLIGHT=two is not a positive integer/);
});

t.test('serve: without allow-lists it refuses to start (exit 2), saying what to set', async (t) => {
  const err = await run(process.execPath, [bin, 'serve', '--model', tr.modelDir, '--port', '0', '--workers', '1'], { env }).catch((e) => e);
  t.equal(err.code, 2, 'refused, not started');
  t.match(err.stderr, /refusing to start without S3 allow-lists: --allow-read \(SEALED_ALLOW_READ\) and --allow-write \(SEALED_ALLOW_WRITE\) are not set/);
  for (const name of [
    '--allow-read',
    '--allow-write',
    'SEALED_ALLOW_READ',
    'SEALED_ALLOW_WRITE',
    '--tenant-prefix',
    'SEALED_TENANT_ROOT',
    '--allow-any',
    'SEALED_ALLOW_ANY=1',
  ])
    t.ok(err.stderr.includes(name), `names ${name}`);
  const half = await run(process.execPath, [bin, 'serve', '--model', tr.modelDir, '--port', '0', '--workers', '1', '--allow-read', 's3://bkt/in/'], {
    env,
  }).catch((e) => e);
  t.equal(half.code, 2);
  t.match(half.stderr, /--allow-write \(SEALED_ALLOW_WRITE\) is not set/, 'one list is not enough');
  const typo = await run(process.execPath, [bin, 'serve', '--model', tr.modelDir, '--port', '0', '--workers', '1'], {
    env: { ...env, SEALED_ALLOW_ANY: 'yes please' },
  }).catch((e) => e);
  t.equal(typo.code, 2);
  t.match(typo.stderr, /SEALED_ALLOW_ANY=yes please is not 1 or 0/);
  const badList = await run(
    process.execPath,
    [bin, 'serve', '--model', tr.modelDir, '--port', '0', '--workers', '1', '--allow-read', 'https://bkt/in', '--allow-write', 's3://bkt/out'],
    { env },
  ).catch((e) => e);
  t.equal(badList.code, 2);
  t.match(badList.stderr, /the read allow-list \(--allow-read, SEALED_ALLOW_READ\): https:\/\/bkt\/in is not an s3:\/\/bucket\/prefix location/);
});

t.test('server logs are JSON with request ids and no key or ciphertext bytes', async (t) => {
  const lines = logs
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'));
  const done = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'invocation done');
  t.ok(done.length >= 1, 'an invocation was logged');
  t.ok(
    done.every((l) => typeof l.reqId === 'string' && l.reqId.length > 0),
    'with a request id',
  );
  t.notMatch(logs, /[A-Za-z0-9+/]{200,}/, 'no long base64 run');
  t.notMatch(logs, /(\\u00|\\x)[0-9a-f]{2}.{0,4}(\\u00|\\x)[0-9a-f]{2}/i, 'no escaped binary');
});
