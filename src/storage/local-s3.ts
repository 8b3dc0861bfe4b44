// The embedded S3-compatible server (s3rver) used when no S3 endpoint is configured: a real
// HTTP server on loopback, storing objects in a directory, so nothing needs an AWS account.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { AddressInfo } from 'node:net';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';

export interface LocalS3 {
  endpoint: string;
  /** HTTP requests received so far: lets tests prove a refusal never reached S3 (no timing). */
  requests(): number;
  /** Stores an object as a PUT does, without HTTP and without copying `bytes`: for seeding many objects (a fuzz run's) where the upload is not under test. */
  putDirect(bucket: string, key: string, bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export async function startLocalS3(o: { directory: string; port?: number; host?: string }): Promise<LocalS3> {
  await mkdir(o.directory, { recursive: true });
  routeAbortMultipartUpload();
  acceptAnyCredentials(); // and allowMismatchedSignatures below: see acceptAnyCredentials
  const server = new S3rver({
    port: o.port ?? 0,
    address: o.host ?? '127.0.0.1',
    directory: o.directory,
    silent: true,
    resetOnClose: false,
    allowMismatchedSignatures: true,
  });
  const store = server.store as Store;
  fixStore(store);
  const info = (await server.run()) as AddressInfo;
  let requests = 0;
  (server.httpServer as import('node:http').Server).on('request', () => requests++);
  return {
    endpoint: `http://${info.address}:${info.port}`,
    requests: () => requests,
    putDirect: async (bucket, key, b) => void (await store.putObject({ bucket, key, content: Buffer.from(b.buffer, b.byteOffset, b.length), metadata: {} })),
    close: () => server.close(),
  };
}

// s3rver's internals (3.7), as far as they are used here.
const require = createRequire(import.meta.url);
const S3Error = require('s3rver/lib/models/error.js') as new (code: string, message: string, detail?: Record<string, string>) => Error;
interface Store {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putMetadata(bucket: string, key: string, metadata: unknown, md5: string): Promise<void>;
  putObject(object: { bucket: string; key: string; content: AsyncIterable<Uint8Array> | Buffer; metadata: unknown }): Promise<Written>;
  putPart(bucket: string, uploadId: string, partNumber: string, content: AsyncIterable<Uint8Array>): Promise<Written>;
  putObjectMultipart(bucket: string, uploadId: string, parts: { number: number; etag: string }[]): Promise<Written>;
}
interface Written {
  size: number;
  md5: string;
}
interface RouterContext {
  app: { store: Store };
  params: { bucket: string; key: string; queryMethod?: string };
  query: Record<string, unknown>;
  status: number;
}
interface Router {
  stack: { name: string | null; path: string; methods: string[] }[];
  delete(name: string, path: string, handler: (ctx: RouterContext, next: () => Promise<void>) => Promise<void>): unknown;
}

/**
 * Writes and uploads complete before they are answered, streamed with bounded memory.
 *
 * s3rver 3.7 answers a PUT (and an UploadPart) when the request stream has been read, before its
 * file is flushed, so a GET right after can read a truncated object (seen under load: "the
 * encrypted query is truncated"). Real S3 is read-after-write consistent; make the local one so
 * too. Each object (and part) is streamed to a temporary file next to its final path; once all
 * of it has been written and the file closed, the file is renamed into place, and only then is
 * the request answered. A PUT that fails midway (client gone) leaves the previous object intact
 * and no file behind. (No fsync: the bytes only need to be visible to the next read, which the
 * kernel guarantees once written; this server makes no durability promise across power loss.)
 *
 * Multipart uploads: parts must exist (an UploadPart for an upload never initiated, or aborted,
 * is NoSuchUpload instead of recreating its directory), CompleteMultipartUpload checks the parts'
 * ETags and order as S3 does, and the object's ETag is S3's for multipart objects (MD5 of the
 * parts' MD5s, "-N"), so completing copies the parts without hashing them again.
 * AbortMultipartUpload (which s3rver answers with 405) removes the upload's parts: see
 * routeAbortMultipartUpload.
 */
function fixStore(store: Store): void {
  const state: UploadState = { inflight: new Map(), aborting: new Map() };
  states.set(store, state);

  store.putObject = async (o) => {
    const path = store.getResourcePath(o.bucket, o.key, 'object');
    await mkdir(dirname(path), { recursive: true });
    const written = await writeAtomically(path, Buffer.isBuffer(o.content) ? [o.content] : o.content, true);
    await store.putMetadata(o.bucket, o.key, o.metadata, written.md5);
    return written;
  };

  store.putPart = (bucket, uploadId, partNumber, content) =>
    track(state, uploadId, async () => {
      const dir = await uploadDirectory(store, bucket, uploadId);
      const n = String(partNumber);
      if (!/^[1-9][0-9]{0,4}$/.test(n) || Number(n) > 10_000)
        throw new S3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', { ArgumentName: 'partNumber', ArgumentValue: n });
      const path = join(dir, n);
      const written = await writeAtomically(path, content, true);
      await writeFile(`${path}.md5`, written.md5);
      return written;
    });

  store.putObjectMultipart = (bucket, uploadId, parts) =>
    track(state, uploadId, async () => {
      const dir = await uploadDirectory(store, bucket, uploadId);
      const [key, metadata] = await Promise.all([
        readFile(join(dir, 'key'), 'utf8'),
        readFile(join(dir, 'metadata'), 'utf8').then((m) => JSON.parse(m) as unknown),
      ]);
      for (let i = 1; i < parts.length; i++) {
        if (!(parts[i].number > parts[i - 1].number))
          throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. Parts must be ordered by part number.', { UploadId: uploadId });
      }
      const md5s = await Promise.all(
        parts.map(async (p) => {
          const md5 = await readFile(join(dir, `${p.number}.md5`), 'utf8').catch(missingAs(undefined));
          if (md5 === undefined || md5 !== p.etag) {
            throw new S3Error(
              'InvalidPart',
              "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
              { UploadId: uploadId, PartNumber: String(p.number), ETag: p.etag },
            );
          }
          return Buffer.from(md5, 'hex');
        }),
      );
      const path = store.getResourcePath(bucket, key, 'object');
      await mkdir(dirname(path), { recursive: true });
      async function* concatenated(): AsyncGenerator<Uint8Array> {
        for (const p of parts) yield* createReadStream(join(dir, String(p.number)), { highWaterMark: 1 << 20 });
      }
      const { size } = await writeAtomically(path, concatenated(), false);
      const etag = `${createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${parts.length}`;
      await store.putMetadata(bucket, key, metadata, etag);
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      return { size, md5: etag };
    });
}

/**
 * Streams `source` to a temporary file in `path`'s directory and renames it to `path` once all
 * of it is written and the file closed; on failure removes the temporary file. Memory: the
 * stream's buffers only.
 */
async function writeAtomically(path: string, source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>, md5: boolean): Promise<Written> {
  // Not a name s3rver lists (its files end in ._S3rver_<resource>).
  const tmp = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  const hash = md5 ? createHash('md5') : undefined;
  let size = 0;
  try {
    const out = createWriteStream(tmp, { flags: 'wx' });
    await pipeline(
      source,
      async function* (chunks: AsyncIterable<Uint8Array>) {
        for await (const c of chunks) {
          hash?.update(c);
          size += c.byteLength;
          yield c;
        }
      },
      out,
    );
    // The pipeline settles once every write has completed; also wait for the descriptor to close.
    if (!out.closed) await once(out, 'close');
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return { size, md5: hash?.digest('hex') ?? '' };
}

// Multipart uploads in progress, per store: the part uploads and completions running for each
// upload id, and the aborts in progress (which wait for those before removing the parts).
interface UploadState {
  inflight: Map<string, Set<Promise<unknown>>>;
  aborting: Map<string, Promise<void>>;
}
const states = new WeakMap<Store, UploadState>();

/** s3rver's upload ids: 16 random bytes in hex. Anything else names no upload (nor a path). */
const UPLOAD_ID = /^[0-9a-f]{32}$/;

const noSuchUpload = (uploadId: string) =>
  new S3Error('NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.', {
    UploadId: uploadId,
  });

/** The directory of an initiated upload, else NoSuchUpload. */
async function uploadDirectory(store: Store, bucket: string, uploadId: string): Promise<string> {
  if (!UPLOAD_ID.test(uploadId)) throw noSuchUpload(uploadId);
  const dir = join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
  if (!(await stat(join(dir, 'key')).catch(missingAs(undefined)))) throw noSuchUpload(uploadId);
  return dir;
}

/** Runs an operation on an upload, refused while the upload is being aborted. */
async function track<T>(state: UploadState, uploadId: string, op: () => Promise<T>): Promise<T> {
  if (state.aborting.has(uploadId)) throw noSuchUpload(uploadId);
  let running = state.inflight.get(uploadId);
  if (!running) state.inflight.set(uploadId, (running = new Set()));
  const p = op();
  running.add(p);
  try {
    return await p;
  } finally {
    running.delete(p);
    if (running.size === 0 && state.inflight.get(uploadId) === running) state.inflight.delete(uploadId);
  }
}

/**
 * AbortMultipartUpload: waits for the upload's part uploads still running (which S3 also lets
 * finish), then removes its directory and every part in it. Part uploads arriving meanwhile, or
 * later, are NoSuchUpload.
 */
function abortUpload(store: Store, state: UploadState, bucket: string, key: string, uploadId: string): Promise<void> {
  if (!UPLOAD_ID.test(uploadId)) return Promise.reject(noSuchUpload(uploadId));
  const pending = state.aborting.get(uploadId);
  if (pending) return pending;
  const aborted = (async () => {
    try {
      for (let running = state.inflight.get(uploadId); running?.size; running = state.inflight.get(uploadId)) await Promise.allSettled(running);
      const dir = join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
      // The upload must be for that key, as in S3.
      if ((await readFile(join(dir, 'key'), 'utf8').catch(missingAs(undefined))) !== key) throw noSuchUpload(uploadId);
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    } finally {
      state.aborting.delete(uploadId);
    }
  })();
  state.aborting.set(uploadId, aborted);
  return aborted;
}

/**
 * Adds AbortMultipartUpload (DELETE /bucket/key?uploadId=ID → 204) to s3rver's router, just
 * before its object DELETE route (which answers it with 405), so that it runs after the
 * router's authentication and bucket checks. The router is a module shared by every s3rver of
 * the process: added once; the route finds each server's store on the request's context.
 */
function routeAbortMultipartUpload(): void {
  const router = require('s3rver/lib/routes.js') as Router;
  const NAME = 'sealed:abortMultipartUpload';
  if (router.stack.some((l) => l.name === NAME)) return;
  const PATH = '/:bucket/:key+';
  const at = router.stack.findIndex((l) => l.path === PATH && l.methods.includes('DELETE'));
  if (at < 0) throw new Error("s3rver's routes are not the ones expected (3.7): cannot add AbortMultipartUpload");
  router.delete(NAME, PATH, async (ctx, next) => {
    const state = states.get(ctx.app.store);
    if (ctx.params.queryMethod !== 'uploadId' || !state) return next();
    await abortUpload(ctx.app.store, state, ctx.params.bucket, ctx.params.key, String(ctx.query.uploadId));
    ctx.status = 204;
  });
  router.stack.splice(at, 0, router.stack.pop()!);
}

type Account = { accessKeys: Map<string, string> };
const anyKey = Symbol('sealed:anyCredentials');

/**
 * Any access key id and secret work, as `sealed s3` promises: users point the AWS CLI or an SDK
 * at it with whatever credentials their environment holds (ObjectStore itself sends
 * $AWS_ACCESS_KEY_ID when set). s3rver knows one key pair, S3RVER/S3RVER, and answers any other
 * key id with 403 InvalidAccessKeyId; here every key id finds its one account. It does not verify
 * V4 signatures (what current SDKs send) at all; V2 signatures it checks against the key's secret,
 * which it cannot know for a key it has never seen, hence allowMismatchedSignatures. The key
 * registry is a module shared by every s3rver of the process: patched once.
 */
function acceptAnyCredentials(): void {
  const AWSAccount = require('s3rver/lib/models/account.js') as { registry: Map<string, Account> & { [anyKey]?: true }; DUMMY_ACCOUNT: Account };
  const { registry, DUMMY_ACCOUNT: account } = AWSAccount;
  if (!registry || !account?.accessKeys) throw new Error("s3rver's accounts are not the ones expected (3.7): cannot accept any credentials");
  if (registry[anyKey]) return;
  registry[anyKey] = true;
  const keys = account.accessKeys;
  registry.get = (id) => Map.prototype.get.call(registry, id) ?? account;
  // An HMAC key for V2 signatures by unknown keys: never matches, which allowMismatchedSignatures accepts.
  keys.get = (id) => Map.prototype.get.call(keys, id) ?? '';
}

const missingAs =
  <T>(value: T) =>
  (e: unknown): T => {
    if ((e as { code?: string }).code === 'ENOENT') return value;
    throw e;
  };
