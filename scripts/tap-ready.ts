// Builds tap's Test class for our plugin list before the tests run, when it is not built yet.
//
// package.json drops the @tapjs/typescript plugin: Node >= 22.18 strips the types itself. A fresh
// `npm ci` installs tap built with its default plugins (typescript among them); tap 21 notices
// and rebuilds at the start of a run, but starts that run's test files with the loaders of the
// build it was loaded with, so the first `npm test` after `npm ci` (every CI run) compiled every
// test file and every module it imports with ts-node in each process. Measured on the 2-core VM
// (Intel Xeon, 2026-12-01), the first npm test after npm ci, same commit, empty caches: 652 s
// wall and 1,248 s CPU on tap's default build, 577 s and 1,103 s built first. Building costs
// ~6 s, once per install; the check below, when the build is current, ~0.2 s.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TapConfig } from '@tapjs/config';
import { signature } from '@tapjs/test';

const config = await TapConfig.load();
if (config.pluginSignature !== signature) {
  const tap = fileURLToPath(new URL('../node_modules/.bin/tap', import.meta.url));
  const r = spawnSync(tap, ['build'], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`tap-ready: \`tap build\` failed (${r.error?.message ?? `exit ${r.status}`}); run it by hand to see why`);
    process.exit(1);
  }
}
