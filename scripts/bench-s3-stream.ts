// Streaming S3 benchmark: uploads a generated payload of --mb MiB with ObjectStore.putStream
// (multipart; made on the fly, never held whole) to the embedded local S3, then reads it back with
// getStream (hashing it as it arrives), sampling this process's memory every 100 ms. The local S3
// runs in a child process so that the figures are the client's alone (s3rver keeps its own
// buffers; its peak RSS is reported separately, as server_peak_rss_mb, on Linux).
// Last line of stdout: one JSON object.
//
//   node scripts/bench-s3-stream.ts [--mb 1024]
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ObjectStore } from '../src/storage/s3.ts';

const { values } = parseArgs({ options: { mb: { type: 'string', default: '1024' } } });
const mb = Number(values.mb);
if (!Number.isFinite(mb) || mb <= 0) throw new Error('--mb must be a positive number');
const MiB = 1024 * 1024;
const total = Math.round(mb * MiB);
const err = (s: string) => process.stderr.write(s + '\n');
const toMb = (n: number) => Math.round((n / MiB) * 10) / 10;

const work = await mkdtemp(join(tmpdir(), 'sealed-s3-stream-'));

// The embedded local S3 (src/storage/local-s3.ts) in a child process.
const localS3 = pathToFileURL(join(import.meta.dirname, '../src/storage/local-s3.ts')).href;
const child = spawn(
  process.execPath,
  [
    '--input-type=module',
    '-e',
    `const { startLocalS3 } = await import(${JSON.stringify(localS3)});
     const s3 = await startLocalS3({ directory: ${JSON.stringify(join(work, 's3'))} });
     console.log(s3.endpoint);
     process.on('SIGTERM', () => s3.close().then(() => process.exit(0)));`,
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const endpoint = await new Promise<string>((resolve, reject) => {
  child.once('error', reject);
  child.once('exit', (code) => reject(new Error(`the local S3 exited (${code})`)));
  createInterface({ input: child.stdout! }).once('line', resolve);
});

const store = new ObjectStore({ endpoint });
const loc = { bucket: 'bench', key: 'stream/payload' };
await store.ensureBucket(loc.bucket);

// Memory sampling: this process every 100 ms, and the server's RSS from /proc when available.
const peak = { rss: 0, heapUsed: 0, external: 0, serverRss: 0 };
const serverRss = async (): Promise<number> => {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${child.pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
};
const sample = () => {
  const m = process.memoryUsage();
  peak.rss = Math.max(peak.rss, m.rss);
  peak.heapUsed = Math.max(peak.heapUsed, m.heapUsed);
  peak.external = Math.max(peak.external, m.external);
  void serverRss().then((r) => (peak.serverRss = Math.max(peak.serverRss, r)));
};
globalThis.gc?.();
const baseline = process.memoryUsage();
const timer = setInterval(sample, 100);
sample();

// The payload: 1 MiB chunks, each a fresh copy of a random block stamped with its index (so no
// two parts are alike), hashed as generated.
const block = randomBytes(MiB);
const upHash = createHash('sha256');
async function* payload(): AsyncGenerator<Uint8Array> {
  for (let off = 0, i = 0; off < total; off += MiB, i++) {
    const chunk = Buffer.allocUnsafe(Math.min(MiB, total - off));
    block.copy(chunk, 0, 0, chunk.length);
    if (chunk.length >= 8) chunk.writeBigUInt64LE(BigInt(i), 0);
    upHash.update(chunk);
    yield chunk;
  }
}

err(`uploading ${mb} MiB to ${endpoint} ...`);
let t0 = performance.now();
const up = await store.putStream(loc, payload(), 'payload');
const upS = (performance.now() - t0) / 1000;
sample();
if (up.bytes !== total) throw new Error(`uploaded ${up.bytes} bytes, expected ${total}`);
const upSha = upHash.digest('hex');
err(`  ${upS.toFixed(2)} s; downloading ...`);

t0 = performance.now();
const got = await store.getStream(loc, total, 'payload');
const downHash = createHash('sha256');
let down = 0;
for await (const c of got.stream) {
  downHash.update(c);
  down += c.byteLength;
}
const downS = (performance.now() - t0) / 1000;
sample();
clearInterval(timer);
const ok = down === total && got.size === total && downHash.digest('hex') === upSha;
err(`  ${downS.toFixed(2)} s; ${ok ? 'bytes identical' : 'MISMATCH'}`);

store.close();
await new Promise<void>((resolve) => {
  child.once('exit', () => resolve());
  child.kill('SIGTERM');
});
await rm(work, { recursive: true, force: true });

const round = (x: number) => Math.round(x * 100) / 100;
console.log(
  JSON.stringify({
    mb,
    up_s: round(upS),
    down_s: round(downS),
    up_mb_per_s: round(mb / upS),
    down_mb_per_s: round(mb / downS),
    peak_rss_mb: toMb(peak.rss),
    peak_heap_used_mb: toMb(peak.heapUsed),
    peak_external_mb: toMb(peak.external),
    baseline_rss_mb: toMb(baseline.rss),
    ok,
    server_peak_rss_mb: peak.serverRss ? toMb(peak.serverRss) : null,
  }),
);
if (!ok) process.exitCode = 1;
