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
