// Test files that run several to a process: test/unit/ (no servers) and test/light/ (integration
// files of a few seconds each: real servers, S3, worker threads, CLIs, all closed by their own
// teardowns). A test process under tap costs ~0.5 s of CPU before its first test (tap, its
// process-info hooks, then importing tap and node-seal), and importing the server, the client or
// the AWS SDK as much again: the 31 unit files spent more CPU starting than testing
// (`npm run test:unit` 50 s of CPU one process each, 29 s all in one; 2-core AMD VM, 2026-12-05),
// and the 20 lightest integration files 39.4 s of CPU one process each, 18.2 s all in one
// (15.5 s wall against 32.4; same VM, 2026-12-07). A shard imports its files in turn; each file's
// tests register on tap's root test as they would alone, and run one after another. So a file
// shares its process with the others of its shard: it must leave no global state (the
// environment, V8 flags, the working directory) to the next one, and whatever its top-level code
// starts runs alongside the earlier files' tests. One file alone: `npx tap test/unit/NAME.test.ts`,
// or `node test/light/NAME.test.ts`.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

/**
 * Imports the test files of test/`dir`/ whose index (by name) is `shard` modulo `of`, each behind a
 * root subtest that waits for its import. tap ends its root test once it is idle when a file has
 * given the root a teardown; without the wait, a file still in its top-level setup (a server
 * starting) after the earlier files' tests had all run found the root ended ("cannot create
 * subtest after parent test ends").
 */
export async function runShard(dir: 'unit' | 'light', shard: number, of: number): Promise<void> {
  const root = join(import.meta.dirname, '..', dir);
  const files = readdirSync(root)
    .filter((f) => f.endsWith('.test.ts'))
    .sort();
  for (const [i, f] of files.entries()) {
    if (i % of !== shard) continue;
    const loading = import(join(root, f));
    t.test(`${dir}/${f}`, async (t) => t.ok(await loading, 'its module loaded and registered its tests'));
    await loading;
  }
}
