// The embedded local S3 (s3rver, patched in src/storage/local-s3.ts): large objects stream to
// disk with bounded memory, writes are complete when answered (read-after-write), failed or
// aborted uploads leave nothing behind, any credentials are accepted; and `sealed s3` says what
// to use.
import './helpers/product-gc.ts';
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { LOCAL_BUCKET, LOCAL_S3_PORT } from '../src/storage/resolve.ts';
import { ObjectStore, type S3Location } from '../src/storage/s3.ts';
import { drain } from './helpers/streams.ts';

const dir = await mkdtemp(join(tmpdir(), 'sealed-local-s3-'));
const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const BUCKET = 'local';
await store.ensureBucket(BUCKET);

t.teardown(async () => {
  store.close();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

const at = (key: string): S3Location => ({ bucket: BUCKET, key });
const bucketDir = join(dir, 's3', BUCKET);
const uploadDir = (uploadId: string) => join(bucketDir, '._S3rver_uploads', uploadId);
const MiB = 1 << 20;

/** Every file under `d`, relative to it. */
async function files(d: string): Promise<string[]> {
  return (await readdir(d, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(d.length + 1));
}

/** Samples the process's RSS while `f` runs; returns the largest growth over the RSS before it. */
async function rssGrowth(f: () => Promise<void>): Promise<number> {
  globalThis.gc?.();
  const before = process.memoryUsage().rss;
  let max = before;
  const timer = setInterval(() => {
    max = Math.max(max, process.memoryUsage().rss);
  }, 10);
  try {
    await f();
  } finally {
    clearInterval(timer);
  }
  max = Math.max(max, process.memoryUsage().rss);
  return max - before;
}

t.test('a 300 MB multipart object round-trips, with the RSS of the process (client and local S3) growing < 150 MB', async (t) => {
  const total = 300 * MiB + 12_345;
  // Warm up (connections, code paths) so that the measure is of the transfer.
  await store.putStream(
    at('warm'),
    (async function* () {
      yield randomBytes(20 * MiB);
    })(),
    'warm-up',
  );
  await drain((await store.getStream(at('warm'), 64 * MiB, 'warm-up')).stream);

  // Chunks of 1 MiB and odd sizes, each distinct (its index stamped on a random block), so that
  // a part out of place or missing would change the hash.
  const block = randomBytes(MiB);
  const sent = createHash('sha256');
  async function* source(): AsyncGenerator<Uint8Array> {
    for (let n = 0, i = 0; n < total; i++) {
      const size = Math.min(i % 3 === 2 ? 333_333 : MiB, total - n);
      const chunk = Buffer.allocUnsafe(size);
      block.copy(chunk, 0, 0, size);
      chunk.writeUInt32BE(i, 0);
      sent.update(chunk);
      n += size;
      yield chunk;
    }
  }
  let read = { bytes: 0, sha: '' };
  let stored: { size: number; etag?: string } | undefined;
  const growth = await rssGrowth(async () => {
    t.equal((await store.putStream(at('huge'), source(), 'result')).bytes, total, 'bytes sent');
    stored = await store.head(at('huge'));
    read = await drain((await store.getStream(at('huge'), total, 'result')).stream);
  });
  t.equal(stored?.size, total, 'stored size');
  t.match(stored?.etag, /^"[0-9a-f]{32}-38"$/, "S3's multipart ETag: MD5 of the 38 parts' MD5s, -38");
  t.equal(read.bytes, total, 'all bytes read back');
  t.equal(read.sha, sent.digest('hex'), 'sha256 equal');
  t.comment(`RSS growth during the 300 MB upload and download: ${(growth / MiB).toFixed(1)} MiB`);
  t.ok(growth < 150 * MiB, `RSS growth ${(growth / MiB).toFixed(1)} MiB < 150 MiB`);
  t.same(await files(join(bucketDir, '._S3rver_uploads')), [], 'no parts left once completed');
  t.notOk(
    (await files(bucketDir)).some((f) => f.endsWith('.tmp')),
    'no temporary file left',
  );
});

t.test('AbortMultipartUpload removes the parts; the upload is then gone for every operation', async (t) => {
  const key = 'aborted/object';
  const { UploadId } = await store.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  const id = String(UploadId);
  const part = (n: number) => store.client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: id, PartNumber: n, Body: randomBytes(5 * MiB) }));
  const etags = [(await part(1)).ETag, (await part(2)).ETag];
  t.same((await files(uploadDir(id))).sort(), ['1.part', '2.part', 'data', 'key', 'metadata'], 'the parts are on disk (laid out in one data file)');

  // Only for the key the upload is for.
  await t.rejects(
    store.client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: 'another/key', UploadId: id })),
    { name: 'NoSuchUpload' },
    'not through another key',
  );
  t.ok(existsSync(uploadDir(id)), 'still there');

  const r = await store.client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: id }));
  t.equal(r.$metadata.httpStatusCode, 204, '204 No Content');
  t.notOk(existsSync(uploadDir(id)), 'the upload directory and its parts are gone');

  await t.rejects(part(3), { name: 'NoSuchUpload' }, 'no part upload after the abort (nor is the directory recreated)');
  t.notOk(existsSync(uploadDir(id)), 'still gone');
  await t.rejects(
    store.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: BUCKET,
        Key: key,
        UploadId: id,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    ),
    { name: 'NoSuchUpload' },
    'no completion after the abort',
  );
  await t.rejects(store.client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: id })), { name: 'NoSuchUpload' }, 'aborting twice');
  await t.rejects(
    store.client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: '../../x' })),
    { name: 'NoSuchUpload' },
    'an id that is not one',
  );
  t.equal(await store.head(at(key)), undefined, 'no object');
});

t.test('an abort waits for a part upload in flight, then removes it too; later parts are refused', async (t) => {
  const key = 'aborted/in-flight';
  const { UploadId } = await store.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  const id = String(UploadId);
  // A part upload that sends half of its body and waits (unsigned: s3rver accepts anonymous requests).
  const req = request(new URL(`/${BUCKET}/${key}?partNumber=1&uploadId=${id}`, s3.endpoint), { method: 'PUT', headers: { 'content-length': String(2 * MiB) } });
  const answered = new Promise<number | undefined>((resolve, reject) => {
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
  });
  req.write(randomBytes(MiB));
  // Until the local S3 is writing it (in place: the data file, no record of the part yet).
  const writing = async () => (await files(uploadDir(id))).includes('data');
  for (let i = 0; i < 500 && !(await writing()); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(await writing(), 'the part is being written');
  t.notOk((await files(uploadDir(id))).includes('1.part'), 'not yet a part');

  let abortDone = false;
  const abort = store.client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: id })).finally(() => {
    abortDone = true;
  });
  await new Promise((r) => setTimeout(r, 200));
  t.notOk(abortDone, 'the abort waits for the part in flight');
  await t.rejects(
    store.client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: id, PartNumber: 2, Body: randomBytes(1000) })),
    { name: 'NoSuchUpload' },
    'a part upload arriving during the abort is refused',
  );
  req.end(randomBytes(MiB));
  t.equal(await answered, 200, 'the part in flight is stored');
  t.equal((await abort).$metadata.httpStatusCode, 204, 'then the abort completes');
  t.notOk(existsSync(uploadDir(id)), 'nothing left');
});

t.test('CompleteMultipartUpload checks the parts as S3 does', async (t) => {
  const key = 'checked/object';
  const { UploadId } = await store.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  const bodies = [randomBytes(5 * MiB), randomBytes(1000)];
  const etags: string[] = [];
  for (const [i, Body] of bodies.entries())
    etags.push(String((await store.client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber: i + 1, Body }))).ETag));
  const complete = (Parts: { ETag: string; PartNumber: number }[]) =>
    store.client.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId, MultipartUpload: { Parts } }));
  await t.rejects(
    complete([
      { ETag: etags[0], PartNumber: 1 },
      { ETag: etags[0], PartNumber: 2 },
    ]),
    { name: 'InvalidPart' },
    'an ETag that is not the part',
  );
  await t.rejects(
    complete([
      { ETag: etags[0], PartNumber: 1 },
      { ETag: etags[1], PartNumber: 3 },
    ]),
    { name: 'InvalidPart' },
    'a part never uploaded',
  );
  await t.rejects(
    complete([
      { ETag: etags[1], PartNumber: 2 },
      { ETag: etags[0], PartNumber: 1 },
    ]),
    { name: 'InvalidPartOrder' },
    'parts out of order',
  );
  t.equal(await store.head(at(key)), undefined, 'no object yet');
  await complete(etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })));
  const got = await store.get(at(key), 10 * MiB, 'object');
  t.ok(Buffer.from(got.bytes).equals(Buffer.concat(bodies)), 'the parts, in order');
  const md5OfMd5s = createHash('md5')
    .update(Buffer.concat(etags.map((e) => Buffer.from(e.replace(/"/g, ''), 'hex'))))
    .digest('hex');
  t.equal(got.etag, `"${md5OfMd5s}-2"`, "S3's multipart ETag");
  t.notOk(existsSync(uploadDir(String(UploadId))), 'the parts are removed once completed');
});

t.test("a part's bytes are checked against the CRC32 the client sends (BadDigest), in place or apart; its ETag follows its content", async (t) => {
  const key = 'crc/object';
  const { UploadId } = await store.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  const send = (PartNumber: number, Body: Uint8Array, ChecksumCRC32?: string) =>
    store.client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber, Body, ChecksumCRC32 }));
  const first = randomBytes(5 * MiB);
  const last = randomBytes(1000);
  const e1 = String((await send(1, first)).ETag);
  t.equal(String((await send(1, first)).ETag), e1, 'the same bytes again: the same ETag');
  const other = Buffer.from(first);
  other[12345] ^= 1;
  t.not(String((await send(1, other)).ETag), e1, 'one bit changed: another ETag');
  await send(1, first);
  await t.rejects(send(2, last, 'AAAAAA=='), { name: 'BadDigest' }, 'a wrong CRC32, the part written in place: refused');
  await t.rejects(send(3, randomBytes(6 * MiB), 'AAAAAA=='), { name: 'BadDigest' }, 'and written apart (larger than the layout): refused');
  const complete = (Parts: { ETag: string; PartNumber: number }[]) =>
    store.client.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId, MultipartUpload: { Parts } }));
  await t.rejects(
    complete([
      { ETag: e1, PartNumber: 1 },
      { ETag: e1, PartNumber: 2 },
    ]),
    { name: 'InvalidPart' },
    'a refused part is not there',
  );
  const e2 = String((await send(2, last)).ETag);
  await complete([
    { ETag: e1, PartNumber: 1 },
    { ETag: e2, PartNumber: 2 },
  ]);
  const got = await store.get(at(key), 10 * MiB, 'object');
  t.ok(Buffer.from(got.bytes).equals(Buffer.concat([first, last])), 'the good parts, in order');
});

t.test('completing parts of one size renames their file: the object is the file the parts were written in', async (t) => {
  const key = 'laid-out/object';
  const { UploadId } = await store.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  const id = String(UploadId);
  const bodies = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(12_345)];
  // Out of order and concurrently, as uploaders send them: the last (short) part after the first.
  const send = (i: number) => store.client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: id, PartNumber: i + 1, Body: bodies[i] }));
  const etags: string[] = [];
  etags[0] = String((await send(0)).ETag);
  // A completion refused (a wrong ETag) leaves the upload as it was: later parts still go in place.
  await t.rejects(
    store.client.send(
      new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: id, MultipartUpload: { Parts: [{ ETag: '"0"', PartNumber: 1 }] } }),
    ),
    { name: 'InvalidPart' },
    'a refused completion',
  );
  await Promise.all([3, 2, 1].map(async (i) => (etags[i] = String((await send(i)).ETag))));
  const data = await stat(join(uploadDir(id), 'data'));
  await store.client.send(
    new CompleteMultipartUploadCommand({
      Bucket: BUCKET,
      Key: key,
      UploadId: id,
      MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
    }),
  );
  const object = await stat(join(bucketDir, 'laid-out', 'object._S3rver_object'));
  t.equal(object.ino, data.ino, 'the same file (inode): no byte copied');
  const got = await store.get(at(key), 32 * MiB, 'object');
  t.ok(Buffer.from(got.bytes).equals(Buffer.concat(bodies)), 'the parts, in order');
  t.equal(got.bytes.length, 15 * MiB + 12_345, 'cut at the last part');
});

t.test('parts that do not fit one layout are assembled by copying, and equal what was sent', async (t) => {
  const cases: { name: string; sizes: number[]; order: number[]; list: number[]; again?: number }[] = [
    { name: 'parts of different sizes', sizes: [5 * MiB, 6 * MiB + 7, 5 * MiB, 100], order: [0, 1, 2, 3], list: [1, 2, 3, 4] },
    { name: 'the short last part first (the layout then fits no other)', sizes: [5 * MiB, 5 * MiB, 999], order: [2, 0, 1], list: [1, 2, 3] },
    { name: 'a subset of the parts', sizes: [5 * MiB, 5 * MiB, 5 * MiB, 10], order: [0, 1, 2, 3], list: [1, 3, 4] },
    { name: 'a part uploaded again with other bytes', sizes: [5 * MiB, 5 * MiB, 77], order: [0, 1, 2], list: [1, 2, 3], again: 1 },
    { name: 'a larger part uploaded again (no longer in its slot)', sizes: [5 * MiB, 5 * MiB, 77], order: [0, 1, 2], list: [1, 2, 3], again: 0 },
  ];
  for (const c of cases) {
    const key = `assembled/${c.sizes.length}-${c.order.join('')}-${c.list.join('')}-${c.again ?? ''}`;
    const { UploadId } = await store.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
    const bodies = c.sizes.map((n) => randomBytes(n));
    const etags: string[] = [];
    const send = async (i: number) =>
      (etags[i] = String((await store.client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber: i + 1, Body: bodies[i] }))).ETag));
    for (const i of c.order) await send(i);
    if (c.again !== undefined) {
      bodies[c.again] = randomBytes(c.again === 0 ? 6 * MiB : c.sizes[c.again]);
      await send(c.again);
    }
    await store.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: BUCKET,
        Key: key,
        UploadId,
        MultipartUpload: { Parts: c.list.map((n) => ({ ETag: etags[n - 1], PartNumber: n })) },
      }),
    );
    const got = await store.get(at(key), 32 * MiB, 'object');
    t.ok(Buffer.from(got.bytes).equals(Buffer.concat(c.list.map((n) => bodies[n - 1]))), `${c.name}: the listed parts, in order`);
    t.notOk(existsSync(uploadDir(String(UploadId))), `${c.name}: nothing left of the upload`);
  }
});

t.test('read-after-write: each PUT is complete when answered', async (t) => {
  let mismatches = 0;
  for (let i = 0; i < 40; i++) {
    const bytes = randomBytes(MiB + i * 1001);
    // Overwrites too: a new version fully replaces the previous one.
    await store.put(at(`raw/${i % 10}`), bytes, 'query');
    const got = await store.get(at(`raw/${i % 10}`), 2 * MiB, 'query');
    if (!Buffer.from(got.bytes).equals(bytes)) mismatches++;
  }
  t.equal(mismatches, 0, '40 PUTs of ~1 MB, each read back right after, identical');
  const empty = new Uint8Array(0);
  await store.put(at('raw/empty'), empty, 'query');
  t.equal((await store.get(at('raw/empty'), 10, 'query')).bytes.length, 0, 'an empty object');
});

t.test('putDirect (seeding without HTTP): what a GET then reads is the object, byte for byte, with its MD5 as ETag', async (t) => {
  const before = s3.requests();
  const bytes = randomBytes(2 * MiB + 5);
  await s3.putDirect(BUCKET, 'direct/k', bytes.subarray(3));
  t.equal(s3.requests(), before, 'no HTTP request');
  const got = await store.get(at('direct/k'), 4 * MiB, 'keys');
  t.ok(Buffer.from(got.bytes).equals(bytes.subarray(3)), 'the bytes of the view given, not of its whole buffer');
  t.equal(got.etag, `"${createHash('md5').update(bytes.subarray(3)).digest('hex')}"`, "S3's ETag: the MD5");
  await s3.putDirect(BUCKET, 'direct/k', new Uint8Array([1, 2, 3]));
  t.same([...(await store.get(at('direct/k'), 10, 'keys')).bytes], [1, 2, 3], 'an overwrite replaces it');
});

t.test('getShared: the object in shared memory, whole; over the limit refused before reading', async (t) => {
  const bytes = randomBytes(3 * MiB + 17);
  await store.put(at('shared/q'), bytes, 'query');
  const got = await store.getShared(at('shared/q'), 4 * MiB, 'query');
  t.ok(got.bytes.buffer instanceof SharedArrayBuffer, 'in a SharedArrayBuffer (worker tasks get views of it, not a clone)');
  t.equal(got.bytes.buffer.byteLength, bytes.length, 'of exactly the object size');
  t.ok(Buffer.from(got.bytes).equals(bytes), 'every byte as written');
  t.equal(got.sha256, createHash('sha256').update(bytes).digest('hex'), 'the SHA-256 of all the bytes (hashed as they arrived)');
  await t.rejects(store.getShared(at('shared/q'), 3 * MiB, 'query'), { code: 'bad-request', message: /over the limit of 3145728/ }, 'a larger object: refused');
  await store.put(at('shared/empty'), new Uint8Array(0), 'query');
  const empty = await store.getShared(at('shared/empty'), 10, 'query');
  t.equal(empty.bytes.length, 0, 'an empty object');
  t.equal(empty.sha256, createHash('sha256').digest('hex'), "the empty object's SHA-256");
});

t.test('a PUT that fails midway (client gone) leaves the previous object and no temporary file', async (t) => {
  const before = randomBytes(1000);
  await store.put(at('cut/object'), before, 'query');
  // Unsigned: s3rver accepts anonymous requests. Promise 10 MB, send 1 MB, then hang up.
  const url = new URL(`/${BUCKET}/cut/object`, s3.endpoint);
  await new Promise<void>((resolve) => {
    const req = request(url, { method: 'PUT', headers: { 'content-length': String(10 * MiB) } });
    req.on('error', () => resolve());
    req.write(randomBytes(MiB), () => setTimeout(() => req.destroy(), 50));
  });
  // Let the server notice.
  await new Promise((r) => setTimeout(r, 200));
  const got = await store.get(at('cut/object'), 10 * MiB, 'query');
  t.ok(Buffer.from(got.bytes).equals(before), 'the previous version, intact');
  t.same(
    (await files(join(bucketDir, 'cut'))).sort(),
    ['object._S3rver_metadata.json', 'object._S3rver_object', 'object._S3rver_object.md5'],
    'no temporary file left',
  );
});

/** An S3 client with the given credentials, as the AWS CLI or a user's SDK would be set up. */
function clientWith(endpoint: string, accessKeyId: string, secretAccessKey: string): S3Client {
  return new S3Client({ endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId, secretAccessKey }, maxAttempts: 1 });
}

t.test('any credentials work, not only S3RVER/S3RVER', async (t) => {
  for (const [id, secret] of [
    ['AKIAIOSFODNN7EXAMPLE', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'],
    ['S3RVER', 'not-the-secret'],
    ['x', 'y'],
  ]) {
    const c = clientWith(s3.endpoint, id, secret);
    t.teardown(() => c.destroy());
    const Key = `creds/${id}`;
    await c.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: `written with ${id}` }));
    const got = await c.send(new GetObjectCommand({ Bucket: BUCKET, Key }));
    t.equal(await got.Body?.transformToString(), `written with ${id}`, `${id}: PUT and GET (SigV4)`);
    const listed = await c.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'creds/' }));
    t.ok(
      listed.Contents?.some((o) => o.Key === Key),
      `${id}: list`,
    );
  }

  // Signature V2 (older tools): s3rver checks it against the key's secret, unknown for an
  // unknown key; the request is accepted anyway.
  const status = await new Promise<number | undefined>((resolve, reject) => {
    const req = request(
      new URL(`/${BUCKET}/creds/x`, s3.endpoint),
      { headers: { date: new Date().toUTCString(), authorization: 'AWS SOMEKEY:c2lnbmF0dXJl' } },
      (res) => {
        res.resume();
        resolve(res.statusCode);
      },
    );
    req.on('error', reject);
    req.end();
  });
  t.equal(status, 200, 'a V2-signed GET by an unknown key');
});

t.test('`sealed s3`: says the credentials and the default bucket, and both are right', async (t) => {
  const bin = fileURLToPath(new URL('../bin/sealed.js', import.meta.url));
  const help = (await promisify(execFile)(process.execPath, [bin, 's3', '--help'])).stdout;
  t.ok(help.includes(LOCAL_BUCKET), `--help names the default bucket ${LOCAL_BUCKET}`);
  t.match(help, /any (access key|credentials)/i, '--help says any credentials work');
  t.ok(
    help.includes(String(LOCAL_S3_PORT)) && help.includes('--s3-endpoint') && help.includes('SEALED_S3_ENDPOINT'),
    '--help says how serve and predict find it on another port',
  );

  const home = join(dir, 'cli-home');
  const child = spawn(process.execPath, [bin, 's3', '--port', '0', '--dir', join(home, 's3')], {
    env: { ...process.env, SEALED_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGTERM');
  });
  let out = '';
  child.stderr.on('data', (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sealed s3 did not start: ${out}`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes(LOCAL_BUCKET)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`sealed s3 exited (${code}): ${out}`)));
  });
  const endpoint = /at (http:\/\/[\d.]+:\d+)/.exec(out)?.[1];
  t.ok(endpoint, `prints its endpoint (${endpoint})`);
  t.match(out, /any credentials/, 'says any credentials');
  t.match(out, new RegExp(`default bucket:? ${LOCAL_BUCKET}`), 'prints the default bucket');

  // What it printed holds: a client with made-up credentials uses the default bucket.
  const c = clientWith(endpoint!, 'made-up', 'also-made-up');
  t.teardown(() => c.destroy());
  await c.send(new CreateBucketCommand({ Bucket: LOCAL_BUCKET }));
  await c.send(new PutObjectCommand({ Bucket: LOCAL_BUCKET, Key: 'k', Body: 'v' }));
  t.equal(
    await (await c.send(new GetObjectCommand({ Bucket: LOCAL_BUCKET, Key: 'k' }))).Body?.transformToString(),
    'v',
    'PUT and GET in the default bucket with made-up credentials',
  );
  child.kill('SIGTERM');
  t.equal(await new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(child.exitCode))), 0, 'SIGTERM: exits 0');
});
