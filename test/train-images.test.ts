// `sealed train` on an IDX image channel: trains a small CNN, compiles it, writes a bundle
// whose program the server loads; bad hyperparameters are refused.
import t from 'tap';
import { gzipSync } from 'node:zlib';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readClientPart, readServerPart } from '../src/model/bundle.ts';
import { opCounts } from '../src/fhe/program.ts';
import { loadNpmMnist } from '../src/train/mnist.ts';
import { parseHyperparameters, train } from '../src/train/train.ts';
import { cnnOptions } from '../src/train/train-images.ts';

function idx(dims: number[], data: number[]): Uint8Array {
  const head = new Uint8Array(4 + 4 * dims.length);
  head[2] = 8;
  head[3] = dims.length;
  const v = new DataView(head.buffer);
  dims.forEach((d, i) => v.setUint32(4 + 4 * i, d, false));
  const out = new Uint8Array(head.length + data.length);
  out.set(head);
  out.set(data, head.length);
  return out;
}

t.test('IDX channel -> CNN bundle', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-img-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const all = await loadNpmMnist();
  const pick = Array.from({ length: 1200 }, (_, i) => (i * 7919) % all.images.length); // every digit
  for (const [name, ids] of [['train', pick.slice(0, 1000)], ['test', pick.slice(1000)]] as const) {
    await mkdir(join(dir, name));
    await writeFile(join(dir, name, 'images-idx3-ubyte.gz'), gzipSync(idx([ids.length, 28, 28], ids.flatMap((i) => all.images[i]))));
    await writeFile(join(dir, name, 'labels-idx1-ubyte'), idx([ids.length], ids.map((i) => all.labels[i])));
  }
  const lines: string[] = [];
  const res = await train({ trainDir: join(dir, 'train'), testDir: join(dir, 'test'), modelDir: join(dir, 'model') }, parseHyperparameters({ epochs: '3', filters: '8' }), (l) => lines.push(l));
  t.ok(res.metrics.test_accuracy > 0.3, `learned something in 3 epochs: test accuracy ${res.metrics.test_accuracy}`);
  t.ok(Math.abs(res.metrics.test_accuracy_simulated - res.metrics.test_accuracy) <= 0.01, 'the compiled program agrees with the network');
  t.ok(lines.some((l) => /^\[metric\] test_accuracy=0\.\d+$/.test(l)), 'metrics in a regex-friendly form');
  const { client } = await readClientPart(join(dir, 'model'));
  const server = await readServerPart(join(dir, 'model'));
  t.equal(client.features.length, 784);
  t.equal(client.input.recordsPerCiphertext, 1);
  t.ok(opCounts(server.program).rotations <= 24, 'a cheap program');
});

t.test('image hyperparameters are checked', async (t) => {
  t.same(cnnOptions({ model: 'mlp', hidden: '64', batch_norm: 'false' }), { arch: 'mlp', hidden: 64, batchNorm: false });
  t.throws(() => cnnOptions({ model: 'resnet' }), { message: /model="resnet" is not one of cnn, mlp/ });
  t.throws(() => cnnOptions({ activation: 'relu' }), { message: /activation="relu"/ });
  t.throws(() => cnnOptions({ filters: 'x' }), { message: /filters="x"/ });
});

t.test('deskew straightens a slanted stroke and centres it', async (t) => {
  const { deskew } = await import('../src/model/deskew.ts');
  const img = new Array<number>(784).fill(0);
  for (let r = 4; r < 24; r++) img[r * 28 + Math.round(6 + 0.5 * r)] = 255; // leans right
  const out = deskew(img, 28);
  const colOfRow = (a: number[], r: number) => {
    let s = 0, w = 0;
    for (let c = 0; c < 28; c++) {
      s += c * a[r * 28 + c];
      w += a[r * 28 + c];
    }
    return w > 0 ? s / w : NaN;
  };
  const before = colOfRow(img, 22) - colOfRow(img, 6);
  const after = colOfRow(out, 22) - colOfRow(out, 6);
  t.ok(Math.abs(before) > 7, `slanted before (${before.toFixed(1)} columns)`);
  t.ok(Math.abs(after) < 1, `upright after (${after.toFixed(2)} columns)`);
  t.ok(Math.abs(colOfRow(out, 14) - 14) < 1.5, 'centred');
});
