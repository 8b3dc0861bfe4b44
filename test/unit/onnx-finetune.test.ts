// The fine-tune of the approximated network (src/model/onnx/finetune.ts), on a tiny ReLU network
// with seeded weights: after the re-fit, it must bring the outputs measurably closer to the
// original model's on records it never saw, be deterministic, and stay off when asked.
import t from 'tap';
import { approximateNetwork, exactScores } from '../../src/model/onnx/compile.ts';
import type { LoweredModel, Stage } from '../../src/model/onnx/lower.ts';
import { forward, type Layer } from '../../src/model/network.ts';
import { finetuneNetwork, FINETUNE_MAX_WEIGHTS } from '../../src/model/onnx/finetune.ts';

let seed = 12345;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
const gauss = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
const affine = (outputs: number, inputs: number): Stage => ({
  kind: 'affine',
  weights: Array.from({ length: outputs }, () => Array.from({ length: inputs }, () => gauss() / Math.sqrt(inputs))),
  bias: Array.from({ length: outputs }, () => 0.1 * gauss()),
  nodes: ['gemm'],
  shape: [1, outputs],
});
const relu = (node: string): Stage => ({ kind: 'activation', act: { kind: 'relu', node } });
const model: LoweredModel = {
  inputName: 'x',
  inputShape: [1, 8],
  stages: [affine(16, 8), relu('r1'), affine(12, 16), relu('r2'), affine(3, 12)],
  head: { task: 'regression', postprocess: 'affine', outputs: [] },
};
const records = (n: number) => Array.from({ length: n }, () => Array.from({ length: 8 }, gauss));
const calibration = records(400);
const held = records(400);
const exact = held.map((x) => exactScores(model, x));
const rmse = (net: ReturnType<typeof approximateNetwork>['network']) => {
  let se = 0;
  held.forEach((x, i) => forward(net, x).forEach((v, k) => (se += (v - exact[i][k]) ** 2)));
  return Math.sqrt(se / (held.length * 3));
};

t.test('fine-tuning brings the approximated network closer to the original than the re-fit alone', async (t) => {
  const refitOnly = approximateNetwork(model, calibration, { finetune: false });
  const tuned = approximateNetwork(model, calibration);
  t.equal(refitOnly.finetune, undefined, 'finetune: false: no fine-tune');
  t.equal(refitOnly.refits.size, 2, 'both layers after a ReLU re-fitted');
  const report = tuned.finetune;
  t.ok(report, 'fine-tuned by default');
  t.ok(report!.rmse_after < report!.rmse_before, `held-back calibration error ${report!.rmse_before.toFixed(4)} -> ${report!.rmse_after.toFixed(4)}`);
  const before = rmse(refitOnly.network),
    after = rmse(tuned.network);
  t.comment(`unseen records: output rms error ${before.toFixed(4)} (re-fit) -> ${after.toFixed(4)} (fine-tuned), ${report!.epochs} epochs, ${report!.ms} ms`);
  t.ok(after < 0.98 * before, `unseen records: ${before.toFixed(4)} -> ${after.toFixed(4)} (at least 2% less)`);
  t.notSame(tuned.fits[0].range, refitOnly.fits[0].range, 'the activation ranges are measured again on the fine-tuned network');

  const again = approximateNetwork(model, calibration);
  t.same(again.network.layers, tuned.network.layers, 'deterministic: the same records give the same weights');
  t.equal(approximateNetwork(model, calibration, { refit: false }).finetune, undefined, 'refit: false turns the fine-tune off too');
});

t.test('finetuneNetwork declines what it cannot afford or cannot train', async (t) => {
  const wide: Layer[] = [
    { type: 'dense', weights: [new Array<number>(FINETUNE_MAX_WEIGHTS + 1).fill(0)], bias: [0] },
    { type: 'quadratic', a: [1], b: [0], c: [0] },
    { type: 'dense', weights: [[1]], bias: [0] },
  ];
  const x = Array.from({ length: 20 }, () => new Float64Array(FINETUNE_MAX_WEIGHTS + 1));
  const y = x.map(() => Float64Array.of(1));
  t.equal(finetuneNetwork(wide, x, y, [1], undefined), undefined, 'more weights than FINETUNE_MAX_WEIGHTS');
  const small = [wide[1], wide[2]];
  t.equal(finetuneNetwork(small, x.slice(0, 5), y.slice(0, 5), [1], undefined), undefined, 'not dense first, and too few records');
});
