// Conv lowering against onnxruntime over the attributes the fixtures do not use: groups,
// dilations, unequal strides, asymmetric padding, and a second convolution in the same linear
// chain (its rows are dense, not the basis vectors the first one gets).
import t from 'tap';
import { exactScores } from '../../src/model/onnx/compile.ts';
import { parseOnnx } from '../../src/model/onnx/graph.ts';
import { lowerGraph } from '../../src/model/onnx/lower.ts';
import { openReference } from '../../src/model/onnx/reference.ts';
import { buildModel, tensor } from '../helpers/onnx-build.ts';

const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 1.3) * 0.5);

const model = buildModel({
  inputs: [['x', ['N', 4, 9, 8]]],
  outputs: [['y', ['N', 48]]],
  initializers: [
    tensor('k1', [6, 2, 3, 2], values(72, 1)),
    tensor('b1', [6], values(6, 2)),
    tensor('k2', [4, 6, 2, 2], values(96, 3)),
    tensor('b2', [4], values(4, 4)),
  ],
  nodes: [
    // 9x8 -> pads (top 1, left 0, bottom 2, right 1) -> 12x9; dilation 2 -> kernel 5x3; strides 2,1 -> 4x7
    {
      op: 'Conv',
      inputs: ['x', 'k1', 'b1'],
      outputs: ['c1'],
      name: 'grouped',
      attrs: { group: 2, dilations: [2, 2], strides: [2, 1], pads: [1, 0, 2, 1] },
    },
    // 4x7 -> pads (0, 1, 0, 1) -> 4x9; kernel 2x2, strides 1,2 -> 3x4: 48 outputs
    { op: 'Conv', inputs: ['c1', 'k2', 'b2'], outputs: ['c2'], name: 'dense rows', attrs: { strides: [1, 2], pads: [0, 1, 0, 1] } },
    { op: 'Flatten', inputs: ['c2'], outputs: ['f'], name: 'flatten' },
    { op: 'Identity', inputs: ['f'], outputs: ['y'], name: 'out' },
  ],
});

t.test('grouped, dilated, strided, padded convolutions lower to the map onnxruntime computes', async (t) => {
  const lowered = lowerGraph(parseOnnx(model));
  const rows = Array.from({ length: 5 }, (_, r) => values(4 * 9 * 8, 10 + r));
  const ref = await openReference(model, lowered.inputName, lowered.inputShape);
  const ort = await ref.run(rows);
  await ref.close();
  let err = 0;
  rows.forEach((x, i) => {
    const got = exactScores(lowered, x);
    const want = ort[i].y;
    t.equal(got.length, want.length, `record ${i}: ${want.length} outputs`);
    got.forEach((v, j) => (err = Math.max(err, Math.abs(v - want[j]))));
  });
  t.ok(err < 1e-5, `lowered = onnxruntime (largest difference ${err.toExponential(2)})`);
});
