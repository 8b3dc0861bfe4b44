#!/usr/bin/env node
// The `sealed` command. The sources are TypeScript run by Node's own type stripping
// (Node >= 22.18 / 23.6 strip types by default; older 22.x need the flag, added here).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
if (process.features.typescript) {
  const cli = await import(main);
  await cli.main(process.argv).catch(cli.fail);
} else {
  const r = spawnSync(process.execPath, ['--experimental-strip-types', '--no-warnings', main, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
