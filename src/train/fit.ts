// Fitting linear models with TensorFlow.js on its WASM backend (Adam, mini-batches, L2).
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { seededRandom } from './augment.ts';
import type { Task } from '../model/client-part.ts';

export interface FitOptions {
  task: Task;
  classes: number;
  epochs: number;
  learningRate: number;
  batchSize: number;
  l2: number;
  seed: number;
}

export interface FittedLinear {
  weights: number[][];
  bias: number[];
  finalLoss: number;
}

let backendReady: Promise<void> | undefined;
export function tfReady(): Promise<void> {
  backendReady ??= (async () => {
    await tf.setBackend('wasm');
    await tf.ready();
  })();
  return backendReady;
}

/** x: standardised features; y: 0/1 (binary), class index (multiclass) or standardised value. */
export async function fitLinear(x: number[][], y: number[], o: FitOptions): Promise<FittedLinear> {
  await tfReady();
  const units = o.task === 'multiclass' ? o.classes : 1;
  const model = tf.sequential({
    layers: [
      tf.layers.dense({
        units,
        inputShape: [x[0].length],
        kernelInitializer: tf.initializers.glorotUniform({ seed: o.seed }),
        kernelRegularizer: o.l2 > 0 ? tf.regularizers.l2({ l2: o.l2 }) : undefined,
        activation: o.task === 'binary' ? 'sigmoid' : o.task === 'multiclass' ? 'softmax' : 'linear',
      }),
    ],
  });
  model.compile({
    optimizer: tf.train.adam(o.learningRate),
    loss: o.task === 'binary' ? 'binaryCrossentropy' : o.task === 'multiclass' ? 'sparseCategoricalCrossentropy' : 'meanSquaredError',
  });
  // Our own seeded shuffle each epoch (fit's shuffle uses Math.random): the same data and
  // hyperparameters give the same model.
  const rand = seededRandom(o.seed);
  const order = Array.from({ length: x.length }, (_, i) => i);
  let lastLoss = NaN;
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const xs = tf.tensor2d(order.map((i) => x[i]));
    const ys = tf.tensor2d(
      order.map((i) => y[i]),
      [y.length, 1],
    );
    const h = await model.fit(xs, ys, { epochs: 1, batchSize: o.batchSize, shuffle: false, verbose: 0 });
    lastLoss = (h.history.loss as number[])[0];
    xs.dispose();
    ys.dispose();
    // fit resolves through microtasks only, so without this turn of the event loop a SIGTERM
    // (StopTrainingJob) would wait for the last epoch: its handler runs on the loop.
    await new Promise((resolve) => setImmediate(resolve));
  }
  const [kernel, bias] = model.layers[0].getWeights();
  const k = (await kernel.array()) as number[][]; // features x units
  const b = (await bias.array()) as number[];
  model.dispose();
  return { weights: Array.from({ length: units }, (_, c) => k.map((row) => row[c])), bias: b, finalLoss: lastLoss };
}
