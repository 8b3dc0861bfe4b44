// The embedded S3-compatible server (s3rver) used when no S3 endpoint is configured: a real
// HTTP server on loopback, storing objects in a directory, so nothing needs an AWS account.
import { mkdir } from 'node:fs/promises';
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
  const info = (await server.run()) as AddressInfo;
  return {
    endpoint: `http://${info.address}:${info.port}`,
    close: () => server.close(),
  };
}
