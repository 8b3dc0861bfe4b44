// A convolutional network (conv2d-parity, quadratic activation, dense) compiled and run
// encrypted: the decrypted logits equal the plaintext forward pass.
import t from 'tap';
import { runEncrypted } from '../helpers/encrypted.ts';
import { opCounts } from '../../src/fhe/program.ts';
import { compileNetwork } from '../../src/model/compile-network.ts';
import { packRecords } from '../../src/model/layout.ts';
import { forward } from '../../src/model/network.ts';
import { mnistShapedNetworks, rng } from '../helpers/networks.ts';

const r = rng(3);
const { cnn, mlp } = mnistShapedNetworks(r, 16, 128);

for (const [name, net, maxRotations] of [
  ['conv -> quadratic -> dense', cnn, 24],
  ['dense -> quadratic -> dense (interleaved input copies)', mlp, 26],
] as const)
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
