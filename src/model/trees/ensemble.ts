// A tree ensemble as the importers produce it (XGBoost JSON, ONNX-ML), and its plaintext
// reference evaluation: the self-checks, the fixtures' tests and the benchmark compare to it.
import { SealedError } from '../../errors.ts';

export type TreeTask = 'binary' | 'multiclass' | 'regression';

/**
 * One tree in flat arrays (node 0 is the root). An internal node sends a record left when
 * `x[feature] < threshold` (XGBoost's rule; ONNX's x <= t is turned into x < nextafter(t) at
 * import) and to `missingLeft`'s side when the feature is missing (NaN). A leaf has left = -1 and
 * adds `value[k]` to output k (one value per output: XGBoost trees feed one output, `output`,
 * ONNX classifier trees feed every class).
 */
export interface Tree {
  feature: Int32Array;
  threshold: Float64Array;
  left: Int32Array;
  right: Int32Array;
  missingLeft: Uint8Array;
  /** Leaf values: value[node * outputs + k]; only leaves' entries are used. */
  value: Float64Array;
}

export interface TreeEnsemble {
  task: TreeTask;
  features: number;
  /** Scores computed: 1 (binary, regression) or the class count. */
  outputs: number;
  trees: Tree[];
  /** Added to each score (margin space). */
  base: number[];
  /**
   * How scores become predictions: sigmoid (XGBoost binary:logistic), softmax (multi:softprob),
   * identity (regression), or 'proba' (the scores are already class probabilities: a random
   * forest's averaged leaf frequencies; the class is the largest).
   */
  post: 'sigmoid' | 'softmax' | 'identity' | 'proba';
  /** XGBoost compares float32(x) with float32 thresholds; ONNX-ML compares floats too. */
  float32: boolean;
  labels?: string[];
  /** Where it came from: an importer, or `sealed train` (model=random_forest). */
  source: 'xgboost-json' | 'onnx-ml' | 'ml-random-forest';
}

/** A tree of `nodes` nodes, all leaves with value 0, for an importer to fill in. */
export function emptyTree(nodes: number, outputs: number): Tree {
  return {
    feature: new Int32Array(nodes),
    threshold: new Float64Array(nodes),
    left: new Int32Array(nodes).fill(-1),
    right: new Int32Array(nodes).fill(-1),
    missingLeft: new Uint8Array(nodes),
    value: new Float64Array(nodes * outputs),
  };
}

/** Depth of a tree: the longest root-to-leaf path, in splits. */
export function treeDepth(t: Tree): number {
  const depth = (n: number): number => (t.left[n] < 0 ? 0 : 1 + Math.max(depth(t.left[n]), depth(t.right[n])));
  return depth(0);
}

/** The leaf a record reaches. */
export function leafOf(t: Tree, x: ArrayLike<number>, float32: boolean): number {
  let n = 0;
  for (let steps = 0; t.left[n] >= 0; steps++) {
    if (steps > t.left.length) throw new SealedError('bad-data', 'a tree has a cycle', 'export the model again');
    const v = x[t.feature[n]];
    if (Number.isNaN(v)) n = t.missingLeft[n] ? t.left[n] : t.right[n];
    else n = (float32 ? Math.fround(v) : v) < t.threshold[n] ? t.left[n] : t.right[n];
  }
  return n;
}

/** The ensemble's scores for one record (margin space: before sigmoid / softmax). */
export function scores(e: TreeEnsemble, x: ArrayLike<number>): number[] {
  const out = e.base.slice();
  for (const t of e.trees) {
    const leaf = leafOf(t, x, e.float32);
    for (let k = 0; k < e.outputs; k++) out[k] += t.value[leaf * e.outputs + k];
  }
  return out;
}

/** A prediction from scores: the class index, or the regression value. */
export function predictionOf(e: Pick<TreeEnsemble, 'post' | 'outputs'>, s: number[]): number {
  if (e.post === 'identity') return s[0];
  if (e.post === 'sigmoid') return s[0] >= 0 ? 1 : 0;
  if (e.post === 'proba' && e.outputs === 1) return s[0] >= 0.5 ? 1 : 0;
  let best = 0;
  for (let k = 1; k < s.length; k++) if (s[k] > s[best]) best = k;
  return best;
}

/** Probabilities (classifiers) from scores. */
export function probabilitiesOf(e: Pick<TreeEnsemble, 'post'>, s: number[]): number[] | undefined {
  if (e.post === 'sigmoid') {
    const p = 1 / (1 + Math.exp(-s[0]));
    return [1 - p, p];
  }
  if (e.post === 'softmax') {
    const m = Math.max(...s);
    const ex = s.map((v) => Math.exp(v - m));
    const sum = ex.reduce((a, b) => a + b, 0);
    return ex.map((v) => v / sum);
  }
  // One score: a binary model's probability of class 1 (a forest's vote fraction).
  if (e.post === 'proba') return s.length === 1 ? [1 - s[0], s[0]] : s.slice();
  return undefined;
}

export function predict(e: TreeEnsemble, x: ArrayLike<number>): number {
  return predictionOf(e, scores(e, x));
}

/** Checks the structure the importers built: indices in range, every node reached once. */
export function checkTree(t: Tree, features: number, outputs: number, where: string): void {
  const n = t.left.length;
  const bad = (why: string) => new SealedError('bad-data', `${where}: ${why}`, 'export the model again with the library that trained it');
  if (t.right.length !== n || t.feature.length !== n || t.threshold.length !== n || t.missingLeft.length !== n || t.value.length !== n * outputs)
    throw bad('its node arrays have different lengths');
  const seen = new Uint8Array(n);
  const stack = [0];
  while (stack.length) {
    const i = stack.pop()!;
    if (i < 0 || i >= n) throw bad(`a child index ${i} is out of range`);
    if (seen[i]) throw bad('a node is reached twice (not a tree)');
    seen[i] = 1;
    if (t.left[i] < 0) {
      for (let k = 0; k < outputs; k++) if (!Number.isFinite(t.value[i * outputs + k])) throw bad(`leaf ${i} has a value that is not a finite number`);
      continue;
    }
    if (t.feature[i] < 0 || t.feature[i] >= features) throw bad(`node ${i} splits on feature ${t.feature[i]}, the model has ${features}`);
    if (!Number.isFinite(t.threshold[i])) throw bad(`node ${i} has a threshold that is not a finite number`);
    stack.push(t.left[i], t.right[i]);
  }
}
