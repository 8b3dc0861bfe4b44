// npm run bench -- sweep [--quick]
//
// Time against batch size (single layout vs batch mode) and against worker count, each point a
// fresh benchmark process (scripts/bench.ts), on the official MNIST test images. Writes the
// measurements to docs/bench/sweep.json and the charts to docs/img/*.svg; last stdout line: a
// JSON summary (crossover measured between the two layouts, worker speed-ups).
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { lineChart } from './svg-plot.ts';

const err = (s: string) => process.stderr.write(s + '\n');

type Row = Record<string, unknown> & { n: number; w: number };

function run(args: string[]): Record<string, unknown> {
  err(`$ npm run bench -- ${args.join(' ')}`);
  const out = execFileSync(process.execPath, ['scripts/bench.ts', ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  });
  const last = out.trim().split('\n').pop()!;
  return JSON.parse(last) as Record<string, unknown>;
}

export async function sweep(argv: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean', default: false } } });
  const batchN = values.quick ? [200, 4096, 10000] : [100, 300, 1000, 2000, 4096, 6000, 8192, 10000];
  const singleN = values.quick ? [10, 100] : [1, 10, 50, 100, 200, 400];
  const batch: Row[] = batchN.map((n) => ({ n, w: 2, ...run(['mnist-batch', '--n', String(n), '--workers', '2', '--no-cost-model']) }));
  const single: Row[] = singleN.map((n) => ({ n, w: 2, ...run(['mnist', '--n', String(n), '--workers', '2']) }));
  const workers: Row[] = [1, 2].map((w) => ({ w, n: 10000, ...run(['mnist-batch', '--n', '10000', '--workers', String(w)]) }));
  const wall = (r: Record<string, unknown>) => Number(r.wall_s);
  // The single layout's time grows linearly: extend its measured rate to the batch sizes.
  const last = single[single.length - 1];
  const singleRate = Number(last.images_per_s);
  const crossover = (() => {
    for (let n = 1; n <= 10000; n++) {
      const b = batch.find((r) => r.n >= n) ?? batch[batch.length - 1];
      if (wall(b) <= n / singleRate) return n;
    }
    return undefined;
  })();
  await mkdir('docs/bench', { recursive: true });
  await mkdir('docs/img', { recursive: true });
  const cpu = cpus()[0]?.model;
  await writeFile(
    'docs/bench/sweep.json',
    JSON.stringify({ date: new Date().toISOString(), cpu, cores: cpus().length, batch, single, workers }, null, 1) + '\n',
  );
  await writeFile(
    'docs/img/time-vs-batch-size.svg',
    lineChart(
      [
        { name: 'batch mode', color: '#1f77b4', points: batch.map((r) => [r.n, wall(r)]) },
        { name: 'single layout', color: '#d62728', points: single.map((r) => [r.n, Number(r.wall_s)]) },
        {
          name: 'single, extended',
          color: '#d62728',
          dashed: true,
          points: [
            [Number(last.n), Number(last.wall_s)],
            [10000, 10000 / singleRate],
          ],
        },
      ],
      {
        title: `Encrypted MNIST: wall time vs images (2 workers, ${cpus().length} cores)`,
        xLabel: 'images (official test set)',
        yLabel: 'wall time, s (encrypt -> decrypt)',
        logX: true,
        logY: true,
        markers: crossover ? [{ x: crossover, label: `crossover ~${crossover}` }] : [],
      },
    ),
  );
  await writeFile(
    'docs/img/time-vs-workers.svg',
    lineChart(
      [
        { name: 'end to end', color: '#2ca02c', points: workers.map((r) => [r.w, wall(r)]) },
        { name: 'end to end, ideal', color: '#2ca02c', dashed: true, points: workers.map((r) => [r.w, wall(workers[0]) / r.w]) },
        { name: 'server phase', color: '#1f77b4', points: workers.map((r) => [r.w, Number(r.server_s)]) },
        { name: 'server, cost model', color: '#1f77b4', dashed: true, points: workers.map((r) => [r.w, Number(r.server_limit_s)]) },
      ],
      {
        title: 'Batch mode, 10,000 images: time vs workers',
        xLabel: 'workers (server) = encryption threads (client)',
        yLabel: 'seconds',
        width: 600,
        integerX: true,
      },
    ),
  );
  const [w1, w2] = workers;
  return {
    bench: 'sweep',
    crossover_measured: crossover,
    single_images_per_s: singleRate,
    batch_wall_s: Object.fromEntries(batch.map((r) => [r.n, wall(r)])),
    workers_server_s: { 1: w1.server_s, 2: w2.server_s },
    server_limit_s: { 1: w1.server_limit_s, 2: w2.server_limit_s },
    server_measured_over_limit: { 1: w1.server_measured_over_limit, 2: w2.server_measured_over_limit },
    server_speedup_1_to_2: +(Number(w1.server_s) / Number(w2.server_s)).toFixed(2),
    end_to_end_speedup_1_to_2: +(Number(w2.images_per_s) / Number(w1.images_per_s)).toFixed(2),
    cpu,
  };
}
