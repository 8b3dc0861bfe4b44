// Which S3 to use. An explicit endpoint wins; AWS when the environment is configured for it;
// otherwise the embedded local S3 server on loopback (started here if none is listening), so
// `sealed serve` and `sealed predict` in two terminals share it without any configuration.
// The local server (s3rver and its dependencies) is loaded only when it is started: loading it
// took 0.2-0.9 s of CPU at the start of every `sealed predict` and `keygen`, endpoint or not.
import { createConnection } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { LocalS3 } from './local-s3.ts';

export const LOCAL_S3_PORT = 4568;
export const LOCAL_BUCKET = 'sealed-local';

export interface ResolvedS3 {
  mode: 'endpoint' | 'aws' | 'local';
  endpoint?: string;
  local?: LocalS3;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function resolveS3(o: { endpoint?: string; aws?: boolean }): Promise<ResolvedS3> {
  const endpoint = o.endpoint ?? process.env.SEALED_S3_ENDPOINT;
  if (endpoint) return { mode: 'endpoint', endpoint };
  const env = process.env;
  if (o.aws || env.SEALED_S3 === 'aws' || env.AWS_REGION || env.AWS_DEFAULT_REGION || env.AWS_PROFILE) return { mode: 'aws' };
  const url = `http://127.0.0.1:${LOCAL_S3_PORT}`;
  if (await listening(LOCAL_S3_PORT)) return { mode: 'local', endpoint: url };
  const { startLocalS3 } = await import('./local-s3.ts');
  const local = await startLocalS3({ directory: join(env.SEALED_HOME ?? join(homedir(), '.sealed'), 's3'), port: LOCAL_S3_PORT });
  return { mode: 'local', endpoint: local.endpoint, local };
}
