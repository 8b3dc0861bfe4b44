// The server's evaluation-key cache against a real (local) S3 and real keys: one download per key
// object however many requests ask at once, exact byte accounting, LRU eviction within the byte
// budget, failures not cached.
import t from 'tap';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { ClientSession } from '../../src/client/session.ts';
import { readClientPart, readServerPart } from '../../src/model/bundle.ts';
import { KeyStore, keysNameHash } from '../../src/server/key-store.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore, type S3Location } from '../../src/storage/s3.ts';
import { trainBreastCancer } from '../helpers/fixture.ts';
import { decodeWire, encodeWire } from '../../src/wire/format.ts';

/** An ObjectStore counting the requests made through it. */
class CountingStore extends ObjectStore {
  gets = 0;
  heads = 0;
  override get(loc: S3Location, maxBytes: number, what: string) {
    this.gets++;
    return super.get(loc, maxBytes, what);
  }
  override getShared(loc: S3Location, maxBytes: number, what: string) {
    this.gets++;
    return super.getShared(loc, maxBytes, what);
  }
  override head(loc: S3Location) {
    this.heads++;
    return super.head(loc);
  }
}

const tr = await trainBreastCancer({ epochs: '5' });
const s3 = await startLocalS3({ directory: join(tr.dir, 's3') });
const store = new CountingStore({ endpoint: s3.endpoint });
const B = 'keys';
await store.ensureBucket(B);
const { program } = await readServerPart(tr.modelDir);
const { modelId, client } = await readClientPart(tr.modelDir);
const session = await ClientSession.open(modelId, client);
const keysA = session.generateKeys().evaluationKeys;
// The byte-exact checks below want two different key objects of the same size (zstd's output
// differs between key sets): B is A's keys under the same header with its fields in another order.
const parsedA = decodeWire<Record<string, unknown>>('keys', keysA, 'keys A');
const keysB = encodeWire('keys', Object.fromEntries(Object.entries(parsedA.header).reverse()), parsedA.sections);
const idA = createHash('sha256').update(keysA).digest('hex');
t.teardown(async () => {
  session.close();
  store.close();
  await s3.close();
  await tr.cleanup();
});
const SIZE = keysA.length;
t.ok(SIZE > 10_000 && keysB.length === SIZE, `real evaluation keys (${SIZE} bytes)`);

const at = (key: string): S3Location => ({ bucket: B, key });
const put = (key: string, bytes: Uint8Array) => store.put(at(key), bytes, 'fixture');
const newStore = (maxBytes = 64 * SIZE) => new KeyStore({ store, kinds: { program, galoisSection: true }, maxBytes, maxObjectBytes: 512 * 1024 * 1024 });
/** Counts the requests `f` makes. */
async function counting<T>(f: () => Promise<T>): Promise<{ value: T; gets: number; heads: number }> {
  const [g, h] = [store.gets, store.heads];
  const value = await f();
  return { value, gets: store.gets - g, heads: store.heads - h };
}

t.test('eight simultaneous first requests for the same keys: one GET, their bytes counted once', async (t) => {
  await put('same/k', keysA);
  const ks = newStore();
  const r = await counting(() => Promise.all(Array.from({ length: 8 }, () => ks.get(at('same/k')))));
  t.equal(r.gets, 1, 'one GET');
  t.equal(r.heads, 0, 'no HEAD: nothing was cached yet');
  t.ok(
    r.value.every((x) => x.set === r.value[0].set),
    'every request has the same key set',
  );
  t.ok(r.value.every((x) => !x.cached));
  t.same(ks.stats(), { entries: 1, bytes: SIZE, downloads: 1, hits: 0, inflight: 0 }, 'one entry, its bytes once');

  const again = await counting(async () => {
    const out = [];
    for (let i = 0; i < 3; i++) out.push(await ks.get(at('same/k')));
    return out;
  });
  t.equal(again.gets, 0, 'later requests download nothing');
  t.equal(again.heads, 3, 'a HEAD each, to see the ETag unchanged');
  t.ok(
    again.value.every((x) => x.cached && x.set === r.value[0].set),
    'served from the cache',
  );
  const burst = await counting(() => Promise.all(Array.from({ length: 8 }, () => ks.get(at('same/k')))));
  t.equal(burst.gets, 0, 'a burst on cached keys downloads nothing');
  t.ok(burst.value.every((x) => x.cached));
  t.same(ks.stats(), { entries: 1, bytes: SIZE, downloads: 1, hits: 11, inflight: 0 });
});

t.test('replaced keys are downloaded again and replace the entry, bytes exact', async (t) => {
  await put('replace/k', keysA);
  const ks = newStore();
  const first = await ks.get(at('replace/k'));
  await put('replace/k', keysB);
  const r = await counting(() => Promise.all(Array.from({ length: 4 }, () => ks.get(at('replace/k')))));
  t.equal(r.gets, 1, 'one GET for the new object, however many ask');
  t.ok(
    r.value.every((x) => !x.cached && x.set.id !== first.set.id),
    'the new keys',
  );
  t.same(ks.stats(), { entries: 1, bytes: SIZE, downloads: 2, hits: 0, inflight: 0 }, 'the old entry subtracted');
});

t.test('LRU eviction keeps the total within the budget and equal to the sum of the entries', async (t) => {
  const ks = newStore(Math.floor(2.5 * SIZE));
  for (const k of ['a', 'b', 'c', 'd']) await put(`lru/${k}`, k === 'c' ? keysB : keysA);
  const get = (k: string) => counting(() => ks.get(at(`lru/${k}`)));
  await get('a');
  await get('b');
  t.same(ks.stats(), { entries: 2, bytes: 2 * SIZE, downloads: 2, hits: 0, inflight: 0 });
  t.equal((await get('a')).gets, 0, 'a is cached (and now the most recently used)');
  await get('c');
  t.same(ks.stats(), { entries: 2, bytes: 2 * SIZE, downloads: 3, hits: 1, inflight: 0 }, 'b evicted: least recently used');
  t.equal((await get('a')).gets, 0, 'a kept');
  const b = await get('b');
  t.equal(b.gets, 1, 'b was evicted: downloaded again');
  t.same(ks.stats(), { entries: 2, bytes: 2 * SIZE, downloads: 4, hits: 2, inflight: 0 }, 'c evicted this time');
  t.equal((await get('c')).gets, 1);
  // Same content under another URI: the key set (its shared buffers) is reused, bytes counted
  // for each entry.
  const d = await get('d');
  t.equal(d.gets, 1);
  t.equal(d.value.set, (await get('b')).value.set, 'd and b share one key set');
  const s = ks.stats();
  t.equal(s.entries, 2);
  t.equal(s.bytes, 2 * SIZE);
  t.ok(s.bytes <= 2.5 * SIZE, 'within the budget');
});

t.test('a key set larger than the whole budget is served, not cached', async (t) => {
  await put('huge/k', keysA);
  const ks = newStore(SIZE - 1);
  const r = await counting(() => Promise.all(Array.from({ length: 3 }, () => ks.get(at('huge/k')))));
  t.equal(r.gets, 1);
  t.equal(r.value[0].set.bytes, SIZE);
  t.same(ks.stats(), { entries: 0, bytes: 0, downloads: 1, hits: 0, inflight: 0 });
});

t.test('a failed download is shared by those waiting, not cached, and the next request retries', async (t) => {
  const ks = newStore();
  const r = await counting(() => Promise.allSettled(Array.from({ length: 4 }, () => ks.get(at('late/k')))));
  t.equal(r.gets, 1, 'one GET for the four');
  t.ok(
    r.value.every((x) => x.status === 'rejected' && (x.reason as { code?: string }).code === 'not-found'),
    'all four: not-found',
  );
  t.same(ks.stats(), { entries: 0, bytes: 0, downloads: 1, hits: 0, inflight: 0 }, 'nothing cached');
  await put('late/k', keysA);
  const ok = await counting(() => ks.get(at('late/k')));
  t.equal(ok.gets, 1, 'downloaded now');
  t.equal(ok.value.set.bytes, SIZE);

  // Bad bytes: refused (422), not cached; the good keys put there afterwards are taken.
  await put('bad/k', keysA.subarray(0, 20_000));
  await t.rejects(ks.get(at('bad/k')), { code: 'bad-keys' });
  await t.rejects(ks.get(at('bad/k')), { code: 'bad-keys' });
  await put('bad/k', keysA);
  t.equal((await ks.get(at('bad/k'))).cached, false);
  t.same(ks.stats(), { entries: 2, bytes: 2 * SIZE, downloads: 5, hits: 0, inflight: 0 });
});

t.test('deleted keys: not-found, and their entry dropped', async (t) => {
  await put('gone/k', keysA);
  const ks = newStore();
  await ks.get(at('gone/k'));
  t.equal(ks.stats().bytes, SIZE);
  await store.client.send(new DeleteObjectCommand({ Bucket: B, Key: 'gone/k' }));
  await t.rejects(ks.get(at('gone/k')), { code: 'not-found', message: `evaluation keys not found at s3://${B}/gone/k` });
  t.same(ks.stats(), { entries: 0, bytes: 0, downloads: 1, hits: 0, inflight: 0 });
});

t.test('names that are a SHA-256: <64 hex> or <64 hex>.keys as the last segment', async (t) => {
  t.equal(keysNameHash(`a/b/${idA}.keys`), idA);
  t.equal(keysNameHash(idA), idA);
  t.equal(keysNameHash(`k/${idA.toUpperCase()}.keys`), idA, 'hex digits in either case');
  for (const k of ['k', 'keys/k.keys', `${idA}.key`, `${idA}0.keys`, `${idA.slice(1)}.keys`, `${idA}.keys/x`])
    t.equal(keysNameHash(k), undefined, `${k.slice(0, 20)}...: not a hash name`);
});

t.test('hash-named keys: checked against the name (refused and not cached when they differ), cached by hash', async (t) => {
  const name = `named/${idA}.keys`;
  await put(name, keysA);
  const ks = newStore();
  const first = await ks.get(at(name));
  t.equal(first.set.id, idA);

  // Overwritten (another caller made the server write its result there): the name fixes the
  // content, and the cache holds that content, so the request is served without a download.
  await put(name, keysB);
  const over = await counting(() => ks.get(at(name)));
  t.equal(over.gets, 0, 'no download');
  t.ok(over.value.cached && over.value.set === first.set, 'the keys the name commits to');
  // The same content named at another location: from the cache too (after a HEAD: it must exist).
  await put(`elsewhere/${idA}.keys`, keysA);
  const other = await counting(() => ks.get(at(`elsewhere/${idA}.keys`)));
  t.same({ gets: other.gets, heads: other.heads, cached: other.value.cached }, { gets: 0, heads: 1, cached: true });
  await t.rejects(ks.get(at(`missing/${idA}.keys`)), { code: 'not-found' }, 'a name whose object does not exist: not-found, cache or not');

  // A store that never saw them: the bytes do not hash to the name.
  const fresh = newStore();
  const refusal = { code: 'bad-keys', message: new RegExp(`are not the object their name says: their SHA-256 is [0-9a-f]{64}, the name says ${idA}`) };
  await t.rejects(fresh.get(at(name)), refusal);
  await t.rejects(fresh.get(at(name)), refusal, 'again: nothing was cached');
  t.same(fresh.stats(), { entries: 0, bytes: 0, downloads: 2, hits: 0, inflight: 0 });
  await put(name, keysA);
  t.equal((await fresh.get(at(name))).set.id, idA, 'the right keys put back are taken');
});
