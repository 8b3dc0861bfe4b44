// Image models (MNIST): a trained network -> compiled CKKS program -> bundle. The client
// sends raw pixels (0..255); it scales them to [0, 1] before encryption.
import { writeBundle, type Manifest } from '../model/bundle.ts';
import { CLIENT_FORMAT, type ClientPart } from '../model/client-part.ts';
import { compileNetwork, type CompileOptions } from '../model/compile-network.ts';
import type { CompiledModel } from '../model/compile-linear.ts';
import { forward, type Network } from '../model/network.ts';
import { packRecords } from '../model/layout.ts';
import { simulate } from '../model/simulate.ts';
import { preprocessRecord } from '../model/postprocess.ts';
import { deskew } from '../model/deskew.ts';
import { batchOutputBound, compileBatch, type BatchCompileOptions } from '../model/compile-batch.ts';
import { crossover, measureBatchUnitCosts, measureSingleCost } from '../fhe/batch-cost.ts';
import { dataPrimesOf, outputPrimesOf, outputsOf, recordsPerBatch, resultPrimesOf, resultScale, resultSize, type BatchPlan } from '../fhe/batch-plan.ts';

export const PIXEL_SCALE = 255;

export interface ImageBundle {
  manifest: Manifest;
  compiled: CompiledModel;
  client: ClientPart;
}

/**
 * `samplePixels`: raw images (0..255); `deskew`: the client deskews every image first; `options`:
 * the compiler's (privacy: circuit privacy of the results, default as compileNetwork's).
 */
export function compileImageModel(
  net: Network,
  samplePixels: ArrayLike<number>[],
  deskewImages = false,
  options: CompileOptions = {},
): { compiled: CompiledModel; client: ClientPart } {
  const n = net.input.height * net.input.width;
  const image = { side: net.input.width, deskew: deskewImages };
  const scaled = samplePixels.map((r) =>
    preprocessRecord(r, { image, preprocess: { mean: new Array<number>(n).fill(0), std: new Array<number>(n).fill(PIXEL_SCALE) } }),
  );
  const compiled = compileNetwork(net, scaled, options);
  const p = compiled.program;
  const outputs = compiled.output.count;
  const client: ClientPart = {
    format: CLIENT_FORMAT,
    version: 1,
    task: 'multiclass',
    params: p.params,
    input_scale_bits: p.inputScaleBits,
    galois_steps: p.galoisSteps,
    relin: p.relin,
    features: Array.from({ length: n }, (_, j) => `pixel${j}`),
    preprocess: { mean: new Array<number>(n).fill(0), std: new Array<number>(n).fill(PIXEL_SCALE) },
    image,
    input: compiled.input,
    output: compiled.output,
    postprocess: { kind: 'softmax' },
    labels: Array.from({ length: outputs }, (_, c) => String(c)),
    target: 'label',
  };
  return { compiled, client };
}

/**
 * Adds batch mode when the network fits it: the plan, and in the client part its parameters and
 * the crossover (record count from which it costs less), from unit costs measured here.
 */
export async function addBatchMode(
  net: Network,
  built: { compiled: CompiledModel; client: ClientPart },
  samplePixels: ArrayLike<number>[],
  o: Pick<BatchCompileOptions, 'inputFactors' | 'report' | 'image'> = {},
): Promise<BatchPlan | undefined> {
  const samples = samplePixels.map((r) => preprocessRecord(r, built.client));
  const plan = compileBatch(net, samples, o);
  if (!plan) return undefined;
  // The crossover is the threshold the SDK picks a layout by: a unit cost a few percent off moves
  // it a few percent. So 4 runs of each SEAL step (the benchmarks, which explain their figures
  // with these costs, take 16), and the single layout's at 3, as the compile report's.
  const [batchCosts, single] = [await measureBatchUnitCosts(plan, 4), await measureSingleCost(built.compiled.program)];
  built.client.batch = {
    params: plan.params,
    input_scale_bits: plan.inputScaleBits,
    records_per_batch: recordsPerBatch(plan),
    outputs: outputsOf(plan),
    result_size: resultSize(plan),
    ...(resultPrimesOf(plan) < dataPrimesOf(plan) ? { result_primes: resultPrimesOf(plan) } : {}),
    ...(outputPrimesOf(plan) > resultPrimesOf(plan) ? { flood_primes: outputPrimesOf(plan) } : {}),
    output_scale_bits: Math.log2(resultScale(plan)),
    crossover: crossover(plan, batchCosts, single, built.client.input.recordsPerCiphertext),
    output_bound: batchOutputBound(plan, samples, o.inputFactors),
  };
  if (o.inputFactors) built.client.batch.input_factors = o.inputFactors;
  if (plan.inputBox) built.client.batch.input_box = plan.inputBox;
  return plan;
}

export async function writeImageBundle(
  dir: string,
  net: Network,
  built: { compiled: CompiledModel; client: ClientPart },
  metrics: Manifest['metrics'],
  batch?: BatchPlan,
): Promise<ImageBundle> {
  const { compiled, client } = built;
  const manifest = await writeBundle(dir, client, compiled.program, compiled.masks, metrics, { 'server/network.json': JSON.stringify(net) }, batch);
  return { manifest, compiled, client };
}

export function plaintextAccuracy(net: Network, pixels: ArrayLike<number>[], labels: number[], deskewImages = false): number {
  let ok = 0;
  pixels.forEach((img, i) => {
    const logits = forward(
      net,
      Array.from(deskewImages ? deskew(img, net.input.width) : img, (v) => v / PIXEL_SCALE),
    );
    if (logits.indexOf(Math.max(...logits)) === labels[i]) ok++;
  });
  return ok / pixels.length;
}

export function simulatedAccuracy(compiled: CompiledModel, client: ClientPart, pixels: ArrayLike<number>[], labels: number[]): number {
  let ok = 0;
  pixels.forEach((img, i) => {
    const [v] = packRecords(compiled.input, [preprocessRecord(img, client)]);
    const out = simulate(compiled.program, compiled.masks, v);
    const logits = compiled.output.offsets.map((o) => out[o]);
    if (logits.indexOf(Math.max(...logits)) === labels[i]) ok++;
  });
  return ok / pixels.length;
}
