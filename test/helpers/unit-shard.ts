// The unit tests (test/unit/) run in two processes, not one each. A test process under tap costs
// ~0.5 s of CPU before its first test (tap, its process-info hooks, then importing tap and
// node-seal), and the 31 unit files spent more CPU starting than testing: `npm run test:unit`
// 50 s of CPU one process each, 29 s all in one (2-core AMD VM, 2026-12-05). A shard imports its
// files in turn; each file's tests register on tap's root test as they would alone. So unit tests
// share a process with the other files of their shard: they must leave no global state (the
// environment, V8 flags, the working directory) to the next one. One file alone:
// `npx tap test/unit/NAME.test.ts`, or `node test/unit/NAME.test.ts`.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const DIR = join(import.meta.dirname, '..', 'unit');

/** Imports the unit test files whose index (by name) is `shard` modulo `of`. */
export async function runUnitShard(shard: number, of: number): Promise<void> {
  const files = readdirSync(DIR)
    .filter((f) => f.endsWith('.test.ts'))
    .sort();
  for (const [i, f] of files.entries()) if (i % of === shard) await import(join(DIR, f));
}
