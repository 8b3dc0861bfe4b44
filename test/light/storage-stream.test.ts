// Streaming S3 transfers (ObjectStore.getStream / putStream) against the embedded local S3:
// multipart round trips with bounded memory, size limits, truncation, and clean failure.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { SealedError } from '../../src/errors.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore, STREAM_PART_SIZE, type S3Location } from '../../src/storage/s3.ts';
import { closingProducer, drain } from '../helpers/streams.ts';

const dir = await mkdtemp(join(tmpdir(), 'sealed-stream-'));
const s3 = await startLocalS3({ directory: join(dir, 's3') });
const store = new ObjectStore({ endpoint: s3.endpoint });
const BUCKET = 'stream';
await store.ensureBucket(BUCKET);

// Records every S3 command the store sends: name, input, and output (or error name).
interface Sent {
  command: string;
  input: Record<string, unknown>;
  output?: Record<string, unknown>;
  error?: string;
}
let sent: Sent[] = [];
// When set, fails that UploadPart as S3 would with a 500 (outside the SDK's retries).
let failPart: number | undefined;
store.client.middlewareStack.add(
  (next, context) => async (args) => {
    const rec: Sent = { command: String(context.commandName), input: args.input as Record<string, unknown> };
    sent.push(rec);
    try {
      if (rec.command === 'UploadPartCommand' && rec.input.PartNumber === failPart) {
        throw Object.assign(new Error('We encountered an internal error. Please try again.'), { name: 'InternalError', $metadata: { httpStatusCode: 500 } });
      }
      const r = await next(args);
      rec.output = r.output as unknown as Record<string, unknown>;
      return r;
    } catch (e) {
      rec.error = (e as { name?: string }).name;
      throw e;
    }
  },
  { step: 'initialize', name: 'testRecorder' },
);
const commands = (name: string) => sent.filter((s) => s.command === name);
// The payload hash each PUT request is signed with, as sent.
let putHashes: string[] = [];
store.client.middlewareStack.add(
  (next) => async (args) => {
    const req = args.request as { method?: string; headers?: Record<string, string> };
    if (req.method === 'PUT') putHashes.push(String(req.headers?.['x-amz-content-sha256']));
    return next(args);
  },
  { step: 'finalizeRequest', name: 'testPayloadHashes', priority: 'low' },
);

t.teardown(async () => {
  store.close();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

const at = (key: string): S3Location => ({ bucket: BUCKET, key });
/** Where the local S3 (s3rver) keeps the parts of a multipart upload until it is completed or aborted. */
const uploadDir = (uploadId: string) => join(dir, 's3', BUCKET, '._S3rver_uploads', uploadId);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** `total` random bytes in chunks of uneven sizes (not aligned with parts), hashed as they are made. */
function generated(total: number, failAfter?: number) {
  const hash = createHash('sha256');
  const sizes = [1 << 20, 65_537, 3 * (1 << 20) + 5, 777];
  async function* gen(): AsyncGenerator<Uint8Array> {
    let sent = 0;
    for (let i = 0; sent < total; i++) {
      if (failAfter !== undefined && sent >= failAfter) throw new Error('the producer failed');
      const chunk = randomBytes(Math.min(sizes[i % sizes.length], total - sent));
      hash.update(chunk);
      sent += chunk.length;
      yield chunk;
    }
  }
  return { source: gen(), digest: () => hash.digest('hex') };
}

async function* of(...chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}

t.test('a 40 MB object goes up in several parts and comes back identical', async (t) => {
  sent = [];
  putHashes = [];
  const total = 40_000_000;
  const { source, digest } = generated(total);
  const r = await store.putStream(at('big/object'), source, 'result');
  t.equal(r.bytes, total, 'bytes counted');
  const want = digest();
  const parts = commands('UploadPartCommand');
  t.equal(parts.length, Math.ceil(total / STREAM_PART_SIZE), `${parts.length} parts of 8 MiB (multipart)`);
  t.same(
    parts.map((p) => p.input.PartNumber).sort((a, b) => Number(a) - Number(b)),
    [1, 2, 3, 4, 5],
  );
  t.equal(commands('CreateMultipartUploadCommand').length, 1);
  t.equal(commands('CreateMultipartUploadCommand')[0].input.ServerSideEncryption, 'AES256', 'SSE-S3 requested');
  t.equal(commands('CompleteMultipartUploadCommand').length, 1);
  t.equal(commands('PutObjectCommand').length, 0, 'no whole-object PUT');
  // The parts are not hashed once more for the signature (S3 checks the SDK's CRC32 of each).
  t.same(putHashes, Array(parts.length).fill('UNSIGNED-PAYLOAD'), 'every part signed as UNSIGNED-PAYLOAD');
  t.equal((await store.head(at('big/object')))?.size, total, 'stored size');

  const got = await store.getStream(at('big/object'), 64 * 1024 * 1024, 'result');
  t.equal(got.size, total, 'size from Content-Length');
  t.type(got.etag, 'string');
  const read = await drain(got.stream);
  t.equal(read.bytes, total, 'all bytes read');
  t.equal(read.sha, want, 'sha256 equal');
  // The buffered API sees the same bytes.
  t.equal(sha256((await store.get(at('big/object'), 64 * 1024 * 1024, 'result')).bytes), want, 'get agrees');
});

t.test('payloads smaller than a part (including empty) are single PUTs with SSE', async (t) => {
  for (const size of [0, 5, 100_000, STREAM_PART_SIZE]) {
    sent = [];
    const bytes = randomBytes(size);
    // Split in uneven chunks, with an empty one in the middle.
    const r = await store.putStream(at(`small/${size}`), of(bytes.subarray(0, size >> 1), new Uint8Array(0), bytes.subarray(size >> 1)), 'query');
    t.equal(r.bytes, size, `${size}: bytes counted`);
    t.equal(commands('PutObjectCommand').length, 1, `${size}: one PutObject`);
    t.equal(commands('PutObjectCommand')[0].input.ServerSideEncryption, 'AES256', `${size}: SSE-S3 requested`);
    t.equal(commands('CreateMultipartUploadCommand').length, 0, `${size}: no multipart upload`);
    const got = await store.getStream(at(`small/${size}`), size, 'query');
    t.equal(got.size, size);
    const read = await drain(got.stream);
    t.equal(read.bytes, size);
    t.equal(read.sha, sha256(bytes), `${size}: bytes equal`);
  }
});

t.test('getStream refuses an object over maxBytes before reading it, without its content in the error', async (t) => {
  const secret = new TextEncoder().encode('secret-plaintext-do-not-echo'.repeat(10));
  await store.put(at('limit/obj'), secret, 'query');
  const e = await store.getStream(at('limit/obj'), secret.length - 1, 'encrypted query').then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(e instanceof SealedError, 'a SealedError');
  const se = e as SealedError;
  t.equal(se.code, 'bad-request');
  t.equal(se.message, `encrypted query at s3://stream/limit/obj is ${secret.length} bytes, over the limit of ${secret.length - 1}`);
  t.notMatch(JSON.stringify(se.toJSON()), /secret-plaintext/, 'no content in the error');
  // Exactly at the limit is fine.
  const ok = await store.getStream(at('limit/obj'), secret.length, 'encrypted query');
  t.equal((await drain(ok.stream)).bytes, secret.length);
});

t.test('missing objects and buckets are not-found errors', async (t) => {
  await t.rejects(store.getStream(at('no/such/key'), 1000, 'encrypted query'), {
    name: 'SealedError',
    code: 'not-found',
    message: 'encrypted query not found at s3://stream/no/such/key',
  });
  await t.rejects(store.getStream({ bucket: 'no-such-bucket', key: 'k' }, 1000, 'encrypted query'), { name: 'SealedError', code: 'not-found' });
  await t.rejects(store.putStream({ bucket: 'no-such-bucket', key: 'k' }, of(new Uint8Array(10)), 'result'), { name: 'SealedError', code: 'not-found' });
  // A multipart upload into a missing bucket fails at CreateMultipartUpload, cleanly, and the
  // producer is closed (its finally runs) rather than left suspended.
  const producer = closingProducer();
  await t.rejects(store.putStream({ bucket: 'no-such-bucket', key: 'k' }, producer.source, 'result'), {
    name: 'SealedError',
    code: 'not-found',
    message: 'result not found at s3://no-such-bucket/k',
  });
  t.ok(producer.closed(), 'the producer was closed');
});

t.test('breaking out early, or cancelling, releases the response', async (t) => {
  const got = await store.getStream(at('big/object'), 64 * 1024 * 1024, 'result');
  let n = 0;
  for await (const c of got.stream) {
    n += c.byteLength;
    break;
  }
  t.ok(n > 0 && n < got.size, 'read part of it');
  const again = await store.getStream(at('big/object'), 64 * 1024 * 1024, 'result');
  again.cancel();
  await t.rejects(
    drain(again.stream),
    { name: 'SealedError', code: 'storage', message: /read incompletely \(0 of 40000000 bytes\)/ },
    'reading a cancelled stream fails clearly',
  );
  const small = await store.getStream(at('small/5'), 5, 'query');
  t.equal((await drain(small.stream)).bytes, 5, 'the store still works');
});

// A fake S3 endpoint that misbehaves after sending good headers.
async function fakeS3(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; store: ObjectStore }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { server, store: new ObjectStore({ endpoint: `http://127.0.0.1:${port}` }) };
}

t.test('a body shorter than Content-Length is a clear storage error', async (t) => {
  const { server, store: bad } = await fakeS3((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '1000', etag: '"x"' });
    res.write(Buffer.alloc(400, 7), () => res.socket?.destroy());
  });
  t.teardown(() => {
    bad.close();
    server.closeAllConnections();
    server.close();
  });
  const got = await bad.getStream(at('truncated'), 10_000, 'encrypted query');
  t.equal(got.size, 1000);
  await t.rejects(drain(got.stream), {
    name: 'SealedError',
    code: 'storage',
    message: 'encrypted query at s3://stream/truncated was read incompletely (400 of 1000 bytes)',
    hint: 'retry the request',
  });
});

t.test('a response without Content-Length is refused', async (t) => {
  const { server, store: bad } = await fakeS3((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' }); // chunked
    res.end(Buffer.alloc(10));
  });
  t.teardown(() => {
    bad.close();
    server.close();
  });
  await t.rejects(bad.getStream(at('chunked'), 10_000, 'encrypted query'), { name: 'SealedError', code: 'storage', message: /without a Content-Length/ });
});

t.test('a source that fails midway: the error is its own, the upload is aborted, no object', async (t) => {
  sent = [];
  const { source } = generated(40_000_000, 20_000_000);
  await t.rejects(store.putStream(at('failed/object'), source, 'result'), { message: 'the producer failed' }, "the producer's error, not an S3 one");
  const created = commands('CreateMultipartUploadCommand');
  t.equal(created.length, 1, 'a multipart upload had started');
  const uploadId = created[0].output?.UploadId;
  t.type(uploadId, 'string');
  t.ok(commands('UploadPartCommand').length >= 2, 'parts had been uploaded');
  t.equal(commands('CompleteMultipartUploadCommand').length, 0, 'never completed');
  const aborts = commands('AbortMultipartUploadCommand');
  t.equal(aborts.length, 1, 'AbortMultipartUpload sent once');
  t.same(aborts[0].input, { Bucket: BUCKET, Key: 'failed/object', UploadId: uploadId }, 'for that upload');
  t.equal(aborts[0].error, undefined, 'the abort succeeded');
  t.equal(await store.head(at('failed/object')), undefined, 'no object');
  t.ok(existsSync(dirname(uploadDir(String(uploadId)))), "(the local S3's directory of uploads is where the check looks)");
  t.notOk(existsSync(uploadDir(String(uploadId))), "the upload's parts are gone from the local S3's disk");
  // The local S3 (s3rver 3.7) does not implement ListMultipartUploads (NotImplemented); real S3 does.
  try {
    const list = await store.client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }));
    t.same(list.Uploads ?? [], [], 'no pending multipart uploads');
  } catch (e) {
    t.equal((e as { name?: string }).name, 'NotImplemented', 'listing multipart uploads is not implemented by the local S3');
  }

  // Failing within the first part: nothing was started, nothing to abort.
  sent = [];
  await t.rejects(store.putStream(at('failed/early'), generated(40_000_000, 1_000_000).source, 'result'), { message: 'the producer failed' });
  t.equal(commands('CreateMultipartUploadCommand').length + commands('PutObjectCommand').length, 0, 'nothing sent');
  t.equal(await store.head(at('failed/early')), undefined, 'no object');
});

t.test('S3 failing midway: a storage error, the upload is aborted, the producer closed, no object', async (t) => {
  sent = [];
  failPart = 3;
  t.teardown(() => {
    failPart = undefined;
  });
  const producer = closingProducer();
  await t.rejects(store.putStream(at('failed/s3'), producer.source, 'result'), {
    name: 'SealedError',
    code: 'storage',
    message: 'S3 request for result at s3://stream/failed/s3 failed (InternalError)',
  });
  t.ok(producer.closed(), 'the producer was closed');
  const uploadId = commands('CreateMultipartUploadCommand')[0]?.output?.UploadId;
  t.type(uploadId, 'string', 'a multipart upload had started');
  t.equal(commands('CompleteMultipartUploadCommand').length, 0, 'never completed');
  t.same(
    commands('AbortMultipartUploadCommand').map((a) => a.input),
    [{ Bucket: BUCKET, Key: 'failed/s3', UploadId: uploadId }],
    'that upload aborted, once',
  );
  t.equal(commands('AbortMultipartUploadCommand')[0].error, undefined, 'the abort succeeded');
  t.equal(await store.head(at('failed/s3')), undefined, 'no object');
  // A part upload still in flight when the abort arrived either finished first (and was removed
  // with the others) or was refused: nothing is left.
  t.notOk(existsSync(uploadDir(String(uploadId))), "the upload's parts are gone from the local S3's disk");
});
