// Batch queries preprocess their records straight into one matrix (preprocessRowsInto) instead of
// an array per record: the values must be exactly preprocessRecord's (times the input factors),
// with and without the image models' deskew, or batch and single queries would disagree.
import t from 'tap';
import { preprocessRecord, preprocessRowsInto } from '../../src/model/postprocess.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(54);
const side = 8;
const n = side * side;
const rows = Array.from({ length: 5 }, () => Array.from({ length: n }, () => (r() < 0.6 ? 0 : r() * 255)));
// A slanted stroke off centre, which the deskew straightens and moves.
rows[0] = Array.from({ length: n }, (_, i) => (i % side === Math.floor(i / side) >> 1 ? 200 : 0));
const preprocess = { mean: Array.from({ length: n }, () => r() * 50), std: Array.from({ length: n }, () => 1 + r() * 80) };
const factors = Array.from({ length: n }, () => 2 ** -Math.floor(r() * 9));

for (const image of [undefined, { side, deskew: true }, { side, deskew: false }])
  for (const f of [undefined, factors])
    t.test(`image ${image ? `deskew ${image.deskew}` : 'none'}, ${f ? 'with' : 'without'} factors`, async (t) => {
      const part = { preprocess, image };
      const out = new Float64Array(rows.length * n).fill(NaN);
      preprocessRowsInto(rows, part, f, out);
      let same = 0;
      rows.forEach((row, i) => {
        const want = preprocessRecord(row, part).map((v, j) => (f ? v * f[j] : v));
        for (let j = 0; j < n; j++) if (Object.is(out[i * n + j], want[j])) same++;
      });
      t.equal(same, rows.length * n, 'every value is the one preprocessRecord gives');
      if (image?.deskew) {
        const plain = preprocessRecord(rows[0], { preprocess }).map((v, j) => (f ? v * f[j] : v));
        t.ok(
          plain.some((v, j) => v !== out[j]),
          'the deskew moved pixels (the check compares something)',
        );
      }
    });
