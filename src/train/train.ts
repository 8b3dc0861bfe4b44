// `sealed train`: data -> fitted model -> compiled CKKS program -> bundle. Runs the same in a
// SageMaker training container (paths under /opt/ml) and locally (paths given as options).
import { readdir, readFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { writeBundle } from '../model/bundle.ts';
import { CLIENT_FORMAT, type ClientPart } from '../model/client-part.ts';
import { compileLinear } from '../model/compile-linear.ts';
import { packRecords, unpackOutputs } from '../model/layout.ts';
import { classOf, standardise } from '../model/postprocess.ts';
import { simulate } from '../model/simulate.ts';
import { concatTables, parseCsv, selectColumns, splitTarget, type Table } from './csv.ts';
import { fitLinear } from './fit.ts';
import { testTarget, trainingTarget } from './target.ts';
import { findIdxPair, type Hyperparameters, type TrainPaths, type TrainResult } from './job.ts';

export { findIdxPair, parseHyperparameters, type Hyperparameters, type TrainPaths, type TrainResult } from './job.ts';

async function readChannel(dir: string, channel: 'train' | 'test'): Promise<Table> {
  const put =
    channel === 'train'
      ? 'put the training CSV files (or an IDX images/labels pair) in the `train` channel (--train DIR)'
      : 'put the test CSV files in the `test` channel (--test DIR), or leave it out';
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.csv')).sort();
  } catch {
    throw new SealedError('bad-data', `${channel} channel directory ${dir} does not exist`, put);
  }
  if (names.length === 0) throw new SealedError('bad-data', `no .csv file in the ${channel} channel ${dir}`, put);
  const tables = await Promise.all(names.map(async (n) => parseCsv(await readFile(join(dir, n), 'utf8'), join(dir, n))));
  // Several files: each after the first is matched to the first one's columns by name.
  return concatTables(tables.map((t, i) => (i === 0 ? t : selectColumns(t, tables[0].columns, tables[0].source))));
}

/** `bar`: show a progress bar on stderr for long (image) trainings, for a person at a terminal. */
export async function train(paths: TrainPaths, hp: Hyperparameters, log: (line: string) => void = console.log, bar = false): Promise<TrainResult> {
  // A model channel holding an ONNX file: compile it (bring your own model) instead of training.
  const onnx = await (await import('./onnx-job.ts')).onnxTrainJob(paths, hp, log);
  if (onnx) return onnx;
  if (await findIdxPair(paths.trainDir)) {
    const { trainImages } = await import('./train-images.ts');
    return trainImages(paths, hp, log, bar);
  }
  const model = hp.raw.model ?? 'linear';
  if (model !== 'linear' && model !== 'random_forest')
    throw new SealedError(
      'bad-data',
      `hyperparameter model="${model}" is not one of linear, random_forest (for CSV data)`,
      'leave it out for a linear model, or set model=random_forest for a tree ensemble',
    );
  // Checked before the data is read: a refused max_depth should not wait for a large CSV.
  const forest = model === 'random_forest' ? (await import('./trees.ts')).forestOptions(hp) : undefined;
  const table = await readChannel(paths.trainDir, 'train');
  const split = splitTarget(table, hp.target);
  const { features, x, target } = split;
  const { y, task, labels } = trainingTarget(split, hp, paths.trainDir);
  const classes = task === 'multiclass' ? Math.max(y.reduce((a, b) => Math.max(a, b), 0) + 1, labels?.length ?? 0) : task === 'binary' ? 2 : 1;
  // By name, as `predict` reads records: the same columns in another order, or one missing,
  // would otherwise be scored as if they were the training columns.
  const readTest = async () => {
    if (!paths.testDir) return undefined;
    const testTable = await readChannel(paths.testDir, 'test');
    const test = splitTarget(selectColumns(testTable, [...features, target], `the training data (${table.source})`));
    return { x: test.x, y: testTarget(test, { task, labels }, paths.testDir) };
  };
  if (forest) {
    const { trainForest } = await import('./trees.ts');
    return trainForest(paths, forest, { features, target, x, y, task, classes, labels, test: await readTest() }, log);
  }
  const mean = features.map((_, j) => x.reduce((a, r) => a + r[j], 0) / x.length);
  const std = features.map((_, j) => Math.sqrt(x.reduce((a, r) => a + (r[j] - mean[j]) ** 2, 0) / x.length) || 1);
  const pre = { mean, std };
  const xs = x.map((r) => standardise(r, pre));
  const yMean = task === 'regression' ? y.reduce((a, b) => a + b, 0) / y.length : 0;
  const yStd = task === 'regression' ? Math.sqrt(y.reduce((a, b) => a + (b - yMean) ** 2, 0) / y.length) || 1 : 1;
  const ys = task === 'regression' ? y.map((v) => (v - yMean) / yStd) : y;

  const t0 = performance.now();
  const fitted = await fitLinear(xs, ys, {
    task,
    classes,
    epochs: hp.epochs,
    learningRate: hp.learningRate,
    batchSize: hp.batchSize,
    l2: hp.l2,
    seed: hp.seed,
  });
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
    labels,
    target,
  };

  const metrics: Record<string, number> = { train_seconds: round(trainSeconds), train_loss: round(fitted.finalLoss) };
  const evaluate = (name: string, rows: number[][], labels: number[]) => {
    const s = rows.map((r) => standardise(r, pre));
    const plain = s.map((r) => fitted.weights.map((w, c) => fitted.bias[c] + w.reduce((a, v, j) => a + v * r[j], 0)));
    const sim = unpackOutputs(
      compiled.output,
      compiled.input.recordsPerCiphertext,
      packRecords(compiled.input, s).map((v) => simulate(p, compiled.masks, v)),
      s.length,
    );
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
  const test = await readTest();
  if (test) evaluate('test', test.x, test.y);
  for (const [k, v] of Object.entries(metrics)) log(`[metric] ${k}=${v}`);

  const manifest = await writeBundle(paths.modelDir, client, p, compiled.masks, metrics);
  if (paths.outputDataDir) {
    await mkdir(paths.outputDataDir, { recursive: true });
    await writeFile(join(paths.outputDataDir, 'metrics.json'), JSON.stringify(metrics, null, 1) + '\n');
  }
  log(
    `model ${manifest.model_id}: ${task}, ${features.length} features, ring ${p.params.polyModulusDegree}, modulus ${p.params.coeffModulusBits.join('+')} bits, ${p.galoisSteps.length} rotation keys, ${compiled.input.recordsPerCiphertext} records per ciphertext`,
  );
  return { manifest, metrics };
}

const round = (v: number) => Math.round(v * 1e6) / 1e6;
