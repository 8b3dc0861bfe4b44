// The embedded S3-compatible server (s3rver) used when no S3 endpoint is configured: a real
// HTTP server on loopback, storing objects in a directory, so nothing needs an AWS account.
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';
import { abortUpload, fixMultipart, type S3ErrorClass, type Store, type UploadState } from './local-s3-multipart.ts';
import { writeAtomically } from './local-s3-write.ts';

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

// s3rver's internals (3.7), as far as they are used here (the store's: local-s3-multipart.ts).
const require = createRequire(import.meta.url);
const S3Error = require('s3rver/lib/models/error.js') as S3ErrorClass;
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
 * Multipart uploads: local-s3-multipart.ts (parts laid out in the object's file as they arrive).
 * AbortMultipartUpload (which s3rver answers with 405) removes the upload's parts: see
 * routeAbortMultipartUpload.
 */
const states = new WeakMap<Store, UploadState>();

function fixStore(store: Store): void {
  const state: UploadState = { inflight: new Map(), aborting: new Map(), layout: new Map() };
  states.set(store, state);

  store.putObject = async (o) => {
    const path = store.getResourcePath(o.bucket, o.key, 'object');
    await mkdir(dirname(path), { recursive: true });
    const written = await writeAtomically(path, Buffer.isBuffer(o.content) ? [o.content] : o.content, 'md5');
    await store.putMetadata(o.bucket, o.key, o.metadata, written.md5);
    return written;
  };

  fixMultipart(store, state, S3Error);
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
    await abortUpload(ctx.app.store, state, S3Error, ctx.params.bucket, ctx.params.key, String(ctx.query.uploadId));
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
