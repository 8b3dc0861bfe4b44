// The single-record form in a tree bundle (src/model/trees/single.ts), in plaintext: what the
// compiler puts in each part, what the client part must not hold, the layout the server part
// stores (it computes the quantized score), and the server part's checks.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileTreeModel } from '../../src/model/trees/compile.ts';
import { binsOf, inputOffsets, quantizedScores } from '../../src/model/trees/quantize.ts';
import { FLOOD_SECURITY_BITS } from '../../src/fhe/privacy.ts';
import { FLOOD_PRECISION_BITS } from '../../src/model/compile-batch.ts';
import { slotsRotations } from '../../src/fhe/tree-slots-layout.ts';
import { SINGLE_COPIES, compileSingle, singleLayout, type SingleServerPart } from '../../src/model/trees/single.ts';
import { buildCircuit, thermometer } from '../../src/model/trees/circuit.ts';
import { simulateSlots } from '../../src/model/trees/slots.ts';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'trees');
const load = (name: string) => JSON.parse(readFileSync(join(DIR, `${name}.data.json`), 'utf8')) as { train: number[][]; test: number[][] };
const data = load('breast-cancer');
const m = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'breast-cancer.xgb.json'))), 'xgboost-json', data.train);

t.test('the client part: parameters, scales and the rotation steps; no mask, constant or leaf value', async (t) => {
  const single = m.client.single!;
  t.ok(single, 'breast cancer (234 leaves, one output) has a single-record form');
  t.same(single.params.coeffModulusBits, [53, 53, 53, 53, 53, 30, 60], "slotsChain's chain: 5 x 53 + 30 + 60");
  t.same(single.params, m.server.single!.params, 'both parts name the same parameters');
  t.equal(single.copies, SINGLE_COPIES);
  const layout = singleLayout(m.server.single!, 'test');
  t.same(single.galois_steps, slotsRotations(layout), "the layout's giant steps, the products' and the folds'");
  t.same(m.server.single!.galoisSteps, single.galois_steps, 'the server part names the same');
  const text = JSON.stringify(m.client);
  for (const secret of ['masks', 'leafValues', 'constant', 'noiseL2Bits']) t.notOk(text.includes(secret), `the client part holds no ${secret}`);
});

t.test('the server part stores a layout that computes the quantized score', async (t) => {
  const layout = singleLayout(m.server.single!, 'test');
  const { edges } = m.client.bins;
  const { offsets, inputs } = inputOffsets(edges);
  let worst = 0;
  for (const record of data.test) {
    const bins = binsOf(m.client.bins, record);
    worst = Math.max(worst, Math.abs(simulateSlots(layout, thermometer(bins, edges, offsets, inputs))[0] - quantizedScores(m.quantized, bins)[0]));
  }
  t.ok(worst < 1e-9, `${data.test.length} held-out records through the stored layout: largest difference ${worst.toExponential(2)}`);
  t.ok(m.server.single!.noiseL2Bits > 0 && Number.isFinite(m.server.single!.noiseL2Bits), 'the flood bound is stored');
});

t.test('diabetes (383 leaves) takes segments of 512; what the layout cannot hold has no form, and the report says why', async (t) => {
  const diabetes = load('diabetes');
  const d = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'diabetes.xgb.json'))), 'xgboost-json', diabetes.train);
  const layout = singleLayout(d.server.single!, 'diabetes');
  t.same([layout.leafValues[0].length, d.client.single!.period], [512, 2048], 'segments of 512, a period of 2,048');
  const { edges } = d.client.bins;
  const { offsets, inputs } = inputOffsets(edges);
  let worst = 0;
  for (const record of diabetes.test) {
    const bins = binsOf(d.client.bins, record);
    worst = Math.max(worst, Math.abs(simulateSlots(layout, thermometer(bins, edges, offsets, inputs))[0] - quantizedScores(d.quantized, bins)[0]));
  }
  t.ok(worst < 1e-9, `${diabetes.test.length} held-out records through the stored layout: largest difference ${worst.toExponential(2)}`);
  const o = inputOffsets(m.client.bins.edges);
  const built = buildCircuit(m.quantized, m.client.bins.edges, o.offsets, o.inputs);
  const args = [o.offsets, o.inputs] as const;
  // Two outputs (here the score and its negation): a leaf-value list each, the same placement.
  const two = compileSingle(
    built.leaves.map((l) => ({ ...l, values: [l.values[0], -l.values[0]] })),
    ...args,
    2,
    9.2,
    FLOOD_PRECISION_BITS,
    'flood',
    FLOOD_SECURITY_BITS,
  );
  if (!('server' in two)) throw new Error(`two outputs refused: ${two.refused}`);
  const [first, second] = two.server.leafValues as number[][];
  t.same(
    second,
    first.map((v) => -v || 0),
    'two outputs: a leaf-value list each, placed alike',
  );
  t.same(two.server.masks, m.server.single!.masks, 'the same masks as the one-output form');
  const many = Array.from({ length: 513 }, (_, i) => built.leaves[i % built.leaves.length]);
  t.match(compileSingle(many, ...args, 1, 9.2, FLOOD_PRECISION_BITS, 'flood', 128), { refused: /513 leaves: the single-record layout places at most 512/ });
  const off = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'breast-cancer.xgb.json'))), 'xgboost-json', data.train, { single: false });
  t.equal(off.client.single, undefined, 'single: false leaves it out');
  t.equal(off.server.single, undefined);
  t.not(off.client.model_id, m.client.model_id, 'and the model id tells the two bundles apart');
});

t.test('a server part with a broken layout is refused before SEAL sees it', async (t) => {
  const good = m.server.single!;
  const [values] = good.leafValues as number[][];
  const broken: [string, Partial<SingleServerPart>, RegExp][] = [
    ['a diagonal beyond the period', { masks: [[1024, [[0, 1]]], ...good.masks.slice(1)] }, /diagonal 1024/],
    ['a mask entry beyond the period', { masks: [[good.masks[0][0], [[5000, 1]]], ...good.masks.slice(1)] }, /bad entry in diagonal/],
    ['a leaf value that is not a number', { leafValues: [[Number.NaN, ...values.slice(1)]] }, /a leaf value that is not a number/],
    ['too few leaf values', { leafValues: [values.slice(1)] }, /255 leaf values, not 256 or 512/],
    ['outputs of different lengths', { leafValues: [values, values.slice(1)] }, /outputs with other than 256 leaf values/],
    ['no leaf values', { leafValues: [] }, /no leaf values/],
    ['copies that do not divide the period', { copies: 30 }, /30 copies/],
    ['a chain whose second-last prime is not the masks', { maskScaleBits: 40 }, /mask prime/],
    ['no masks', { masks: [] }, /no masks/],
    ['a drop that leaves the result no prime', { resultDrop: 3 }, /drops 3 primes/],
    ['a drop that is not a count', { resultDrop: 0.5 }, /drops 0.5 primes/],
    ['rotations the layout does not make', { galoisSteps: [1, 2] }, /other rotations/],
  ];
  for (const [what, change, message] of broken)
    t.throws(() => singleLayout({ ...good, ...change }, 'server/trees.json'), { code: 'bad-bundle', message }, what);
  const legacy = singleLayout({ ...good, leafValues: values }, 'an older bundle');
  t.same(
    [legacy.leafValues.length, Array.from(legacy.leafValues[0])],
    [1, values],
    'a flat list (bundles compiled before several outputs) reads as one output',
  );
});
