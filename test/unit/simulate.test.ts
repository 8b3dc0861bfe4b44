// The plaintext simulation's linear step visits only the masks' nonzero slots (simulate.ts): the
// result must equal, bit for bit, the sum over every slot (rotation by index, masks multiplied in
// full), for masks of every shape: empty, full, runs that wrap past the rotation's boundary,
// single slots at either end, and negative weights and values.
import t from 'tap';
import type { Program } from '../../src/fhe/program.ts';
import { simulate } from '../../src/model/simulate.ts';
import { rng } from '../helpers/networks.ts';

const r = rng(29);

/** The definition: out = sum over giants g of rot(sum over its terms of mask * rot(x, baby), g), then folds, then bias. */
function dense(p: Program, masks: Float64Array[], x: Float64Array): Float64Array {
  const st = p.steps[0];
  if (st.op !== 'linear') throw new Error('linear steps only');
  const n = x.length;
  const acc = new Float64Array(n);
  for (const g of [...new Set(st.terms.map((u) => u.giant))]) {
    const inner = new Float64Array(n);
    for (const u of st.terms.filter((v) => v.giant === g)) for (let i = 0; i < n; i++) inner[i] += masks[u.mask][i] * x[(((i + u.baby) % n) + n) % n];
    for (let i = 0; i < n; i++) acc[i] += inner[(((i + g) % n) + n) % n];
  }
  let out = acc;
  for (const f of st.folds) {
    const sum = out.slice();
    for (let i = 0; i < n; i++) sum[i] += out[(((i + f) % n) + n) % n];
    out = sum;
  }
  if (st.bias !== undefined) for (let i = 0; i < n; i++) out[i] += masks[st.bias][i];
  return out;
}

const n = 64;
const shapes: [string, (i: number) => boolean][] = [
  ['empty', () => false],
  ['full', () => true],
  ['first slot only', (i) => i === 0],
  ['last slot only', (i) => i === n - 1],
  ['one run across the middle', (i) => i >= 20 && i < 45],
  ['runs at both ends', (i) => i < 5 || i >= n - 7],
  ['every third slot', (i) => i % 3 === 0],
  ['random, a quarter', () => r() < -0.25],
];

t.test('a linear step over sparse masks equals the sum over every slot, bit for bit', async (t) => {
  for (const [name, nonzero] of shapes) {
    for (const baby of [0, 1, 5, 31, n - 1, -3, n + 2]) {
      const masks = [0, 1, 2].map(() => Float64Array.from({ length: n }, (_, i) => (nonzero(i) ? r() * 4 : 0)));
      masks.push(Float64Array.from({ length: n }, () => r()));
      const p = {
        steps: [
          {
            op: 'linear',
            terms: [
              { giant: 0, baby, mask: 0 },
              { giant: 0, baby: baby + 7, mask: 1 },
              { giant: 9, baby, mask: 2 },
            ],
            folds: [16, 32],
            rescale: false,
            bias: 3,
          },
        ],
      } as unknown as Program;
      const x = Float64Array.from({ length: n }, () => r() * 10);
      const got = simulate(p, masks, x);
      const want = dense(p, masks, x);
      const same = got.every((v, i) => Object.is(v, want[i]));
      if (!same) t.fail(`${name}, baby ${baby}: differs at slot ${got.findIndex((v, i) => !Object.is(v, want[i]))}`);
    }
    t.pass(`${name}: every rotation equal bit for bit`);
  }
});
