// Compiling an ONNX model into a bundle: `sealed compile`, and the training container when its
// `model` channel holds an .onnx file (the train channel then holds the calibration records).
// Reads the calibration data (CSV, NPY, IDX, as `sealed predict` reads records), compiles
// (model/onnx), runs the reference (onnxruntime), simulates, optionally encrypts N records,
// writes the same bundle `sealed train` writes, with the compile report inside.
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { SealedError } from '../errors.ts';
import { measureUnitCosts } from '../fhe/cost.ts';
import { writeBundle, type Manifest } from '../model/bundle.ts';
import { FLOOD_PRECISION_BITS, batchInputFactors, batchUnsupported } from '../model/compile-batch.ts';
import { simulateBatch } from '../model/simulate-batch.ts';
import type { BatchPlan, InputBox } from '../fhe/batch-plan.ts';
import { forward } from '../model/network.ts';
import { preprocessRecord } from '../model/postprocess.ts';
import { compileOnnx, exactScores, simulatedScores, modelInputs, type OnnxModel } from '../model/onnx/compile.ts';
import { openReference } from '../model/onnx/reference.ts';
import { buildReport, formatReport, type CompileReport } from '../model/onnx/report.ts';
import { runEncryptedRecords } from '../model/onnx/verify.ts';
import { parseCsv, requireNumeric } from './csv.ts';
import { imageRows, readIdx } from './idx.ts';
import { addBatchMode } from './image-model.ts';
import { parseNpy } from './npy.ts';
import type { Hyperparameters, TrainPaths, TrainResult } from './job.ts';

export interface Calibration {
  rows: ArrayLike<number>[];
  labels?: number[];
  features?: string[];
}

export interface OnnxJobOptions {
  onnx: string;
  calibration: string;
  modelDir: string;
  outputDataDir?: string;
  /** CSV: the label column (default: a column named label, target, y or class, if any). */
  target?: string;
  /** The client divides features by this before encryption (255: 8-bit pixels to [0, 1]). */
  inputScale?: number;
  /** Calibration records used (default 1000): fits, simulation and onnxruntime. */
  limit?: number;
  /** Records encrypted end to end for the report (default 0). */
  verify?: number;
  /** Re-fit linear layers after approximated activations, then fine-tune the network (default true; refit.ts, finetune.ts). */
  refit?: boolean;
  /** At most this many ciphertexts per query section: the input and rotated copies of it (CompileOptions.inputCopies). */
  inputCopies?: number;
  log?: (line: string) => void;
}

/** Records (and labels, where the file has them) from CSV, NPY or IDX images (labels beside them). */
export async function readCalibration(file: string, features: number, target?: string): Promise<Calibration> {
  if (!existsSync(file)) throw new SealedError('bad-data', `cannot read ${file}`, 'give calibration records with --calibration (CSV, .npy or IDX images)');
  if ((await stat(file)).isDirectory()) {
    const names = (await readdir(file)).filter((n) => /\.(csv|npy)$|idx3-ubyte(\.gz)?$/.test(n)).sort();
    if (names.length === 0) throw new SealedError('bad-data', `${file} holds no CSV, .npy or IDX images file`, 'put the calibration records in the channel');
    return readCalibration(join(file, names[0]), features, target);
  }
  if (/idx3-ubyte(\.gz)?$/.test(file)) {
    const rows = imageRows(await readIdx(file));
    const labelsFile = file.replace('idx3-ubyte', 'idx1-ubyte').replace('images', 'labels');
    const labels = labelsFile !== file && existsSync(labelsFile) ? Array.from((await readIdx(labelsFile)).data) : undefined;
    return { rows, labels };
  }
  if (/\.npy$/.test(file)) {
    const a = parseNpy(new Uint8Array(await readFile(file)), file);
    const n = a.shape.slice(1).reduce((x, y) => x * y, 1);
    return { rows: Array.from({ length: a.shape[0] }, (_, i) => Array.from(a.data.subarray(i * n, (i + 1) * n))) };
  }
  const t = parseCsv(await readFile(file, 'utf8'), file);
  const label = target ?? t.columns.find((c) => /^(label|target|y|class|diagnosis)$/i.test(c));
  if (target && !t.columns.includes(target))
    throw new SealedError('bad-data', `${file} has no column ${target}`, `name one of ${t.columns.slice(0, 8).join(', ')}`);
  const featureCols = t.columns.filter((c) => c !== label).slice(0, features);
  if (featureCols.length !== features)
    throw new SealedError(
      'bad-data',
      `${file} has ${featureCols.length} feature columns; the model takes ${features}`,
      'give one column per model input, in the order the model expects',
    );
  requireNumeric(t, featureCols);
  const idx = featureCols.map((c) => t.columns.indexOf(c));
  const li = label ? t.columns.indexOf(label) : -1;
  const labels = li >= 0 && !t.text.has(label!) ? t.rows.map((r) => r[li]) : undefined;
  return { rows: t.rows.map((r) => idx.map((i) => r[i])), labels, features: t.hasHeader ? featureCols : undefined };
}

/** The single .onnx file of a directory (the training container's `model` channel), if any. */
export async function findOnnx(dir: string): Promise<string | undefined> {
  try {
    const names = (await readdir(dir)).filter((n) => n.endsWith('.onnx'));
    if (names.length > 1)
      throw new SealedError('bad-data', `${dir} holds ${names.length} ONNX files (${names.join(', ')})`, 'put one model in the model channel');
    return names[0] ? join(dir, names[0]) : undefined;
  } catch (e) {
    if (e instanceof SealedError) throw e;
    return undefined;
  }
}

/**
 * Batch mode wherever the network's shape allows it (compile-batch.ts: one dense layer, or dense
 * -> activation -> dense, with one more activation -> dense or not), with per-input factors for
 * layers whose columns differ in magnitude; kept only if the plan, in plaintext, reproduces the
 * network on the calibration records within 2^-10 of the outputs' range (its integer weights are
 * the batch kernel's approximation).
 * Sets the client part's batch parameters when kept.
 */
/**
 * The ONNX input's shape as an image (channels x height x width: its last three dimensions, or
 * two with one channel) when it holds all `features` and is at least 2 x 2; else undefined.
 */
export function imageShape(shape: number[], features: number): InputBox | undefined {
  const dims = shape.slice(-3);
  const [channels, height, width] = dims.length === 3 ? dims : [1, ...dims];
  if (height === undefined || width === undefined || !(height >= 2 && width >= 2 && channels >= 1)) return undefined;
  return channels * height * width === features ? { channels, height, width } : undefined;
}

export async function batchModeFor(model: OnnxModel, rows: ArrayLike<number>[]): Promise<{ batch?: BatchPlan; batchReport: CompileReport['batch'] }> {
  const unsupported = batchUnsupported(model.network);
  if (unsupported) return { batchReport: { unsupported } };
  const pre = rows.map((r) => preprocessRecord(r, model.client));
  const image = imageShape(model.lowered.inputShape, model.client.features.length);
  const factors = batchInputFactors(model.network, pre, image);
  const built = { compiled: model.compiled, client: model.client };
  const reach: { precisionBits?: number } = {};
  const batch = await addBatchMode(model.network, built, rows, { inputFactors: factors, report: reach, image });
  if (!batch || !model.client.batch) {
    // Plans that held the values but not the flood's precision: how far the best one was.
    const p = reach.precisionBits;
    const why =
      p !== undefined && Number.isFinite(p)
        ? `no batch plan within the 128-bit bound keeps the outputs within 2^-${FLOOD_PRECISION_BITS} of the largest under circuit privacy: the best reaches 2^${(-p).toFixed(1)} (the flood is sized from a bound on the honest noise, which each square and rescale grows)`
        : 'no batch plan within the 128-bit bound (ring 8192; 16384 or 32768 for two or three activations) holds these weights and values';
    return { batchReport: { unsupported: why } };
  }
  let err = 0,
    top = 1;
  for (const x of pre) {
    const want = forward(model.network, x);
    const got = simulateBatch(batch, factors ? x.map((v, j) => v * factors[j]) : x);
    want.forEach((w, k) => {
      err = Math.max(err, Math.abs(got[k] - w));
      top = Math.max(top, Math.abs(w));
    });
  }
  if (err > 2 ** -10 * top) {
    delete model.client.batch;
    return {
      batchReport: {
        unsupported: `the batch kernel's 15-bit integer weights miss the network by ${err.toPrecision(3)} on calibration (outputs up to ${top.toPrecision(3)})`,
      },
    };
  }
  return { batch, batchReport: { records_per_query: model.client.batch.records_per_batch, crossover_records: model.client.batch.crossover } };
}

const percentile50 = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

export async function compileOnnxJob(o: OnnxJobOptions): Promise<{ manifest: Manifest; report: CompileReport }> {
  const log = o.log ?? (() => {});
  const bytes = new Uint8Array(await readFile(o.onnx));
  // The feature count comes from the graph: parse once to read it, before the calibration.
  const { parseOnnx } = await import('../model/onnx/graph.ts');
  const g = parseOnnx(bytes, o.onnx);
  const n = g.input.shape.reduce((a, b) => a * b, 1);
  const cal = await readCalibration(o.calibration, n, o.target);
  const limit = Math.min(cal.rows.length, o.limit ?? 1000);
  const rows = cal.rows.slice(0, limit);
  const labels = cal.labels?.slice(0, limit);
  if (rows.some((r) => r.length !== n))
    throw new SealedError(
      'bad-data',
      `${o.calibration}: records of ${rows.find((r) => r.length !== n)!.length} values; the model takes ${n} (input ${g.input.name}, ${g.input.shape.join('x')})`,
      'give records with one value per model input',
    );
  log(`compiling ${basename(o.onnx)}: ${g.nodes.length} nodes, input ${g.input.name} ${g.input.shape.join('x')}, ${rows.length} calibration records`);
  const model = compileOnnx(bytes, rows, { inputScale: o.inputScale, features: cal.features, refit: o.refit, inputCopies: o.inputCopies }, basename(o.onnx));
  const p = model.compiled.program;
  log(`program: ring ${p.params.polyModulusDegree}, modulus ${p.params.coeffModulusBits.join('+')} bits, ${p.steps.length} steps`);

  const ref = await openReference(bytes, g.input.name, g.input.shape);
  const inputs = modelInputs(model.client, rows);
  const reference = await ref.run(inputs);
  await ref.close();
  const exact = inputs.map((x) => exactScores(model.lowered, x));
  const simulated = rows.map((r) => simulatedScores(model, r));
  const verifyRows = rows.slice(0, Math.max(0, o.verify ?? 0));
  if (verifyRows.length) log(`encrypting ${verifyRows.length} records end to end (--verify)`);
  // Sizes come from real keys and ciphertexts: without --verify, one record is encrypted for them.
  const run = await runEncryptedRecords(model.compiled, model.client, verifyRows.length ? verifyRows : rows.slice(0, 1));
  const costs = await measureUnitCosts(p.params, p.params.coeffModulusBits.length - 2, 3);
  // Batch mode wherever the network's shape allows it (compile-batch.ts): one dense layer, or
  // dense -> activation -> dense (-> activation -> dense); it also sets the client part's batch
  // parameters and crossover.
  const { batch, batchReport } = await batchModeFor(model, rows);
  const report = buildReport({
    source: basename(o.onnx),
    model,
    rows,
    labels,
    reference,
    exact,
    simulated,
    encrypted: verifyRows.length ? run : undefined,
    sizes: run,
    costs,
    batch: batchReport,
  });
  log(formatReport(report));

  const a = report.accuracy;
  const metrics: Record<string, number | string> = {
    onnx_sha256: createHash('sha256').update(bytes).digest('hex'),
    calibration_records: rows.length,
    estimated_ms: report.latency.estimated_ms,
    tolerance: a.tolerance,
    max_abs_error_simulated: a.simulated.max_abs_error,
  };
  if (a.onnxruntime.accuracy !== undefined) metrics.accuracy_onnxruntime = a.onnxruntime.accuracy;
  if (a.simulated.accuracy !== undefined) metrics.accuracy_simulated = a.simulated.accuracy;
  if (a.simulated.agreement !== undefined) metrics.agreement_simulated = a.simulated.agreement;
  if (a.encrypted?.accuracy !== undefined) metrics.accuracy_encrypted = a.encrypted.accuracy;
  if (a.encrypted?.agreement !== undefined) metrics.agreement_encrypted = a.encrypted.agreement;
  if (verifyRows.length) metrics.evaluate_ms_p50 = +percentile50(run.evaluateMs).toFixed(1);
  const manifest = await writeBundle(
    o.modelDir,
    model.client,
    p,
    model.compiled.masks,
    metrics,
    { 'server/compile-report.json': JSON.stringify(report, null, 1) + '\n' },
    batch,
  );
  if (o.outputDataDir) {
    await mkdir(o.outputDataDir, { recursive: true });
    await writeFile(join(o.outputDataDir, 'compile-report.json'), JSON.stringify(report, null, 1) + '\n');
  }
  log(`model ${manifest.model_id} written to ${o.modelDir}`);
  return { manifest, report };
}

/**
 * The training container's path for an uploaded model: when the `model` channel (beside the
 * train channel: /opt/ml/input/data/model) holds an .onnx file, compile it with the train
 * channel as calibration records, and return what `train` returns; otherwise undefined.
 * Hyperparameters: input_scale, target, limit, verify, refit ("false" as --no-refit), input_copies (as the CLI's options).
 */
function refitOf(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'true' || v === 'false') return v === 'true';
  throw new SealedError('bad-data', `hyperparameter refit="${v}" is not true or false`, 'set refit=false to keep the model weights exactly, or leave it out');
}

export async function onnxTrainJob(paths: TrainPaths, hp: Hyperparameters, log: (line: string) => void): Promise<TrainResult | undefined> {
  const onnx = await findOnnx(join(dirname(paths.trainDir), 'model'));
  if (!onnx) return undefined;
  const num = (k: string) => {
    const v = hp.raw[k];
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new SealedError('bad-data', `hyperparameter ${k}="${v}" is not a positive number`);
    return n;
  };
  const { manifest, report } = await compileOnnxJob({
    onnx,
    calibration: paths.trainDir,
    modelDir: paths.modelDir,
    outputDataDir: paths.outputDataDir,
    target: hp.target,
    inputScale: num('input_scale'),
    limit: num('limit'),
    verify: num('verify'),
    refit: refitOf(hp.raw.refit),
    inputCopies: num('input_copies'),
    log,
  });
  const metrics = Object.fromEntries(Object.entries(manifest.metrics ?? {}).filter((e): e is [string, number] => typeof e[1] === 'number'));
  metrics.tolerance = report.accuracy.tolerance;
  return { manifest, metrics };
}
