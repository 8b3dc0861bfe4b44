// The `sealed` command as a user runs it: a child process of src/cli/main.ts, its exit code,
// stdout and stderr (a failing command resolves too, with its code).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const main = new URL('../../src/cli/main.ts', import.meta.url).pathname;

export const sealed = (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
  run(process.execPath, [main, ...args], { maxBuffer: 1 << 24 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
