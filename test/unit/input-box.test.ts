// Batch mode's 2x2 box prefilter (src/model/input-box.ts): a first layer that pools 2x2 after a
// convolution factors exactly into the box sums and a smaller kernel, nothing else does; the
// client's box sums are what the compiler's plan expects (same order, with and without deskew);
// the client part and the server's plan check refuse a box that does not fit.
import t from 'tap';
import { validateBatchPlan } from '../../src/fhe/batch-plan-check.ts';
import { parseClientPart } from '../../src/model/client-part.ts';
import { boxSums, boxedInputs, factorBox } from '../../src/model/input-box.ts';
import { preprocessColumnsInto, preprocessRecord } from '../../src/model/postprocess.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(62);
const box = { channels: 2, height: 7, width: 6 };
const n = box.channels * box.height * box.width;

/** Rows of a k x k convolution (stride 2, `filters` filters) followed by 2x2 average pooling, as dense weights over the image. */
function convPoolRows(k: number, filters: number) {
  const { channels: C, height: H, width: W } = box;
  const kernel = Array.from({ length: filters * C * k * k }, () => r() - 0.5);
  const rows: number[][] = [];
  const oh = Math.floor((H - k) / 2);
  const ow = Math.floor((W - k) / 2);
  for (let f = 0; f < filters; f++)
    for (let y = 0; y < oh; y++)
      for (let x = 0; x < ow; x++) {
        const w = new Array<number>(n).fill(0);
        for (let c = 0; c < C; c++)
          for (let dy = 0; dy < k; dy++)
            for (let dx = 0; dx < k; dx++)
              for (let a = 0; a < 2; a++)
                for (let b = 0; b < 2; b++) w[(c * H + 2 * y + dy + a) * W + 2 * x + dx + b] += 0.25 * kernel[((f * C + c) * k + dy) * k + dx];
        rows.push(w);
      }
  return rows;
}

const sparse = (rows: number[][]) => {
  const out = { rows: rows.length, start: [0], index: [] as number[], weight: [] as number[], bias: rows.map(() => r()) };
  for (const w of rows) {
    w.forEach((v, i) => {
      if (v !== 0) {
        out.index.push(i);
        out.weight.push(v);
      }
    });
    out.start.push(out.index.length);
  }
  return out;
};

const dot = (w: ArrayLike<number>, x: ArrayLike<number>, at = 0, idx?: ArrayLike<number>) => {
  let s = 0;
  for (let t = 0; t < w.length; t++) s += w[t] * x[idx ? idx[t] : at + t];
  return s;
};

t.test('conv + 2x2 average pooling factors into box sums: the same values from fewer taps', async (t) => {
  const first = sparse(convPoolRows(3, 3));
  const boxed = factorBox(first, box);
  if (!boxed) return t.fail('the layer factors');
  t.equal(boxed.rows, first.rows);
  t.same(boxed.bias, first.bias, 'biases unchanged');
  t.ok(
    boxed.start.every((s, j) => j === 0 || s - boxed.start[j - 1] <= box.channels * 9),
    `at most C x 3 x 3 taps per row (${boxed.index.length} in all, from ${first.index.length})`,
  );
  let worst = 0;
  for (let trial = 0; trial < 20; trial++) {
    const x = Array.from({ length: n }, () => r() * 2 - 1);
    const b = boxSums(x, box);
    t.equal(b.length, boxedInputs(box));
    for (let j = 0; j < first.rows; j++) {
      const s0 = first.start[j],
        s1 = first.start[j + 1];
      const want = dot(first.weight.slice(s0, s1), x, 0, first.index.slice(s0, s1));
      const got = dot(boxed.weight.slice(boxed.start[j], boxed.start[j + 1]), b, 0, boxed.index.slice(boxed.start[j], boxed.start[j + 1]));
      worst = Math.max(worst, Math.abs(want - got));
    }
  }
  t.ok(worst < 1e-12, `every row's value over the box sums = over the pixels (${worst.toExponential(1)})`);
});

t.test('rows that are not box-shaped do not factor', async (t) => {
  const rows = convPoolRows(3, 2);
  // One weight moved: the row is no longer k * box.
  rows[1][rows[1].findIndex((v) => v !== 0)] += 1e-3;
  t.equal(factorBox(sparse(rows), box), undefined, 'one perturbed row is enough to refuse');
  // A plain (unpooled) 3x3 convolution: its rows factor only with more taps, so not at all.
  const plain = sparse(
    Array.from({ length: 4 }, (_, j) => {
      const w = new Array<number>(n).fill(0);
      for (let dy = 0; dy < 3; dy++) for (let dx = 0; dx < 3; dx++) w[(dy + (j >> 1)) * box.width + dx + (j & 1)] = r() + 0.1;
      return w;
    }),
  );
  t.equal(factorBox(plain, box), undefined, 'an unpooled convolution is refused');
});

t.test("the client's batch values: box sums of preprocessRecord, in the plan's order", async (t) => {
  const part = { preprocess: { mean: Array.from({ length: n }, () => r()), std: Array.from({ length: n }, () => 1 + r()) } };
  const rows = Array.from({ length: 4 }, () => Array.from({ length: n }, () => r() * 255));
  const m = boxedInputs(box);
  const stride = rows.length + 1;
  const out = new Float64Array(m * stride).fill(NaN);
  preprocessColumnsInto(rows, part, undefined, out, stride, box);
  let same = 0;
  rows.forEach((row, i) => {
    const want = boxSums(preprocessRecord(row, part), box);
    for (let j = 0; j < m; j++) if (Object.is(out[j * stride + i], want[j])) same++;
  });
  t.equal(same, rows.length * m, 'every value, box sum j of record r at j stride + r');
  // By hand: the first box sum of channel 1.
  const x = preprocessRecord(rows[0], part);
  const at = box.height * box.width;
  t.equal(out[(box.height - 1) * (box.width - 1) * stride], x[at] + x[at + 1] + x[at + box.width] + x[at + box.width + 1]);
});

t.test('a box that does not fit is refused: client part and server plan', async (t) => {
  const client = (input_box: unknown, features = n) =>
    JSON.stringify({
      format: 'sealed-client',
      version: 1,
      model_id: '0'.repeat(32),
      params: { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [60, 40, 60], securityLevel: 128 },
      features: Array.from({ length: features }, (_, j) => `f${j}`),
      batch: { params: { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [26, 26, 26], securityLevel: 128 }, input_box },
    });
  t.doesNotThrow(() => parseClientPart(client(box), 'x'), 'a shape of the features');
  for (const bad of [{ ...box, width: 5 }, { ...box, height: 1, width: 42 }, { ...box, channels: 0.5 }, null, 'box'])
    t.throws(() => parseClientPart(client(bad), 'x'), /batch input box/, `refused: ${JSON.stringify(bad)}`);
  const plan = {
    params: { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [26, 26, 26, 26], securityLevel: 128 },
    inputScaleBits: 26,
    inputs: boxedInputs(box),
    inputBox: box,
    first: { rows: 1, start: [0, 1], index: [0], weight: [1], weightScaleBits: 0, bias: [0] },
    square: false,
    outputScaleBits: 26,
  };
  t.doesNotThrow(() => validateBatchPlan(plan));
  t.throws(() => validateBatchPlan({ ...plan, inputs: n }), /inputBox holds 60 box sums, not inputs = 84/);
});
