// Builds tap's Test class for our plugin list before the tests run, when it is not built yet.
//
// package.json drops the @tapjs/typescript plugin: Node >= 22.18 strips the types itself. A fresh
// `npm ci` installs tap built with its default plugins (typescript among them); tap 21 notices
// and rebuilds at the start of a run, but starts that run's test files with the loaders of the
// build it was loaded with, so the first `npm test` after `npm ci` (every CI run) compiled every
// test file and every module it imports with ts-node in each process. Measured on the 2-core VM:
// ts-node's TypeScript was 425 s of the first run's CPU profile, and the same suite ran ~90 s
// longer than a second run. Building first costs ~6 s, once per install; the check below, when
// the build is current, a few milliseconds.
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
