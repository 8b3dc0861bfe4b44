// `sealed compile` for tree ensembles: import (XGBoost JSON, ONNX-ML), choose the quantization
// by measurement on calibration records, build the circuit, size the CKKS parameters for the
// flood (circuit privacy) at 128-bit security, and return the bundle's client and server parts.
import { SealedError } from '../../errors.ts';
import { MAX_BITS_128, type CkksParams } from '../../fhe/params.ts';
import { FLOOD_SECURITY_BITS, floodSigma, type Privacy } from '../../fhe/privacy.ts';
import { relinearizeLeaves, treeOpCounts, type TreeCircuit, type TreeShape } from '../../fhe/tree-circuit.ts';
import { factoredDepth, type TreeOpCounts } from '../../fhe/tree-factored.ts';
import { modelIdOf } from '../client-part.ts';
import { MAX_PATH, buildCircuit } from './circuit.ts';
import { buildFactored, factoredIsCheaper } from './factored.ts';
import { affordablePrecision, decisionPrecision, type DecisionPrecision } from './precision.ts';
import { SPECIAL_PRIME_BITS, factoredNoiseBound, treeNoiseBound } from './noise.ts';
import { predict, predictionOf, type TreeEnsemble, type TreeTask } from './ensemble.ts';
import { importOnnx } from './onnx.ts';
import { binsOf, inputOffsets, quantize, quantizedScores, type QuantizedEnsemble, type TreeBins } from './quantize.ts';
import { compileSingle, type SingleClientPart, type SingleServerPart } from './single.ts';
import { importXgboost } from './xgboost.ts';

export type TreeModelKind = 'xgboost-json' | 'onnx-ml';

/** The client part of a tree bundle: bins and parameters; no threshold, leaf or structure. */
export interface TreeClientPart {
  format: 'sealed-client';
  version: 1;
  model: 'trees';
  model_id: string;
  task: TreeTask;
  params: CkksParams;
  input_scale_bits: number;
  result_scale_bits: number;
  records_per_batch: number;
  /** Thermometer ciphertexts per batch: the features' edge counts, summed. */
  inputs: number;
  outputs: number;
  features: string[];
  labels?: string[];
  /** The training data's target column (`sealed train`): `predict` reads true labels from it to report accuracy. */
  target?: string;
  post: TreeEnsemble['post'];
  bins: TreeBins;
  privacy: Privacy;
  /** The single-record form (single.ts), when the model has one: its own parameters and keys. */
  single?: SingleClientPart;
}

export interface TreeServerPart {
  model: 'trees';
  model_id: string;
  circuit: TreeCircuit;
  single?: SingleServerPart;
}

export interface TreeCompileOptions {
  /** Bits of the quantization (2^bits bins per feature); default: the smallest that meets the agreement target on the calibration records. */
  bits?: number;
  privacy?: Privacy;
  floodSecurityBits?: number;
  features?: string[];
  labels?: string[];
  target?: string;
  /** The circuit's form; default: the one with the smaller estimated cost (factored.ts). */
  form?: 'grouped' | 'factored';
  /** Compile the single-record form too (default: when the model fits it). */
  single?: boolean;
}

export interface CompiledTrees {
  client: TreeClientPart;
  server: TreeServerPart;
  /** The imported model and its quantized twin (what the encrypted circuit computes). */
  ensemble: TreeEnsemble;
  quantized: QuantizedEnsemble;
  report: {
    bits: number;
    calibrationAgreement: number;
    noiseL2Bits?: number;
    dataPrimeBits: number[];
    form: 'grouped' | 'factored';
    /** What the server does per batch (tree-circuit.ts treeOpCounts). */
    operations: TreeOpCounts;
    /** The single-record form's chain (bits per prime) and the precision it holds, or why the model has none (single.ts). */
    single: { coeffModulusBits: number[]; precisionBits: number } | { refused: string };
    /**
     * The scores' precision (precision.ts): what the calibration records' closest call asks
     * for (`bits`) and what the batch chain holds at the floor's cost (`batchBits`).
     */
    precision: DecisionPrecision & { batchBits: number };
  };
}

/** Leaf values are encoded at 2^LEAF_SCALE_BITS: rounding below 2^-31 per leaf. */
const LEAF_SCALE_BITS = 30;
/** Agreement of the quantized model with the original on the calibration records that picks the bits. */
const AGREEMENT_TARGET = 0.995;
const BITS_TRIED = [3, 4, 5, 6, 7, 8];

export function importTrees(bytes: Uint8Array, kind: TreeModelKind): TreeEnsemble {
  if (kind === 'xgboost-json') return importXgboost(bytes);
  if (kind === 'onnx-ml') return importOnnx(bytes);
  throw new SealedError('bad-request', `model kind ${String(kind)} is not a tree format`, 'use xgboost-json or onnx-ml');
}

/** Agreement of quantized predictions with the original's on records (regression: 1 - relative RMS difference). */
export function quantizedAgreement(e: TreeEnsemble, q: QuantizedEnsemble, bins: TreeBins, records: ArrayLike<number>[]): number {
  if (e.post === 'identity') {
    let d = 0,
      v = 0;
    const orig = records.map((r) => predict(e, r));
    const mean = orig.reduce((a, b) => a + b, 0) / orig.length;
    records.forEach((r, i) => {
      d += (quantizedScores(q, binsOf(bins, r))[0] - orig[i]) ** 2;
      v += (orig[i] - mean) ** 2;
    });
    return 1 - Math.sqrt(d / Math.max(v, 1e-300));
  }
  let same = 0;
  for (const r of records) if (predictionOf(e, quantizedScores(q, binsOf(bins, r))) === predict(e, r)) same++;
  return same / records.length;
}

interface Sizing {
  N: number;
  a: number;
  dataBits: number[];
  rho: number;
}

/**
 * The smallest ring and input scale whose chain holds the circuit and, when flooding, its flood.
 * `depth`: factors per product (the result's scale is 2^(depth a + S)); `bound`: the form's bound
 * on the results' relative noise (noise.ts); `precisionBits`: the scores' error per slot is at
 * most 2^-precisionBits max(1, outBound) (precision.ts).
 */
function size(
  depth: number,
  outBound: number,
  precisionBits: number,
  privacy: Privacy,
  lambda: number,
  bound: (N: number, a: number, dataBits: number[]) => number,
): Sizing {
  const outBits = Math.ceil(Math.log2(Math.max(1, outBound) * 1.01)) + 2;
  const target = 2 ** -precisionBits * Math.max(1, outBound);
  for (const N of [16384, 32768]) {
    for (let a = 40; a <= 120; a++) {
      const need = depth * a + LEAF_SCALE_BITS + outBits;
      const k = Math.ceil(need / 60);
      const each = Math.max(20, Math.ceil(need / k));
      const dataBits = Array<number>(k).fill(each);
      if (k * each + SPECIAL_PRIME_BITS > MAX_BITS_128[N]) break;
      const rho = bound(N, a, dataBits);
      // Without flooding, CKKS noise must still leave the scores that exact.
      const err = privacy === 'flood' ? floodSigma(rho, lambda) * Math.sqrt(N / 2) : rho * Math.sqrt(N);
      if (err > target) continue;
      return { N, a, dataBits, rho };
    }
  }
  throw new SealedError(
    'bad-data',
    'no CKKS parameters within the 128-bit bound hold this ensemble with circuit privacy',
    'use fewer or shallower trees, or smaller leaf values',
  );
}

export function compileTreeModel(bytes: Uint8Array, kind: TreeModelKind, calibration?: ArrayLike<number>[], o: TreeCompileOptions = {}): CompiledTrees {
  return compileTreeEnsemble(importTrees(bytes, kind), calibration, o);
}

/** Compiles an ensemble already in memory (an import, or one `sealed train` fitted). */
export function compileTreeEnsemble(ensemble: TreeEnsemble, calibration?: ArrayLike<number>[], o: TreeCompileOptions = {}): CompiledTrees {
  if (!calibration || calibration.length < 16) {
    throw new SealedError(
      'bad-request',
      'compiling a tree ensemble needs calibration records (at least 16)',
      "pass a CSV of typical inputs (e.g. the training data): the quantization bins are their quantiles, never the model's thresholds",
    );
  }
  calibration.forEach((r, i) => {
    if (r.length !== ensemble.features)
      throw new SealedError(
        'bad-data',
        `calibration record ${i} has ${r.length} values, the model has ${ensemble.features} features`,
        "pass records with exactly the model's features, in its order",
      );
  });
  const privacy = o.privacy ?? 'flood';
  const lambda = o.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  let chosen: { bits: number; bins: TreeBins; model: QuantizedEnsemble; agreement: number } | undefined;
  for (const bits of o.bits ? [o.bits] : BITS_TRIED) {
    const { bins, model } = quantize(ensemble, calibration, bits);
    const agreement = quantizedAgreement(ensemble, model, bins, calibration);
    chosen = { bits, bins, model, agreement };
    if (agreement >= AGREEMENT_TARGET) break;
  }
  const { bits, bins, model, agreement } = chosen!;
  const { offsets, inputs } = inputOffsets(bins.edges);
  const built = buildCircuit(model, bins.edges, offsets, inputs);
  const outBound = Math.max(...built.outBound);
  const K = ensemble.outputs;
  const leaves = relinearizeLeaves(built.groups, K);
  const grouped: TreeShape = { groups: built.groups, outputs: K, ...(leaves ? { relinearize: 'leaf' as const } : {}) };
  const root = buildFactored(built.leaves, offsets, K);
  const form = o.form ?? (factoredIsCheaper(root, grouped) ? 'factored' : 'grouped');
  const depth = form === 'factored' ? factoredDepth(root) : MAX_PATH;
  const precision = decisionPrecision(
    ensemble,
    calibration.map((r) => quantizedScores(model, binsOf(bins, r))),
    outBound,
  );
  const sized = affordablePrecision(
    precision.bits,
    (bits) =>
      size(depth, outBound, bits, privacy, lambda, (N, a, dataBits) =>
        form === 'factored'
          ? factoredNoiseBound(root, K, N, a, LEAF_SCALE_BITS, dataBits)
          : treeNoiseBound(built.groups, K, N, a, LEAF_SCALE_BITS, dataBits, leaves),
      ),
    (s) => s.N * (s.dataBits.length + 1),
  );
  const { N, a, dataBits, rho } = sized.chain;
  const params: CkksParams = { scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: [...dataBits, SPECIAL_PRIME_BITS], securityLevel: 128 };
  const resultBits = depth * a + LEAF_SCALE_BITS;
  const noiseL2Bits = privacy === 'flood' ? Math.log2(rho) + resultBits : undefined;
  const circuit: TreeCircuit = {
    params,
    inputScaleBits: a,
    leafScaleBits: LEAF_SCALE_BITS,
    inputs,
    outputs: K,
    ...(form === 'factored' ? { groups: [], factored: root } : { groups: built.groups, ...(leaves ? { relinearize: 'leaf' as const } : {}) }),
    privacy,
    noiseL2Bits,
    floodSecurityBits: privacy === 'flood' ? lambda : undefined,
  };
  const single = o.single === false ? { refused: 'not asked for' } : compileSingle(built.leaves, offsets, inputs, K, outBound, precision.bits, privacy, lambda);
  const features = o.features ?? Array.from({ length: ensemble.features }, (_, f) => `f${f}`);
  const base = {
    format: 'sealed-client' as const,
    version: 1 as const,
    model: 'trees' as const,
    task: ensemble.task,
    params,
    input_scale_bits: a,
    result_scale_bits: resultBits,
    records_per_batch: N / 2,
    inputs,
    outputs: ensemble.outputs,
    features,
    labels: o.labels ?? ensemble.labels,
    target: o.target,
    post: ensemble.post,
    bins,
    privacy,
    ...('client' in single ? { single: single.client } : {}),
  };
  const serverPart = { model: 'trees' as const, circuit, ...('server' in single ? { single: single.server } : {}) };
  const serverJson = JSON.stringify(serverPart);
  const model_id = modelIdOf(JSON.stringify(base), serverJson);
  return {
    client: { ...base, model_id },
    server: { ...serverPart, model_id },
    ensemble,
    quantized: model,
    report: {
      bits,
      calibrationAgreement: agreement,
      noiseL2Bits,
      dataPrimeBits: dataBits,
      form,
      operations: treeOpCounts(circuit),
      single: 'client' in single ? { coeffModulusBits: single.client.params.coeffModulusBits, precisionBits: single.precisionBits } : single,
      precision: { ...precision, batchBits: sized.bits },
    },
  };
}
