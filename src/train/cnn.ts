// Training HE-friendly networks with TensorFlow.js (WASM backend): degree-2 activations only,
// batch norm folded into the linear layer before the activation at export, the parity-sampled
// convolution the compiler packs cheaply (see src/model/network.ts), random affine
// augmentation, Adam with warm-up and cosine decay, label smoothing, weight averaging (EMA).
import * as tf from '@tensorflow/tfjs';
import type { Network, Layer } from '../model/network.ts';
import { augmentImage, seededRandom } from './augment.ts';
import { tfReady } from './fit.ts';
import { TrainingProgress } from './progress.ts';

export interface CnnOptions {
  arch: 'cnn' | 'mlp';
  filters: number;
  hidden: number;
  activation: 'square' | 'quadratic';
  batchNorm: boolean;
  epochs: number;
  batchSize: number;
  learningRate: number;
  l2: number;
  labelSmoothing: number;
  /** Dropout on the features entering the last dense layer, during training only. */
  dropout: number;
  ema: number;
  shift: number;
  rotation: number;
  scale: number;
  seed: number;
  log?: (line: string) => void;
  /** Show a progress bar on stderr (a terminal); else progress goes to `log` as plain lines. */
  bar?: boolean;
}

export const CNN_DEFAULTS: CnnOptions = {
  arch: 'cnn',
  filters: 16,
  hidden: 128,
  activation: 'square',
  batchNorm: true,
  epochs: 30,
  batchSize: 64,
  learningRate: 0.005,
  l2: 1e-4,
  labelSmoothing: 0.1,
  dropout: 0.2,
  ema: 0.999,
  shift: 2,
  rotation: 10,
  scale: 0.1,
  seed: 1,
};

const SIDE = 28;
const OUT = 12;
const K = 5;

/** im2col index: row (y*12+x), column g*25 + dy*5 + dx reads pixel (2y+a_g+dy, 2x+b_g+dx). */
const PATCH = (() => {
  const idx = new Int32Array(OUT * OUT * 100);
  for (let y = 0; y < OUT; y++)
    for (let x = 0; x < OUT; x++)
      for (let g = 0; g < 4; g++)
        for (let dy = 0; dy < K; dy++)
          for (let dx = 0; dx < K; dx++) idx[(y * OUT + x) * 100 + g * 25 + dy * K + dx] = (2 * y + ((g >> 1) & 1) + dy) * SIDE + 2 * x + (g & 1) + dx;
  return idx;
})();

type Params = Record<string, tf.Variable>;

export async function trainImageNetwork(
  images: ArrayLike<number>[],
  labels: number[],
  opts: Partial<CnnOptions> = {},
): Promise<{ network: Network; seconds: number }> {
  await tfReady();
  const o = { ...CNN_DEFAULTS, ...opts };
  const log = o.log ?? (() => {});
  const rand = seededRandom(o.seed);
  const randn = () => Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());
  const init = (shape: number[], std: number) =>
    tf.variable(
      tf.tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => randn() * std),
        shape,
      ),
    );
  const F = o.filters;
  const cnn = o.arch === 'cnn';
  const C = cnn ? F : o.hidden; // channels of the activation
  const featDim = cnn ? OUT * OUT * F : o.hidden;
  const mask = tf.tensor2d(
    Float32Array.from({ length: 100 * F }, (_, i) => (Math.floor(Math.floor(i / F) / 25) === ((i % F) & 3) ? 1 : 0)),
    [100, F],
  );

  const p: Params = {};
  if (cnn) {
    p.w1 = init([25, F], 0.2);
    p.b1 = tf.variable(tf.zeros([F]));
  } else {
    p.w1 = init([784, o.hidden], Math.sqrt(2 / (784 + o.hidden)));
    p.b1 = tf.variable(tf.zeros([o.hidden]));
  }
  if (o.batchNorm) {
    p.gamma = tf.variable(tf.ones([C]));
    p.beta = tf.variable(tf.zeros([C]));
  }
  if (o.activation === 'quadratic') {
    p.qa = tf.variable(tf.ones([C]));
    p.qb = tf.variable(tf.zeros([C]));
  }
  p.w2 = init([featDim, 10], Math.sqrt(2 / (featDim + 10)));
  p.b2 = tf.variable(tf.zeros([10]));
  const decayed = ['w1', 'w2'];

  const batchInput = (idx: number[], augmented: boolean) => {
    const tmp = new Float32Array(784);
    const width = cnn ? OUT * OUT * 100 : 784;
    const out = new Float32Array(idx.length * width);
    idx.forEach((k, i) => {
      let img: ArrayLike<number> = images[k];
      if (augmented) {
        augmentImage(images[k], tmp, SIDE, { shift: o.shift, rotationDeg: o.rotation, scale: o.scale }, rand);
        img = tmp;
      }
      if (cnn) for (let j = 0; j < width; j++) out[i * width + j] = img[PATCH[j]] / 255;
      else for (let j = 0; j < 784; j++) out[i * width + j] = img[j] / 255;
    });
    return cnn ? tf.tensor2d(out, [idx.length * OUT * OUT, 100]) : tf.tensor2d(out, [idx.length, 784]);
  };

  // Pre-activation: conv (im2col x block-diagonal kernel) or dense, then batch norm.
  const preActivation = (q: Params, X: tf.Tensor2D) => {
    const W = cnn ? tf.tile(q.w1, [4, 1]).mul(mask) : q.w1;
    let z: tf.Tensor = tf.matMul(X, W as tf.Tensor2D).add(q.b1);
    if (o.batchNorm) {
      const m = tf.moments(z, [0]);
      z = z
        .sub(m.mean)
        .mul(tf.rsqrt(m.variance.add(1e-5)))
        .mul(q.gamma)
        .add(q.beta);
    }
    return z;
  };
  const logitsOf = (q: Params, X: tf.Tensor2D, B: number) => {
    const z = preActivation(q, X);
    const h = o.activation === 'quadratic' ? z.square().mul(q.qa).add(z.mul(q.qb)) : z.square();
    let f: tf.Tensor = h.reshape([B, featDim]);
    if (o.dropout > 0) f = tf.dropout(f, o.dropout, undefined, Math.floor(rand() * 2 ** 31));
    return tf.matMul(f as tf.Tensor2D, q.w2).add(q.b2);
  };

  const vars = Object.values(p);
  const shadow: Params | undefined = o.ema > 0 ? Object.fromEntries(Object.entries(p).map(([k, v]) => [k, tf.variable(v.clone(), false)])) : undefined;
  const opt = tf.train.adam(o.learningRate);
  const n = images.length;
  const stepsPerEpoch = Math.ceil(n / o.batchSize);
  const total = stepsPerEpoch * o.epochs;
  const lrAt = (step: number) => {
    if (step < stepsPerEpoch) return (o.learningRate * (step + 1)) / stepsPerEpoch;
    const t = (step - stepsPerEpoch) / Math.max(1, total - stepsPerEpoch);
    return o.learningRate * (0.01 + 0.99 * 0.5 * (1 + Math.cos(Math.PI * t)));
  };
  const t0 = performance.now();
  const progress = new TrainingProgress({ epochs: o.epochs, stepsPerEpoch, log, bar: o.bar });
  let step = 0;
  try {
    for (let ep = 0; ep < o.epochs; ep++) {
      const perm = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      let lossSum = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
        const idx = perm.slice(s * o.batchSize, (s + 1) * o.batchSize);
        const X = batchInput(idx, true);
        const Y = tf.oneHot(
          tf.tensor1d(
            idx.map((k) => labels[k]),
            'int32',
          ),
          10,
        );
        (opt as unknown as { learningRate: number }).learningRate = lrAt(step);
        const cost = opt.minimize(
          () => {
            let loss = tf.losses.softmaxCrossEntropy(Y, logitsOf(p, X, idx.length), undefined, o.labelSmoothing) as tf.Scalar;
            for (const k of decayed) loss = loss.add(p[k].square().sum().mul(o.l2));
            return loss;
          },
          true,
          vars,
        );
        lossSum += (await cost!.data())[0] * idx.length;
        tf.dispose([cost!, X, Y]);
        if (shadow) {
          const d = Math.min(o.ema, (1 + step) / (10 + step));
          tf.tidy(() => {
            for (const k of Object.keys(p)) shadow[k].assign(shadow[k].mul(d).add(p[k].mul(1 - d)));
          });
        }
        step++;
        progress.step();
        // A turn of the event loop per step (microseconds, against milliseconds of work): a
        // SIGTERM's handler and the progress bar's timer run on it.
        await new Promise((resolve) => setImmediate(resolve));
      }
      progress.epochDone(ep + 1, lossSum / n);
    }
  } finally {
    progress.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  const final = shadow ?? p;
  const network = await exportNetwork(final, o, images, batchInput);
  tf.dispose([...Object.values(p), ...(shadow ? Object.values(shadow) : []), mask]);
  opt.dispose();
  return { network, seconds };
}

/** Folds batch norm (population statistics over the training set) and exports the layer graph. */
async function exportNetwork(
  q: Params,
  o: CnnOptions,
  images: ArrayLike<number>[],
  batchInput: (idx: number[], aug: boolean) => tf.Tensor2D,
): Promise<Network> {
  const cnn = o.arch === 'cnn';
  const F = o.filters;
  const C = cnn ? F : o.hidden;
  const arr = async (t: tf.Tensor) => Array.from(await t.data());
  let scale = new Array<number>(C).fill(1);
  let shift = new Array<number>(C).fill(0);
  if (o.batchNorm) {
    // Population mean and variance of the raw pre-activation (before batch norm).
    const s1 = new Float64Array(C),
      s2 = new Float64Array(C);
    let count = 0;
    for (let i = 0; i < images.length; i += 500) {
      const idx = Array.from({ length: Math.min(500, images.length - i) }, (_, j) => i + j);
      const X = batchInput(idx, false);
      const W = cnn
        ? tf.tile(q.w1, [4, 1]).mul(
            tf.tensor2d(
              Float32Array.from({ length: 100 * F }, (_, k) => (Math.floor(Math.floor(k / F) / 25) === ((k % F) & 3) ? 1 : 0)),
              [100, F],
            ),
          )
        : q.w1;
      const z = tf.matMul(X, W as tf.Tensor2D).add(q.b1);
      const v = await z.data();
      for (let r = 0; r < v.length / C; r++)
        for (let c = 0; c < C; c++) {
          s1[c] += v[r * C + c];
          s2[c] += v[r * C + c] ** 2;
        }
      count += v.length / C;
      tf.dispose(cnn ? [X, W, z] : [X, z]); // for the MLP, W is the variable itself
    }
    const g = await arr(q.gamma);
    const b = await arr(q.beta);
    scale = g.map((gc, c) => gc / Math.sqrt(s2[c] / count - (s1[c] / count) ** 2 + 1e-5));
    shift = b.map((bc, c) => bc - (s1[c] / count) * scale[c]);
  }
  const w1 = await arr(q.w1);
  const b1 = await arr(q.b1);
  const w2 = await arr(q.w2);
  const b2 = await arr(q.b2);
  const qa = o.activation === 'quadratic' ? await arr(q.qa) : new Array<number>(C).fill(1);
  const qb = o.activation === 'quadratic' ? await arr(q.qb) : new Array<number>(C).fill(0);
  const layers: Layer[] = [];
  const featDim = cnn ? OUT * OUT * F : o.hidden;
  const channelOf = (j: number) => (cnn ? j % F : j);
  if (cnn) {
    layers.push({
      type: 'conv2d-parity',
      kernel: Array.from({ length: F }, (_, f) =>
        Array.from({ length: K }, (_, dy) => Array.from({ length: K }, (_, dx) => w1[(dy * K + dx) * F + f] * scale[f])),
      ),
      bias: b1.map((v, f) => v * scale[f] + shift[f]),
    });
  } else {
    layers.push({
      type: 'dense',
      weights: Array.from({ length: o.hidden }, (_, h) => Array.from({ length: 784 }, (_, i) => w1[i * o.hidden + h] * scale[h])),
      bias: b1.map((v, h) => v * scale[h] + shift[h]),
    });
  }
  layers.push({
    type: 'quadratic',
    a: Array.from({ length: featDim }, (_, j) => qa[channelOf(j)]),
    b: Array.from({ length: featDim }, (_, j) => qb[channelOf(j)]),
    c: 0,
  });
  layers.push({ type: 'dense', weights: Array.from({ length: 10 }, (_, c) => Array.from({ length: featDim }, (_, j) => w2[j * 10 + c])), bias: b2 });
  return { input: { height: SIDE, width: SIDE }, layers };
}
