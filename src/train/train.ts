// `sealed train`: data -> fitted model -> compiled CKKS program -> bundle. Runs the same in a
// SageMaker training container (paths under /opt/ml) and locally (paths given as options).
import { readdir, readFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { writeBundle, type Manifest } from '../model/bundle.ts';
import { CLIENT_FORMAT, type ClientPart, type Task } from '../model/client-part.ts';
import { compileLinear } from '../model/compile-linear.ts';
import { packRecords, unpackOutputs } from '../model/layout.ts';
import { classOf, standardise } from '../model/postprocess.ts';
import { simulate } from '../model/simulate.ts';
import { parseCsv, splitTarget } from './csv.ts';
import { fitLinear } from './fit.ts';

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
  return {
    task: task as Task | undefined,
    target: str('target'),
    labels: str('labels')?.split(',').map((s) => s.trim()),
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

async function readChannel(dir: string): Promise<string> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.csv')).sort();
  } catch {
    throw new SealedError('bad-data', `channel directory ${dir} does not exist`, 'put the training CSV in the `train` channel');
  }
  if (names.length === 0) throw new SealedError('bad-data', `no .csv file in ${dir}`, 'put the training CSV in the `train` channel');
  const texts = await Promise.all(names.map((n) => readFile(join(dir, n), 'utf8')));
  // Several files: the header (if any) of each file after the first is dropped.
  return texts.map((t, i) => (i === 0 ? t : t.replace(/^[^\n]*[a-df-zA-DF-Z_][^\n]*\n/, ''))).join('\n');
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

const inferTask = (y: number[]): Task => {
  const ints = y.every((v) => Number.isInteger(v));
  const distinct = new Set(y).size;
  if (ints && distinct === 2 && y.every((v) => v === 0 || v === 1)) return 'binary';
  if (ints && distinct <= 50 && y.every((v) => v >= 0)) return 'multiclass';
  return 'regression';
};

export async function train(paths: TrainPaths, hp: Hyperparameters, log: (line: string) => void = console.log): Promise<TrainResult> {
  if (await findIdxPair(paths.trainDir)) {
    const { trainImages } = await import('./train-images.ts');
    return trainImages(paths, hp, log);
  }
  const table = parseCsv(await readChannel(paths.trainDir), `${paths.trainDir}`);
  const { features, x, y, target } = splitTarget(table, hp.target);
  const task = hp.task ?? inferTask(y);
  const classes = task === 'multiclass' ? Math.max(...y) + 1 : task === 'binary' ? 2 : 1;
  const mean = features.map((_, j) => x.reduce((a, r) => a + r[j], 0) / x.length);
  const std = features.map((_, j) => Math.sqrt(x.reduce((a, r) => a + (r[j] - mean[j]) ** 2, 0) / x.length) || 1);
  const pre = { mean, std };
  const xs = x.map((r) => standardise(r, pre));
  const yMean = task === 'regression' ? y.reduce((a, b) => a + b, 0) / y.length : 0;
  const yStd = task === 'regression' ? Math.sqrt(y.reduce((a, b) => a + (b - yMean) ** 2, 0) / y.length) || 1 : 1;
  const ys = task === 'regression' ? y.map((v) => (v - yMean) / yStd) : y;

  const t0 = performance.now();
  const fitted = await fitLinear(xs, ys, { task, classes, epochs: hp.epochs, learningRate: hp.learningRate, batchSize: hp.batchSize, l2: hp.l2, seed: hp.seed });
  const trainSeconds = (performance.now() - t0) / 1000;
  const compiled = compileLinear({ weights: fitted.weights, bias: fitted.bias }, xs);
  const p = compiled.program;
  const client: ClientPart = {
    format: CLIENT_FORMAT,
    version: 1,
    task,
    params: p.params,
    input_scale_bits: p.inputScaleBits,
    galois_steps: p.galoisSteps,
    relin: p.relin,
    features,
    preprocess: pre,
    input: compiled.input,
    output: compiled.output,
    postprocess: task === 'binary' ? { kind: 'sigmoid' } : task === 'multiclass' ? { kind: 'softmax' } : { kind: 'affine', mean: yMean, std: yStd },
    labels: hp.labels,
    target,
  };

  const metrics: Record<string, number> = { train_seconds: round(trainSeconds), train_loss: round(fitted.finalLoss) };
  const evaluate = (name: string, rows: number[][], labels: number[]) => {
    const s = rows.map((r) => standardise(r, pre));
    const plain = s.map((r) => fitted.weights.map((w, c) => fitted.bias[c] + w.reduce((a, v, j) => a + v * r[j], 0)));
    const sim = unpackOutputs(compiled.output, compiled.input.recordsPerCiphertext, packRecords(compiled.input, s).map((v) => simulate(p, compiled.masks, v)), s.length);
    if (task === 'regression') {
      const rmse = (pred: number[][]) => Math.sqrt(pred.reduce((a, q, i) => a + (q[0] * yStd + yMean - labels[i]) ** 2, 0) / labels.length);
      metrics[`${name}_rmse`] = round(rmse(plain));
      metrics[`${name}_rmse_simulated`] = round(rmse(sim));
    } else {
      const acc = (pred: number[][]) => pred.filter((q, i) => classOf(client, q) === labels[i]).length / labels.length;
      metrics[`${name}_accuracy`] = round(acc(plain));
      metrics[`${name}_accuracy_simulated`] = round(acc(sim));
    }
  };
  evaluate('train', x, y);
  if (paths.testDir) {
    const test = splitTarget(parseCsv(await readChannel(paths.testDir), paths.testDir), target);
    evaluate('test', test.x, test.y);
  }
  for (const [k, v] of Object.entries(metrics)) log(`[metric] ${k}=${v}`);

  const manifest = await writeBundle(paths.modelDir, client, p, compiled.masks, metrics);
  if (paths.outputDataDir) {
    await mkdir(paths.outputDataDir, { recursive: true });
    await writeFile(join(paths.outputDataDir, 'metrics.json'), JSON.stringify(metrics, null, 1) + '\n');
  }
  log(`model ${manifest.model_id}: ${task}, ${features.length} features, ring ${p.params.polyModulusDegree}, modulus ${p.params.coeffModulusBits.join('+')} bits, ${p.galoisSteps.length} rotation keys, ${compiled.input.recordsPerCiphertext} records per ciphertext`);
  return { manifest, metrics };
}

const round = (v: number) => Math.round(v * 1e6) / 1e6;
