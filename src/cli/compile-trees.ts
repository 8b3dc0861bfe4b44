// `sealed compile --trees` (and the deprecated `sealed compile-trees`): a trained tree ensemble
// (XGBoost JSON, or ONNX-ML TreeEnsemble*) and calibration records (typically the training data:
// the quantization bins are their quantiles) into a servable tree bundle (docs/trees.md).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SealedError } from '../errors.ts';
import { estimateTreeBatchMs, measureTreeUnitCosts } from '../fhe/tree-cost.ts';
import { writeTreeBundle } from '../model/trees/bundle.ts';
import { compileTreeModel } from '../model/trees/compile.ts';
import { singleKeysBytesBound, singleMasksBytes, singleWorkerBytes } from '../model/trees/single.ts';
import { parseCsv, splitTarget } from '../train/csv.ts';

export interface CompileTreesOpts {
  trees: string;
  calibration: string;
  model: string;
  /** The calibration CSV's target column, left out of the features (absent: every column is a feature). */
  target?: string;
  bits?: number;
  /** false: leave the single-record form out (one record then runs as a one-record batch). */
  single?: boolean;
  /** The file's format (default: ONNX-ML by the .onnx extension, else XGBoost JSON). */
  kind?: 'onnx-ml' | 'xgboost-json';
  /** Also write the report (JSON) here. */
  report?: string;
  /** Print the report as one JSON line; the progress lines go to stderr. */
  json?: boolean;
  /**
   * Without --target, leave out a column named label, target, y, class or diagnosis, as
   * `sealed compile --onnx` does (`sealed compile`); the deprecated alias keeps every column.
   */
  defaultTarget?: boolean;
}

/** The deprecated `sealed compile-trees`: what `sealed compile --trees` does, with a note on stderr. */
export async function compileTreesAlias(o: CompileTreesOpts): Promise<void> {
  process.stderr.write('note: `sealed compile-trees` is deprecated; use `sealed compile --trees FILE` (same options)\n');
  await compileTreesCommand(o);
}

export async function compileTreesCommand(o: CompileTreesOpts): Promise<void> {
  const log = o.json ? (s: string) => process.stderr.write(s + '\n') : console.log;
  if (o.bits !== undefined && !(Number.isInteger(o.bits) && o.bits >= 1 && o.bits <= 8))
    throw new SealedError(
      'bad-request',
      '--bits must be a whole number from 1 to 8',
      'leave it out to let the compiler pick the smallest that keeps 99.5% agreement',
    );
  const kind = o.kind ?? (/\.onnx$/i.test(o.trees) ? 'onnx-ml' : 'xgboost-json');
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
  const target = o.target ?? (o.defaultTarget && table.hasHeader ? table.columns.find((c) => /^(label|target|y|class|diagnosis)$/i.test(c)) : undefined);
  const { features, x } = target ? splitTarget(table, target) : { features: table.columns, x: table.rows };
  const bad = features.find((_, j) => x.some((r) => !Number.isFinite(r[j])));
  if (bad !== undefined)
    throw new SealedError(
      'bad-data',
      `the calibration column ${bad.slice(0, 40)} holds values that are not numbers`,
      'give numeric features only; name a target column with --target to leave it out',
    );
  const t0 = performance.now();
  const m = compileTreeModel(bytes, kind, x, { bits: o.bits, features: table.hasHeader ? features : undefined, single: o.single });
  const manifest = await writeTreeBundle(o.model, m.client, m.server);
  const r = m.report;
  const c = m.client;
  log(`tree model ${manifest.model_id} -> ${o.model} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  log(
    `  ${c.task}, ${features.length} features${target ? ` (column ${target} left out)` : ''}, ${c.outputs} output(s); ${r.bits}-bit quantization (${(100 * r.calibrationAgreement).toFixed(2)}% agreement with the model on the calibration records)`,
  );
  log(
    `  ${c.inputs} encrypted inputs per batch of ${c.records_per_batch} records; N = ${c.params.polyModulusDegree}, primes ${r.dataPrimeBits.join(', ')}; circuit privacy ${c.privacy}`,
  );
  const ops = r.operations;
  const single = m.server.single;
  const MB = (b: number) => `${Math.round(b / 1e6)} MB`;
  log(
    single && 'coeffModulusBits' in r.single
      ? `  one record: its own form (leaves in slots), N = 16384, primes ${r.single.coeffModulusBits.join(', ')}; 32 ciphertexts per query; its own keys, up to ${MB(singleKeysBytesBound(single))}; each server worker holds ${MB(singleWorkerBytes(single))} for it and the workers share ${MB(singleMasksBytes(single))} (--no-single-record leaves it out)`
      : `  one record: as a one-record batch (no single-record form: ${o.single === false ? 'left out by --no-single-record' : 'refused' in r.single ? r.single.refused : ''})`,
  );
  const p = r.precision;
  const singleBits = 'precisionBits' in r.single ? r.single.precisionBits : undefined;
  if (p.closestCall !== undefined)
    log(
      `  scores exact to 2^-${p.batchBits}${singleBits !== undefined && singleBits !== p.batchBits ? ` (one record: 2^-${singleBits})` : ''} of their bound: the closest call on the calibration records, ${p.closestCall.toPrecision(2)} between two scores, asked for 2^-${p.bits}${p.batchBits < p.bits ? ' (more would take another prime: records that close may go either way)' : ''}`,
    );
  log(`  ${r.form} circuit: per batch ${ops.relinearize} relinearizations, ${ops.multiply} ciphertext products, ${ops.multiplyPlain} plaintext products`);
  // The estimate: those counts x each operation timed now, on this machine, at these parameters.
  const unit = await measureTreeUnitCosts(m.server.circuit, 3);
  const estimate = estimateTreeBatchMs(m.server.circuit, unit);
  const top = Object.entries(estimate.byOp)
    .sort((x, y) => y[1] - x[1])
    .slice(0, 3)
    .map(([op, v]) => `${op} ${(v / 1000).toFixed(2)} s`);
  log(
    `  estimated on this machine: ${(estimate.total / 1000).toFixed(1)} s server time per batch (also for one record without the single-record form), ${(estimate.total / c.records_per_batch).toFixed(2)} ms per record at a full batch (${top.join(', ')}); the client encrypts ${c.inputs} ciphertexts per batch, ~${((c.inputs * unit.encrypt) / 1000).toFixed(1)} s on one core`,
  );
  const report = {
    model_id: manifest.model_id,
    model: 'trees',
    source: kind,
    task: c.task,
    features: features.length,
    target,
    outputs: c.outputs,
    bits: r.bits,
    calibration_records: x.length,
    calibration_agreement: r.calibrationAgreement,
    inputs: c.inputs,
    records_per_batch: c.records_per_batch,
    poly_modulus_degree: c.params.polyModulusDegree,
    data_prime_bits: r.dataPrimeBits,
    privacy: c.privacy,
    circuit_form: r.form,
    precision: { closest_call: r.precision.closestCall, bits_asked: r.precision.bits, batch_bits: r.precision.batchBits, single_bits: singleBits },
    single_record:
      single && 'coeffModulusBits' in r.single
        ? {
            coeff_modulus_bits: r.single.coeffModulusBits,
            keys_bytes_bound: singleKeysBytesBound(single),
            worker_bytes: singleWorkerBytes(single),
            shared_bytes: singleMasksBytes(single),
          }
        : { refused: o.single === false ? 'left out by --no-single-record' : 'refused' in r.single ? r.single.refused : '' },
    operations_per_batch: ops,
    estimated_batch_server_ms: Math.round(estimate.total),
    estimated_by_op_ms: Object.fromEntries(Object.entries(estimate.byOp).map(([k, v]) => [k, Math.round(v)])),
    unit_costs_ms: Object.fromEntries(Object.entries(unit).map(([k, v]) => [k, +v.toFixed(3)])),
  };
  if (o.report) {
    await mkdir(dirname(o.report), { recursive: true });
    await writeFile(o.report, JSON.stringify(report, null, 1) + '\n');
  }
  if (o.json) console.log(JSON.stringify(report));
}
