// The dense layouts of network-layouts.ts through the engine: a network that takes the row-sum
// and sparse layouts, encrypted, gives the plaintext network's outputs (the plaintext checks of
// each layout are in test/unit/network-layouts.test.ts).
import t from 'tap';
import { opCounts, opCountsByLevel, rotationRoutes, rotationsOf, type LinearStep } from '../../src/fhe/program.ts';
import { compileNetwork } from '../../src/model/compile-network.ts';
import { packRecords } from '../../src/model/layout.ts';
import { buildNetworkWith } from '../../src/model/network-steps.ts';
import { forward, type Dense, type Network } from '../../src/model/network.ts';
import { runEncrypted } from '../helpers/encrypted.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(17);
const dense = (out: number, n: number, w = 1): Dense => ({
  type: 'dense',
  weights: Array.from({ length: out }, () => Array.from({ length: n }, () => r() * w)),
  bias: Array.from({ length: out }, () => r()),
});

t.test('encrypted: the new layouts give the plaintext network', async (t) => {
  const small: Network = {
    input: { height: 8, width: 8 },
    layers: [
      dense(32, 64, 0.3),
      { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 },
      dense(16, 32, 0.3),
      { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 },
      dense(10, 16, 0.3),
    ],
  };
  const images = Array.from({ length: 3 }, () => Array.from({ length: 64 }, () => Math.max(0, r() * 2)));
  const m = compileNetwork(small, images, { slots: 8192, privacy: 'none' });
  const kinds = buildNetworkWith(small, 8192, []);
  t.ok(opCounts(m.program).rotations < opCounts({ steps: kinds.built.steps }).rotations, 'fewer rotations than the hybrid layouts');
  t.ok(
    m.program.steps.some((s) => s.op === 'linear' && s.terms.length === 1 && s.folds[0] === 1),
    'a row-sum step (one product, folds from 1)',
  );
  t.ok(
    m.output.offsets.some((o) => o > 8192 / 2),
    'outputs at slots S - k (sparse last layer)',
  );
  const decoded = await runEncrypted(m.program, m.masks, packRecords(m.input, images));
  let worst = 0;
  decoded.forEach((dec, i) => forward(small, images[i]).forEach((w, c) => (worst = Math.max(worst, Math.abs(dec[m.output.offsets[c]] - w)))));
  t.ok(worst < 1e-3, `largest output error ${worst.toExponential(2)} < 1e-3`);
});

t.test("encrypted: the client's rotated copies take the first step's rotations off the server", async (t) => {
  // 256 features x 64 outputs in 4096 slots: the replicated first layer reads 4 diagonals.
  const net: Network = { input: { height: 16, width: 16 }, layers: [dense(64, 256, 0.1), { type: 'quadratic', a: 0.5, b: 0.2, c: 0.1 }, dense(10, 64, 0.3)] };
  const images = Array.from({ length: 3 }, () => Array.from({ length: 256 }, () => Math.max(0, r() * 2)));
  const plain = compileNetwork(net, images, { slots: 4096, privacy: 'none' });
  const m = compileNetwork(net, images, { slots: 4096, privacy: 'none', inputCopies: 16 });
  const first = m.program.steps[0];
  const given = first.op === 'linear' ? (first.inputRotations ?? []) : [];
  t.ok(given.length > 0 && given.length < 16, `the client sends ${given.length} rotated copies`);
  t.same(m.input.rotations, given, 'the client part names them');
  t.ok(first.op === 'linear' && first.terms.every((term) => term.giant === 0), 'the first step rotates no group: every term reads its own copy');
  const plainFirst = plain.program.steps[0] as LinearStep;
  const routes = rotationRoutes(plainFirst, new Set(plain.program.galoisSteps));
  const saved = routes.babies.length + routes.giantRotations;
  t.ok(saved > 0, `the first step without copies rotates ${saved} times before its folds`);
  t.equal(opCounts(m.program).rotations, opCounts(plain.program).rotations - saved, 'with copies, those rotations are gone');
  t.equal(opCountsByLevel(m.program).get('rotate@0') ?? 0, 0, 'none is left at the top level');
  const later = new Set(rotationsOf(m.program.steps.slice(1)).concat(first.op === 'linear' ? first.folds : []));
  t.same(
    m.program.galoisSteps,
    [...later].sort((a, b) => a - b),
    "Galois keys only for the server's own rotations",
  );
  let single = 0,
    section = 0;
  const sizes = (n: (b: Uint8Array) => void) => (b: Uint8Array) => n(b);
  const plainOut = await runEncrypted(
    plain.program,
    plain.masks,
    packRecords(plain.input, images),
    sizes((b) => (single = b.length)),
  );
  const decoded = await runEncrypted(
    m.program,
    m.masks,
    packRecords(m.input, images),
    sizes((b) => (section = b.length)),
  );
  t.ok(section > given.length * single * 0.9, `a section of ${given.length + 1} ciphertexts: ${section} bytes, one is ${single}`);
  let worst = 0;
  decoded.forEach((dec, i) =>
    forward(net, images[i]).forEach((w, c) => {
      worst = Math.max(worst, Math.abs(dec[m.output.offsets[c]] - w), Math.abs(plainOut[i][plain.output.offsets[c]] - w));
    }),
  );
  t.ok(worst < 1e-3, `largest output error ${worst.toExponential(2)} < 1e-3, with and without copies`);
});
