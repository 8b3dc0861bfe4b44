// What a training job is given and gives back: its hyperparameters, its channels' paths and its
// result; shared by the CSV trainer (train.ts) and the image trainer (train-images.ts), which
// train.ts loads only when the train channel holds images.
import { mkdirSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import type { Manifest } from '../model/bundle.ts';
import type { Task } from '../model/client-part.ts';

export interface Hyperparameters {
  task?: Task;
  target?: string;
  labels?: string[];
  epochs: number;
  learningRate: number;
  batchSize: number;
  l2: number;
  seed: number;
  /** Every hyperparameter as given (strings), for the image models' own options. */
  raw: Record<string, string>;
}

/** SageMaker passes every hyperparameter as a string; defaults are documented in the README. */
export function parseHyperparameters(raw: Record<string, unknown>): Hyperparameters {
  const str = (k: string) => (raw[k] === undefined ? undefined : String(raw[k]));
  const num = (k: string, d: number) => {
    const v = str(k);
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new SealedError('bad-data', `hyperparameter ${k}="${v}" is not a non-negative number`);
    return n;
  };
  const task = str('task');
  if (task !== undefined && !['regression', 'binary', 'multiclass'].includes(task)) {
    throw new SealedError('bad-data', `hyperparameter task="${task}" is not one of regression, binary, multiclass`);
  }
  const labels = str('labels')
    ?.split(',')
    .map((s) => s.trim());
  if (labels && (labels.some((l) => l === '') || new Set(labels).size !== labels.length)) {
    throw new SealedError(
      'bad-data',
      `hyperparameter labels="${str('labels')}" has an empty or repeated name`,
      'give each class name once, comma-separated, e.g. labels=setosa,versicolor,virginica',
    );
  }
  return {
    task: task as Task | undefined,
    target: str('target'),
    labels,
    epochs: num('epochs', 300),
    learningRate: num('learning_rate', 0.02),
    batchSize: num('batch_size', 64),
    l2: num('l2', 1e-4),
    seed: num('seed', 42),
    raw: Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, String(v)])),
  };
}

/** An IDX images file and its labels file in a channel directory (MNIST layout), if present. */
export async function findIdxPair(dir: string): Promise<{ images: string; labels: string } | undefined> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return undefined;
  }
  const images = names.find((n) => /idx3-ubyte(\.gz)?$/.test(n));
  const labels = names.find((n) => /idx1-ubyte(\.gz)?$/.test(n));
  return images && labels ? { images: join(dir, images), labels: join(dir, labels) } : undefined;
}

export interface TrainResult {
  manifest: Manifest;
  metrics: Record<string, number>;
}

export interface TrainPaths {
  trainDir: string;
  testDir?: string;
  modelDir: string;
  outputDataDir?: string;
}

/**
 * SageMaker stops a training job (StopTrainingJob, MaxRuntimeInSeconds) with SIGTERM, then
 * SIGKILL 120 s later. Node run as the container's PID 1 gets no default action for SIGTERM (the
 * kernel does not kill PID 1 for a signal it does not handle), so without a handler the job hangs
 * those 120 s and leaves no reason. This one writes the failure file SageMaker reports as the
 * job's FailureReason, synchronously (the event loop may be busy with an epoch), and exits.
 */
export function stopOnSignals(outputDir: string, log: (line: string) => void = (l) => console.error(l)): () => void {
  const onSignal = (signal: NodeJS.Signals) => {
    const reason = `training stopped by ${signal} (StopTrainingJob or MaxRuntimeInSeconds) before it finished; no model was written`;
    try {
      mkdirSync(outputDir, { recursive: true });
      writeFileSync(join(outputDir, 'failure'), reason + '\n');
    } catch {
      // the output directory is not writable: the log line below still says why
    }
    log(`error: ${reason}`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
}
