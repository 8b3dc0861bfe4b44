// Fitting linear models with TensorFlow.js on its WASM backend (Adam, mini-batches, L2).
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
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
  const xs = tf.tensor2d(x);
  const ys = tf.tensor2d(y, [y.length, 1]);
  const hist = await model.fit(xs, ys, { epochs: o.epochs, batchSize: o.batchSize, shuffle: true, verbose: 0 });
  const [kernel, bias] = model.layers[0].getWeights();
  const k = (await kernel.array()) as number[][]; // features x units
  const b = (await bias.array()) as number[];
  xs.dispose();
  ys.dispose();
  model.dispose();
  const losses = hist.history.loss as number[];
  return { weights: Array.from({ length: units }, (_, c) => k.map((row) => row[c])), bias: b, finalLoss: losses[losses.length - 1] };
}
