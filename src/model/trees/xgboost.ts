// XGBoost's JSON model format (Booster.save_model("model.json"), XGBoost 1.x to 3.x): the
// gbtree booster with objectives binary:logistic, multi:softprob and reg:squarederror. What
// cannot be served exactly is refused here, with the change to make.
import { SealedError } from '../../errors.ts';
import { checkTree, type Tree, type TreeEnsemble } from './ensemble.ts';

const HINT =
  'train with booster="gbtree" and objective binary:logistic, multi:softprob or reg:squarederror, numerical features only, then save_model("model.json")';

const bad = (why: string, hint = HINT) => new SealedError('bad-data', `the XGBoost model ${why}`, hint);

interface XgbTree {
  left_children: number[];
  right_children: number[];
  split_indices: number[];
  split_conditions: number[];
  default_left: (number | boolean)[];
  split_type?: number[];
  categories_nodes?: number[];
  base_weights?: number[];
  tree_param?: { num_nodes?: string; size_leaf_vector?: string };
}

function num(v: unknown, what: string): number {
  // learner_model_param holds numbers as strings; base_score is "[5E-1]" from XGBoost 3.
  const s = typeof v === 'string' ? v.replace(/^\[|\]$/g, '') : v;
  const x = typeof s === 'number' ? s : Number(s);
  if (typeof s === 'string' && s.trim() === '') throw bad(`has an empty ${what}`);
  if (!Number.isFinite(x)) throw bad(`has a ${what} that is not a number`);
  return x;
}

function numArray(v: unknown, what: string): number[] {
  if (typeof v === 'number') return [v];
  if (typeof v === 'string')
    return v
      .replace(/^\[|\]$/g, '')
      .split(',')
      .map((p) => num(p, what));
  throw bad(`has no ${what}`);
}

function array(v: unknown, what: string, n: number): number[] {
  if (!Array.isArray(v) || v.length !== n) throw bad(`tree field ${what} is missing or has the wrong length`);
  return v.map((x) => (typeof x === 'boolean' ? Number(x) : Number(x)));
}

export function importXgboost(bytes: Uint8Array): TreeEnsemble {
  let doc: { learner?: Record<string, unknown>; version?: number[] };
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as typeof doc;
  } catch {
    throw bad(
      'is not valid JSON',
      'save it with Booster.save_model("model.json") (the .json extension selects JSON; UBJSON and the old binary format are not read)',
    );
  }
  const learner = doc?.learner as
    | {
        objective?: { name?: string };
        learner_model_param?: Record<string, unknown>;
        gradient_booster?: { name?: string; model?: { trees?: XgbTree[]; tree_info?: number[] } };
        feature_names?: string[];
        feature_types?: string[];
      }
    | undefined;
  if (!learner || typeof learner !== 'object') throw bad('has no "learner" object: it is not an XGBoost JSON model');
  const objective = learner.objective?.name;
  const booster = learner.gradient_booster;
  if (booster?.name !== 'gbtree')
    throw bad(`uses booster ${JSON.stringify(booster?.name)}; only gbtree is served (dart drops trees at random, gblinear has no trees)`);
  const param = learner.learner_model_param ?? {};
  const features = num(param.num_feature, 'num_feature');
  const numClass = param.num_class === undefined ? 0 : num(param.num_class, 'num_class');
  if (param.num_target !== undefined && num(param.num_target, 'num_target') > 1) throw bad('has several targets; serve one model per target');
  if ((learner.feature_types ?? []).some((t) => t === 'c')) throw bad('has categorical features; encode them as numbers (one-hot or ordinal) and retrain');
  let post: TreeEnsemble['post'];
  let task: TreeEnsemble['task'];
  let outputs = 1;
  if (objective === 'binary:logistic') {
    post = 'sigmoid';
    task = 'binary';
  } else if (objective === 'multi:softprob' || objective === 'multi:softmax') {
    post = 'softmax';
    task = 'multiclass';
    outputs = numClass;
    if (!(outputs >= 2)) throw bad(`has objective ${objective} but num_class ${numClass}`);
  } else if (objective === 'reg:squarederror') {
    post = 'identity';
    task = 'regression';
  } else {
    throw bad(
      `has objective ${JSON.stringify(objective)}, which sealed does not serve`,
      'retrain with objective binary:logistic, multi:softprob or reg:squarederror',
    );
  }
  // base_score is stored in probability space for logistic, margin space for the others.
  const baseRaw = numArray(param.base_score ?? '0.5', 'base_score');
  const base = Array.from({ length: outputs }, (_, k) => {
    const b = baseRaw.length === outputs ? baseRaw[k] : baseRaw[0];
    if (post !== 'sigmoid') return b;
    if (!(b > 0 && b < 1)) throw bad(`has base_score ${b}, outside (0, 1) for binary:logistic`);
    return Math.log(b / (1 - b));
  });
  const xtrees = booster.model?.trees;
  const info = booster.model?.tree_info;
  if (!Array.isArray(xtrees) || !Array.isArray(info) || info.length !== xtrees.length) throw bad('has no trees, or tree_info does not match them');
  const trees: Tree[] = xtrees.map((xt, i) => {
    const where = `tree ${i}`;
    const n = Array.isArray(xt.left_children) ? xt.left_children.length : 0;
    if (n === 0) throw bad(`${where} has no nodes`);
    if (xt.tree_param?.size_leaf_vector !== undefined && Number(xt.tree_param.size_leaf_vector) > 1)
      throw bad(`${where} has vector leaves (multi_strategy="multi_output_tree")`, 'retrain with the default multi_strategy="one_output_per_tree"');
    if ((xt.split_type ?? []).some((s) => s !== 0) || (xt.categories_nodes ?? []).length > 0)
      throw bad(
        `${where} has categorical splits, which sealed cannot evaluate on quantized inputs`,
        'encode categorical features as numbers (one-hot or ordinal) and retrain with enable_categorical=False',
      );
    const left = Int32Array.from(array(xt.left_children, 'left_children', n));
    const right = Int32Array.from(array(xt.right_children, 'right_children', n));
    const feature = Int32Array.from(array(xt.split_indices, 'split_indices', n));
    const cond = array(xt.split_conditions, 'split_conditions', n);
    const dl = array(xt.default_left, 'default_left', n);
    const group = info[i];
    if (!Number.isInteger(group) || group < 0 || group >= outputs) throw bad(`${where} feeds output ${group}, the model has ${outputs}`);
    const threshold = new Float64Array(n);
    const value = new Float64Array(n * outputs);
    for (let j = 0; j < n; j++) {
      if (left[j] < 0) {
        value[j * outputs + group] = Math.fround(cond[j]);
        feature[j] = 0;
      } else threshold[j] = Math.fround(cond[j]);
    }
    const tree: Tree = { feature, threshold, left, right, missingLeft: Uint8Array.from(dl, (d) => (d ? 1 : 0)), value };
    checkTree(tree, features, outputs, `the XGBoost model's ${where}`);
    return tree;
  });
  return { task, features, outputs, trees, base, post, float32: true, source: 'xgboost-json' };
}
