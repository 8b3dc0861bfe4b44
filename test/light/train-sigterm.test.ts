// StopTrainingJob sends the training container SIGTERM (and SIGKILL 120 s later). The training
// entry point (`sealed train`, the image's ENTRYPOINT) must write /opt/ml/output/failure, which
// SageMaker reports as FailureReason, and exit at once. A real child process, a real signal.
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const bin = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const csv = fileURLToPath(new URL('../../data/breast_cancer/breast_cancer.csv', import.meta.url));

t.test('SIGTERM during training: failure file written, prompt exit, no model', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-sigterm-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'train'));
  await copyFile(csv, join(dir, 'train', 'data.csv'));
  const out = join(dir, 'output');
  // Far more epochs than the test waits for: the job is still training when it is stopped.
  const child = spawn(
    process.execPath,
    [
      bin,
      'train',
      '--train',
      join(dir, 'train'),
      '--model',
      join(dir, 'model'),
      '--output',
      out,
      '--hyperparameters',
      join(dir, 'none.json'),
      '--set',
      'task=binary',
      'target=diagnosis',
      'epochs=1000000',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  // The entry point says it has started (its handlers are in place) before it loads any data;
  // an entry point that never says so gets the signal 5 s in all the same.
  await new Promise<void>((resolve, reject) => {
    setTimeout(resolve, 5000);
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('training: data')) resolve();
    });
    void exited.then(() => reject(new Error(`the trainer exited before it started: ${stderr}`)));
  });
  // Let it reach the training loop (TensorFlow.js loaded, data parsed), as a stopped job would be.
  await new Promise((r) => setTimeout(r, 1500));
  const sent = Date.now();
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const end = await exited;
  clearTimeout(timer);
  const seconds = (end.at - sent) / 1000;
  t.ok(seconds < 10, `exited ${seconds.toFixed(1)} s after SIGTERM (SageMaker waits 120 s before SIGKILL)`);
  t.equal(end.signal, null, 'exited by itself, not killed by a signal');
  t.equal(end.code, 143, 'exit status 143 (128 + SIGTERM): the job ends Failed/Stopped, not Completed');
  t.ok(existsSync(join(out, 'failure')), 'wrote the failure file');
  t.match(await readFile(join(out, 'failure'), 'utf8').catch(() => ''), /stopped by SIGTERM/, 'which says why');
  t.notOk(existsSync(join(dir, 'model', 'manifest.json')), 'wrote no model');
  t.match(stderr, /error: training stopped by SIGTERM/, 'and says so in the log');
});
