// The compile report's tolerance (report.ts statedTolerance) against the error encryption is built
// to leave: the flood's, Gaussian with standard deviation 2^-FLOOD_PRECISION_BITS of the largest
// score the server computes (compile-batch.ts, network-flood.ts). Scores here are logits reaching
// 40, as LeNet's do: the client's Softmax, LogSoftmax or identity of the noisy logits must stay
// within the stated tolerance of the exact ones. Sized on the outputs alone (probabilities: 1e-3),
// the tolerance was four to ten times too small for the Softmax head.
import t from 'tap';
import { FLOOD_PRECISION_BITS } from '../../src/model/compile-batch.ts';
import type { Head } from '../../src/model/onnx/lower.ts';
import { statedTolerance } from '../../src/model/onnx/report.ts';
import { rng } from '../helpers/networks.ts';

const softmax = (z: number[]) => {
  const top = Math.max(...z);
  const e = z.map((v) => Math.exp(v - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
};
const heads: Record<string, Head> = {
  Softmax: { task: 'multiclass', postprocess: 'softmax', outputs: [{ name: 'p', ops: ['Softmax'], of: softmax }] },
  LogSoftmax: { task: 'multiclass', postprocess: 'softmax', outputs: [{ name: 'p', ops: ['LogSoftmax'], of: (z) => softmax(z).map(Math.log) }] },
  identity: { task: 'multiclass', postprocess: 'softmax', outputs: [{ name: 'z', ops: [], of: (z) => z }] },
};

const centered = rng(13);
const r = () => centered() + 0.5; // [0, 1)
const gauss = () => Math.sqrt(-2 * Math.log(1 - r() * 0.999999)) * Math.cos(2 * Math.PI * r());
// Logits like a trained classifier's: one class well ahead of most, near ties in some records.
const records = Array.from({ length: 4000 }, (_, i) => {
  const z = Array.from({ length: 10 }, () => (r() - 0.5) * 20);
  z[i % 10] = i % 4 === 0 ? z[(i + 1) % 10] + r() : 40 * r();
  return z;
});
const peak = Math.max(...records.flat().map(Math.abs));
const sigma = 2 ** -FLOOD_PRECISION_BITS * peak;

for (const [name, head] of Object.entries(heads))
  t.test(`${name} head, logits up to ${peak.toFixed(1)}: the flood's error stays within the stated tolerance`, async (t) => {
    const o = head.outputs[0];
    const reference = records.map((z) => ({ [o.name]: o.of(z) }));
    const tolerance = statedTolerance(head, 0, reference, records);
    let worst = 0;
    for (const z of records) {
      const exact = o.of(z);
      const noisy = o.of(z.map((v) => v + sigma * gauss()));
      exact.forEach((v, i) => (worst = Math.max(worst, Math.abs(noisy[i] - v))));
    }
    t.ok(worst <= tolerance, `largest error ${worst.toExponential(2)} <= stated ${tolerance.toExponential(2)} (flood sigma ${sigma.toExponential(2)})`);
    // Not vacuous: the flood's error is a fair share of what is stated.
    t.ok(worst > tolerance / 20, `the error ${worst.toExponential(2)} is within 20x of the tolerance`);
  });

t.test('outputs that are labels (ArgMax) are not numeric outputs: only the scores size the tolerance', async (t) => {
  const head: Head = { task: 'multiclass', postprocess: 'softmax', outputs: [{ name: 'label', ops: ['ArgMax'], of: (z) => [z.indexOf(Math.max(...z))] }] };
  t.equal(statedTolerance(head, 0.01, [{ label: [9] }], [[0.5, -2]]), 1.5 * 0.01 + 1e-3 * 2);
  t.equal(statedTolerance(head, 0, [{ label: [9] }], [[0.5]]), 1e-3, 'at least 1e-3: max(1, |score|)');
});
