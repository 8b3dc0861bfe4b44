// `sealed compile-trees`: a trained tree ensemble (XGBoost JSON, or ONNX-ML TreeEnsemble*) and
// calibration records (typically the training data: the quantization bins are their quantiles)
// into a servable tree bundle (docs/trees.md). Kept apart from `sealed compile` for now; the two
// become one command later.
import { readFile } from 'node:fs/promises';
import { SealedError } from '../errors.ts';
import { writeTreeBundle } from '../model/trees/bundle.ts';
import { compileTreeModel } from '../model/trees/compile.ts';
import { parseCsv, splitTarget } from '../train/csv.ts';

export interface CompileTreesOpts {
  trees: string;
  calibration: string;
  model: string;
  /** The calibration CSV's target column, left out of the features (absent: every column is a feature). */
  target?: string;
  bits?: number;
}

export async function compileTreesCommand(o: CompileTreesOpts): Promise<void> {
  if (o.bits !== undefined && !(Number.isInteger(o.bits) && o.bits >= 1 && o.bits <= 8))
    throw new SealedError(
      'bad-request',
      '--bits must be a whole number from 1 to 8',
      'leave it out to let the compiler pick the smallest that keeps 99.5% agreement',
    );
  const kind = /\.onnx$/i.test(o.trees) ? 'onnx-ml' : 'xgboost-json';
  const bytes = new Uint8Array(
    await readFile(o.trees).catch(() => {
      throw new SealedError(
        'bad-request',
        `cannot read the tree model ${o.trees}`,
        'give an XGBoost model.json (Booster.save_model) or an ONNX-ML file (.onnx)',
      );
    }),
  );
  const table = parseCsv(
    await readFile(o.calibration, 'utf8').catch(() => {
      throw new SealedError('bad-request', `cannot read the calibration records ${o.calibration}`, 'give a CSV of typical inputs, e.g. the training data');
    }),
    o.calibration,
  );
  const { features, x } = o.target ? splitTarget(table, o.target) : { features: table.columns, x: table.rows };
  const bad = features.find((_, j) => x.some((r) => !Number.isFinite(r[j])));
  if (bad !== undefined)
    throw new SealedError(
      'bad-data',
      `the calibration column ${bad.slice(0, 40)} holds values that are not numbers`,
      'give numeric features only; name a target column with --target to leave it out',
    );
  const t0 = performance.now();
  const m = compileTreeModel(bytes, kind, x, { bits: o.bits, features: table.hasHeader ? features : undefined });
  const manifest = await writeTreeBundle(o.model, m.client, m.server);
  const r = m.report;
  console.log(`tree model ${manifest.model_id} -> ${o.model} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  console.log(
    `  ${m.client.task}, ${features.length} features, ${m.client.outputs} output(s); ${r.bits}-bit quantization (${(100 * r.calibrationAgreement).toFixed(2)}% agreement with the model on the calibration records)`,
  );
  console.log(
    `  ${m.client.inputs} encrypted inputs per batch of ${m.client.records_per_batch} records; N = ${m.client.params.polyModulusDegree}, primes ${r.dataPrimeBits.join(', ')}; circuit privacy ${m.client.privacy}`,
  );
}
