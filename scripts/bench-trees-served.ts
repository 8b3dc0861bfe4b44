// `npm run bench -- trees --served`: one record's query (the bundle's single-record form when it
// has one, else a one-record batch) through the real server (embedded S3,
// worker pool), with one worker and with two, requests in turn (one to each per round, so this
// VM's drift falls on both alike). With two workers the query's lone batch is cut into a part per
// thread (src/server/invoke-trees.ts); the server's own timings say what each took: `pool_wall`
// (from the first task handed to a worker to the last result back: the evaluation's latency),
// `evaluate` (the workers' time, summed over their tasks) and `total` (with the query's download
// from S3). Then two more clients take turns, `rounds` queries each, so that every query brings a
// key set the workers do not hold (they keep one): what a record costs when each comes from a
// new client (`new_keys_*`: the key load in warm workers, and the evaluation).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../src/client/route.ts';
import { writeTreeBundle } from '../src/model/trees/bundle.ts';
import type { CompiledTrees } from '../src/model/trees/compile.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { SingleTreeClient } from '../src/model/trees/single-query.ts';
import { formatS3Uri } from '../src/storage/s3.ts';
import { BENCH_BUCKET, startBenchStack } from './bench-stack.ts';

const err = (s: string) => process.stderr.write(s + '\n');
const median = (a: number[]) => Math.round([...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]);
const range = (a: number[]) => [Math.round(Math.min(...a)), Math.round(Math.max(...a))];
/** The rounds after the first (which loads the keys), or the first alone when there is no other. */
const warm = <T>(a: T[]) => (a.length > 1 ? a.slice(1) : a);

interface Timings {
  evaluate: number;
  pool_wall: number;
  total: number;
}

export async function servedSingle(m: CompiledTrees, record: number[], rounds: number) {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-bench-trees-'));
  const modelDir = join(dir, 'model');
  await writeTreeBundle(modelDir, m.client, m.server);
  // The bundle's single-record form when it has one (layout slots), else the batch circuit on a one-record batch.
  const client = m.client.single ? await SingleTreeClient.open(m.client) : await TreeClient.open(m.client);
  const encrypt = () => (client instanceof SingleTreeClient ? client.encryptRecord(record) : client.encryptQuery([record]));
  const stacks = [await startBenchStack(modelDir, 1), await startBenchStack(modelDir, 2)];
  try {
    const keys = client.keys();
    const t = performance.now();
    const query = encrypt();
    err(`served: one record's query ${(query.length / 1e6).toFixed(0)} MB encrypted in ${(performance.now() - t).toFixed(0)} ms`);
    const keysKey = `sealed/keys/${sha256(keys)}.keys`;
    for (const s of stacks) {
      await s.store.put({ bucket: BENCH_BUCKET, key: keysKey }, keys, 'keys');
      await s.store.put({ bucket: BENCH_BUCKET, key: 'q/one.query' }, query, 'query');
    }
    const seen = stacks.map(() => [] as (Timings & { threads: number })[]);
    const predictions = stacks.map(() => new Set<number>());
    const ask = async (i: number, c: typeof client, keysAt: string, queryAt: string, q: Uint8Array, label: string) => {
      const s = stacks[i];
      const res = await fetch(`${s.running.url}/invocations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          encrypted_query_uri: formatS3Uri({ bucket: BENCH_BUCKET, key: queryAt }),
          evaluation_keys_uri: formatS3Uri({ bucket: BENCH_BUCKET, key: keysAt }),
          output_uri: formatS3Uri({ bucket: BENCH_BUCKET, key: `out/${i}` }),
        }),
      });
      const body = (await res.json()) as { timings_ms: Timings; threads?: number; message?: string };
      if (res.status !== 200) throw new Error(`served request: ${res.status} ${body.message}`);
      const { bytes } = await s.store.get({ bucket: BENCH_BUCKET, key: `out/${i}` }, 1 << 26, 'result');
      predictions[i].add(c.decryptResult(bytes, q).predictions[0]);
      err(`served, ${s.workers} worker(s), ${label}: ${JSON.stringify(body.timings_ms)} threads ${body.threads}`);
      return { ...body.timings_ms, threads: body.threads ?? 1 };
    };
    for (let r = 0; r < rounds; r++) {
      for (const i of stacks.keys()) seen[i].push(await ask(i, client, keysKey, 'q/one.query', query, `round ${r + 1}`));
    }
    // Two new clients in turn: each query's key set is not the one the workers hold.
    const others = await Promise.all(
      [0, 1].map(async (k) => {
        const c = m.client.single ? await SingleTreeClient.open(m.client) : await TreeClient.open(m.client);
        const keysBytes = c.keys();
        const q = c instanceof SingleTreeClient ? c.encryptRecord(record) : c.encryptQuery([record]);
        const at = { keys: `sealed/keys/${sha256(keysBytes)}.keys`, query: `q/other-${k}.query` };
        for (const s of stacks) {
          await s.store.put({ bucket: BENCH_BUCKET, key: at.keys }, keysBytes, 'keys');
          await s.store.put({ bucket: BENCH_BUCKET, key: at.query }, q, 'query');
        }
        return { c, q, at };
      }),
    );
    const switched = stacks.map(() => [] as Timings[]);
    try {
      for (let r = 0; r < rounds; r++)
        for (const [k, o] of others.entries())
          for (const i of stacks.keys()) switched[i].push(await ask(i, o.c, o.at.keys, o.at.query, o.q, `new client ${k + 1}, round ${r + 1}`));
    } finally {
      for (const o of others) o.c.close();
    }
    return stacks.map((s, i) => ({
      form: client instanceof SingleTreeClient ? 'single-record (slots)' : 'batch circuit',
      query_bytes: query.length,
      key_bytes: keys.length,
      workers: s.workers,
      threads: seen[i][0].threads,
      // Round 1 loads the key set into each worker's SEAL (kept for the next queries): apart.
      first_pool_wall_ms: Math.round(seen[i][0].pool_wall),
      pool_wall_ms_p50: median(warm(seen[i]).map((x) => x.pool_wall)),
      pool_wall_ms_range: range(warm(seen[i]).map((x) => x.pool_wall)),
      evaluate_ms_p50: median(warm(seen[i]).map((x) => x.evaluate)),
      total_ms_p50: median(warm(seen[i]).map((x) => x.total)),
      // Every query with a key set the workers do not hold (two clients in turn).
      new_keys_pool_wall_ms_p50: median(switched[i].map((x) => x.pool_wall)),
      new_keys_pool_wall_ms_range: range(switched[i].map((x) => x.pool_wall)),
      new_keys_total_ms_p50: median(switched[i].map((x) => x.total)),
      predictions: [...predictions[i]],
      rounds,
    }));
  } finally {
    client.close();
    for (const s of stacks) await s.close();
    await rm(dir, { recursive: true, force: true });
  }
}
