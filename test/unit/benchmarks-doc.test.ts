import t from 'tap';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from '../../scripts/benchmarks-doc.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

t.test('docs/benchmarks.md and the README headline are what docs/bench/*.json give', async (t) => {
  for (const { path, text } of await generate(root)) {
    t.equal(await readFile(path, 'utf8'), text, `${path} is up to date (else: npm run docs:benchmarks)`);
  }
});

t.test('a changed number in a record changes the documents', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-benchdoc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cp(join(root, 'docs', 'bench'), join(dir, 'docs', 'bench'), { recursive: true });
  await cp(join(root, 'README.md'), join(dir, 'README.md'));
  const before = await generate(dir);

  const file = join(dir, 'docs', 'bench', '2026-12-06-mnist-single-cnn-500.json');
  const rec = JSON.parse(await readFile(file, 'utf8'));
  t.equal(rec.result.server_ms_single_p50, 432.7);
  rec.result.server_ms_single_p50 = 1234.5;
  await writeFile(file, JSON.stringify(rec, null, 1) + '\n');
  const after = await generate(dir);

  for (const i of [0, 1]) {
    t.not(after[i].text, before[i].text, `${after[i].path} changed`);
    t.notMatch(after[i].text, /\*\*433 ms\*\*/);
    t.match(after[i].text, /\*\*1,235 ms\*\* server p50/);
  }
  t.match(after[0].text, /\| `server_ms_single_p50` \(p90\) \| 1,234\.5 \(530\.9\) \|/);

  // A batch run's wall time moves the headline range; a run of an earlier day, or of an earlier
  // session the same day, does not.
  const edit = async (name: string, wall: number) => {
    const file = join(dir, 'docs', 'bench', name);
    const rec = JSON.parse(await readFile(file, 'utf8'));
    rec.result.wall_s = wall;
    await writeFile(file, JSON.stringify(rec, null, 1) + '\n');
    return (await generate(dir))[0].text;
  };
  const latest = /\*\*18\.8-20\.9 s\*\* end to end \(3 runs\)/;
  t.match((await generate(dir))[0].text, latest);
  t.match(await edit('2026-12-05-mnist-batch-10000-s45-run1.json', 12.04), latest, "the day before's run: not in the headline");
  t.match(await edit('2026-12-06-mnist-batch-10000-run1.json', 16.04), /\*\*16\.0-20\.9 s\*\* end to end \(3 runs\)/);

  // Without that day's records, 2026-12-05 is the latest: three sessions' runs, the last one's count.
  for (const f of await readdir(join(dir, 'docs', 'bench'))) if (f.startsWith('2026-12-06-')) await rm(join(dir, 'docs', 'bench', f));
  await edit('2026-12-05-mnist-batch-10000-s45-run1.json', 17.3);
  const headline = /\*\*16\.7-17\.3 s\*\* end to end \(3 runs\)/;
  t.match((await generate(dir))[0].text, headline);
  t.match(await edit('2026-12-05-mnist-batch-10000-run1.json', 12.04), headline, "session 42's run: not in the headline");
  t.match(await edit('2026-12-05-mnist-batch-10000-s44-run1.json', 12.04), headline, "session 44's run: not in the headline");
  t.match(await edit('2026-12-05-mnist-batch-10000-s45-run1.json', 16.04), /\*\*16\.0-16\.9 s\*\* end to end \(3 runs\)/);
});

t.test('a record without meta is refused', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-benchdoc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cp(join(root, 'docs', 'bench'), join(dir, 'docs', 'bench'), { recursive: true });
  await cp(join(root, 'README.md'), join(dir, 'README.md'));
  await writeFile(join(dir, 'docs', 'bench', 'x.json'), JSON.stringify({ bench: 'mnist', server_ms_single_p50: 1 }));
  await t.rejects(generate(dir), /x\.json: expected \{"meta"/);
});

t.test("cpuMeter: a phase's CPU in seconds, per record, and the rate it allows on this machine's cores", async (t) => {
  const { cpuMeter } = await import('../../scripts/cpu-meter.ts');
  const { availableParallelism } = await import('node:os');
  const meter = cpuMeter();
  const t0 = performance.now();
  // 300 ms of this thread's CPU (however busy the machine): the meter must count it as the main thread's, in seconds
  // (each figure in seconds is rounded to 0.1 s: the bounds below allow for that and no more).
  const perThread = typeof process.threadCpuUsage === 'function';
  const cpu0 = perThread ? process.threadCpuUsage() : process.cpuUsage();
  let x = 0;
  for (let used = 0; used < 300_000;) {
    for (let i = 0; i < 1e5; i++) x += Math.sqrt(x + i);
    const u = perThread ? process.threadCpuUsage(cpu0) : process.cpuUsage(cpu0);
    used = u.user + u.system;
  }
  const wall = performance.now() - t0;
  const c = meter.read(wall, 50);
  t.ok(Number.isFinite(x), 'the loop ran');
  const total = c.user_s + c.system_s;
  if (perThread)
    t.ok(c.main_thread_s !== null && c.main_thread_s >= 0.25 && c.main_thread_s <= total + 0.151, `main thread ${c.main_thread_s} s of ${total} s`);
  else t.equal(c.main_thread_s, null, 'Node < 22.15: no per-thread figure, and none made up');
  // user_s and system_s are rounded to 0.1 s: their sum is within 100 ms of the CPU the other figures use.
  t.ok(Math.abs(c.cpu_ms_per_record * 50 - total * 1000) <= 101, `${c.cpu_ms_per_record} ms per record`);
  t.ok(Math.abs(c.cores_busy * wall - total * 1000) <= 101 + 0.005 * wall, `${c.cores_busy} cores busy`);
  t.ok(
    Math.abs(c.cpu_bound_records_per_s - (availableParallelism() * 1000) / c.cpu_ms_per_record) <= 0.02 * c.cpu_bound_records_per_s,
    'the rate every core would give',
  );
});
