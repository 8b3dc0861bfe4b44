// A convolutional network (conv2d-parity, quadratic activation, dense) compiled and run
// encrypted: the decrypted logits equal the plaintext forward pass.
import t from 'tap';
import { runEncrypted } from '../helpers/encrypted.ts';
import { opCounts } from '../../src/fhe/program.ts';
import { compileNetwork } from '../../src/model/compile-network.ts';
import { packRecords } from '../../src/model/layout.ts';
import { forward, type Network } from '../../src/model/network.ts';

function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  };
}

const r = rng(3);
const F = 16;
const cnn: Network = {
  input: { height: 28, width: 28 },
  layers: [
    { type: 'conv2d-parity', kernel: Array.from({ length: F }, () => Array.from({ length: 5 }, () => Array.from({ length: 5 }, () => r() * 0.6))), bias: Array.from({ length: F }, () => r() * 0.2) },
    { type: 'quadratic', a: 0.5, b: 1, c: 0.1 },
    { type: 'dense', weights: Array.from({ length: 10 }, () => Array.from({ length: 12 * 12 * F }, () => r() * 0.1)), bias: Array.from({ length: 10 }, () => r()) },
  ],
};
const mlp: Network = {
  input: { height: 28, width: 28 },
  layers: [
    { type: 'dense', weights: Array.from({ length: 128 }, () => Array.from({ length: 784 }, () => r() * 0.1)), bias: Array.from({ length: 128 }, () => r()) },
    { type: 'quadratic', a: 0.7, b: 0.2, c: 0.1 },
    { type: 'dense', weights: Array.from({ length: 10 }, () => Array.from({ length: 128 }, () => r() * 0.3)), bias: Array.from({ length: 10 }, () => r()) },
  ],
};

for (const [name, net, maxRotations] of [['conv -> quadratic -> dense', cnn, 24], ['dense -> quadratic -> dense (interleaved input copies)', mlp, 26]] as const)
t.test(`${name}: encrypted logits equal plaintext logits`, async (t) => {
  const images = Array.from({ length: 6 }, () => Array.from({ length: 784 }, () => Math.max(0, r() * 2)));
  const m = compileNetwork(net, images, { privacy: 'none' }); // the engine's own figures (flood: test/circuit-privacy-network.test.ts)
  const ops = opCounts(m.program);
  t.equal(m.program.params.polyModulusDegree, 8192);
  t.same(m.program.params.coeffModulusBits, [60, 30, 30, 60], 'depth 2: conv and square rescale, the last layer does not');
  t.ok(ops.rotations <= maxRotations, `${ops.rotations} rotations`);
  const decoded = await runEncrypted(m.program, m.masks, packRecords(m.input, images), (q) => t.ok(q.length < 200_000, `query ${q.length} bytes`));
  let worst = 0;
  decoded.forEach((dec, i) => forward(net, images[i]).forEach((w, c) => (worst = Math.max(worst, Math.abs(dec[m.output.offsets[c]] - w)))));
  t.ok(worst < 1e-3, `largest logit error ${worst.toExponential(2)} < 1e-3`);
});
