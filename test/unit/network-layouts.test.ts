// The dense layouts of network-layouts.ts (replicated first layer, row sum, sparse) and
// buildNetwork's choice among them: each computes its layer exactly (plaintext simulation, every
// slot the layout claims), the MNIST-shaped x^2 MLP 784-128-64-10 takes them with fewer
// rotations and products than the hybrid layouts, and networks they do not make cheaper keep
// their programs. Encrypted: test/light/network-layouts-encrypted.test.ts.
import t from 'tap';
import { opCounts, type Program } from '../../src/fhe/program.ts';
import { packRecords } from '../../src/model/layout.ts';
import { replicatedFirstDense, replicatedTerms, rowSumStep, sparseStep, type Layout } from '../../src/model/network-layouts.ts';
import { buildNetwork, buildNetworkWith, networkCost } from '../../src/model/network-steps.ts';
import { forward, type Dense, type Network } from '../../src/model/network.ts';
import { simulate } from '../../src/model/simulate.ts';
import { mnistShapedNetworks, rng } from '../helpers/networks.ts';

const r = rng(17);
const dense = (out: number, n: number, w = 1): Dense => ({
  type: 'dense',
  weights: Array.from({ length: out }, () => Array.from({ length: n }, () => r() * w)),
  bias: Array.from({ length: out }, () => r()),
});
const apply = (layer: Dense, x: number[]) => layer.weights.map((row, o) => row.reduce((acc, w, j) => acc + w * x[j], layer.bias[o]));
const run = (parts: { step: Program['steps'][number]; masks: Float64Array[] }, v: Float64Array) => simulate({ steps: [parts.step] } as Program, parts.masks, v);

t.test('replicated first layer: every (row, feature) pair counted once, y[s mod m] at every slot', async (t) => {
  for (const [n, out, S] of [
    [784, 128, 8192],
    [784, 128, 4096],
    [784, 64, 4096],
    [64, 32, 4096],
    [100, 10, 1024],
    [5, 3, 16],
  ]) {
    const layer = dense(out, n);
    const T = replicatedTerms(out, n, S)!;
    const m = 2 ** Math.ceil(Math.log2(out));
    const { parts, featureSlots } = replicatedFirstDense(layer, n, S, false, 0);
    t.equal(parts.step.terms.length, T, `${n}x${out} in ${S}: ${T} terms`);
    t.equal(parts.step.folds.length, Math.log2(S / m), `${n}x${out} in ${S}: folds over the ${S / m} blocks`);
    // Count: all-ones weights, no bias, each feature 1: every (row, feature) pair adds 1 once.
    const ones: Dense = { type: 'dense', weights: layer.weights.map((row) => row.map(() => 1)), bias: layer.bias.map(() => 0) };
    const counted = run(
      replicatedFirstDense(ones, n, S, false, 0).parts,
      packRecords({ slots: S, recordsPerCiphertext: 1, recordStride: S, featureSlots }, [Array<number>(n).fill(1)])[0],
    );
    t.ok(
      counted.every((v, s) => v === (s % m < out ? n : 0)),
      `${n}x${out} in ${S}: every slot counts n pairs of its row`,
    );
    const x = Array.from({ length: n }, () => r());
    const want = apply(layer, x);
    const got = run(parts, packRecords({ slots: S, recordsPerCiphertext: 1, recordStride: S, featureSlots }, [x])[0]);
    let worst = 0;
    got.forEach((v, s) => (worst = Math.max(worst, Math.abs(v - (s % m < out ? want[s % m] : 0)))));
    t.ok(worst < 1e-9, `${n}x${out} in ${S}: largest error ${worst.toExponential(1)} over all ${S} slots`);
  }
});

t.test('row sum then sparse: each layer exact at the slots its layout names', async (t) => {
  const S = 1024;
  for (const [P, n1, out1, out2] of [
    [16, 12, 50, 10],
    [32, 32, 32, 7],
    [8, 8, 3, 3],
  ]) {
    const first = dense(out1, n1);
    const second = dense(out2, out1);
    const x = Array.from({ length: n1 }, () => r());
    // Input replicated with period P: feature j at every slot = j (mod P).
    const input: Layout = { period: P, slot: Int32Array.from({ length: n1 }, (_, j) => j) };
    const v = Float64Array.from({ length: S }, (_, s) => (s % P < n1 ? x[s % P] : 0));
    const rows = rowSumStep(first, input, S, undefined, false, 0);
    const y = run(rows.parts, v);
    const want1 = apply(first, x);
    t.same(
      Array.from(rows.layout.slot),
      Array.from({ length: out1 }, (_, o) => o * P),
      'row o at slot P*o',
    );
    t.ok(
      want1.every((w, o) => Math.abs(y[o * P] - w) < 1e-9),
      `row sum ${n1} -> ${out1}: exact at the slots P*o`,
    );
    t.equal(rows.parts.step.terms.length, 1, 'one product');
    const sparse = sparseStep(second, rows.layout, S, undefined, true, 0);
    const z = run(sparse.parts, y);
    const want2 = apply(second, want1);
    t.ok(
      want2.every((w, k) => Math.abs(z[(S - k) % S] - w) < 1e-9),
      `sparse ${out1} -> ${out2}: output k exact at slot S - k`,
    );
    t.equal(sparse.parts.step.folds.length, Math.ceil(Math.log2(out1)), 'folds over the features only');
  }
});

// The MNIST x^2 MLP's shape (784-128-64-10), at ring 16384.
const mlp3: Network = {
  input: { height: 28, width: 28 },
  layers: [
    dense(128, 784, 0.1),
    { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 },
    dense(64, 128, 0.2),
    { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 },
    dense(10, 64, 0.2),
  ],
};

t.test('784-128-64-10 MLP: fewer rotations and products than the hybrid layouts, same outputs', async (t) => {
  const S = 8192;
  const built = buildNetwork(mlp3, S);
  const hybrid = buildNetworkWith(mlp3, S, []).built;
  const now = opCounts({ steps: built.steps });
  const before = opCounts({ steps: hybrid.steps });
  t.equal(before.rotations, 38, 'the hybrid layouts: 38 rotations');
  t.ok(now.rotations <= 30, `${now.rotations} rotations`);
  t.ok(now.multiplyPlain <= 30, `${now.multiplyPlain} plaintext products (hybrid: ${before.multiplyPlain})`);
  t.ok(networkCost(built.steps) < networkCost(hybrid.steps), 'cheaper by the cost proxy');
  const images = Array.from({ length: 3 }, () => Array.from({ length: 784 }, () => Math.max(0, r() * 2)));
  packRecords(built.input, images).forEach((v, i) => {
    const got = simulate({ steps: built.steps } as Program, built.masks, v);
    const want = forward(mlp3, images[i]);
    t.ok(
      want.every((w, c) => Math.abs(got[built.output.offsets[c]] - w) < 1e-8 * Math.max(1, Math.abs(w))),
      `image ${i}: simulated outputs equal the network`,
    );
  });
});

t.test('networks the new layouts do not make cheaper keep their programs', async (t) => {
  const { cnn } = mnistShapedNetworks(rng(5), 8, 64);
  for (const S of [4096, 8192]) {
    const built = buildNetwork(cnn, S);
    const hybrid = buildNetworkWith(cnn, S, []).built;
    t.same(built.steps, hybrid.steps, `CNN in ${S} slots: same steps`);
    t.same(built.masks, hybrid.masks, `CNN in ${S} slots: same masks`);
  }
});
