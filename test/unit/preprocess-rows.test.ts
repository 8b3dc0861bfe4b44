// Batch queries preprocess their records straight into one matrix, column by column
// (preprocessColumnsInto), instead of an array per record: the values must be exactly
// preprocessRecord's (times the input factors), with and without the image models' deskew, or
// batch and single queries would disagree; each at its column's place, over several blocks of
// records, and nothing written past the records.
import t from 'tap';
import { preprocessColumnsInto, preprocessRecord } from '../../src/model/postprocess.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(54);
const side = 8;
const n = side * side;
const rows = Array.from({ length: 150 }, () => Array.from({ length: n }, () => (r() < 0.6 ? 0 : r() * 255)));
// A slanted stroke off centre, which the deskew straightens and moves.
rows[0] = Array.from({ length: n }, (_, i) => (i % side === Math.floor(i / side) >> 1 ? 200 : 0));
const preprocess = { mean: Array.from({ length: n }, () => r() * 50), std: Array.from({ length: n }, () => 1 + r() * 80) };
const factors = Array.from({ length: n }, () => 2 ** -Math.floor(r() * 9));

for (const image of [undefined, { side, deskew: true }, { side, deskew: false }])
  for (const f of [undefined, factors])
    t.test(`image ${image ? `deskew ${image.deskew}` : 'none'}, ${f ? 'with' : 'without'} factors`, async (t) => {
      const part = { preprocess, image };
      const stride = rows.length + 7;
      const out = new Float64Array(n * stride).fill(NaN);
      preprocessColumnsInto(rows, part, f, out, stride);
      let same = 0;
      rows.forEach((row, i) => {
        const want = preprocessRecord(row, part).map((v, j) => (f ? v * f[j] : v));
        for (let j = 0; j < n; j++) if (Object.is(out[j * stride + i], want[j])) same++;
      });
      t.equal(same, rows.length * n, 'every value is the one preprocessRecord gives, input j of record r at j stride + r');
      t.ok(
        Array.from({ length: n }, (_, j) => out.subarray(j * stride + rows.length, (j + 1) * stride)).every((gap) => gap.every(Number.isNaN)),
        'nothing written past the records',
      );
      if (image?.deskew) {
        const plain = preprocessRecord(rows[0], { preprocess }).map((v, j) => (f ? v * f[j] : v));
        t.ok(
          plain.some((v, j) => v !== out[j * stride]),
          'the deskew moved pixels (the check compares something)',
        );
      }
    });
