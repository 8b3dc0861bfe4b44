import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { SealedError } from '../errors.ts';
import { stopOnSignals } from '../train/job.ts';
import { parseHyperparameters, train } from '../train/train.ts';

interface TrainOpts {
  train: string;
  test?: string;
  hyperparameters: string;
  set?: string[];
  model: string;
  output: string;
}

export async function trainCommand(o: TrainOpts): Promise<void> {
  // First, so that a stop at any point of the job leaves its reason in the failure file.
  stopOnSignals(o.output);
  console.error(`training: data ${o.train}, model to ${o.model} (SIGTERM stops with a failure file in ${o.output})`);
  try {
    let raw: Record<string, unknown> = {};
    if (existsSync(o.hyperparameters)) {
      try {
        raw = JSON.parse(await readFile(o.hyperparameters, 'utf8')) as Record<string, unknown>;
      } catch {
        throw new SealedError('bad-data', `${o.hyperparameters} is not valid JSON`);
      }
    }
    for (const kv of o.set ?? []) {
      const i = kv.indexOf('=');
      if (i < 1) throw new SealedError('bad-data', `--set ${kv}: expected key=value`);
      raw[kv.slice(0, i)] = kv.slice(i + 1);
    }
    const defaultTest = join(dirname(o.train), 'test');
    const testDir = o.test ?? (existsSync(defaultTest) ? defaultTest : undefined);
    await train(
      { trainDir: o.train, testDir, modelDir: o.model, outputDataDir: join(o.output, 'data') },
      parseHyperparameters(raw),
      console.log,
      process.stderr.isTTY === true,
    );
  } catch (e) {
    // SageMaker reads the reason of a failed job from /opt/ml/output/failure.
    const reason = e instanceof Error ? e.message : String(e);
    try {
      await mkdir(o.output, { recursive: true });
      await writeFile(join(o.output, 'failure'), reason + '\n');
    } catch {
      // the output directory is not writable: the message below still reaches the log
    }
    throw e;
  }
}
