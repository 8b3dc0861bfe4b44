// The embedded S3-compatible server (s3rver) used when no S3 endpoint is configured: a real
// HTTP server on loopback, storing objects in a directory, so nothing needs an AWS account.
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';

export interface LocalS3 {
  endpoint: string;
  close(): Promise<void>;
}

export async function startLocalS3(o: { directory: string; port?: number; host?: string }): Promise<LocalS3> {
  await mkdir(o.directory, { recursive: true });
  const server = new S3rver({ port: o.port ?? 0, address: o.host ?? '127.0.0.1', directory: o.directory, silent: true, resetOnClose: false });
  fixPutObject(server.store);
  const info = (await server.run()) as AddressInfo;
  return {
    endpoint: `http://${info.address}:${info.port}`,
    close: () => server.close(),
  };
}

/**
 * s3rver 3.7 answers a PUT when the request stream has been read, before its file is flushed,
 * so a GET right after can read a truncated object (seen under load: "the encrypted query is
 * truncated"). Real S3 is read-after-write consistent; make the local one so too: the object's
 * bytes are written completely (and the file closed) before the PUT is answered.
 */
function fixPutObject(store: { putObject(o: unknown): Promise<unknown>; getResourcePath(b: string, k: string, t: string): string; putMetadata(b: string, k: string, m: unknown, md5: string): Promise<void> }): void {
  store.putObject = async (object: unknown) => {
    const o = object as { bucket: string; key: string; content: NodeJS.ReadableStream | Buffer; metadata: unknown };
    const chunks: Buffer[] = [];
    if (Buffer.isBuffer(o.content)) chunks.push(o.content);
    else for await (const c of o.content as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
    const body = Buffer.concat(chunks);
    const path = store.getResourcePath(o.bucket, o.key, 'object');
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, body);
    const md5 = createHash('md5').update(body).digest('hex');
    await store.putMetadata(o.bucket, o.key, o.metadata, md5);
    return { size: body.length, md5 };
  };
}
