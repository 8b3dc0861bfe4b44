// `sealed train` on an IDX image channel: trains a small CNN, compiles it, writes a bundle
// whose program the server loads; bad hyperparameters are refused.
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { readClientPart, readServerPart } from '../../src/model/bundle.ts';
import { opCounts } from '../../src/fhe/program.ts';
import { loadNpmMnist } from '../../src/train/mnist.ts';
import { parseHyperparameters, train } from '../../src/train/train.ts';
import { cnnOptions } from '../../src/train/train-images.ts';
import { TrainingProgress } from '../../src/train/progress.ts';

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
  for (const [name, ids] of [
    ['train', pick.slice(0, 1000)],
    ['test', pick.slice(1000)],
  ] as const) {
    await mkdir(join(dir, name));
    await writeFile(
      join(dir, name, 'images-idx3-ubyte.gz'),
      gzipSync(
        idx(
          [ids.length, 28, 28],
          ids.flatMap((i) => Array.from(all.images[i])),
        ),
      ),
    );
    await writeFile(
      join(dir, name, 'labels-idx1-ubyte'),
      idx(
        [ids.length],
        ids.map((i) => all.labels[i]),
      ),
    );
  }
  const lines: string[] = [];
  const res = await train(
    { trainDir: join(dir, 'train'), testDir: join(dir, 'test'), modelDir: join(dir, 'model') },
    parseHyperparameters({ epochs: '3', filters: '8', input_copies: '5' }),
    (l) => lines.push(l),
  );
  t.ok(res.metrics.test_accuracy > 0.3, `learned something in 3 epochs: test accuracy ${res.metrics.test_accuracy}`);
  t.ok(Math.abs(res.metrics.test_accuracy_simulated - res.metrics.test_accuracy) <= 0.01, 'the compiled program agrees with the network');
  t.ok(
    lines.some((l) => /^\[metric\] test_accuracy=0\.\d+$/.test(l)),
    'metrics in a regex-friendly form',
  );
  const epochs = lines.filter((l) => l.startsWith('epoch '));
  t.match(
    epochs[0],
    /^epoch 1\/3 loss=\d+\.\d{4} epoch_seconds=\d+\.\d total_seconds=\d+\.\d \(about .+ left\)$/,
    'an epoch line: its own seconds, the total, the time left',
  );
  t.match(epochs[2], /^epoch 3\/3 loss=\d+\.\d{4} epoch_seconds=\d+\.\d total_seconds=\d+\.\d$/, 'nothing left after the last epoch');
  const secs = epochs.map((l) => [Number(/epoch_seconds=([\d.]+)/.exec(l)![1]), Number(/total_seconds=([\d.]+)/.exec(l)![1])]);
  t.ok(
    Math.abs(secs[2][1] - (secs[0][0] + secs[1][0] + secs[2][0])) < 0.25,
    `the total is the sum of the epochs (${secs.map((s) => s[0]).join(' + ')} = ${secs[2][1]})`,
  );
  // An IDX training with a test channel that holds no IDX pair is refused before it trains.
  await mkdir(join(dir, 'csv-test'));
  await writeFile(join(dir, 'csv-test', 'data.csv'), 'a,b\n1,2\n');
  await t.rejects(
    train({ trainDir: join(dir, 'train'), testDir: join(dir, 'csv-test'), modelDir: join(dir, 'model2') }, parseHyperparameters({ epochs: '1' }), () => {}),
    { message: /test channel .*csv-test holds no IDX images\/labels pair/ },
  );
  const { client } = await readClientPart(join(dir, 'model'));
  const server = await readServerPart(join(dir, 'model'));
  t.equal(client.features.length, 784);
  t.equal(client.input.recordsPerCiphertext, 1);
  t.ok(opCounts(server.program).rotations <= 24, 'a cheap program');
  // input_copies: the client sends the image with rotated copies for the first layer's baby steps.
  const first = server.program.steps[0];
  t.ok((client.input.rotations?.length ?? 0) > 0 && client.input.rotations!.length <= 4, `input_copies 5: ${client.input.rotations?.length} rotated copies`);
  t.same(first.op === 'linear' ? first.inputRotations : undefined, client.input.rotations, 'the program reads the copies the client sends');
  await t.rejects(
    train({ trainDir: join(dir, 'train'), modelDir: join(dir, 'model3') }, parseHyperparameters({ epochs: '1', input_copies: '0' }), () => {}),
    { message: /input_copies="0" is not a whole number >= 1/ },
    'a bad input_copies is refused before training',
  );
});

t.test('progress without a terminal: plain lines with the time left', async (t) => {
  const lines: string[] = [];
  const p = new TrainingProgress({ epochs: 2, stepsPerEpoch: 3, log: (l) => lines.push(l), everyMs: 0 });
  for (let ep = 1; ep <= 2; ep++) {
    for (let s = 0; s < 3; s++) p.step();
    p.epochDone(ep, 0.5);
  }
  t.same(
    lines.map((l) => l.replace(/\d+ s\b/g, 'N s').replace(/seconds=\d+\.\d\b/g, 'seconds=N')),
    [
      'epoch 1/2: 1/3 batches, about N s left',
      'epoch 1/2: 2/3 batches, about N s left',
      'epoch 1/2 loss=0.5000 epoch_seconds=N total_seconds=N (about N s left)',
      'epoch 2/2: 1/3 batches, about N s left',
      'epoch 2/2: 2/3 batches, about N s left',
      'epoch 2/2 loss=0.5000 epoch_seconds=N total_seconds=N',
    ],
  );
});

// `script` (util-linux) runs the command on a pseudo-terminal, as a person at a terminal sees it.
t.test(
  'progress at a terminal: `sealed train` draws a bar with the time left',
  { skip: existsSync('/usr/bin/script') ? false : 'needs /usr/bin/script for a terminal' },
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'sealed-tty-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const all = await loadNpmMnist();
    const ids = Array.from({ length: 640 }, (_, i) => (i * 7919) % all.images.length);
    await mkdir(join(dir, 'train'));
    await writeFile(
      join(dir, 'train', 'images-idx3-ubyte'),
      idx(
        [ids.length, 28, 28],
        ids.flatMap((i) => Array.from(all.images[i])),
      ),
    );
    await writeFile(
      join(dir, 'train', 'labels-idx1-ubyte'),
      idx(
        [ids.length],
        ids.map((i) => all.labels[i]),
      ),
    );
    const bin = fileURLToPath(new URL('../../bin/sealed.js', import.meta.url));
    const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
    const cmd = [
      process.execPath,
      bin,
      'train',
      '--train',
      join(dir, 'train'),
      '--model',
      join(dir, 'model'),
      '--output',
      join(dir, 'out'),
      '--hyperparameters',
      join(dir, 'none.json'),
      '--set',
      'epochs=2',
      '--set',
      'filters=4',
      '--set',
      'batch=false',
    ]
      .map(q)
      .join(' ');
    const { stdout } = await promisify(execFile)('/usr/bin/script', ['-qec', cmd, '/dev/null'], { maxBuffer: 1 << 24 });
    t.match(stdout, /training \[[█░]+\] \d+% \| epoch 1\/2 \| .+ left/, 'a bar with the epoch and the time left');
    t.match(stdout, /epoch 2\/2 loss=\d+\.\d{4} epoch_seconds=[\d.]+ total_seconds=[\d.]+/, 'the epoch lines as well');
  },
);

t.test('image hyperparameters are checked', async (t) => {
  t.same(cnnOptions({ model: 'mlp', hidden: '64', batch_norm: 'false' }), { arch: 'mlp', hidden: 64, batchNorm: false });
  t.throws(() => cnnOptions({ model: 'resnet' }), { message: /model="resnet" is not one of cnn, mlp/ });
  t.throws(() => cnnOptions({ activation: 'relu' }), { message: /activation="relu"/ });
  t.throws(() => cnnOptions({ filters: 'x' }), { message: /filters="x"/ });
});

t.test('deskew straightens a slanted stroke and centres it', async (t) => {
  const { deskew } = await import('../../src/model/deskew.ts');
  const img = new Array<number>(784).fill(0);
  for (let r = 4; r < 24; r++) img[r * 28 + Math.round(6 + 0.5 * r)] = 255; // leans right
  const out = deskew(img, 28);
  const colOfRow = (a: number[], r: number) => {
    let s = 0,
      w = 0;
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
