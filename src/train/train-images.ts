// `sealed train` on image channels (IDX files, as MNIST): an HE-friendly network, compiled
// for encrypted single-image inference. Hyperparameters (strings; defaults in cnn.ts):
// model (cnn | mlp), filters, hidden, activation (square | quadratic), batch_norm, epochs,
// batch_size, learning_rate, l2, label_smoothing, dropout, ema, augment_shift, augment_rotation,
// augment_scale, seed, deskew (default true: the client deskews images before encryption),
// batch (default true: also compile batch mode when the network fits it), input_copies (default
// 1: at most this many ciphertexts per query, the image and rotated copies of it; see
// docs/bring-your-own-model.md, Latency for bytes).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { CNN_DEFAULTS, trainImageNetwork, type CnnOptions } from './cnn.ts';
import { addBatchMode, compileImageModel, plaintextAccuracy, simulatedAccuracy, writeImageBundle } from './image-model.ts';
import { loadIdxPair } from './mnist.ts';
import { deskew } from '../model/deskew.ts';
import { findIdxPair, type Hyperparameters, type TrainPaths, type TrainResult } from './job.ts';

export function cnnOptions(raw: Record<string, string>): Partial<CnnOptions> {
  const o: Partial<CnnOptions> = {};
  const num = (k: string) => {
    if (raw[k] === undefined) return undefined;
    const v = Number(raw[k]);
    if (!Number.isFinite(v) || v < 0) throw new SealedError('bad-data', `hyperparameter ${k}="${raw[k]}" is not a non-negative number`);
    return v;
  };
  const set = <K extends keyof CnnOptions>(key: K, v: CnnOptions[K] | undefined) => {
    if (v !== undefined) o[key] = v;
  };
  const model = raw.model ?? 'cnn';
  if (model !== 'cnn' && model !== 'mlp') throw new SealedError('bad-data', `hyperparameter model="${model}" is not one of cnn, mlp`);
  set('arch', model);
  const act = raw.activation;
  if (act !== undefined && act !== 'square' && act !== 'quadratic')
    throw new SealedError('bad-data', `hyperparameter activation="${act}" is not one of square, quadratic`);
  set('activation', act as CnnOptions['activation'] | undefined);
  if (raw.batch_norm !== undefined) set('batchNorm', raw.batch_norm === 'true' || raw.batch_norm === '1');
  set('filters', num('filters'));
  set('hidden', num('hidden'));
  set('epochs', num('epochs'));
  set('batchSize', num('batch_size'));
  set('learningRate', num('learning_rate'));
  set('l2', num('l2'));
  set('labelSmoothing', num('label_smoothing'));
  set('dropout', num('dropout'));
  set('ema', num('ema'));
  set('shift', num('augment_shift'));
  set('rotation', num('augment_rotation'));
  set('scale', num('augment_scale'));
  set('seed', num('seed'));
  return o;
}

export async function trainImages(paths: TrainPaths, hp: Hyperparameters, log: (line: string) => void, bar = false): Promise<TrainResult> {
  const files = (await findIdxPair(paths.trainDir))!;
  const testFiles = paths.testDir ? await findIdxPair(paths.testDir) : undefined;
  if (paths.testDir && !testFiles) {
    throw new SealedError(
      'bad-data',
      `the test channel ${paths.testDir} holds no IDX images/labels pair`,
      'put …images-idx3-ubyte[.gz] and …labels-idx1-ubyte[.gz] in it (the training data is IDX), or leave the test channel out',
    );
  }
  const copies = hp.raw.input_copies;
  const inputCopies = copies === undefined ? undefined : Number(copies);
  if (inputCopies !== undefined && !(Number.isInteger(inputCopies) && inputCopies >= 1))
    throw new SealedError('bad-data', `hyperparameter input_copies="${copies}" is not a whole number >= 1`, 'leave it out for one ciphertext per query');
  const train = await loadIdxPair(files.images, files.labels);
  const deskewImages = (hp.raw.deskew ?? 'true') === 'true' || hp.raw.deskew === '1';
  const trainImages = deskewImages ? train.images.map((img) => deskew(img, 28)) : train.images;
  const opts = { ...cnnOptions(hp.raw), log, bar };
  log(`training ${opts.arch ?? CNN_DEFAULTS.arch} on ${train.images.length} images`);
  const { network, seconds } = await trainImageNetwork(trainImages, train.labels, opts);
  const metrics: Record<string, number> = {
    train_seconds: Math.round(seconds),
    train_accuracy: plaintextAccuracy(network, train.images.slice(0, 2000), train.labels.slice(0, 2000), deskewImages),
  };
  if (testFiles) {
    const test = await loadIdxPair(testFiles.images, testFiles.labels);
    metrics.test_accuracy = plaintextAccuracy(network, test.images, test.labels, deskewImages);
  }
  const built = compileImageModel(network, train.images.slice(0, 300), deskewImages, { inputCopies });
  const { compiled, client } = built;
  const batch = (hp.raw.batch ?? 'true') === 'true' ? await addBatchMode(network, built, train.images.slice(0, 1000)) : undefined;
  if (batch)
    log(`batch mode: ${batch.params.coeffModulusBits.length - 1} x ${batch.params.coeffModulusBits[0]}-bit primes, from ${client.batch!.crossover} records on`);
  if (testFiles) {
    // The compiled program run in plaintext: same layout, masks, rotations and folds as the
    // encrypted evaluation, without the noise.
    const test = await loadIdxPair(testFiles.images, testFiles.labels);
    metrics.test_accuracy_simulated = simulatedAccuracy(compiled, client, test.images, test.labels);
  }
  for (const [k, v] of Object.entries(metrics)) log(`[metric] ${k}=${v}`);
  const { manifest } = await writeImageBundle(paths.modelDir, network, { compiled, client }, metrics, batch);
  if (paths.outputDataDir) {
    await mkdir(paths.outputDataDir, { recursive: true });
    await writeFile(join(paths.outputDataDir, 'metrics.json'), JSON.stringify(metrics, null, 1) + '\n');
  }
  const p = compiled.program.params;
  log(
    `model ${manifest.model_id}: ring ${p.polyModulusDegree}, modulus ${p.coeffModulusBits.join('+')} bits, ${compiled.program.galoisSteps.length} rotation keys`,
  );
  return { manifest, metrics };
}
