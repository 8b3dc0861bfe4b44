// An ONNX graph -> alternating affine maps and activations, plus the head that turns the last
// map's scores into the graph's outputs (client-side post-processing).
//
// Every chain of linear operators between two activations becomes ONE dense affine map,
// materialised by pushing the basis through the operators (ops.ts): Conv, pooling, batch norm,
// reshapes and Gemm need no encrypted counterpart of their own, and inputs of any channel count
// are just a longer vector. Anything the encrypted program cannot compute exactly or by a
// fitted polynomial is refused here, with the node and what to change.

/* eslint-disable max-lines -- Over 300 lines on purpose: lowerGraph is one pass over the nodes
   in graph order, whose cases share the pending affine map and the bookkeeping of blocks; split
   by operator, that state would travel through every function. */
import { SealedError } from '../../errors.ts';
import type { OnnxGraph, OnnxNode, Tensor } from './graph.ts';
import {
  addAffine,
  averagePool,
  batchNorm,
  conv,
  gemm,
  linearScores,
  matMul,
  pad,
  refuse,
  reshape,
  scaler,
  sizeOf,
  transpose,
  withConstant,
  type Affine,
} from './ops.ts';
import type { Activation } from './activations.ts';

export interface AffineStage {
  kind: 'affine';
  /** outputs x inputs */
  weights: number[][];
  bias: number[];
  /** The ONNX nodes merged into this map. */
  nodes: string[];
  shape: number[];
}

export interface ActivationStage {
  kind: 'activation';
  act: Activation;
}

export type Stage = AffineStage | ActivationStage;

/** What one graph output is, as a function of the scores (the last affine map's outputs). */
export interface HeadOutput {
  name: string;
  ops: string[];
  of: (scores: number[]) => number[];
}

export interface Head {
  task: 'multiclass' | 'binary' | 'regression';
  postprocess: 'softmax' | 'sigmoid' | 'affine';
  labels?: string[];
  outputs: HeadOutput[];
}

export interface LoweredModel {
  inputName: string;
  inputShape: number[];
  stages: Stage[];
  head: Head;
}

/** Operators that compute only on the client, after decryption, when they stand at the output. */
const HEAD_OPS = new Set(['Softmax', 'LogSoftmax', 'ArgMax', 'Sigmoid', 'Normalizer', 'Identity']);
const ACTIVATIONS: Record<string, Activation['kind']> = {
  Relu: 'relu',
  LeakyRelu: 'leaky-relu',
  Sigmoid: 'sigmoid',
  Tanh: 'tanh',
  Softplus: 'softplus',
  Gelu: 'gelu',
};
const RESHAPES = new Set(['Flatten', 'Reshape', 'Squeeze', 'Unsqueeze']);
const TREES = new Set(['TreeEnsembleClassifier', 'TreeEnsembleRegressor', 'TreeEnsemble']);
const CONTROL = new Set(['If', 'Loop', 'Scan', 'Where', 'NonZero', 'TopK']);

type Value =
  | { kind: 'affine'; v: Affine; segment: number }
  | {
      kind: 'head';
      scores: Affine;
      segment: number;
      ops: string[];
      of: (s: number[]) => number[];
      labels?: string[];
      post?: 'softmax' | 'sigmoid';
      selected?: Affine;
    };

const softmax = (s: number[]) => {
  const m = Math.max(...s);
  const e = s.map((v) => Math.exp(v - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
};

function whatToDo(node: OnnxNode): string {
  if (node.op === 'MaxPool' || node.op === 'GlobalMaxPool')
    return 'replace max pooling by AveragePool (torch: nn.AvgPool2d) and retrain: a maximum has no low-degree polynomial form';
  if (CONTROL.has(node.op)) return 'sealed compiles fixed graphs: remove data-dependent control flow (export the branch the model takes, with constants)';
  if (TREES.has(node.op))
    return 'tree ensembles are not compiled by this importer (tree support is coming in src/model/trees); export a linear model or a network';
  if (node.op === 'ZipMap') return 'export without ZipMap (skl2onnx: options={id(model): {"zipmap": False}})';
  if (node.op === 'Softmax' || node.op === 'LogSoftmax' || node.op === 'ArgMax')
    return `${node.op} is compiled only as the last operation (client post-processing): move it to the output or remove it`;
  return 'use the supported operators listed in docs/bring-your-own-model.md';
}

export function lowerGraph(g: OnnxGraph): LoweredModel {
  const consumers = new Map<string, OnnxNode[]>();
  for (const n of g.nodes) for (const i of n.inputs) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const outputs = new Set(g.outputs);
  // A head node: a head operator whose results only feed head nodes or the graph's outputs.
  const headMemo = new Map<OnnxNode, boolean>();
  const isHead = (n: OnnxNode): boolean => {
    if (headMemo.has(n)) return headMemo.get(n)!;
    headMemo.set(n, false); // a cycle is not a head
    let ok = HEAD_OPS.has(n.op) && n.outputs.some((o) => outputs.has(o) || (consumers.get(o) ?? []).length > 0);
    if (ok) for (const o of n.outputs) for (const c of consumers.get(o) ?? []) ok &&= isHead(c);
    headMemo.set(n, ok);
    return ok;
  };

  const n0 = sizeOf(g.input.shape);
  const identity = (shape: number[]): Affine => {
    const n = sizeOf(shape);
    return {
      shape,
      rows: [
        new Float64Array(n),
        ...Array.from({ length: n }, (_, k) => {
          const r = new Float64Array(n);
          r[k] = 1;
          return r;
        }),
      ],
    };
  };
  const values = new Map<string, Value>([[g.input.name, { kind: 'affine', v: identity(g.input.shape), segment: 0 }]]);
  const stages: Stage[] = [];
  let segment = 0;
  let segmentNodes: string[] = [];
  const constant = (name: string): Tensor | undefined => g.constants.get(name);

  const affineIn = (node: OnnxNode, name: string): Affine => {
    const v = values.get(name);
    if (!v) {
      if (g.constants.has(name)) refuse(node, `input ${name} is a constant where the data is expected`, 'sealed compiles operators applied to the model input');
      refuse(node, `input ${name} is not computed by an operator sealed compiles`, 'see the refusals above');
    }
    if (v.kind === 'head')
      refuse(
        node,
        `uses ${name}, the output of ${v.ops.join(' -> ')}, which sealed computes only on the client as the model's last operation`,
        whatToDo({ ...node, op: v.ops[v.ops.length - 1] }),
      );
    if (v.segment !== segment)
      refuse(
        node,
        `uses ${name}, computed before an activation that a later operator already consumed (a skip connection over a nonlinearity)`,
        'sealed compiles chains of layers: remove the skip connection or place it within a linear block',
      );
    return v.v;
  };
  const set = (node: OnnxNode, v: Affine) => {
    values.set(node.outputs[0], { kind: 'affine', v, segment });
    segmentNodes.push(node.name);
  };
  const closeSegment = (x: Affine): AffineStage => {
    const n = sizeOf(x.shape);
    const weights = Array.from({ length: n }, (_, o) => Array.from({ length: x.rows.length - 1 }, (_, k) => x.rows[k + 1][o]));
    const stage: AffineStage = { kind: 'affine', weights, bias: Array.from(x.rows[0]), nodes: segmentNodes, shape: x.shape };
    segmentNodes = [];
    return stage;
  };

  for (const node of g.nodes) {
    const op = node.op;
    const dom = node.domain === 'ai.onnx' ? '' : node.domain;
    const inputs = node.inputs.filter((i) => i !== '');
    if (dom !== '' && dom !== 'ai.onnx.ml')
      refuse(node, `operator domain ${dom} is not ONNX's`, 'export with standard ONNX operators (no custom or contrib ops)');
    if (isHead(node) && op !== 'Identity') {
      const src = values.get(inputs[0]);
      if (!src) refuse(node, `input ${inputs[0]} is not computed by an operator sealed compiles`, whatToDo(node));
      const scores = src.kind === 'affine' ? src.v : src.scores;
      if (src.kind === 'affine' && src.segment !== segment) refuse(node, 'reads a value from before an activation', 'sealed compiles chains of layers');
      const last = scores.shape[scores.shape.length - 1];
      if (sizeOf(scores.shape) !== last)
        refuse(node, `applies to a tensor of shape ${scores.shape.join('x')}`, 'flatten the scores to [batch, classes] before the output operator');
      const prev = src.kind === 'head' ? src.of : (s: number[]) => s;
      let of: (s: number[]) => number[];
      let post: 'softmax' | 'sigmoid' | undefined = src.kind === 'head' ? src.post : undefined;
      if (op === 'Softmax' || op === 'LogSoftmax') {
        const axis = typeof node.attrs.axis === 'number' ? node.attrs.axis : -1;
        if (axis !== -1 && axis !== scores.shape.length - 1) refuse(node, `softmax over axis ${axis}`, 'apply softmax over the last axis (the classes)');
        of = op === 'Softmax' ? (s) => softmax(prev(s)) : (s) => softmax(prev(s)).map(Math.log);
        post ??= 'softmax';
      } else if (op === 'ArgMax') {
        if (node.attrs.select_last_index === 1) refuse(node, 'select_last_index=1', 'use the default first index');
        of = (s) => {
          const v = prev(s);
          return [v.indexOf(Math.max(...v))];
        };
        post ??= 'softmax';
      } else if (op === 'Sigmoid') {
        if (last !== 1)
          refuse(
            node,
            `a sigmoid over ${last} outputs at the output (multi-label)`,
            'sealed post-processes one sigmoid (binary) or a softmax (classes); use Softmax',
          );
        of = (s) => prev(s).map((v) => 1 / (1 + Math.exp(-v)));
        post ??= 'sigmoid';
      } else if (op === 'Normalizer') {
        const norm = node.attrs.norm as string;
        of = (s) => {
          const v = prev(s);
          const z = norm === 'MAX' ? Math.max(...v) : norm === 'L2' ? Math.sqrt(v.reduce((a, b) => a + b * b, 0)) : v.reduce((a, b) => a + Math.abs(b), 0);
          return v.map((x) => x / z);
        };
      } else refuse(node, 'not an output operator', whatToDo(node));
      values.set(node.outputs[0], {
        kind: 'head',
        scores,
        segment,
        ops: [...(src.kind === 'head' ? src.ops : []), op],
        of,
        labels: src.kind === 'head' ? src.labels : undefined,
        post,
        selected: src.kind === 'head' ? src.selected : undefined,
      });
      continue;
    }
    if (op === 'Identity' || (op === 'Dropout' && dom === '')) {
      const src = values.get(inputs[0]);
      if (!src) refuse(node, `input ${inputs[0]} is not computed by an operator sealed compiles`, whatToDo(node));
      values.set(node.outputs[0], src);
      continue;
    }
    if (op === 'LinearClassifier' && dom === 'ai.onnx.ml') {
      const x = affineIn(node, inputs[0]);
      const s = linearScores(node, x, 'classlabels');
      const R = s.shape[s.shape.length - 1];
      const labels = ((node.attrs.classlabels_ints as number[] | undefined) ?? (node.attrs.classlabels_strings as string[] | undefined) ?? []).map(String);
      const post = (node.attrs.post_transform as string | undefined) ?? 'NONE';
      segmentNodes.push(node.name);
      let selected: Affine | undefined;
      let of: (s: number[]) => number[];
      let kind: 'softmax' | 'sigmoid';
      if (R === 2 && labels.length === 2 && post === 'LOGISTIC' && s.rows.every((r) => Math.abs(r[0] + r[1]) <= 1e-12 * (1 + Math.abs(r[1])))) {
        // Binary, written as rows (-w, w) (skl2onnx): one score s; probabilities (1 - sigmoid(s), sigmoid(s)).
        selected = { shape: [1, 1], rows: s.rows.map((r) => Float64Array.of(r[1])) };
        of = (v) => {
          const p = 1 / (1 + Math.exp(-v[0]));
          return [1 - p, p];
        };
        kind = 'sigmoid';
      } else if (post === 'NONE' || post === 'SOFTMAX') {
        if (R !== labels.length) refuse(node, `${R} score rows for ${labels.length} classes`, 'export one coefficient row per class');
        of = post === 'SOFTMAX' ? softmax : (v) => v;
        kind = 'softmax';
      } else
        refuse(
          node,
          `post_transform ${post} over ${R} scores`,
          'use post_transform SOFTMAX or NONE for several classes (LOGISTIC only for binary models, as skl2onnx writes them)',
        );
      const base = selected ?? s;
      const labelOf = (v: number[]) => {
        const p = of(v);
        return [p.indexOf(Math.max(...p))];
      };
      values.set(node.outputs[0], { kind: 'head', scores: base, segment, ops: ['LinearClassifier label'], of: labelOf, labels, post: kind, selected: base });
      if (node.outputs[1])
        values.set(node.outputs[1], { kind: 'head', scores: base, segment, ops: [`LinearClassifier ${post}`], of, labels, post: kind, selected: base });
      continue;
    }
    const act =
      ACTIVATIONS[op] ??
      ((op === 'Mul' && inputs.length === 2 && inputs[0] === inputs[1]) ||
      (op === 'Pow' && constant(inputs[1])?.data.length === 1 && constant(inputs[1])!.data[0] === 2)
        ? 'square'
        : undefined);
    if (act && dom === '') {
      const x = affineIn(node, inputs[0]);
      if (op === 'Gelu' && node.attrs.approximate === 'tanh') refuse(node, 'GELU with the tanh approximation', 'export GELU with approximate="none"');
      stages.push(closeSegment(x));
      stages.push({
        kind: 'activation',
        act: { kind: act, alpha: op === 'LeakyRelu' ? ((node.attrs.alpha as number | undefined) ?? 0.01) : undefined, node: node.name },
      });
      segment++;
      values.set(node.outputs[0], { kind: 'affine', v: identity(x.shape), segment });
      continue;
    }
    if (dom === 'ai.onnx.ml') {
      if (op === 'Scaler') set(node, scaler(node, affineIn(node, inputs[0])));
      else if (op === 'LinearRegressor') {
        if (((node.attrs.post_transform as string | undefined) ?? 'NONE') !== 'NONE')
          refuse(node, `post_transform ${String(node.attrs.post_transform)}`, 'use post_transform NONE');
        set(node, linearScores(node, affineIn(node, inputs[0]), 'targets'));
      } else refuse(node, 'this ai.onnx.ml operator is not supported', whatToDo(node));
      continue;
    }
    if (op === 'Add' || op === 'Sub' || op === 'Mul' || op === 'Div') {
      const [a, b] = inputs;
      const ca = constant(a),
        cb = constant(b);
      if (ca && cb) refuse(node, 'both operands are constants', 'fold constants before export (do_constant_folding=True)');
      if (!ca && !cb) {
        if (op === 'Add' || op === 'Sub') set(node, addAffine(node, affineIn(node, a), affineIn(node, b), op === 'Add' ? 1 : -1));
        else
          refuse(
            node,
            `${op === 'Mul' ? 'multiplies' : 'divides'} two different computed tensors`,
            'multiply by constants, or square one tensor with Mul(x, x) or Pow(x, 2)',
          );
      } else set(node, withConstant(node, affineIn(node, ca ? b : a), (ca ?? cb)!, ca !== undefined));
      continue;
    }
    if (op === 'Gemm') {
      const B = constant(inputs[1]);
      if (!B) refuse(node, 'the weight operand B is computed, not a constant', 'multiply the data by constant weights');
      set(
        node,
        gemm(node, affineIn(node, inputs[0]), B, inputs[2] ? (constant(inputs[2]) ?? refuse(node, 'a computed bias C', 'use a constant bias')) : undefined),
      );
    } else if (op === 'MatMul') {
      const B = constant(inputs[1]);
      if (!B) refuse(node, 'the right operand is computed, not a constant', 'multiply the data by constant weights on the right');
      set(node, matMul(node, affineIn(node, inputs[0]), B));
    } else if (op === 'Conv') {
      const W = constant(inputs[1]);
      if (!W) refuse(node, 'computed convolution weights', 'use constant weights');
      set(node, conv(node, affineIn(node, inputs[0]), W, inputs[2] ? constant(inputs[2]) : undefined));
    } else if (op === 'AveragePool' || op === 'GlobalAveragePool') {
      set(node, averagePool(node, affineIn(node, inputs[0]), op === 'GlobalAveragePool'));
    } else if (op === 'BatchNormalization') {
      const [sc, bi, me, va] = inputs.slice(1).map((i) => constant(i));
      if (!sc || !bi || !me || !va) refuse(node, 'statistics that are not constants', 'export in inference mode (model.eval())');
      if (node.outputs.filter((o) => o !== '').length > 1 || node.attrs.training_mode === 1)
        refuse(node, 'training mode', 'export in inference mode (model.eval())');
      set(node, batchNorm(node, affineIn(node, inputs[0]), sc, bi, me, va));
    } else if (op === 'Pad') {
      const pads = constant(inputs[1]);
      if (!pads) refuse(node, 'pads computed from the data', 'export with constant padding');
      set(
        node,
        pad(
          node,
          affineIn(node, inputs[0]),
          pads,
          inputs[2] ? (constant(inputs[2]) ?? refuse(node, 'a computed padding value', 'pad with a constant')) : undefined,
        ),
      );
    } else if (op === 'Transpose') {
      set(node, transpose(node, affineIn(node, inputs[0])));
    } else if (RESHAPES.has(op)) {
      set(
        node,
        reshape(
          node,
          affineIn(node, inputs[0]),
          inputs[1] ? (constant(inputs[1]) ?? refuse(node, 'a shape computed from the data', 'export with a constant shape (torch: nn.Flatten)')) : undefined,
        ),
      );
    } else refuse(node, ACTIVATIONS[op] ? `the activation ${op} is not supported here` : 'this operator is not supported', whatToDo(node));
  }

  // The outputs: all from one final value (the scores), directly or through head operators.
  const outs = g.outputs.map((name) => {
    const v = values.get(name);
    if (!v) throw new SealedError('bad-data', `the graph output ${name} is not computed`, 'check the model');
    return { name, v };
  });
  const base = outs.map((o) => (o.v.kind === 'affine' ? o.v.v : (o.v.selected ?? o.v.scores)));
  const scores = base.find((b) => outs.every((o) => (o.v.kind === 'affine' ? o.v.v === b : o.v.selected === b || o.v.scores === b)));
  if (!scores)
    throw new SealedError(
      'bad-data',
      `the graph outputs ${g.outputs.join(', ')} come from different tensors`,
      'export one output (the scores), optionally through Softmax, ArgMax or Sigmoid',
    );
  if (outs.some((o) => o.v.segment !== segment))
    throw new SealedError('bad-data', 'a graph output is computed before the last activation', "export one output, the last layer's");
  stages.push(closeSegment(scores));
  if (stages.length === 1 && stages[0].kind === 'affine' && (stages[0] as AffineStage).weights[0]?.length !== n0)
    throw new SealedError('internal', 'lowering lost the input size');
  const k = sizeOf(scores.shape);
  const heads = outs.map((o) => (o.v.kind === 'head' ? o.v : undefined)).filter((h) => h !== undefined);
  const post = heads.find((h) => h.post)?.post ?? (k === 1 ? undefined : 'softmax');
  const labels = heads.find((h) => h.labels && h.labels.length)?.labels;
  const head: Head = {
    task: post === 'softmax' ? 'multiclass' : post === 'sigmoid' ? 'binary' : 'regression',
    postprocess: post ?? 'affine',
    labels: labels ?? (post === 'softmax' ? Array.from({ length: k }, (_, c) => String(c)) : post === 'sigmoid' ? ['0', '1'] : undefined),
    outputs: outs.map((o) => ({ name: o.name, ops: o.v.kind === 'head' ? o.v.ops : [], of: o.v.kind === 'head' ? o.v.of : (s: number[]) => s })),
  };
  return { inputName: g.input.name, inputShape: g.input.shape, stages, head };
}
