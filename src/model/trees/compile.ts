// `sealed compile` for tree ensembles: import (XGBoost JSON, ONNX-ML), choose the quantization
// by measurement on calibration records, build the circuit, size the CKKS parameters for the
// flood (circuit privacy) at 128-bit security, and return the bundle's client and server parts.
import { SealedError } from '../../errors.ts';
import { MAX_BITS_128, type CkksParams } from '../../fhe/params.ts';
import { FLOOD_SECURITY_BITS, floodSigma, type Privacy } from '../../fhe/privacy.ts';
import { relinearizeLeaves, type TreeCircuit, type TreeGroup } from '../../fhe/tree-circuit.ts';
import { modelIdOf } from '../client-part.ts';
import { FLOOD_PRECISION_BITS } from '../compile-batch.ts';
import { buildCircuit } from './circuit.ts';
import { predict, predictionOf, type TreeEnsemble, type TreeTask } from './ensemble.ts';
import { importOnnx } from './onnx.ts';
import { binsOf, inputOffsets, quantize, quantizedScores, type QuantizedEnsemble, type TreeBins } from './quantize.ts';
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
}

export interface TreeServerPart {
  model: 'trees';
  model_id: string;
  circuit: TreeCircuit;
}

export interface TreeCompileOptions {
  /** Bits of the quantization (2^bits bins per feature); default: the smallest that meets the agreement target on the calibration records. */
  bits?: number;
  privacy?: Privacy;
  floodSecurityBits?: number;
  features?: string[];
  labels?: string[];
  target?: string;
}

export interface CompiledTrees {
  client: TreeClientPart;
  server: TreeServerPart;
  /** The imported model and its quantized twin (what the encrypted circuit computes). */
  ensemble: TreeEnsemble;
  quantized: QuantizedEnsemble;
  report: { bits: number; calibrationAgreement: number; noiseL2Bits?: number; dataPrimeBits: number[] };
}

/** Leaf values are encoded at 2^LEAF_SCALE_BITS: rounding below 2^-31 per leaf. */
const LEAF_SCALE_BITS = 30;
const SPECIAL_PRIME_BITS = 60;
const FLOOD_DELTA = 2 ** -40;
const MAX_KEY_POLYS = 4096;
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

/**
 * A bound on |v|_2 of the results' honest noise, relative to their scale 2^(4a+S), with the tools
 * and conventions of compile-network.ts floodNoiseBound (|ab|_2 <= |a|_can |b|_2,
 * |x|_can <= sqrt(N) |x|_2, fresh |e|_2 <= 21 sqrt(N), key switching K):
 *  - literal (t or 1 - t; the constant 1 is exact at 2^a): rho0 = 21 sqrt(N) / 2^a, |m|_can <= U0 = 1 + N / 2^a;
 *  - pair product: 2 U0 rho0 + sqrt(N) rho0^2 (+ K / 2^(2a) when relinearized), |m|_can <= U0^2;
 *  - group sum for output k: sum over leaves of (|v| + eps) rho_pair + K / 2^(2a+S) (its relinearization),
 *    eps = N / 2^S the constant plaintext's worst-case encoding error; |m|_can <= sum (|v| + eps) U0^2;
 *    with `leaves` (relinearize 'leaf'), each pair is relinearized instead: sum (|v| + eps) (rho_pair +
 *    K / 2^(2a)), which is the larger (sum (|v| + eps) >= eps = N / 2^S), so it bounds both forms;
 *  - final product: U_top rho_G + U_G rho_top + sqrt(N) rho_top rho_G; the output sums these
 *    over groups and adds K / 2^(4a+S) for its relinearization.
 * No rescale happens, so the scales are exact powers of two (no prime-size margin needed).
 */
export function treeNoiseBound(groups: TreeGroup[], outputs: number, N: number, a: number, S: number, dataBits: number[], leaves = false): number {
  const sqrtN = Math.sqrt(N);
  const sCan = Math.sqrt(2 * N * Math.log((4 * N) / FLOOD_DELTA));
  const eCan = Math.sqrt(21 * N * Math.log((4 * N * MAX_KEY_POLYS) / FLOOD_DELTA));
  const R = (sqrtN / 2) * (1 + sCan);
  const K = sqrtN * eCan * dataBits.reduce((acc, b) => acc + 2 ** (b - SPECIAL_PRIME_BITS), 0) + R;
  const rho0 = (21 * sqrtN) / 2 ** a;
  const U0 = 1 + N / 2 ** a;
  const pair = 2 * U0 * rho0 + sqrtN * rho0 * rho0;
  const rhoTop = pair + K / 2 ** (2 * a);
  const Upair = U0 * U0;
  const eps = N / 2 ** S;
  let worst = 0;
  for (let k = 0; k < outputs; k++) {
    let rho = K / 2 ** (4 * a + S);
    for (const g of groups) {
      let w = 0;
      for (const l of g.leaves) if (l.values[k] !== 0) w += Math.abs(l.values[k]) + eps;
      if (w === 0) continue;
      const rhoG = leaves ? w * (pair + K / 2 ** (2 * a)) : w * pair + K / 2 ** (2 * a + S);
      const UG = w * Upair;
      rho += Upair * rhoG + UG * rhoTop + sqrtN * rhoTop * rhoG;
    }
    worst = Math.max(worst, rho);
  }
  return worst;
}

interface Sizing {
  N: number;
  a: number;
  dataBits: number[];
  rho: number;
}

/** The smallest ring and input scale whose chain holds the circuit and, when flooding, its flood. */
function size(groups: TreeGroup[], outputs: number, outBound: number, privacy: Privacy, lambda: number, leaves: boolean): Sizing {
  const outBits = Math.ceil(Math.log2(Math.max(1, outBound) * 1.01)) + 2;
  const target = 2 ** -FLOOD_PRECISION_BITS * Math.max(1, outBound);
  for (const N of [16384, 32768]) {
    for (let a = 40; a <= 120; a++) {
      const need = 4 * a + LEAF_SCALE_BITS + outBits;
      const k = Math.ceil(need / 60);
      const each = Math.max(20, Math.ceil(need / k));
      const dataBits = Array<number>(k).fill(each);
      if (k * each + SPECIAL_PRIME_BITS > MAX_BITS_128[N]) break;
      const rho = treeNoiseBound(groups, outputs, N, a, LEAF_SCALE_BITS, dataBits, leaves);
      // Without flooding, CKKS noise must still leave the scores 2^-FLOOD_PRECISION_BITS exact.
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
  const leaves = relinearizeLeaves(built.groups, ensemble.outputs);
  const { N, a, dataBits, rho } = size(built.groups, ensemble.outputs, outBound, privacy, lambda, leaves);
  const params: CkksParams = { scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: [...dataBits, SPECIAL_PRIME_BITS], securityLevel: 128 };
  const resultBits = 4 * a + LEAF_SCALE_BITS;
  const noiseL2Bits = privacy === 'flood' ? Math.log2(rho) + resultBits : undefined;
  const circuit: TreeCircuit = {
    params,
    inputScaleBits: a,
    leafScaleBits: LEAF_SCALE_BITS,
    inputs,
    outputs: ensemble.outputs,
    groups: built.groups,
    ...(leaves ? { relinearize: 'leaf' as const } : {}),
    privacy,
    noiseL2Bits,
    floodSecurityBits: privacy === 'flood' ? lambda : undefined,
  };
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
  };
  const serverJson = JSON.stringify(circuit);
  const model_id = modelIdOf(JSON.stringify(base), serverJson);
  return {
    client: { ...base, model_id },
    server: { model: 'trees', model_id, circuit },
    ensemble,
    quantized: model,
    report: { bits, calibrationAgreement: agreement, noiseL2Bits, dataPrimeBits: dataBits },
  };
}
