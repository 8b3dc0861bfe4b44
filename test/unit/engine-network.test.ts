// A convolutional network (conv2d-parity, quadratic activation, dense) compiled and run
// encrypted: the decrypted logits equal the plaintext forward pass.
import t from 'tap';
import { runEncrypted } from '../helpers/encrypted.ts';
import { compactRotations, opCounts, rotationRoutes, rotationsOf } from '../../src/fhe/program.ts';
import { compileNetwork } from '../../src/model/compile-network.ts';
import { packRecords } from '../../src/model/layout.ts';
import { forward } from '../../src/model/network.ts';
import { mnistShapedNetworks, rng } from '../helpers/networks.ts';

const r = rng(3);
const { cnn, mlp } = mnistShapedNetworks(r, 16, 128);

for (const [name, net, maxRotations] of [
  ['conv -> quadratic -> dense', cnn, 24],
  ['dense -> quadratic -> dense (first layer replicated at every slot)', mlp, 26],
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

// Compact Galois keys (compactRotations): baby steps reached by their binary digits, giant
// steps by Horner's rule, here in rescaled steps (each giant group rescaled before its rotation).
for (const [name, net] of [
  ['conv -> quadratic -> dense', cnn],
  ['dense -> quadratic -> dense', mlp],
] as const)
  t.test(`${name} with compact Galois keys: same rotations, fewer keys, logits equal plaintext`, async (t) => {
    const images = Array.from({ length: 4 }, () => Array.from({ length: 784 }, () => Math.max(0, r() * 2)));
    const m = compileNetwork(net, images, { privacy: 'none' });
    const full = opCounts(m.program).rotations;
    const program = { ...m.program, galoisSteps: compactRotations(m.program.steps) };
    t.ok(program.galoisSteps.length < rotationsOf(program.steps).length, `${program.galoisSteps.length} keys instead of ${rotationsOf(program.steps).length}`);
    t.equal(opCounts(program).rotations, full, `the same ${full} rotations`);
    t.ok(
      program.steps.some((st) => st.op === 'linear' && rotationRoutes(st, new Set(program.galoisSteps)).horner !== undefined),
      "a step's giant steps use Horner's rule",
    );
    const decoded = await runEncrypted(program, m.masks, packRecords(m.input, images), () => {});
    let worst = 0;
    decoded.forEach((dec, i) => forward(net, images[i]).forEach((w, c) => (worst = Math.max(worst, Math.abs(dec[m.output.offsets[c]] - w)))));
    t.ok(worst < 1e-3, `largest logit error ${worst.toExponential(2)} < 1e-3`);
  });
