// scripts/with-node.sh, which every npm script goes through: test runs (tap) get glibc's allocator
// settings (huge pages, freed memory kept), a caller's own settings stay in force, and other
// commands (the product: demo, bench, serve) keep glibc's defaults.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

const script = join(import.meta.dirname, '..', '..', 'scripts', 'with-node.sh');
const OURS = 'glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456:glibc.malloc.top_pad=16777216';
// A stand-in `tap` first on PATH that prints what it was given.
const bin = mkdtempSync(join(tmpdir(), 'sealed-with-node-'));
t.teardown(() => rmSync(bin, { recursive: true, force: true }));
writeFileSync(join(bin, 'tap'), '#!/bin/sh\nprintf %s "$GLIBC_TUNABLES"\n');
chmodSync(join(bin, 'tap'), 0o755);

/** GLIBC_TUNABLES as `command` run by with-node.sh sees it, the caller's value being `given`. */
function seen(given: string | undefined, command: string[] = ['tap']): string {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  delete env.GLIBC_TUNABLES;
  if (given !== undefined) env.GLIBC_TUNABLES = given;
  return execFileSync('sh', [script, ...command], { env, encoding: 'utf8' });
}

t.test('with-node.sh gives test runs glibc allocator settings, the caller having the last word', async (t) => {
  t.equal(seen(undefined), OURS, 'unset: huge pages, and freed memory kept below 256 MiB');
  t.equal(seen(''), OURS, 'empty: the same');
  t.equal(seen('glibc.malloc.arena_max=2'), `${OURS}:glibc.malloc.arena_max=2`, "the caller's settings follow ours, so theirs win");
  t.equal(seen('glibc.malloc.hugetlb=0'), 'glibc.malloc.hugetlb=0', 'a caller who sets hugetlb opts out of all of ours');
  t.equal(seen(undefined, ['sh', '-c', 'printf %s "$GLIBC_TUNABLES"']), '', "other commands keep glibc's defaults");
});
