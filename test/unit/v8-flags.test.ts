// The CLI's garbage-collector tuning (src/cli/v8-flags.ts) takes effect when set at run time,
// in a process already started: 1.6 GB of short-lived 8 MB ArrayBuffers start a full collection
// every 64 MB or so by default, and next to none once external memory counts in the global limit.
import { spawnSync } from 'node:child_process';
import t from 'tap';

const flags = new URL('../../src/cli/v8-flags.ts', import.meta.url).href;
const child = `
import { PerformanceObserver, constants } from 'node:perf_hooks';
const mode = process.argv[1];
if (mode !== 'untouched') (await import(${JSON.stringify(flags)})).tuneGarbageCollection(mode === 'opted-out' ? { SEALED_GC: 'default' } : {});
let majors = 0;
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
}).observe({ entryTypes: ['gc'] });
let sink = 0;
for (let i = 0; i < 200; i++) { const b = new Uint8Array(8 << 20); b[i % 100] = 1; sink += b[i % 100]; }
await new Promise((r) => setTimeout(r, 50));
console.log(JSON.stringify({ majors, sink }));
`;

const majorCollections = (mode: 'untouched' | 'tuned' | 'opted-out'): number => {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', child, mode], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  const out = JSON.parse(r.stdout) as { majors: number; sink: number };
  if (out.sink !== 200) throw new Error('the allocations were not made');
  return out.majors;
};

t.test('counting ArrayBuffers in the global limit stops a collection per 64 MB of them', (t) => {
  const before = majorCollections('untouched');
  const after = majorCollections('tuned');
  t.ok(before >= 6, `by default: ${before} full collections for 1.6 GB of ArrayBuffers`);
  t.ok(after <= 2, `tuned at run time: ${after}`);
  const optedOut = majorCollections('opted-out');
  t.ok(optedOut >= 6, `SEALED_GC=default keeps V8's default: ${optedOut}`);
  t.end();
});
