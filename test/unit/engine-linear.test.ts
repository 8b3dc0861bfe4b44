import t from 'tap';
import { runEncrypted } from '../helpers/encrypted.ts';
import { compileLinear } from '../../src/model/compile-linear.ts';
import { packRecords, unpackOutputs } from '../../src/model/layout.ts';

function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31 - 0.5;
  };
}

for (const k of [1, 3]) {
  t.test(`linear model with ${k} output(s): encrypted equals plaintext`, async (t) => {
    const r = rng(k);
    const n = 30;
    const weights = Array.from({ length: k }, () => Array.from({ length: n }, () => r()));
    const bias = Array.from({ length: k }, () => r());
    const records = Array.from({ length: 150 }, () => Array.from({ length: n }, () => 4 * r()));
    const m = compileLinear({ weights, bias }, records);
    t.equal(m.program.relin, false, 'a linear model needs no relinearization');
    const decoded = await runEncrypted(m.program, m.masks, packRecords(m.input, records));
    const got = unpackOutputs(m.output, m.input.recordsPerCiphertext, decoded, records.length);
    let worst = 0;
    records.forEach((x, i) => {
      for (let c = 0; c < k; c++) {
        const want = bias[c] + weights[c].reduce((a, w, j) => a + w * x[j], 0);
        worst = Math.max(worst, Math.abs(got[i][c] - want));
      }
    });
    t.ok(worst < 1e-4, `largest error ${worst.toExponential(2)} under 1e-4`);
  });
}
