// The leaves-in-slots layout for one record (src/model/trees/slots.ts), in plaintext: the
// placement gives the quantized model's score on every held-out breast-cancer record, and the
// flood bound tells the chains apart (scripts/prototype-trees-single.ts --noise measures the
// encrypted layout's honest noise 11-12 bits below it).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { floodSigma } from '../../src/fhe/privacy.ts';
import { FLOOD_PRECISION_BITS } from '../../src/model/compile-batch.ts';
import { buildCircuit, thermometer } from '../../src/model/trees/circuit.ts';
import { compileTreeModel } from '../../src/model/trees/compile.ts';
import { binsOf, inputOffsets, quantizedScores } from '../../src/model/trees/quantize.ts';
import { SEGMENTS, giantGroups, placeLeaves, simulateSlots, slotsLeaves } from '../../src/model/trees/slots.ts';
import { resultDrop, slotsChain, slotsNoiseBound } from '../../src/model/trees/slots-chain.ts';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'trees');
const data = JSON.parse(readFileSync(join(DIR, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
const m = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'breast-cancer.xgb.json'))), 'xgboost-json', data.train, { form: 'factored' });
const { edges } = m.client.bins;
const { offsets, inputs } = inputOffsets(edges);
const built = buildCircuit(m.quantized, edges, offsets, inputs);
const leaves = slotsLeaves(built.leaves, offsets);
const layout = placeLeaves(leaves, inputs, 32);

t.test('each leaf at its own position: the layout gives the quantized score on every held-out record', async (t) => {
  t.equal(leaves.length, built.leaves.length);
  t.equal(layout.leafValues.length, 1, 'one output');
  t.equal(layout.leafValues[0].length, 256, 'the smallest segment that holds them');
  t.equal(layout.leafValues[0].filter((v) => v !== 0).length, leaves.filter((l) => l.values[0] !== 0).length, `${leaves.length} leaves in 256 positions`);
  const groups = [...giantGroups(layout)];
  t.ok(
    groups.every(([g, ds]) => ds.every((d) => d - (d % layout.copies) === g && d >= 0 && d < 1024)),
    `${layout.masks.size} diagonals in ${groups.length} giant groups of ${layout.copies}`,
  );
  let worst = 0;
  for (const record of data.test) {
    const bins = binsOf(m.client.bins, record);
    const bits = thermometer(bins, edges, offsets, inputs);
    worst = Math.max(worst, Math.abs(simulateSlots(layout, bits)[0] + m.quantized.base[0] - quantizedScores(m.quantized, bins)[0]));
  }
  t.ok(worst < 1e-9, `${data.test.length} held-out records: largest difference ${worst.toExponential(2)}`);
});

t.test("the flood bound: a 408-bit chain meets the flood's need, the prototype's 380-bit chain does not", async (t) => {
  // The flood's error per slot, sigma sqrt(N/2) / Delta_out, must stay below 2^-12 of the score bound.
  const needs = (2 ** -FLOOD_PRECISION_BITS * Math.max(1, ...built.outBound)) / (floodSigma(1) * Math.sqrt(layout.slots));
  const bound = (inputBits: number, dataBits: number[]) => slotsNoiseBound(layout, { inputBits, maskBits: 30, leafBits: 30, dataBits });
  const fits = bound(70, Array<number>(6).fill(53));
  const prototype = bound(63, Array<number>(5).fill(58));
  t.ok(fits <= needs, `2^70, 6 x 53 + 30 + 60: 2^${Math.log2(fits).toFixed(2)} <= 2^${Math.log2(needs).toFixed(2)}`);
  t.ok(prototype > needs, `2^63, 5 x 58 + 30 + 60: 2^${Math.log2(prototype).toFixed(2)} > 2^${Math.log2(needs).toFixed(2)}`);
  t.ok(bound(72, Array<number>(6).fill(54)) < fits, 'a larger input scale lowers it');
  t.ok(bound(70, Array<number>(6).fill(60)) > fits, 'data primes as large as the special prime raise it (key switching)');
});

t.test('more leaves or inputs take segments of 512; beyond them, refused', async (t) => {
  const largest = SEGMENTS[SEGMENTS.length - 1];
  const more = placeLeaves(leaves, 1025, 32);
  t.same([more.leafValues[0].length, more.constant.length], [512, 2048], '1,025 inputs: segments of 512, a period of 2,048');
  let worst = 0;
  for (const record of data.test.slice(0, 20)) {
    const bins = binsOf(m.client.bins, record);
    worst = Math.max(worst, Math.abs(simulateSlots(more, thermometer(bins, edges, offsets, inputs))[0] - quantizedScores(m.quantized, bins)[0]));
  }
  t.ok(worst < 1e-9, `and the same scores (largest difference ${worst.toExponential(2)})`);
  const many = Array.from({ length: largest + 1 }, () => leaves[0]);
  t.throws(() => placeLeaves(many, inputs, 32), /513 leaves/);
  t.throws(() => placeLeaves(leaves, 4 * largest + 1, 32), /2049 inputs/);
});

t.test('the chain: the fewest primes, then the smallest input scale, whose bound meets the need', async (t) => {
  const scoreBound = Math.max(1, ...built.outBound);
  const c = slotsChain(layout, scoreBound);
  const needs = (2 ** -FLOOD_PRECISION_BITS * scoreBound) / (floodSigma(1) * Math.sqrt(layout.slots));
  t.same({ a: c.inputBits, primes: c.dataBits.length, bits: c.dataBits[0], total: c.totalBits }, { a: 70, primes: 5, bits: 53, total: 355 });
  t.ok(slotsNoiseBound(layout, c) <= needs, 'its bound meets the need');
  // The leaf values' rescale leaves 2 primes (106 bits) for a result at scale 2^98 and a score of
  // a few bits: none to spare, and no fewer primes hold it (4 x 53 = 212 < 4a + leaf + the score's bits).
  t.equal(c.resultDrop, 0, 'no prime to drop before the folds');
  const six = { ...c, dataBits: Array<number>(6).fill(53) };
  t.equal(resultDrop(six, 6), 1, 'a chain with a prime more than the result needs drops it before the folds');
  t.equal(resultDrop({ ...six, inputBits: 76 }, 6), 0, 'a result at scale 2^122 keeps all three');
  t.ok(
    slotsNoiseBound(layout, six) > slotsNoiseBound(layout, { ...six, resultDrop: 1 }),
    'the folds one prime lower add less noise (smaller key-switch digits)',
  );
  t.ok(slotsNoiseBound(layout, { ...c, inputBits: c.inputBits - 1, dataBits: Array<number>(5).fill(52) }) > needs, 'one bit less of input scale does not');
  t.throws(() => slotsChain(layout, scoreBound, { lambda: 200 }), /no chain within ring 16384/);
});

t.test('the placement tries seeded shuffles of the leaves and keeps the cheapest, the same every time', async (t) => {
  const giants = (l: typeof layout) => [...giantGroups(l).keys()].filter((g) => g > 0).length;
  const greedy = placeLeaves(leaves, inputs, 32, 8192, 0);
  const cost = (l: typeof layout) => l.masks.size + 80 * giants(l);
  t.ok(
    cost(layout) < cost(greedy),
    `${layout.masks.size} diagonals in ${giants(layout)} giant steps, against the greedy's ${greedy.masks.size} in ${giants(greedy)}`,
  );
  const again = placeLeaves(leaves, inputs, 32);
  t.same([...again.masks.keys()], [...layout.masks.keys()], 'the same diagonals');
  t.same(Array.from(again.leafValues[0]), Array.from(layout.leafValues[0]), 'the same positions');
});
