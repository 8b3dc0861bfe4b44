// The benchmark stack's own processes (bench-stack.ts, startBenchStackProcess): starts the
// embedded S3 and the server (or the embedded S3 alone, or the server against an S3 endpoint
// given), says where they listen on one line of stdout, and stops them on SIGTERM.
//   usage: node scripts/bench-stack-child.ts MODEL_DIR WORKERS [MAX_KEY_BYTES [S3_ENDPOINT]]
//          node scripts/bench-stack-child.ts --s3
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalS3 } from '../src/storage/local-s3.ts';
import { startBenchStack } from './bench-stack.ts';

const args = process.argv.slice(2);
let close: () => Promise<void>;
if (args[0] === '--s3') {
  const work = await mkdtemp(join(tmpdir(), 'sealed-bench-s3-'));
  const s3 = await startLocalS3({ directory: join(work, 's3') });
  console.log(JSON.stringify({ endpoint: s3.endpoint }));
  close = async () => {
    await s3.close();
    await rm(work, { recursive: true, force: true });
  };
} else {
  const [modelDir, workers, maxKeyBytes, s3Endpoint] = args;
  const stack = await startBenchStack(modelDir, Number(workers), maxKeyBytes ? Number(maxKeyBytes) : undefined, s3Endpoint || undefined);
  console.log(JSON.stringify({ url: stack.running.url, endpoint: stack.store.endpoint }));
  close = stack.close;
}
process.once('SIGTERM', () => void close().then(() => process.exit(0)));
