// Client-side files: the client part from model.tar.gz (local and s3://), key sets listed and
// deleted.
import t from 'tap';
import { join } from 'node:path';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { create } from 'tar';
import { deleteKeySet, listKeySets, saveKeys } from '../src/client/key-files.ts';
import { loadClientPart } from '../src/client/model-source.ts';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart } from '../src/model/bundle.ts';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { ObjectStore } from '../src/storage/s3.ts';
import { trainBreastCancer } from './helpers/fixture.ts';

const tr = await trainBreastCancer();
t.teardown(tr.cleanup);
const direct = await readClientPart(tr.modelDir);
const archive = join(tr.dir, 'model.tar.gz');
// As SageMaker packs /opt/ml/model: the directory's contents at the archive root.
await create({ gzip: true, file: archive, cwd: tr.modelDir }, ['sealed.json', 'client', 'server']);

t.test('client part from a local model.tar.gz', async (t) => {
  const p = await loadClientPart(archive);
  t.equal(p.modelId, direct.modelId);
  t.same(p.client.galois_steps, direct.client.galois_steps);
});

t.test('client part from model.tar.gz in S3', async (t) => {
  const s3 = await startLocalS3({ directory: join(tr.dir, 's3') });
  const store = new ObjectStore({ endpoint: s3.endpoint });
  t.teardown(async () => {
    store.close();
    await s3.close();
  });
  await store.ensureBucket('models');
  await store.put({ bucket: 'models', key: 'job-1/output/model.tar.gz' }, new Uint8Array(await readFile(archive)), 'model');
  const p = await loadClientPart('s3://models/job-1/output/model.tar.gz', { endpoint: s3.endpoint });
  t.equal(p.modelId, direct.modelId);
});

t.test('a bad archive says so', async (t) => {
  const bad = join(tr.dir, 'bad.tar.gz');
  await writeFile(bad, 'not an archive');
  await t.rejects(loadClientPart(bad), { code: 'bad-bundle', message: /not a readable \.tar\.gz|holds no sealed client part/ });
});

t.test('key sets: list and delete', async (t) => {
  const home = join(tr.dir, 'home');
  process.env.SEALED_HOME = home;
  t.teardown(() => delete process.env.SEALED_HOME);
  const session = await ClientSession.open(direct.modelId, direct.client);
  const dir = join(home, 'keys', direct.modelId);
  await saveKeys(dir, session, session.generateKeys());
  session.close();
  const sets = await listKeySets();
  t.equal(sets.length, 1);
  t.equal(sets[0].model_id, direct.modelId);
  t.equal((await stat(join(dir, 'secret.key'))).mode & 0o777, 0o600);
  await deleteKeySet(dir);
  t.same(await listKeySets(), [], 'gone');
  await t.rejects(deleteKeySet(dir), { message: /no key set/ });
});

t.test('a passphrase-protected secret key: stored encrypted, loaded with the passphrase only', async (t) => {
  const { loadKeys } = await import('../src/client/key-files.ts');
  const session = await ClientSession.open(direct.modelId, direct.client);
  t.teardown(() => session.close());
  const dir = join(tr.dir, 'protected');
  const keys = session.generateKeys();
  await saveKeys(dir, session, keys, 'correct horse battery staple');
  const stored = new Uint8Array(await readFile(join(dir, 'secret.key')));
  t.notOk(Buffer.from(stored).includes(Buffer.from(keys.secretKey.subarray(100, 164))), 'the key bytes are not in the file');
  delete process.env.SEALED_PASSPHRASE;
  await t.rejects(loadKeys(dir, session), { code: 'bad-keys', message: /protected by a passphrase/ });
  process.env.SEALED_PASSPHRASE = 'wrong';
  await t.rejects(loadKeys(dir, session), { message: /wrong passphrase/ });
  process.env.SEALED_PASSPHRASE = 'correct horse battery staple';
  const loaded = await loadKeys(dir, session);
  t.same(Buffer.from(loaded!.secretKey), Buffer.from(keys.secretKey), 'the same secret key comes back');
  delete process.env.SEALED_PASSPHRASE;
});

t.test('records from JSON lines and NPY', async (t) => {
  const { readRecords } = await import('../src/cli/records.ts');
  const rows = tr.test.x.slice(0, 3);
  const jl = join(tr.dir, 'r.jsonl');
  await writeFile(jl, [JSON.stringify(rows[0]), JSON.stringify(Object.fromEntries(direct.client.features.map((f, j) => [f, rows[1][j]]))), ''].join('\n'));
  t.same((await readRecords(jl, direct.client)).rows, rows.slice(0, 2), 'arrays and objects keyed by feature');
  await writeFile(jl, '[1, 2, 3]\n');
  await t.rejects(readRecords(jl, direct.client), { message: /line 1 does not hold the 30 numeric features/ });
  // NPY v1.0, float64, shape (3, 30)
  const header = `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 30), }`.padEnd(118, ' ') + '\n';
  const npy = Buffer.concat([
    Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]),
    Buffer.from([header.length & 0xff, header.length >> 8]),
    Buffer.from(header),
    Buffer.from(new Float64Array(rows.flat()).buffer),
  ]);
  const np = join(tr.dir, 'r.npy');
  await writeFile(np, npy);
  t.same((await readRecords(np, direct.client)).rows, rows);
});
