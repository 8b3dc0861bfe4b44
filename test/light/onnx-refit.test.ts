// The re-fit of linear layers after approximated activations (src/model/onnx/refit.ts), on the
// ReLU MLP fixture (model (a), 784-128-64-10, trained on MNIST): fitted on t10k images
// 5000-5999, measured on images 0-999 that calibration never saw. Quadratics alone lose about
// eleven points of accuracy there; the re-fitted network must win most of them back, come closer
// to the original's outputs, and leave a model without approximations untouched. The fine-tune
// after it (finetune.ts) must come closer still.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { approximateNetwork, exactScores } from '../../src/model/onnx/compile.ts';
import { parseOnnx } from '../../src/model/onnx/graph.ts';
import { lowerGraph } from '../../src/model/onnx/lower.ts';
import { refitAffine, REFIT_MAX_INPUTS } from '../../src/model/onnx/refit.ts';
import { forward } from '../../src/model/network.ts';
import { loadIdxPair, MNIST_TEST_IMAGES, MNIST_TEST_LABELS } from '../../src/train/mnist.ts';

const lowered = async (name: string) => lowerGraph(parseOnnx(new Uint8Array(await readFile(new URL(`../fixtures/onnx/${name}.onnx`, import.meta.url))), name));
const argmax = (v: number[]) => v.indexOf(Math.max(...v));

t.test('mlp_relu: the re-fitted network is closer to the original on records calibration never saw', async (t) => {
  const model = await lowered('mlp_relu');
  const test = await loadIdxPair(MNIST_TEST_IMAGES, MNIST_TEST_LABELS);
  const px = (r: ArrayLike<number>) => Array.from(r, (v) => v / 255);
  const calibration = test.images.slice(5000, 6000).map(px);
  const held = test.images.slice(0, 1000).map(px);
  const labels = test.labels.slice(0, 1000);
  const exact = held.map((x) => exactScores(model, x));

  const measure = (refit: boolean, finetune = false) => {
    const { network, refits } = approximateNetwork(model, calibration, { refit, finetune });
    let correct = 0,
      agree = 0,
      se = 0;
    held.forEach((x, i) => {
      const s = forward(network, x);
      if (argmax(s) === labels[i]) correct++;
      if (argmax(s) === argmax(exact[i])) agree++;
      s.forEach((v, k) => (se += (v - exact[i][k]) ** 2));
    });
    return { accuracy: correct / held.length, agreement: agree / held.length, rmse: Math.sqrt(se / (held.length * 10)), refits };
  };
  const original = exact.filter((s, i) => argmax(s) === labels[i]).length / held.length;
  const plain = measure(false);
  const refit = measure(true);
  const tuned = measure(true, true);
  t.comment(
    `held-out accuracy: original ${original}, quadratics ${plain.accuracy}, re-fitted ${refit.accuracy}, fine-tuned ${tuned.accuracy}; output rms error ${plain.rmse.toFixed(3)} -> ${refit.rmse.toFixed(3)} -> ${tuned.rmse.toFixed(3)}`,
  );
  t.equal(plain.refits.size, 0, 'refit off: no layer re-fitted');
  t.same([...refit.refits.keys()], [2, 4], 'the two linear layers after the ReLUs are re-fitted, the first is not');
  for (const r of refit.refits.values()) t.ok(r.rmse_after < r.rmse_before, `calibration error ${r.rmse_before.toFixed(3)} -> ${r.rmse_after.toFixed(3)}`);
  t.ok(refit.accuracy >= plain.accuracy + 0.05, `accuracy ${plain.accuracy} -> ${refit.accuracy} (at least 5 points)`);
  t.ok(refit.agreement > plain.agreement, `agreement with the original ${plain.agreement} -> ${refit.agreement}`);
  t.ok(refit.rmse < 0.8 * plain.rmse, `output error ${plain.rmse.toFixed(3)} -> ${refit.rmse.toFixed(3)}`);
  // Measured 2026-12-01: 0.938 -> 0.945 accuracy, 0.956 -> 0.959 agreement, 1.065 -> 0.951 rms error.
  t.ok(tuned.accuracy >= refit.accuracy, `fine-tuned accuracy ${refit.accuracy} -> ${tuned.accuracy}`);
  t.ok(tuned.agreement >= refit.agreement, `fine-tuned agreement ${refit.agreement} -> ${tuned.agreement}`);
  t.ok(tuned.rmse < 0.95 * refit.rmse, `fine-tuned output error ${refit.rmse.toFixed(3)} -> ${tuned.rmse.toFixed(3)}`);
});

t.test('mlp_square: exact activations leave every weight as the model has it', async (t) => {
  const model = await lowered('mlp_square');
  const calibration = Array.from({ length: 50 }, (_, r) => Array.from({ length: 784 }, (_, j) => ((r * 31 + j * 7) % 97) / 97));
  const { network, refits, finetune } = approximateNetwork(model, calibration);
  t.equal(refits.size, 0);
  t.equal(finetune, undefined, 'no approximated activation: no fine-tune');
  const dense = network.layers.filter((l) => l.type === 'dense');
  const affine = model.stages.filter((s) => s.kind === 'affine');
  t.same(
    dense.map((l) => l.weights),
    affine.map((s) => s.weights),
  );
});

t.test('refitAffine declines what it cannot improve or cannot afford', async (t) => {
  const stage = { kind: 'affine' as const, nodes: ['n'], shape: [1, 2], weights: [[1, 2]], bias: [0.5] };
  const rows = [Float64Array.of(1, 2), Float64Array.of(-1, 3), Float64Array.of(0.5, 0.5)];
  t.equal(refitAffine(stage, rows, rows), undefined, 'inputs equal to the original ones: nothing to improve');
  const wide = { ...stage, weights: [new Array<number>(REFIT_MAX_INPUTS + 1).fill(1)] };
  const w = [new Float64Array(REFIT_MAX_INPUTS + 1)];
  t.equal(refitAffine(wide, w, w), undefined, 'wider than REFIT_MAX_INPUTS');
  const shifted = rows.map((r) => r.map((v) => 2 * v + 1));
  const r = refitAffine(stage, shifted, rows);
  t.ok(r && r.report.rmse_after < 0.1 * r.report.rmse_before, 'an affine distortion of the inputs is undone');
});
