// `sealed compile` refuses, at compile time, what it cannot compute exactly or by a fitted
// polynomial: each refusal names the node, its operator and what to change. Never a silently
// different model.
import t, { type Test } from 'tap';
import { compileOnnx } from '../../src/model/onnx/compile.ts';
import { lowerGraph } from '../../src/model/onnx/lower.ts';
import { parseOnnx } from '../../src/model/onnx/graph.ts';
import { buildModel, gemm, gemmWeights, tensor } from '../helpers/onnx-build.ts';

function refusal(t: Test, bytes: Uint8Array, parts: (string | RegExp)[], what: RegExp) {
  try {
    lowerGraph(parseOnnx(bytes));
    t.fail('compiled, should have been refused');
  } catch (e) {
    const err = e as { code?: string; message: string; hint?: string };
    t.equal(err.code, 'bad-data');
    for (const p of parts) t.match(err.message, p);
    t.match(err.hint ?? '', what, `hint: ${err.hint}`);
  }
}

t.test('MaxPool: refused with the node name and "use AveragePool"', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 1, 4, 4]]],
    outputs: [['y', ['N', 1, 2, 2]]],
    nodes: [{ op: 'MaxPool', inputs: ['x'], outputs: ['y'], name: 'pool1', attrs: { kernel_shape: [2, 2], strides: [2, 2] } }],
  });
  refusal(t, bytes, ['pool1', 'MaxPool'], /AveragePool/);
});

t.test('control flow (If, Loop): refused', async (t) => {
  for (const op of ['If', 'Loop']) {
    const bytes = buildModel({
      inputs: [['x', ['N', 4]]],
      outputs: [['y', ['N', 4]]],
      nodes: [{ op, inputs: ['x'], outputs: ['y'], name: `branch_${op}` }],
    });
    refusal(t, bytes, [`branch_${op}`, op], /control flow/);
  }
});

t.test('Softmax before a Gemm (not at the output): refused, move it to the output', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 4]]],
    outputs: [['y', ['N', 3]]],
    initializers: gemmWeights('fc1', 4, 5).concat(gemmWeights('fc2', 5, 3)),
    nodes: [gemm('fc1', 'x', 'h'), { op: 'Softmax', inputs: ['h'], outputs: ['p'], name: 'mid_softmax', attrs: { axis: -1 } }, gemm('fc2', 'p', 'y')],
  });
  refusal(t, bytes, ['mid_softmax', 'Softmax'], /last operation|output/);
});

t.test('an activation with no polynomial form here (Elu): refused', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 4]]],
    outputs: [['y', ['N', 3]]],
    initializers: gemmWeights('fc1', 4, 5).concat(gemmWeights('fc2', 5, 3)),
    nodes: [gemm('fc1', 'x', 'h'), { op: 'Elu', inputs: ['h'], outputs: ['a'], name: 'act1' }, gemm('fc2', 'a', 'y')],
  });
  refusal(t, bytes, ['act1', 'Elu', 'not supported'], /supported operators/);
});

t.test('the product of two different computed tensors: refused (not a square)', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 4]]],
    outputs: [['y', ['N', 4]]],
    initializers: gemmWeights('fc1', 4, 4),
    nodes: [gemm('fc1', 'x', 'h'), { op: 'Mul', inputs: ['x', 'h'], outputs: ['y'], name: 'gate' }],
  });
  refusal(t, bytes, ['gate', 'multiplies two different computed tensors'], /Mul\(x, x\)/);
});

t.test('tree ensembles: refused, pointing at tree support', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 4]]],
    outputs: [['y', ['N', 1]]],
    nodes: [{ op: 'TreeEnsembleRegressor', domain: 'ai.onnx.ml', inputs: ['x'], outputs: ['y'], name: 'forest' }],
  });
  refusal(t, bytes, ['forest', 'TreeEnsembleRegressor'], /src\/model\/trees/);
});

t.test('a skip connection over an activation: refused', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 4]]],
    outputs: [['y', ['N', 4]]],
    initializers: gemmWeights('fc1', 4, 4).concat(gemmWeights('fc2', 4, 4)),
    nodes: [
      gemm('fc1', 'x', 'h'),
      { op: 'Relu', inputs: ['h'], outputs: ['a'] },
      gemm('fc2', 'a', 'z'),
      { op: 'Add', inputs: ['z', 'h'], outputs: ['y'], name: 'residual' },
    ],
  });
  refusal(t, bytes, ['residual', 'skip connection'], /chains/);
});

t.test('a custom operator domain, an old opset, two inputs: refused', async (t) => {
  refusal(
    t,
    buildModel({
      inputs: [['x', ['N', 4]]],
      outputs: [['y', ['N', 4]]],
      nodes: [{ op: 'FusedThing', domain: 'com.microsoft', inputs: ['x'], outputs: ['y'], name: 'fused' }],
    }),
    ['fused', 'com.microsoft'],
    /standard ONNX/,
  );
  t.throws(
    () =>
      parseOnnx(buildModel({ opset: 11, inputs: [['x', ['N', 4]]], outputs: [['y', ['N', 4]]], nodes: [{ op: 'Identity', inputs: ['x'], outputs: ['y'] }] })),
    { code: 'bad-data', message: /opset 11/ },
  );
  t.throws(
    () =>
      parseOnnx(
        buildModel({
          inputs: [
            ['x', ['N', 4]],
            ['z', ['N', 4]],
          ],
          outputs: [['y', ['N', 4]]],
          nodes: [{ op: 'Add', inputs: ['x', 'z'], outputs: ['y'] }],
        }),
      ),
    { code: 'bad-data', message: /2 inputs/ },
  );
  t.throws(() => parseOnnx(new Uint8Array([1, 2, 3, 4, 5])), { code: 'bad-data', message: /not an ONNX model|holds no graph/ });
});

t.test('a multi-label sigmoid at the output: refused (the client post-processes one sigmoid or a softmax)', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 4]]],
    outputs: [['y', ['N', 3]]],
    initializers: gemmWeights('fc1', 4, 3),
    nodes: [gemm('fc1', 'x', 'h'), { op: 'Sigmoid', inputs: ['h'], outputs: ['y'], name: 'multilabel' }],
  });
  refusal(t, bytes, ['multilabel', 'sigmoid over 3 outputs'], /Softmax/);
});

t.test('accepted: the same shapes with supported operators compile, and output operators become post-processing', async (t) => {
  const bytes = buildModel({
    inputs: [['x', ['N', 4]]],
    outputs: [['p', ['N', 3]]],
    initializers: [...gemmWeights('fc1', 4, 5), ...gemmWeights('fc2', 5, 3), tensor('two', [], [2])],
    nodes: [
      gemm('fc1', 'x', 'h'),
      { op: 'Pow', inputs: ['h', 'two'], outputs: ['a'], name: 'sq' },
      gemm('fc2', 'a', 'y'),
      { op: 'Softmax', inputs: ['y'], outputs: ['p'], attrs: { axis: -1 } },
    ],
  });
  const rows = Array.from({ length: 8 }, (_, i) => [i / 8, 1 - i / 8, 0.5, -0.25]);
  const m = compileOnnx(bytes, rows);
  t.equal(m.client.postprocess.kind, 'softmax');
  t.equal(m.client.task, 'multiclass');
  t.same(
    m.network.layers.map((l) => l.type),
    ['dense', 'quadratic', 'dense'],
  );
  t.equal(m.compiled.program.privacy, 'flood', 'circuit privacy on by default');
  t.ok(m.fits[0].exact, 'Pow(x, 2) is exact');
});
