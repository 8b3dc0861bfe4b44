// The compile report of `sealed compile`: what the program costs (per layer, parameters, keys,
// query, estimated latency from unit costs measured on this machine) and how close it is to the
// original model on the calibration records, three ways: onnxruntime on the ONNX file, the
// program in plaintext simulation, and (with --verify N) N records encrypted end to end.
import type { UnitCosts } from '../../fhe/cost.ts';
import { predictTime } from '../../fhe/cost.ts';
import { depthOf, inputCiphertexts, opCounts, rotationRoutes, type Program } from '../../fhe/program.ts';
import { copiesOfStep, MAX_INPUT_ROTATIONS } from '../input-copies.ts';
import { classOfOutputs, classOfScores, headOutputs, outputError, type LayerReport, type OnnxModel } from './compile.ts';
import type { Head } from './lower.ts';
import type { FinetuneReport } from './finetune.ts';
import type { EncryptedRun } from './verify.ts';

export interface AccuracyFigures {
  records: number;
  /** Share of records whose class equals the label (classifiers, labels given). */
  accuracy?: number;
  /** Share of records whose class equals onnxruntime's. */
  agreement?: number;
  /** Largest |output - onnxruntime's output| over the numeric outputs. */
  max_abs_error: number;
}

export interface CompileReport {
  format: 'sealed-compile-report';
  version: 1;
  model: { source: string; input: string; input_shape: number[]; features: number; outputs: string[]; task: string; postprocess: string };
  layers: LayerReport[];
  /** The fine-tune of the whole approximated network to the original outputs (finetune.ts), when it ran. */
  finetune?: FinetuneReport;
  totals: ReturnType<typeof opCounts> & { depth: number; rotation_keys: number };
  params: {
    ring_degree: number;
    slots: number;
    coeff_modulus_bits: number[];
    total_bits: number;
    security_bits: 128;
    privacy: string;
    input_scale_bits: number;
    /** Ciphertexts per query section: the input and the client's rotated copies of it (--input-copies). */
    input_ciphertexts: number;
  };
  sizes: { keys_bytes: number; query_bytes: number; result_bytes: number; masks_bytes: number };
  latency: { estimated_ms: number; by_op_ms: Record<string, number>; unit_costs: 'measured on this machine at compile time' };
  accuracy: {
    onnxruntime: AccuracyFigures;
    simulated: AccuracyFigures;
    encrypted?: AccuracyFigures & { evaluate_ms_p50: number };
    /** What the encrypted outputs are stated to match onnxruntime within. */
    tolerance: number;
    /** Exactness of the lowering (true activations, no polynomial): largest error against onnxruntime. */
    lowering_max_abs_error: number;
  };
  /**
   * Batch mode (many records per query, no evaluation keys): its records per query and the
   * record count from which it costs less than the single layout, or why the graph has none.
   */
  batch: { records_per_query: number; crossover_records: number } | { unsupported: string };
  notes: string[];
}

export interface ReportInputs {
  source: string;
  model: OnnxModel;
  rows: ArrayLike<number>[];
  labels?: number[];
  reference: Record<string, number[]>[];
  exact: number[][];
  simulated: number[][];
  encrypted?: EncryptedRun;
  sizes: EncryptedRun;
  costs: UnitCosts;
  batch: CompileReport['batch'];
}

/**
 * What the encrypted outputs are stated to match onnxruntime within: 1.5 x the simulation's
 * largest error (`simErr`, the polynomials' on the calibration records, with room for records
 * beyond them) plus 1e-3 of the largest value the server computes or the client outputs.
 *
 * Encryption's error (the flood's, the roundings') is sized against the scores the server computes,
 * before the client's post-processing: at most 2^-12 of max(1, largest |score|), one standard
 * deviation (compile-batch.ts, network-flood.ts), so 1e-3 of it is about four. Softmax leaves an
 * error of at most half the scores' (|dp_i| <= 2 p_i (1 - p_i) max|dz|), a sigmoid a quarter,
 * an L1 normalizer of probabilities (skl2onnx's) none; LogSoftmax may double it. Taken over the
 * outputs alone, the tolerance missed a Softmax head whose logits reach 40: LeNet's batch
 * results were within 0.006-0.0095 of onnxruntime's probabilities against a stated 0.001.
 */
export function statedTolerance(head: Head, simErr: number, reference: Record<string, ArrayLike<number>>[], scores: ArrayLike<number>[]): number {
  const numeric = head.outputs.filter((h) => !h.ops.includes('ArgMax') && !h.ops.includes('LinearClassifier label'));
  const gain = numeric.some((h) => h.ops.includes('LogSoftmax')) ? 2 : 1;
  let largest = 1;
  for (const o of reference) for (const h of numeric) for (const v of Array.from(o[h.name] ?? [])) largest = Math.max(largest, Math.abs(v));
  for (const s of scores) for (const v of Array.from(s)) largest = Math.max(largest, gain * Math.abs(v));
  return 1.5 * simErr + 1e-3 * largest;
}

export function buildReport(r: ReportInputs): CompileReport {
  const { model } = r;
  const head = model.lowered.head;
  const p = model.compiled.program;
  const refClass = r.reference.map((o) => classOfOutputs(head, o));
  const figures = (scores: number[][]): AccuracyFigures => {
    const n = scores.length;
    let ok = 0,
      agree = 0,
      err = 0;
    scores.forEach((s, i) => {
      const c = head.task === 'regression' ? undefined : classOfScores(model.client, s);
      if (r.labels && c === r.labels[i]) ok++;
      if (c !== undefined && c === refClass[i]) agree++;
      err = Math.max(err, outputError(head, headOutputs(head, s), r.reference[i]));
    });
    return {
      records: n,
      accuracy: r.labels && head.task !== 'regression' ? ok / n : undefined,
      agreement: head.task === 'regression' ? undefined : agree / n,
      max_abs_error: err,
    };
  };
  const ort: AccuracyFigures = {
    records: r.reference.length,
    accuracy: r.labels && head.task !== 'regression' ? refClass.filter((c, i) => c === r.labels![i]).length / r.reference.length : undefined,
    agreement: head.task === 'regression' ? undefined : 1,
    max_abs_error: 0,
  };
  const simulated = figures(r.simulated);
  const lowering = figures(r.exact).max_abs_error;
  const tolerance = +statedTolerance(head, simulated.max_abs_error, r.reference, r.simulated).toPrecision(3);
  let encrypted: CompileReport['accuracy']['encrypted'];
  if (r.encrypted && r.encrypted.scores.length > 0) {
    const ms = [...r.encrypted.evaluateMs].sort((a, b) => a - b);
    encrypted = { ...figures(r.encrypted.scores), evaluate_ms_p50: +ms[Math.floor(ms.length / 2)].toFixed(1) };
  }
  const time = predictTime(p, r.costs);
  const counts = opCounts(p);
  const notes: string[] = [];
  const approx = model.fits.filter((f) => !f.exact);
  if (approx.length)
    notes.push(
      `${approx.length} activation(s) replaced by per-neuron quadratics fitted on ${r.rows.length} calibration records (${approx.map((f) => `${f.kind} at ${f.node}`).join(', ')}): the simulated figures include that approximation`,
    );
  const refitted = model.layers.filter((l) => l.refit);
  if (refitted.length)
    notes.push(
      `${refitted.length} linear layer(s) after an approximated activation re-fitted (ridge least squares on the calibration records) to reproduce the original layer's outputs: ${refitted
        .map((l) => `layer ${l.index} rms error ${l.refit!.rmse_before.toPrecision(3)} -> ${l.refit!.rmse_after.toPrecision(3)}`)
        .join(', ')} (sealed compile --no-refit keeps the model's weights)`,
    );
  const ft = model.finetune;
  if (ft)
    notes.push(
      `the approximated network then fine-tuned (all weights, Adam, ${ft.epochs} epochs, kept epoch ${ft.best_epoch}, ${(ft.ms / 1000).toFixed(1)} s) to the original model's outputs on ${ft.records} calibration records and mixtures of them: rms output error on the ${ft.held_back} records held back from it ${ft.rmse_before.toPrecision(3)} -> ${ft.rmse_after.toPrecision(3)}, on all ${ft.rmse_all_before.toPrecision(3)} -> ${ft.rmse_all_after.toPrecision(3)} (--no-refit turns both off)`,
    );
  const copies = copiesHint(p);
  if (copies) notes.push(copies);
  if (encrypted && encrypted.max_abs_error > tolerance)
    notes.push(`encrypted outputs differ from onnxruntime by ${encrypted.max_abs_error.toExponential(2)}, above the tolerance ${tolerance}`);
  return {
    format: 'sealed-compile-report',
    version: 1,
    model: {
      source: r.source,
      input: model.lowered.inputName,
      input_shape: model.lowered.inputShape,
      features: model.network.input.width,
      outputs: head.outputs.map((o) => o.name),
      task: head.task,
      postprocess: head.postprocess,
    },
    layers: model.layers,
    finetune: model.finetune,
    totals: { ...counts, depth: depthOf(p.steps), rotation_keys: p.galoisSteps.length },
    params: {
      ring_degree: p.params.polyModulusDegree,
      slots: p.params.polyModulusDegree / 2,
      coeff_modulus_bits: p.params.coeffModulusBits,
      total_bits: p.params.coeffModulusBits.reduce((a, b) => a + b, 0),
      security_bits: 128,
      privacy: p.privacy ?? 'none',
      input_scale_bits: p.inputScaleBits,
      input_ciphertexts: inputCiphertexts(p),
    },
    sizes: {
      keys_bytes: r.sizes.keysBytes,
      query_bytes: r.sizes.queryBytes,
      result_bytes: r.sizes.resultBytes,
      masks_bytes: model.compiled.masks.reduce((a, m) => a + m.length * 8, 0),
    },
    latency: { estimated_ms: time.total, by_op_ms: time.byOp as Record<string, number>, unit_costs: 'measured on this machine at compile time' },
    accuracy: { onnxruntime: ort, simulated, encrypted, tolerance, lowering_max_abs_error: lowering },
    batch: r.batch,
    notes,
  };
}

/** For a program without copies: what --input-copies would take off the server (input-copies.ts). */
export function copiesHint(p: Program): string | undefined {
  const first = p.steps[0];
  if (first?.op !== 'linear' || first.inputRotations) return undefined;
  const routes = rotationRoutes(first, new Set(p.galoisSteps));
  const copies = copiesOfStep(first, p.params.polyModulusDegree / 2);
  const babies = copies.babies.length;
  const offsets = copies.offsets.length;
  const all = routes.babies.length + routes.giantRotations;
  if (babies === 0 || offsets + 1 > MAX_INPUT_ROTATIONS + 1) return undefined;
  const also = offsets > babies ? `; --input-copies ${offsets + 1}, all ${all} before its folds (${offsets + 1} times)` : '';
  return `--input-copies ${babies + 1} would take the first layer's ${routes.babies.length} baby-step rotation(s) off the server for a query ${babies + 1} times larger${also} (docs/bring-your-own-model.md, Latency for bytes)`;
}

const pct = (v: number | undefined) => (v === undefined ? '-' : `${(100 * v).toFixed(2)}%`);
const kb = (b: number) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MB` : `${(b / 1024).toFixed(1)} KB`);

export function formatReport(rep: CompileReport): string {
  const L: string[] = [];
  L.push(
    `compile report: ${rep.model.source} (input ${rep.model.input} ${rep.model.input_shape.join('x')}, ${rep.model.task}, client post-processing ${rep.model.postprocess})`,
  );
  L.push('  layer  kind        inputs -> outputs  rot  mulPlain  sq  depth  onnx nodes / activation fit');
  for (const l of rep.layers) {
    const what = l.activation
      ? `${l.activation.kind} on [${l.activation.range.map((v) => v.toFixed(2)).join(', ')}]${l.activation.exact ? ' (exact)' : `, quadratic rmse ${l.activation.rmse.toFixed(4)} max ${l.activation.maxError.toFixed(3)}`}`
      : l.onnx_nodes.join(', ') + (l.refit ? ` (re-fitted: rms error ${l.refit.rmse_before.toPrecision(3)} -> ${l.refit.rmse_after.toPrecision(3)})` : '');
    L.push(
      `  ${String(l.index).padStart(5)}  ${l.kind.padEnd(10)}  ${String(l.inputs).padStart(6)} -> ${String(l.outputs).padEnd(7)}  ${String(l.ops.rotations).padStart(3)}  ${String(l.ops.multiplyPlain).padStart(8)}  ${String(l.ops.square).padStart(2)}  ${String(l.depth).padStart(5)}  ${what.length > 90 ? what.slice(0, 87) + '...' : what}`,
    );
  }
  const p = rep.params;
  L.push(
    `  parameters: ring ${p.ring_degree} (${p.slots} slots), modulus ${p.coeff_modulus_bits.join('+')} = ${p.total_bits} bits, 128-bit security, depth ${rep.totals.depth}, ${rep.totals.rotation_keys} rotation keys, circuit privacy ${p.privacy}`,
  );
  if (p.input_ciphertexts > 1)
    L.push(`  query: each input with ${p.input_ciphertexts - 1} rotated copies (--input-copies): the first layer's rotations are the client's`);
  L.push(
    `  sizes: keys ${kb(rep.sizes.keys_bytes)} (once per client), query ${kb(rep.sizes.query_bytes)} and result ${kb(rep.sizes.result_bytes)} per record, server weights ${kb(rep.sizes.masks_bytes)}`,
  );
  L.push(
    `  estimated evaluation: ${rep.latency.estimated_ms.toFixed(0)} ms per record on this machine (unit costs measured now; ${Object.entries(
      rep.latency.by_op_ms,
    )
      .map(([k, v]) => `${k} ${v.toFixed(0)}`)
      .join(', ')})`,
  );
  const a = rep.accuracy;
  const row = (name: string, f: { records: number; accuracy?: number; agreement?: number; max_abs_error: number }) =>
    `  ${name.padEnd(12)} ${String(f.records).padStart(6)} records  accuracy ${pct(f.accuracy).padStart(7)}  agreement with onnxruntime ${pct(f.agreement).padStart(7)}  max |output error| ${f.max_abs_error.toExponential(2)}`;
  L.push(row('onnxruntime', a.onnxruntime));
  L.push(row('simulated', a.simulated));
  if (a.encrypted) L.push(row('encrypted', a.encrypted) + `  (evaluation p50 ${a.encrypted.evaluate_ms_p50} ms)`);
  else L.push('  encrypted    not run (add --verify N to encrypt N records end to end)');
  L.push(`  tolerance: encrypted outputs are stated to match onnxruntime within ${a.tolerance} (lowering alone: ${a.lowering_max_abs_error.toExponential(2)})`);
  const b = rep.batch;
  L.push(
    'unsupported' in b
      ? `  batch mode: none (${b.unsupported}); every record is one single-layout query`
      : `  batch mode: up to ${b.records_per_query} records per query, no evaluation keys; clients use it from ${b.crossover_records} records`,
  );
  for (const n of rep.notes) L.push(`  note: ${n}`);
  return L.join('\n');
}
