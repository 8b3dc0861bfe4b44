// ONNX-ML TreeEnsembleClassifier / TreeEnsembleRegressor (what skl2onnx, onnxmltools and the
// LightGBM exporters write), parsed with protobufjs over the subset of onnx.proto it needs (field
// numbers as in onnx/onnx.proto; unknown fields are skipped by protobuf itself).
import protobuf from 'protobufjs';
import { SealedError } from '../../errors.ts';
import { checkTree, emptyTree, type Tree, type TreeEnsemble } from './ensemble.ts';

export const ONNX_SUBSET = `
syntax = "proto2";
package onnx;
message AttributeProto {
  optional string name = 1;
  optional float f = 2;
  optional int64 i = 3;
  optional bytes s = 4;
  repeated float floats = 7;
  repeated int64 ints = 8;
  repeated bytes strings = 9;
  optional int32 type = 20;
}
message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  repeated AttributeProto attribute = 5;
  optional string domain = 7;
}
message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
}
message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional GraphProto graph = 7;
}
`;

interface Attr {
  name: string;
  f?: number;
  i?: number | { toNumber(): number };
  s?: Uint8Array;
  floats?: number[];
  ints?: (number | { toNumber(): number })[];
  strings?: Uint8Array[];
}
interface OnnxNode {
  op_type?: string;
  domain?: string;
  attribute?: Attr[];
}

const HINT = 'export a TreeEnsembleClassifier or TreeEnsembleRegressor (skl2onnx, onnxmltools) with numerical BRANCH_LT / BRANCH_LEQ splits';
const bad = (why: string, hint = HINT) => new SealedError('bad-data', `the ONNX model ${why}`, hint);
const int = (v: number | { toNumber(): number }) => (typeof v === 'number' ? v : v.toNumber());
const text = (b: Uint8Array) => new TextDecoder().decode(b);

let modelType: protobuf.Type | undefined;

/** The next float32 above t (for x <= t, that is x < next(t), on float32 inputs). */
function nextFloat32(t: number): number {
  const f = new Float32Array([t]);
  const u = new Uint32Array(f.buffer);
  if (t === 0) return 2 ** -149;
  u[0] += t > 0 ? 1 : -1;
  return f[0];
}

/**
 * The tree-ensemble operator an ONNX file holds (TreeEnsembleClassifier/Regressor), if any;
 * undefined also for a file that does not parse (the network importer then says what is wrong).
 * Lets `sealed compile --onnx` send a tree ensemble to the tree compiler.
 */
export function onnxTreeOperator(bytes: Uint8Array): string | undefined {
  modelType ??= protobuf.parse(ONNX_SUBSET, { keepCase: true }).root.lookupType('onnx.ModelProto');
  try {
    const model = modelType.toObject(modelType.decode(bytes), { defaults: false, arrays: true }) as { graph?: { node?: OnnxNode[] } };
    return model.graph?.node?.find((n) => n.op_type === 'TreeEnsembleClassifier' || n.op_type === 'TreeEnsembleRegressor')?.op_type;
  } catch {
    return undefined;
  }
}

export function importOnnx(bytes: Uint8Array): TreeEnsemble {
  modelType ??= protobuf.parse(ONNX_SUBSET, { keepCase: true }).root.lookupType('onnx.ModelProto');
  let model: { graph?: { node?: OnnxNode[] } };
  try {
    model = modelType.toObject(modelType.decode(bytes), { defaults: false, arrays: true }) as typeof model;
  } catch {
    throw bad('could not be parsed: it is not an ONNX protobuf file', 'pass the .onnx file the exporter wrote, unchanged');
  }
  const nodes = (model.graph?.node ?? []).filter((n) => n.op_type === 'TreeEnsembleClassifier' || n.op_type === 'TreeEnsembleRegressor');
  if (nodes.length !== 1)
    throw bad(`has ${nodes.length} tree-ensemble nodes; sealed serves a graph with exactly one TreeEnsembleClassifier or TreeEnsembleRegressor`);
  const node = nodes[0];
  const attrs = new Map((node.attribute ?? []).map((a) => [a.name, a]));
  const ints = (name: string, required = true) => {
    const a = attrs.get(name);
    if (!a?.ints && required) throw bad(`lacks attribute ${name}`);
    return (a?.ints ?? []).map(int);
  };
  const floats = (name: string) => {
    const a = attrs.get(name);
    if (!a?.floats) {
      if (attrs.has(`${name}_as_tensor`)) throw bad(`stores ${name} as a double tensor`, 'export with float attributes (the default of skl2onnx)');
      return undefined;
    }
    return a.floats;
  };
  const strs = (name: string) => (attrs.get(name)?.strings ?? []).map(text);
  const str = (name: string, dflt: string) => {
    const s = attrs.get(name)?.s;
    return s ? text(s) : dflt;
  };
  const classifier = node.op_type === 'TreeEnsembleClassifier';
  const treeIds = ints('nodes_treeids');
  const nodeIds = ints('nodes_nodeids');
  const featureIds = ints('nodes_featureids');
  const values = floats('nodes_values') ?? [];
  const modes = strs('nodes_modes');
  const trueIds = ints('nodes_truenodeids');
  const falseIds = ints('nodes_falsenodeids');
  const tracks = ints('nodes_missing_value_tracks_true', false);
  const n = nodeIds.length;
  if ([treeIds, featureIds, values, modes, trueIds, falseIds].some((a) => a.length !== n)) throw bad('has node attributes of different lengths');
  const prefix = classifier ? 'class' : 'target';
  const wTree = ints(`${prefix}_treeids`);
  const wNode = ints(`${prefix}_nodeids`);
  const wId = ints(`${prefix}_ids`);
  const wVal = floats(`${prefix}_weights`) ?? [];
  if ([wNode, wId, wVal].some((a) => a.length !== wTree.length)) throw bad(`has ${prefix} attributes of different lengths`);
  let labels: string[] | undefined;
  let outputs: number;
  if (classifier) {
    const li = ints('classlabels_int64s', false);
    const ls = strs('classlabels_strings');
    labels = ls.length ? ls : li.map(String);
    outputs = labels.length;
    if (outputs < 2) throw bad('has fewer than two class labels');
    if (outputs === 2 && !wId.some((c) => c === 0))
      throw bad(
        "is a binary classifier that stores only the positive class's weights",
        'export with zipmap=False from a model whose trees score both classes (scikit-learn forests do)',
      );
  } else {
    outputs = int(attrs.get('n_targets')?.i ?? 1);
    if (outputs !== 1) throw bad(`has ${outputs} targets; serve one model per target`);
  }
  const aggregate = str('aggregate_function', 'SUM');
  if (aggregate !== 'SUM' && aggregate !== 'AVERAGE')
    throw bad(`aggregates trees with ${aggregate}`, 'use SUM or AVERAGE (MIN and MAX are not sums of leaves)');
  const postTransform = str('post_transform', 'NONE');
  let post: TreeEnsemble['post'];
  if (postTransform === 'NONE') post = classifier ? 'proba' : 'identity';
  else if (postTransform === 'SOFTMAX' && classifier) post = 'softmax';
  else if (postTransform === 'LOGISTIC' && classifier && outputs === 2) post = 'proba';
  else throw bad(`has post_transform ${postTransform}`, 'export with post_transform NONE or SOFTMAX');
  if (postTransform === 'LOGISTIC') throw bad('has post_transform LOGISTIC', 'export with post_transform NONE or SOFTMAX');
  const base = floats('base_values') ?? [];
  // Trees by id; nodes by (tree, node id).
  const ids = [...new Set(treeIds)].sort((a, b) => a - b);
  const where = new Map<string, number>();
  for (let i = 0; i < n; i++) where.set(`${treeIds[i]}:${nodeIds[i]}`, i);
  const scale = aggregate === 'AVERAGE' ? 1 / ids.length : 1;
  /** Row of the node list -> its index in its tree (root first). */
  const slot = new Map<number, number>();
  const trees: Tree[] = ids.map((tid) => {
    const rows: number[] = [];
    for (let i = 0; i < n; i++) if (treeIds[i] === tid) rows.push(i);
    const local = new Map(rows.map((r, k) => [nodeIds[r], k]));
    const children = new Set<number>();
    for (const r of rows) if (modes[r] !== 'LEAF') children.add(trueIds[r]).add(falseIds[r]);
    const roots = rows.filter((r) => !children.has(nodeIds[r]));
    if (roots.length !== 1) throw bad(`tree ${tid} has ${roots.length} roots`);
    // Reorder so that the root is node 0.
    const order = [roots[0], ...rows.filter((r) => r !== roots[0])];
    const pos = new Map(order.map((r, k) => [r, k]));
    order.forEach((r, k) => slot.set(r, k));
    const m = order.length;
    const t = emptyTree(m, outputs);
    order.forEach((r, k) => {
      const mode = modes[r];
      if (mode === 'LEAF') return;
      const lookup = (id: number) => {
        if (!local.has(id)) throw bad(`tree ${tid} points to node ${id}, which it does not have`);
        return pos.get(rows[local.get(id)!])!;
      };
      const tn = lookup(trueIds[r]),
        fn = lookup(falseIds[r]);
      const thr = values[r];
      const goesTrue = (tracks[r] ?? 0) === 1;
      t.feature[k] = featureIds[r];
      if (mode === 'BRANCH_LT' || mode === 'BRANCH_LEQ') {
        t.threshold[k] = mode === 'BRANCH_LT' ? thr : nextFloat32(thr);
        t.left[k] = tn;
        t.right[k] = fn;
        t.missingLeft[k] = goesTrue ? 1 : 0;
      } else if (mode === 'BRANCH_GTE' || mode === 'BRANCH_GT') {
        t.threshold[k] = mode === 'BRANCH_GTE' ? thr : nextFloat32(thr);
        t.left[k] = fn;
        t.right[k] = tn;
        t.missingLeft[k] = goesTrue ? 0 : 1;
      } else throw bad(`has a ${mode} split (tree ${tid})`, 'sealed evaluates threshold splits (BRANCH_LT, BRANCH_LEQ, BRANCH_GT, BRANCH_GTE) only');
    });
    return t;
  });
  const treeIndex = new Map(ids.map((tid, k) => [tid, k]));
  for (let w = 0; w < wTree.length; w++) {
    const ti = treeIndex.get(wTree[w]);
    const row = where.get(`${wTree[w]}:${wNode[w]}`);
    if (ti === undefined || row === undefined || modes[row] !== 'LEAF') throw bad(`has a weight for node ${wNode[w]} of tree ${wTree[w]}, which is not a leaf`);
    if (wId[w] < 0 || wId[w] >= outputs) throw bad(`has a weight for output ${wId[w]}, the model has ${outputs}`);
    const t = trees[ti];
    const k = slot.get(row)!;
    t.value[k * outputs + wId[w]] += wVal[w] * scale;
  }
  const features = Math.max(0, ...featureIds) + 1;
  trees.forEach((t, i) => checkTree(t, features, outputs, `the ONNX model's tree ${ids[i]}`));
  const baseScores = Array.from({ length: outputs }, (_, k) => base[k] ?? 0);
  return {
    task: classifier ? (outputs === 2 ? 'binary' : 'multiclass') : 'regression',
    features,
    outputs,
    trees,
    base: baseScores,
    post,
    float32: true,
    labels,
    source: 'onnx-ml',
  };
}
