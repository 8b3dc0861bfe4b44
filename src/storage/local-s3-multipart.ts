// Multipart uploads of the embedded S3 server (local-s3.ts): parts written where they will lie
// in the object, so that completing an upload renames one file instead of copying every byte.
//
// Amazon S3 completes an upload without touching its bytes. s3rver copied them, and so did
// local-s3.ts until 2026-12-07: for a LeNet batch query (171 parts, 1.43 GB) 5.5-5.7 s during
// which the client waits for CompleteMultipartUpload and one core copies (6.3-6.7 s of CPU,
// measured on the 2-core VM): a serial stretch that Amazon S3 does not have, a tenth of the
// batch's wall time. Clients upload parts of one size but the last (ObjectStore.putStream, the AWS CLI), so
// part n belongs at (n - 1) x that size: each part goes there, in one data file per upload, and
// when the completed list is parts 1..N of that layout the data file becomes the object. Any
// other list (parts of other sizes, gaps, a subset) is assembled by copying, as before.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { checkPartChecksum, partEtag, writeAt, writeAtomically, type Written } from './local-s3-write.ts';

// s3rver's internals (3.7), as far as they are used here and in local-s3.ts.
export interface Store {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putMetadata(bucket: string, key: string, metadata: unknown, md5: string): Promise<void>;
  putObject(object: { bucket: string; key: string; content: AsyncIterable<Uint8Array> | Buffer; metadata: unknown }): Promise<Written>;
  putPart(bucket: string, uploadId: string, partNumber: string, content: AsyncIterable<Uint8Array> & { headers?: Record<string, unknown> }): Promise<Written>;
  putObjectMultipart(bucket: string, uploadId: string, parts: { number: number; etag: string }[]): Promise<Written>;
}
export type S3ErrorClass = new (code: string, message: string, detail?: Record<string, string>) => Error;

/** A stored part: its ETag (partEtag), its size, and where it lies in the upload's data file (else in a file of its own). */
interface PartRecord {
  md5: string;
  size: number;
  at?: number;
}

/** Multipart uploads in progress, per store. */
export interface UploadState {
  /** The part uploads and completions running for each upload id. */
  inflight: Map<string, Set<Promise<unknown>>>;
  /** The aborts in progress (which wait for those before removing the parts). */
  aborting: Map<string, Promise<void>>;
  /** Per upload: the part size parts are laid out by (the first part's to arrive), the in-place writes running. */
  layout: Map<string, { size: number; writing: Map<number, Promise<unknown>>; completing: boolean }>;
}

/** s3rver's upload ids: 16 random bytes in hex. Anything else names no upload (nor a path). */
const UPLOAD_ID = /^[0-9a-f]{32}$/;
const DATA = 'data';

const noSuchUpload = (S3Error: S3ErrorClass, uploadId: string) =>
  new S3Error('NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.', {
    UploadId: uploadId,
  });

/**
 * UploadPart and CompleteMultipartUpload on `store`. Parts must exist (an UploadPart for an
 * upload never initiated, or aborted, is NoSuchUpload instead of recreating its directory), and
 * completing checks the parts' ETags and order as S3 does; the object's ETag is S3's for
 * multipart objects (MD5 of the parts' ETags, "-N"), so no byte is hashed twice.
 */
export function fixMultipart(store: Store, state: UploadState, S3Error: S3ErrorClass): void {
  store.putPart = (bucket, uploadId, partNumber, content) =>
    track(state, S3Error, uploadId, async () => {
      const dir = await uploadDirectory(store, S3Error, bucket, uploadId);
      const n = String(partNumber);
      if (!/^[1-9][0-9]{0,4}$/.test(n) || Number(n) > 10_000)
        throw new S3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', { ArgumentName: 'partNumber', ArgumentValue: n });
      const number = Number(n);
      const length = Number(content.headers?.['content-length']);
      let layout = state.layout.get(uploadId);
      if (!layout && Number.isSafeInteger(length) && length > 0) state.layout.set(uploadId, (layout = { size: length, writing: new Map(), completing: false }));
      // In place when it fits its slot (the last part may be shorter) and no upload of the same
      // part is writing there; else in a file of its own, renamed into place when whole.
      const inPlace = layout && !layout.completing && !layout.writing.has(number) && Number.isSafeInteger(length) && length <= layout.size;
      let record: PartRecord;
      if (layout && inPlace) {
        const at = (number - 1) * layout.size;
        const writing = (async () => {
          // From here the part's previous version is overwritten: until this one is whole, there is none.
          await rm(join(dir, `${n}.part`), { force: true });
          return writeAt(join(dir, DATA), at, content);
        })();
        layout.writing.set(number, writing);
        try {
          const written = await writing;
          if (written.size !== length)
            throw new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
          checkPartChecksum(S3Error, content.headers, written.crc);
          record = { md5: partEtag(written.crc, written.size), size: written.size, at };
        } finally {
          layout.writing.delete(number);
        }
      } else {
        const written = await writeAtomically(join(dir, n), content, 'crc32');
        try {
          checkPartChecksum(S3Error, content.headers, written.crc);
        } catch (e) {
          await rm(join(dir, n), { force: true });
          throw e;
        }
        record = { md5: partEtag(written.crc, written.size), size: written.size };
      }
      await writeFile(join(dir, `${n}.part`), JSON.stringify(record));
      return { size: record.size, md5: record.md5 };
    });

  store.putObjectMultipart = (bucket, uploadId, parts) =>
    track(state, S3Error, uploadId, async () => {
      const dir = await uploadDirectory(store, S3Error, bucket, uploadId);
      const [key, metadata] = await Promise.all([
        readFile(join(dir, 'key'), 'utf8'),
        readFile(join(dir, 'metadata'), 'utf8').then((m) => JSON.parse(m) as unknown),
      ]);
      for (let i = 1; i < parts.length; i++) {
        if (!(parts[i].number > parts[i - 1].number))
          throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. Parts must be ordered by part number.', { UploadId: uploadId });
      }
      // Parts still being written finish first (no later one starts in place until this fails).
      const layout = state.layout.get(uploadId);
      if (layout) {
        layout.completing = true;
        await Promise.allSettled(layout.writing.values());
      }
      try {
        return await completeUpload(store, state, S3Error, { bucket, uploadId, parts, dir, key, metadata });
      } catch (e) {
        if (layout) layout.completing = false;
        throw e;
      }
    });
}

/** CompleteMultipartUpload once its parts are listed in order and none is being written. */
async function completeUpload(
  store: Store,
  state: UploadState,
  S3Error: S3ErrorClass,
  u: { bucket: string; uploadId: string; parts: { number: number; etag: string }[]; dir: string; key: string; metadata: unknown },
): Promise<Written> {
  const { bucket, uploadId, parts, dir, key, metadata } = u;
  const records = await Promise.all(
    parts.map(async (p) => {
      const json = await readFile(join(dir, `${p.number}.part`), 'utf8').catch(missingAs(undefined));
      const record = json === undefined ? undefined : (JSON.parse(json) as PartRecord);
      if (record?.md5 !== p.etag) {
        throw new S3Error(
          'InvalidPart',
          "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
          { UploadId: uploadId, PartNumber: String(p.number), ETag: p.etag },
        );
      }
      return record;
    }),
  );
  const path = store.getResourcePath(bucket, key, 'object');
  await mkdir(dirname(path), { recursive: true });
  const size = records.reduce((a, r) => a + r.size, 0);
  const whole = records[0].size;
  const laidOut = parts.every(
    (p, i) => p.number === i + 1 && records[i].at === i * whole && (i === parts.length - 1 ? records[i].size <= whole : records[i].size === whole),
  );
  if (laidOut) {
    // Parts past the last listed may lie beyond it: cut them off.
    await truncate(join(dir, DATA), size);
    await rename(join(dir, DATA), path);
  } else {
    async function* concatenated(): AsyncGenerator<Uint8Array> {
      for (const [i, p] of parts.entries()) {
        const { at, size: n } = records[i];
        if (n === 0) continue;
        yield* at === undefined
          ? createReadStream(join(dir, String(p.number)), { highWaterMark: 1 << 20 })
          : createReadStream(join(dir, DATA), { start: at, end: at + n - 1, highWaterMark: 1 << 20 });
      }
    }
    await writeAtomically(path, concatenated(), 'none');
  }
  const etag = `${createHash('md5')
    .update(Buffer.concat(records.map((r) => Buffer.from(r.md5, 'hex'))))
    .digest('hex')}-${parts.length}`;
  await store.putMetadata(bucket, key, metadata, etag);
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  state.layout.delete(uploadId);
  return { size, md5: etag };
}

/** The directory of an initiated upload, else NoSuchUpload. */
async function uploadDirectory(store: Store, S3Error: S3ErrorClass, bucket: string, uploadId: string): Promise<string> {
  if (!UPLOAD_ID.test(uploadId)) throw noSuchUpload(S3Error, uploadId);
  const dir = join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
  if (!(await stat(join(dir, 'key')).catch(missingAs(undefined)))) throw noSuchUpload(S3Error, uploadId);
  return dir;
}

/** Runs an operation on an upload, refused while the upload is being aborted. */
async function track<T>(state: UploadState, S3Error: S3ErrorClass, uploadId: string, op: () => Promise<T>): Promise<T> {
  if (state.aborting.has(uploadId)) throw noSuchUpload(S3Error, uploadId);
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
export function abortUpload(store: Store, state: UploadState, S3Error: S3ErrorClass, bucket: string, key: string, uploadId: string): Promise<void> {
  if (!UPLOAD_ID.test(uploadId)) return Promise.reject(noSuchUpload(S3Error, uploadId));
  const pending = state.aborting.get(uploadId);
  if (pending) return pending;
  const aborted = (async () => {
    try {
      for (let running = state.inflight.get(uploadId); running?.size; running = state.inflight.get(uploadId)) await Promise.allSettled(running);
      const dir = join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
      // The upload must be for that key, as in S3.
      if ((await readFile(join(dir, 'key'), 'utf8').catch(missingAs(undefined))) !== key) throw noSuchUpload(S3Error, uploadId);
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      state.layout.delete(uploadId);
    } finally {
      state.aborting.delete(uploadId);
    }
  })();
  state.aborting.set(uploadId, aborted);
  return aborted;
}

const missingAs =
  <T>(value: T) =>
  (e: unknown): T => {
    if ((e as { code?: string }).code === 'ENOENT') return value;
    throw e;
  };
