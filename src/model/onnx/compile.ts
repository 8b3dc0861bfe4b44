// `sealed compile`'s core: an ONNX file and calibration records -> the network of dense maps and
// fitted quadratics, its CKKS program (compile-network.ts, circuit privacy as everywhere), the
// client part, and what the compile report needs to say how far the result is from the original.
import { SealedError } from '../../errors.ts';
import { depthOf, opCounts, type Step } from '../../fhe/program.ts';
import { CLIENT_FORMAT, type ClientPart } from '../client-part.ts';
import type { CompiledModel } from '../compile-linear.ts';
import { compileNetwork, type CompileOptions } from '../compile-network.ts';
import { packRecords } from '../layout.ts';
import { forward, perFeature, type Layer, type Network } from '../network.ts';
import { classOf, preprocessRecord } from '../postprocess.ts';
import { simulate } from '../simulate.ts';
import { applyActivation, fitQuadratic, measureFit, type FitReport } from './activations.ts';
import { finetuneNetwork, type FinetuneReport } from './finetune.ts';
import { parseOnnx } from './graph.ts';
import { affineMap, refitAffine, type RefitReport } from './refit.ts';
import { lowerGraph, type AffineStage, type Head, type LoweredModel } from './lower.ts';

export interface OnnxCompileOptions extends CompileOptions {
  /** The client divides every feature by this before encryption (e.g. 255 for 8-bit pixels). */
  inputScale?: number;
  /** Feature names for the client part (default x0, x1, ...). */
  features?: string[];
  /** At most this many calibration records are simulated during compilation (fits use all). */
  checkRecords?: number;
  /**
   * Re-fit each linear layer that follows an approximated activation so that it reproduces the
   * original layer's outputs on calibration (refit.ts); default true.
   */
  refit?: boolean;
  /**
   * After the re-fit, fine-tune all the approximated network's weights to the original model's
   * outputs on calibration (finetune.ts); default true, and off with `refit: false`.
   */
  finetune?: boolean;
}

export interface LayerReport {
  index: number;
  kind: 'linear' | 'activation';
  onnx_nodes: string[];
  inputs: number;
  outputs: number;
  activation?: Omit<FitReport, 'node'>;
  /** A linear layer re-fitted after an approximated activation: its error on calibration before and after. */
  refit?: RefitReport;
  ops: ReturnType<typeof opCounts>;
  /** Levels this step consumes (its rescales). */
  depth: number;
}

export interface OnnxModel {
  lowered: LoweredModel;
  network: Network;
  fits: FitReport[];
  compiled: CompiledModel;
  client: ClientPart;
  layers: LayerReport[];
  /** The fine-tune of the whole approximated network, when it ran and improved on held-back records. */
  finetune?: FinetuneReport;
}

/** Model inputs of raw records: what the client's pre-processing makes of them. */
export function modelInputs(client: Pick<ClientPart, 'preprocess' | 'image'>, rows: ArrayLike<number>[]): number[][] {
  return rows.map((r) => preprocessRecord(r, client));
}

/** The lowered model with its true activations: the exact plaintext meaning of the ONNX graph. */
export function exactScores(lowered: LoweredModel, x: ArrayLike<number>): number[] {
  let v = Array.from(x);
  for (const st of lowered.stages) {
    if (st.kind === 'affine') v = st.weights.map((row, o) => row.reduce((acc, w, j) => acc + w * v[j], st.bias[o]));
    else v = v.map((t) => applyActivation(st.act, t));
  }
  return v;
}

export function compileOnnx(bytes: Uint8Array, calibration: ArrayLike<number>[], o: OnnxCompileOptions = {}, source = 'the model'): OnnxModel {
  if (calibration.length === 0)
    throw new SealedError('bad-data', 'no calibration records', 'give records the model sees in use (a few hundred): the activations are fitted on them');
  const lowered = lowerGraph(parseOnnx(bytes, source));
  const first = lowered.stages[0] as AffineStage;
  const n = first.weights[0]?.length ?? 0;
  if (calibration.some((r) => r.length !== n))
    throw new SealedError(
      'bad-data',
      `the model takes ${n} features; a calibration record has ${calibration.find((r) => r.length !== n)!.length}`,
      `give records of ${n} values (input ${lowered.inputName}, shape ${lowered.inputShape.join('x')}, flattened row-major)`,
    );
  const scale = o.inputScale ?? 1;
  const preprocess = { mean: new Array<number>(n).fill(0), std: new Array<number>(n).fill(scale) };
  const inputs = modelInputs({ preprocess }, calibration);

  const { network, fits, refits, finetune } = approximateNetwork(lowered, inputs, o);
  const checkRows = inputs.slice(0, o.checkRecords ?? 64);
  const compiled = compileNetwork(network, checkRows, o);
  const p = compiled.program;
  const head = lowered.head;
  const client: ClientPart = {
    format: CLIENT_FORMAT,
    version: 1,
    task: head.task,
    params: p.params,
    input_scale_bits: p.inputScaleBits,
    galois_steps: p.galoisSteps,
    relin: p.relin,
    features: o.features ?? Array.from({ length: n }, (_, j) => `x${j}`),
    preprocess,
    input: compiled.input,
    output: compiled.output,
    postprocess: head.postprocess === 'affine' ? { kind: 'affine', mean: 0, std: 1 } : { kind: head.postprocess },
    labels: head.labels,
  };
  return { lowered, network, fits, compiled, client, layers: layerReports(lowered, network, compiled.program.steps, fits, refits), finetune };
}

/**
 * The lowered graph as the network the program computes: activations replaced by per-neuron
 * quadratics fitted on the calibration inputs (already pre-processed), and each linear layer
 * after an approximated activation re-fitted to the original's outputs (refit.ts), then all of
 * it fine-tuned to the original model's outputs (finetune.ts), unless `refit` is false (or
 * `finetune`, for the fine-tune alone).
 */
export function approximateNetwork(
  lowered: LoweredModel,
  inputs: ArrayLike<number>[],
  o: Pick<OnnxCompileOptions, 'refit' | 'finetune'> = {},
): { network: Network; fits: FitReport[]; refits: Map<number, RefitReport>; finetune?: FinetuneReport } {
  // Fit each activation on the values the calibration records produce there, through the
  // already-approximated layers before it (the errors the program will make, not the original's).
  // `exact` follows the original model, for the re-fit of the layer after an approximation.
  const layers: Layer[] = [];
  const fits: FitReport[] = [];
  const refits = new Map<number, RefitReport>();
  let values = inputs.map((r) => Float64Array.from(r));
  let exact = values;
  let approximated = false;
  for (const st of lowered.stages) {
    if (st.kind === 'affine') {
      const refit = approximated && o.refit !== false ? refitAffine(st, values, exact) : undefined;
      const weights = refit?.weights ?? st.weights;
      const bias = refit?.bias ?? st.bias;
      if (refit) refits.set(layers.length, refit.report);
      layers.push({ type: 'dense', weights, bias });
      const same = exact === values; // nothing approximated yet: one pass serves both
      values = values.map((x) => affineMap(weights, bias, x));
      exact = same ? values : exact.map((x) => affineMap(st.weights, st.bias, x));
      approximated = false;
    } else {
      const { layer, report } = fitQuadratic(st.act, values);
      layers.push(layer);
      fits.push(report);
      const approx = values.map((x) => x.map((v, j) => perFeature(layer.a, j) * v * v + perFeature(layer.b, j) * v + perFeature(layer.c, j)));
      exact = report.exact && exact === values ? approx : exact.map((x) => x.map((v) => applyActivation(st.act, v)));
      values = approx;
      approximated ||= !report.exact;
    }
  }
  const width = (lowered.stages[0] as AffineStage).weights[0]?.length ?? 0;
  const network: Network = { input: { height: 1, width }, layers };
  if (o.refit === false || o.finetune === false || fits.every((f) => f.exact)) return { network, fits, refits };
  const ranges = fits.map((f) => (f.exact ? undefined : Math.max(Math.abs(f.range[0]), Math.abs(f.range[1]))));
  const teacher = teacherOf(lowered);
  const tuned = finetuneNetwork(
    layers,
    inputs.map((r) => Float64Array.from(r)),
    exact,
    ranges,
    teacher,
  );
  if (!tuned) return { network, fits, refits };
  // The activations' inputs moved with the weights: their ranges and errors, measured again.
  let v = inputs.map((r) => Float64Array.from(r));
  let k = 0;
  const measured = fits.slice();
  tuned.layers.forEach((layer, i) => {
    v = v.map((x) => Float64Array.from(forward({ input: network.input, layers: [layer] }, x)));
    const st = lowered.stages[i + 1];
    if (st?.kind === 'activation') {
      const q = tuned.layers[i + 1] as Extract<Layer, { type: 'quadratic' }>;
      if (!measured[k].exact) measured[k] = { ...measured[k], ...measureFit(st.act, q, v) };
      k++;
    }
  });
  return { network: { ...network, layers: tuned.layers }, fits: measured, refits, finetune: tuned.report };
}

/** exactScores on flat arrays: the fine-tune asks it for the original's scores on every new mixture. */
function teacherOf(lowered: LoweredModel): (x: Float64Array) => Float64Array {
  const flat = lowered.stages.map((st) =>
    st.kind === 'affine' ? { w: Float64Array.from(st.weights.flat()), b: Float64Array.from(st.bias), n: st.weights[0]?.length ?? 0 } : st.act,
  );
  return (x) => {
    let v = x;
    for (const st of flat) {
      if ('w' in st) {
        const out = Float64Array.from(st.b);
        for (let k = 0; k < out.length; k++) {
          let s = out[k];
          for (let j = 0, row = k * st.n; j < st.n; j++) if (v[j] !== 0) s += st.w[row + j] * v[j];
          out[k] = s;
        }
        v = out;
      } else v = v.map((t) => applyActivation(st, t));
    }
    return v;
  };
}

function layerReports(lowered: LoweredModel, net: Network, steps: Step[], fits: FitReport[], refits: Map<number, RefitReport>): LayerReport[] {
  // buildNetwork emits one step per layer, in order; a flooded program may follow a linear
  // step with a 'rescale' step (network-flood.ts), which belongs to that layer.
  const perLayer: Step[][] = [];
  for (const st of steps) {
    if (st.op === 'rescale' && perLayer.length > 0) perLayer[perLayer.length - 1].push(st);
    else perLayer.push([st]);
  }
  let inputs = net.input.width;
  let fit = 0;
  return net.layers.map((layer, i) => {
    const st = lowered.stages[i];
    const ops = opCounts({ steps: perLayer[i] } as Parameters<typeof opCounts>[0]);
    const depth = depthOf(perLayer[i]);
    if (layer.type === 'dense') {
      const r: LayerReport = { index: i, kind: 'linear', onnx_nodes: st.kind === 'affine' ? st.nodes : [], inputs, outputs: layer.weights.length, ops, depth };
      const refit = refits.get(i);
      if (refit) r.refit = refit;
      inputs = layer.weights.length;
      return r;
    }
    const { node, ...activation } = fits[fit++];
    return { index: i, kind: 'activation', onnx_nodes: [node], inputs, outputs: inputs, activation, ops, depth };
  });
}

/** The program in plaintext simulation on one record: its scores (before post-processing). */
export function simulatedScores(m: Pick<OnnxModel, 'compiled' | 'client'>, row: ArrayLike<number>): number[] {
  const [v] = packRecords(m.compiled.input, [preprocessRecord(row, m.client)]);
  const out = simulate(m.compiled.program, m.compiled.masks, v);
  return m.compiled.output.offsets.map((k) => out[k]);
}

/** The network of dense maps and fitted quadratics in plaintext (what the program computes). */
export function networkScores(m: Pick<OnnxModel, 'network' | 'client'>, row: ArrayLike<number>): number[] {
  return forward(m.network, preprocessRecord(row, m.client));
}

/** Class index of a record from the graph's outputs (as onnxruntime returns them), or undefined (regression). */
export function classOfOutputs(head: Head, outputs: Record<string, ArrayLike<number>>): number | undefined {
  if (head.task === 'regression') return undefined;
  for (const o of head.outputs) {
    const v = Array.from(outputs[o.name] ?? []);
    if (v.length === 0) continue;
    if (o.ops.includes('ArgMax')) return v[0];
    if (o.ops.includes('LinearClassifier label')) return head.labels!.indexOf(String(v[0]));
    if (v.length > 1) return v.indexOf(Math.max(...v));
    if (head.task === 'binary') return o.ops.includes('Sigmoid') ? (v[0] >= 0.5 ? 1 : 0) : v[0] >= 0 ? 1 : 0;
  }
  return undefined;
}

/** Class index from scores, as the client's post-processing decides it. */
export const classOfScores = (client: Pick<ClientPart, 'postprocess'>, scores: number[]) => classOf(client, scores);

/** The graph's outputs computed from scores (the client-side head): for comparisons with onnxruntime. */
export function headOutputs(head: Head, scores: number[]): Record<string, number[]> {
  return Object.fromEntries(head.outputs.map((o) => [o.name, o.of(scores)]));
}

/** Largest |a - b| over the numeric outputs (labels and argmax excepted: they count as agreement). */
export function outputError(head: Head, a: Record<string, ArrayLike<number>>, b: Record<string, ArrayLike<number>>): number {
  let worst = 0;
  for (const o of head.outputs) {
    if (o.ops.includes('ArgMax') || o.ops.includes('LinearClassifier label')) continue;
    const x = Array.from(a[o.name] ?? []),
      y = Array.from(b[o.name] ?? []);
    if (x.length !== y.length) return Infinity;
    x.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - y[i]))));
  }
  return worst;
}
