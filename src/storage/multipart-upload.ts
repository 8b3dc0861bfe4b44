// A stream of unknown length uploaded to S3 in parts cut from reused buffers: ObjectStore.putStream's
// engine (s3.ts), in place of lib-storage's Upload.
//
// Why: Upload concatenates the stream's chunks into a fresh buffer for every part. For a LeNet batch
// query (1.5 GB, 180 parts of 8 MiB) that was 1.5 GB of new memory on the client's main thread,
// paid page by page on first touch, and the external memory behind ~300 full garbage collections
// of its heap during one batch (3-4.6 s of its CPU; --trace-gc and --cpu-prof, 2-core VM). Here
// the chunks are copied into one of `queue + 1` part buffers, made once per upload: a part's
// buffer is filled again only once S3 has answered its UploadPart (the SDK's retries resend the
// same bytes; nothing else holds them after the answer).
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';

export interface PartsTarget {
  Bucket: string;
  Key: string;
}

/**
 * Uploads `source` in parts of `partSize` bytes, `queue` at a time; a source shorter than one
 * part is one PutObject. Objects are written with SSE-S3. On any failure (the source's or S3's)
 * the multipart upload is aborted (best effort) and the error rethrown as it came; `onSourceError`
 * tells the caller which errors were the source's. Returns the bytes uploaded.
 */
export async function uploadInParts(
  client: S3Client,
  target: PartsTarget,
  source: AsyncIterable<Uint8Array>,
  o: { partSize: number; queue: number; onSourceError(e: unknown): void },
): Promise<number> {
  const common = { ...target, ContentType: 'application/octet-stream', ServerSideEncryption: 'AES256' } as const;
  const free: Uint8Array<ArrayBuffer>[] = [];
  const parts: { ETag?: string; PartNumber: number }[] = [];
  const inflight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  let uploadId: string | undefined;
  let fill = new Uint8Array(o.partSize);
  let filled = 0;
  let bytes = 0;
  let numbered = 0;

  const sendPart = (buffer: Uint8Array<ArrayBuffer>, length: number, PartNumber: number) => {
    const sent = (async () => {
      const r = await client.send(new UploadPartCommand({ ...target, UploadId: uploadId, PartNumber, Body: buffer.subarray(0, length) }));
      parts[PartNumber - 1] = { ETag: r.ETag, PartNumber };
      free.push(buffer);
    })().catch((error: unknown) => {
      failure ??= { error };
    });
    inflight.add(sent);
    void sent.finally(() => inflight.delete(sent));
  };
  const check = () => {
    if (failure) throw failure.error;
  };

  const it = source[Symbol.asyncIterator]();
  let sourceDone = false;
  try {
    for (;;) {
      let r: IteratorResult<Uint8Array>;
      try {
        r = await it.next();
      } catch (e) {
        sourceDone = true;
        o.onSourceError(e);
        throw e;
      }
      if (r.done) {
        sourceDone = true;
        break;
      }
      const chunk = r.value;
      for (let at = 0; at < chunk.length;) {
        // A full part goes once more bytes follow it: a source of exactly one part is one PutObject.
        if (filled === o.partSize) {
          uploadId ??= (await client.send(new CreateMultipartUploadCommand(common))).UploadId;
          while (inflight.size >= o.queue) await Promise.race(inflight);
          check();
          sendPart(fill, filled, ++numbered);
          fill = free.pop() ?? new Uint8Array(o.partSize);
          filled = 0;
        }
        const take = Math.min(o.partSize - filled, chunk.length - at);
        fill.set(chunk.subarray(at, at + take), filled);
        filled += take;
        at += take;
        bytes += take;
      }
    }
    if (uploadId === undefined) {
      await client.send(new PutObjectCommand({ ...common, Body: fill.subarray(0, filled) }));
      return bytes;
    }
    if (filled > 0) sendPart(fill, filled, ++numbered);
    await Promise.all(inflight);
    check();
    await client.send(new CompleteMultipartUploadCommand({ ...target, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
    return bytes;
  } catch (e) {
    // S3 failed: the source is closed (it may hold resources: the encryption pool's tasks).
    if (!sourceDone) await it.return?.();
    await Promise.allSettled(inflight);
    if (uploadId !== undefined) {
      try {
        await client.send(new AbortMultipartUploadCommand({ ...target, UploadId: uploadId }));
      } catch {
        // Best effort (already retried by the SDK): the original failure is what the caller
        // needs; a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims what remains.
      }
    }
    throw e;
  }
}
