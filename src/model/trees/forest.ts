// A random forest fitted by ml-random-forest (`sealed train` with model=random_forest) as a
// TreeEnsemble. Read structurally (the fitted object's fields), so the model layer does not load
// the library: src/train/trees.ts fits, this converts.
//
// Exact by construction, which test/light/train-trees.test.ts checks against the library's own
// predictions:
//  - ml-cart sends a record left when `x[splitColumn] < splitValue`: the ensemble's own rule, so
//    thresholds are copied as they are (float64, no nextafter as for ONNX's x <= t);
//  - each tree sees a bootstrap subset of the columns (`indexes[t]`, with repeats), so its
//    splitColumn is an index into that subset and maps back to `indexes[t][splitColumn]`;
//  - the forest's class is the majority of its trees' votes (each tree votes the argmax of its
//    leaf's class frequencies, the first on a tie), so a leaf adds 1/T to the class it votes for:
//    the scores are the vote fractions (ml-random-forest's predictProbability) and 'proba' picks
//    the largest. A tie between classes goes to the lower index here, where the library takes the
//    class that reached the count first; an odd tree count rules ties out for two classes;
//  - regression averages the trees' leaf means: a leaf adds its mean / T;
//  - a binary forest of an odd number of trees keeps one score, the fraction of votes for class
//    1 (class 1 iff it is at least 1/2, which an odd count never ties): the circuit's work per
//    output (a plaintext product per leaf, a relinearization per group) is then done once, not
//    twice.
import { SealedError } from '../../errors.ts';
import { checkTree, emptyTree, treeDepth, type Tree, type TreeEnsemble, type TreeTask } from './ensemble.ts';

/** An ml-cart TreeNode as the fitted forest holds it. */
export interface CartNode {
  splitColumn?: number;
  splitValue?: number;
  left?: CartNode;
  right?: CartNode;
  /** Classifier: a 1 x classes-seen matrix of class frequencies; regression: the leaf's mean. */
  distribution?: number | { getRow(i: number): number[] };
}

/** The fields of a trained ml-random-forest RandomForestClassifier / RandomForestRegression used here. */
export interface FittedForest {
  indexes: number[][];
  estimators: { root: CartNode }[];
}

export interface ForestShape {
  task: TreeTask;
  /** Columns of the training data. */
  features: number;
  /** Classes (classifiers); 1 for regression. */
  classes: number;
  labels?: string[];
}

const isLeaf = (n: CartNode) => !(n.left && n.right);

/** The class a leaf votes for: ml-matrix maxRowIndex (the first largest frequency). */
function vote(n: CartNode, classes: number, where: string): number {
  const d = n.distribution;
  if (d === undefined || typeof d === 'number') throw new SealedError('internal', `${where}: a classifier leaf without class frequencies`);
  const row = d.getRow(0);
  let best = 0;
  for (let k = 1; k < row.length; k++) if (row[k] > row[best]) best = k;
  if (best >= classes) throw new SealedError('internal', `${where}: a leaf votes for class ${best}, the data has ${classes}`);
  return best;
}

export function forestToEnsemble(forest: FittedForest, shape: ForestShape): TreeEnsemble {
  const T = forest.estimators.length;
  const classifier = shape.task !== 'regression';
  const oneScore = shape.task === 'binary' && shape.classes === 2 && T % 2 === 1;
  const outputs = classifier && !oneScore ? shape.classes : 1;
  const trees = forest.estimators.map((est, t): Tree => {
    const where = `tree ${t} of the fitted forest`;
    const used = forest.indexes[t];
    // Preorder, root first: node ids as the ensemble numbers them.
    const nodes: CartNode[] = [];
    const number = (n: CartNode): number => {
      const id = nodes.length;
      nodes.push(n);
      if (!isLeaf(n)) {
        number(n.left!);
        number(n.right!);
      }
      return id;
    };
    number(est.root);
    const m = nodes.length;
    const tree = emptyTree(m, outputs);
    const ids = new Map(nodes.map((n, i) => [n, i]));
    nodes.forEach((n, i) => {
      if (isLeaf(n)) {
        if (oneScore) tree.value[i] = vote(n, 2, where) === 1 ? 1 / T : 0;
        else if (classifier) tree.value[i * outputs + vote(n, outputs, where)] = 1 / T;
        else {
          if (typeof n.distribution !== 'number') throw new SealedError('internal', `${where}: a regression leaf without a mean`);
          tree.value[i] = n.distribution / T;
        }
        return;
      }
      const column = used[n.splitColumn!];
      if (column === undefined) throw new SealedError('internal', `${where}: split column ${n.splitColumn} is not among the tree's ${used.length} columns`);
      tree.feature[i] = column;
      tree.threshold[i] = n.splitValue!;
      tree.left[i] = ids.get(n.left!)!;
      tree.right[i] = ids.get(n.right!)!;
    });
    checkTree(tree, shape.features, outputs, where);
    return tree;
  });
  return {
    task: shape.task,
    features: shape.features,
    outputs,
    trees,
    base: new Array<number>(outputs).fill(0),
    post: classifier ? 'proba' : 'identity',
    float32: false,
    labels: shape.labels,
    source: 'ml-random-forest',
  };
}

/** The deepest tree's depth (splits on the longest path). */
export const forestDepth = (e: TreeEnsemble) => Math.max(0, ...e.trees.map(treeDepth));
