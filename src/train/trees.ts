// `sealed train` with model=random_forest: fit a random forest on the CSV channels with
// ml-random-forest (the maintained mljs trainer; XGBoost has no maintained JavaScript trainer),
// convert it exactly to a TreeEnsemble (model/trees/forest.ts), compile it with the training
// records as calibration (the quantization bins are their quantiles) and write a tree bundle,
// which `sealed serve` and `sealed predict` use as an imported XGBoost or ONNX-ML model.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RandomForestClassifier, RandomForestRegression } from 'ml-random-forest';
import { SealedError } from '../errors.ts';
import type { Task } from '../model/client-part.ts';
import { writeTreeBundle } from '../model/trees/bundle.ts';
import { compileTreeEnsemble } from '../model/trees/compile.ts';
import { predictionOf } from '../model/trees/ensemble.ts';
import { forestDepth, forestToEnsemble, type FittedForest } from '../model/trees/forest.ts';
import { binsOf, quantizedScores } from '../model/trees/quantize.ts';
import type { Hyperparameters, TrainPaths, TrainResult } from './job.ts';

/** Splits on a path that the encrypted circuit evaluates (docs/trees.md, "The circuit"). */
export const MAX_TREE_DEPTH = 4;

export interface ForestOptions {
  trees: number;
  maxDepth: number;
  /** ml-random-forest maxFeatures: a fraction (0, 1] of the columns, or a count, per tree. */
  maxFeatures?: number;
  /** Quantization bits (default: the compiler's choice). */
  bits?: number;
  seed: number;
}

/** The forest's hyperparameters, checked before any data is read. */
export function forestOptions(hp: Hyperparameters): ForestOptions {
  const raw = hp.raw;
  const int = (k: string, d: number, lo: number, hi: number, hint: string) => {
    const v = raw[k];
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi)
      throw new SealedError('bad-data', `hyperparameter ${k}="${v}" is not a whole number from ${lo} to ${hi}`, hint);
    return n;
  };
  const maxDepth = int('max_depth', MAX_TREE_DEPTH, 1, Infinity, 'give the largest number of splits on a path, e.g. max_depth=4');
  if (maxDepth > MAX_TREE_DEPTH)
    throw new SealedError(
      'bad-data',
      `hyperparameter max_depth=${maxDepth} is deeper than the encrypted circuit evaluates: it multiplies the indicators along a path, at most ${MAX_TREE_DEPTH} splits`,
      `use max_depth=${MAX_TREE_DEPTH} or less, and more trees (trees=…) for a stronger model`,
    );
  const trees = int('trees', 51, 1, 1000, 'e.g. trees=51 (an odd count: two classes cannot tie)');
  const seed = int('seed', 42, 0, 2 ** 31 - 1, 'give a whole number, e.g. seed=42');
  const bits = raw.bits === undefined ? undefined : int('bits', 0, 1, 8, 'leave it out to let the compiler pick the smallest that keeps 99.5% agreement');
  let maxFeatures: number | undefined;
  if (raw.max_features !== undefined) {
    maxFeatures = Number(raw.max_features);
    if (!(maxFeatures > 0 && (maxFeatures <= 1 || Number.isInteger(maxFeatures))))
      throw new SealedError(
        'bad-data',
        `hyperparameter max_features="${raw.max_features}" is neither a fraction in (0, 1] nor a whole number of columns`,
        'e.g. max_features=0.5 (half the columns per tree)',
      );
  }
  return { trees, maxDepth, maxFeatures, bits, seed };
}

export interface TreeData {
  features: string[];
  /** The target column's name, kept in the client part for `predict` to report accuracy. */
  target: string;
  x: number[][];
  y: number[];
  task: Task;
  classes: number;
  labels?: string[];
  test?: { x: number[][]; y: number[] };
}

/** The forest as ml-random-forest trains it (noOOB: out-of-bag scores are not reported). */
export function fitForest(x: number[][], y: number[], task: Task, o: ForestOptions): RandomForestClassifier | RandomForestRegression {
  const options = {
    nEstimators: o.trees,
    seed: o.seed,
    treeOptions: { maxDepth: o.maxDepth },
    noOOB: true,
    ...(o.maxFeatures !== undefined ? { maxFeatures: o.maxFeatures } : {}),
  };
  const forest = task === 'regression' ? new RandomForestRegression(options) : new RandomForestClassifier(options);
  forest.train(x, y);
  return forest;
}

export async function trainForest(paths: TrainPaths, o: ForestOptions, d: TreeData, log: (line: string) => void): Promise<TrainResult> {
  const { features, x, y, task, classes } = d;
  if (task !== 'regression') {
    const bad = y.findIndex((v) => !Number.isInteger(v) || v < 0 || v >= classes);
    if (bad >= 0)
      throw new SealedError(
        'bad-data',
        `record ${bad + 1} has class ${y[bad]}, which is not a class number 0 to ${classes - 1}`,
        'write classes as 0, 1, … or as names, or set task=regression',
      );
  }
  if (o.maxFeatures !== undefined && o.maxFeatures > 1 && o.maxFeatures > features.length)
    throw new SealedError('bad-data', `hyperparameter max_features=${o.maxFeatures} is more than the ${features.length} feature columns`);
  log(`fitting a random forest (ml-random-forest): ${o.trees} trees of depth <= ${o.maxDepth}, ${x.length} records, ${features.length} features, ${task}`);
  const t0 = performance.now();
  const forest = fitForest(x, y, task, o);
  const trainSeconds = (performance.now() - t0) / 1000;
  const ensemble = forestToEnsemble(forest as unknown as FittedForest, { task, features: features.length, classes, labels: d.labels });
  const t1 = performance.now();
  const m = compileTreeEnsemble(ensemble, x, { bits: o.bits, features, labels: d.labels, target: d.target });
  const compileSeconds = (performance.now() - t1) / 1000;

  const metrics: Record<string, number> = {
    train_seconds: round(trainSeconds),
    compile_seconds: round(compileSeconds),
    trees: o.trees,
    depth: forestDepth(ensemble),
    quantization_bits: m.report.bits,
    calibration_agreement: round(m.report.calibrationAgreement),
  };
  // `_simulated`: the quantized model in plaintext, which the encrypted circuit computes (as the
  // linear models' `_simulated` is their compiled program run in plaintext).
  const evaluate = (name: string, rows: number[][], labels: number[]) => {
    const original = forest.predict(rows);
    const quantized = rows.map((r) => predictionOf(ensemble, quantizedScores(m.quantized, binsOf(m.client.bins, r))));
    if (task === 'regression') {
      const rmse = (p: number[]) => Math.sqrt(p.reduce((a, v, i) => a + (v - labels[i]) ** 2, 0) / labels.length);
      metrics[`${name}_rmse`] = round(rmse(original));
      metrics[`${name}_rmse_simulated`] = round(rmse(quantized));
    } else {
      const acc = (p: number[]) => p.filter((v, i) => v === labels[i]).length / labels.length;
      metrics[`${name}_accuracy`] = round(acc(original));
      metrics[`${name}_accuracy_simulated`] = round(acc(quantized));
      metrics[`${name}_agreement_simulated`] = round(quantized.filter((v, i) => v === original[i]).length / rows.length);
    }
  };
  evaluate('train', x, y);
  if (d.test) evaluate('test', d.test.x, d.test.y);
  for (const [k, v] of Object.entries(metrics)) log(`[metric] ${k}=${v}`);

  const manifest = await writeTreeBundle(paths.modelDir, m.client, m.server, metrics);
  if (paths.outputDataDir) {
    await mkdir(paths.outputDataDir, { recursive: true });
    await writeFile(join(paths.outputDataDir, 'metrics.json'), JSON.stringify(metrics, null, 1) + '\n');
  }
  const c = m.client;
  log(
    `tree model ${manifest.model_id}: ${task}, ${features.length} features, ${o.trees} trees, ${m.report.bits}-bit quantization, ${c.inputs} encrypted inputs per batch of ${c.records_per_batch} records, ring ${c.params.polyModulusDegree}, circuit privacy ${c.privacy}`,
  );
  return { manifest, metrics };
}

const round = (v: number) => Math.round(v * 1e6) / 1e6;
