// The benchmark stack's own process (bench-stack.ts, startBenchStackProcess): starts the embedded
// S3 and the server, says where they listen on one line of stdout, and stops both on SIGTERM.
//   usage: node scripts/bench-stack-child.ts MODEL_DIR WORKERS [MAX_KEY_BYTES]
import { startBenchStack } from './bench-stack.ts';

const [modelDir, workers, maxKeyBytes] = process.argv.slice(2);
const stack = await startBenchStack(modelDir, Number(workers), maxKeyBytes ? Number(maxKeyBytes) : undefined);
console.log(JSON.stringify({ url: stack.running.url, endpoint: stack.store.endpoint }));
process.once('SIGTERM', () => void stack.close().then(() => process.exit(0)));
