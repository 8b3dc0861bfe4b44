// The dense layouts of network-layouts.ts through the engine: a network that takes the row-sum
// and sparse layouts, encrypted, gives the plaintext network's outputs (the plaintext checks of
// each layout are in test/unit/network-layouts.test.ts).
import t from 'tap';
import { opCounts } from '../src/fhe/program.ts';
import { compileNetwork } from '../src/model/compile-network.ts';
import { packRecords } from '../src/model/layout.ts';
import { buildNetworkWith } from '../src/model/network-steps.ts';
import { forward, type Dense, type Network } from '../src/model/network.ts';
import { runEncrypted } from './helpers/encrypted.ts';
import { rng } from './helpers/networks.ts';

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
