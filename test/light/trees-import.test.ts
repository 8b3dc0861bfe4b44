// Tree ensembles: import (XGBoost JSON, ONNX-ML) against the libraries' own predictions, the
// refusals, quantization, and the circuit's plaintext simulation against the quantized model.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileTreeModel, importTrees } from '../../src/model/trees/compile.ts';
import { predict, predictionOf, probabilitiesOf, scores } from '../../src/model/trees/ensemble.ts';
import { inputOffsets, binsOf, quantizedScores } from '../../src/model/trees/quantize.ts';
import { thermometer } from '../../src/model/trees/circuit.ts';
import { simulateTreeCircuit } from '../../src/model/trees/factored.ts';
import { treeOpCounts, treeParts, type TreePart } from '../../src/fhe/tree-circuit.ts';
import { SealedError } from '../../src/errors.ts';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'trees');
const bytes = (f: string) => new Uint8Array(readFileSync(join(DIR, f)));
interface Data {
  features: string[];
  train: number[][];
  test: number[][];
  test_labels: number[];
  expected: { margin?: number[]; probability?: number[] | number[][]; class?: number[]; value?: number[]; accuracy?: number; r2?: number };
}
const data = (name: string) => JSON.parse(readFileSync(join(DIR, `${name}.data.json`), 'utf8')) as Data;

t.test('XGBoost binary:logistic: margins and classes as XGBoost computed them', async (t) => {
  const d = data('breast-cancer');
  const e = importTrees(bytes('breast-cancer.xgb.json'), 'xgboost-json');
  t.equal(e.trees.length, 50);
  t.equal(e.post, 'sigmoid');
  let worst = 0,
    same = 0;
  d.test.forEach((x, i) => {
    worst = Math.max(worst, Math.abs(scores(e, x)[0] - d.expected.margin![i]));
    if (predict(e, x) === d.expected.class![i]) same++;
  });
  t.ok(worst < 1e-4, `largest margin difference ${worst}`);
  t.equal(same, d.test.length, 'every class agrees');
  t.ok(Math.abs(probabilitiesOf(e, scores(e, d.test[0]))![1] - (d.expected.probability as number[])[0]) < 1e-5);
});

t.test('XGBoost reg:squarederror: values as XGBoost computed them', async (t) => {
  const d = data('diabetes');
  const e = importTrees(bytes('diabetes.xgb.json'), 'xgboost-json');
  t.equal(e.task, 'regression');
  let worst = 0;
  d.test.forEach((x, i) => (worst = Math.max(worst, Math.abs(predict(e, x) - d.expected.value![i]))));
  t.ok(worst < 1e-3, `largest difference ${worst}`);
});

t.test('ONNX-ML TreeEnsembleClassifier (scikit-learn forest): probabilities as scikit-learn computed them', async (t) => {
  const d = data('digits');
  const e = importTrees(bytes('digits-rf.onnx'), 'onnx-ml');
  t.equal(e.outputs, 10);
  t.equal(e.post, 'proba');
  let worst = 0,
    same = 0;
  d.test.forEach((x, i) => {
    const s = scores(e, x);
    const want = (d.expected.probability as number[][])[i];
    for (let k = 0; k < 10; k++) worst = Math.max(worst, Math.abs(s[k] - want[k]));
    if (predict(e, x) === d.expected.class![i]) same++;
  });
  t.ok(worst < 1e-5, `largest probability difference ${worst}`);
  t.equal(same, d.test.length, 'every class agrees');
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a parsed model edited in place
function mutated(f: (doc: any) => void): Uint8Array {
  const doc = JSON.parse(readFileSync(join(DIR, 'breast-cancer.xgb.json'), 'utf8'));
  f(doc);
  return new TextEncoder().encode(JSON.stringify(doc));
}

t.test('refusals say what to change', async (t) => {
  const refuses = (b: Uint8Array, re: RegExp, what: string) => {
    try {
      importTrees(b, 'xgboost-json');
      t.fail(`${what}: accepted`);
    } catch (e) {
      t.ok(e instanceof SealedError && re.test(e.message) && !!e.hint, `${what}: ${(e as Error).message}`);
    }
  };
  refuses(
    mutated((d) => (d.learner.objective.name = 'reg:pseudohubererror')),
    /objective "reg:pseudohubererror"/,
    'unsupported objective',
  );
  refuses(
    mutated((d) => (d.learner.gradient_booster.model.trees[3].split_type[0] = 1)),
    /categorical splits/,
    'categorical split',
  );
  refuses(
    mutated((d) => (d.learner.gradient_booster.name = 'dart')),
    /dart/,
    'dart booster',
  );
  refuses(
    mutated((d) => (d.learner.gradient_booster.model.trees[0].left_children[0] = 0)),
    /reached twice|not a tree/,
    'a cycle',
  );
  refuses(
    mutated((d) => (d.learner.gradient_booster.model.trees[0].split_indices[0] = 99)),
    /feature 99/,
    'feature out of range',
  );
  refuses(new TextEncoder().encode('{"learner": 3'), /not valid JSON/, 'not JSON');
  t.throws(() => importTrees(new Uint8Array([1, 2, 3, 4, 5]), 'onnx-ml'), SealedError, 'not ONNX');
  t.throws(() => compileTreeModel(bytes('breast-cancer.xgb.json'), 'xgboost-json'), /calibration records/, 'no calibration records');
});

t.test('quantization: the circuit simulates the quantized model; the client part holds no model', async (t) => {
  const d = data('breast-cancer');
  const m = compileTreeModel(bytes('breast-cancer.xgb.json'), 'xgboost-json', d.train, { features: d.features });
  const { offsets, inputs } = inputOffsets(m.client.bins.edges);
  t.equal(inputs, m.client.inputs);
  t.equal(m.report.form, 'factored', 'the factored form is the cheaper one for one output');
  const grouped = compileTreeModel(bytes('breast-cancer.xgb.json'), 'xgboost-json', d.train, { features: d.features, form: 'grouped' });
  t.equal(grouped.server.circuit.factored, undefined, 'the grouped form on request');
  let worst = 0,
    agree = 0;
  for (const x of d.test) {
    const bins = binsOf(m.client.bins, x);
    const q = quantizedScores(m.quantized, bins);
    const bits = thermometer(bins, m.client.bins.edges, offsets, inputs);
    for (const c of [m.server.circuit, grouped.server.circuit]) worst = Math.max(worst, Math.abs(q[0] - simulateTreeCircuit(c, bits)[0]));
    if ((q[0] >= 0 ? 1 : 0) === predict(m.ensemble, x)) agree++;
  }
  t.ok(worst < 1e-9, `both forms vs the quantized model: ${worst}`);
  t.ok(agree / d.test.length >= 0.97, `quantized agrees with XGBoost on ${agree} of ${d.test.length} held-out records (bits ${m.report.bits})`);
  // No threshold, leaf value or structure in the client part.
  const text = JSON.stringify(m.client);
  const thresholds = m.ensemble.trees.flatMap((tr) => Array.from(tr.threshold).filter((v, i) => tr.left[i] >= 0));
  const leaks = thresholds.filter((v) => text.includes(String(v)) && String(v).length > 6);
  t.same(leaks, [], 'no threshold appears in the client part');
  t.notOk(/groups|leaves|threshold|value/.test(Object.keys(m.client).join(',')), 'no model fields');
});

t.test('a batch cut into parts for several threads: every piece of the circuit in one part, the parts sum to the whole', async (t) => {
  for (const [name, file, kind] of [
    ['breast-cancer', 'breast-cancer.xgb.json', 'xgboost-json'],
    ['digits', 'digits-rf.onnx', 'onnx-ml'],
  ] as const) {
    const d = data(name);
    for (const form of ['factored', 'grouped'] as const) {
      // The batch circuit alone: the single-record form's placement (~1.5 s for digits) is not cut in parts here.
      const m = compileTreeModel(bytes(file), kind, d.train, { form, single: false });
      const c = m.server.circuit;
      const { offsets, inputs } = inputOffsets(m.client.bins.edges);
      t.same(treeParts(c, 1), [c.factored ? { factored: c.factored } : { groups: [0, c.groups.length] }], `${name}, ${form}: one thread, one part`);
      for (const threads of [2, 3]) {
        const what = `${name}, ${form}, ${threads} parts`;
        const parts = treeParts(c, threads);
        t.equal(parts.length, threads, what);
        if (c.factored) {
          const dealt = parts.flatMap((p) => ('factored' in p ? (p.factored.children ?? []) : []));
          t.equal(new Set(dealt).size, c.factored.children!.length, `${what}: every child of the root once`);
          t.equal(dealt.length, c.factored.children!.length);
        } else {
          const ranges = parts.map((p) => ('groups' in p ? p.groups : [0, 0]));
          t.same(
            ranges.flat(),
            ranges.flatMap((r, k) => (k === 0 ? [0, r[1]] : [ranges[k - 1][1], r[1]])),
            `${what}: ranges meet end to start`,
          );
          t.equal(ranges.at(-1)![1], c.groups.length, `${what}: and cover every group`);
        }
        const sub = (p: TreePart) => ('factored' in p ? { ...c, factored: p.factored } : { ...c, groups: c.groups.slice(...p.groups) });
        const cost = parts.map((p) => treeOpCounts(sub(p)).relinearize);
        t.ok(Math.max(...cost) <= 1.2 * Math.min(...cost) + 6, `${what}: balanced (relinearizations ${cost.join(', ')})`);
        let worst = 0;
        for (const x of d.test.slice(0, 40)) {
          const bits = thermometer(binsOf(m.client.bins, x), m.client.bins.edges, offsets, inputs);
          const whole = simulateTreeCircuit(c, bits);
          const sums = parts.map((p) => simulateTreeCircuit(sub(p), bits));
          whole.forEach((v, k) => (worst = Math.max(worst, Math.abs(v - sums.reduce((a, s) => a + s[k], 0)))));
        }
        t.ok(worst < 1e-9, `${what}: the parts' sums add up to the whole (${worst})`);
      }
    }
  }
});

t.test('tree bundles: written, read back, and refused when edited', async (t) => {
  const { mkdtemp, writeFile, readFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { writeTreeBundle, readTreeBundle } = await import('../../src/model/trees/bundle.ts');
  const d = data('diabetes');
  const m = compileTreeModel(bytes('diabetes.xgb.json'), 'xgboost-json', d.train, { bits: 4 });
  const dir = await mkdtemp(join(tmpdir(), 'sealed-trees-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeTreeBundle(dir, m.client, m.server, { bits: m.report.bits });
  const back = await readTreeBundle(dir);
  t.same(back.server, JSON.parse(JSON.stringify(m.server)), 'server part round-trips');
  t.equal(back.client.model_id, m.client.model_id);
  const file = join(dir, 'server', 'trees.json');
  await writeFile(file, (await readFile(file, 'utf8')).replace('"inputs"', ' "inputs"'));
  await t.rejects(readTreeBundle(dir), /does not match its hash/, 'an edited server part is refused');
  const other = join(dir, 'other');
  await writeTreeBundle(other, m.client, { ...m.server, circuit: { ...m.server.circuit, relinearize: 'group' as 'leaf' } }, { bits: m.report.bits });
  await t.rejects(readTreeBundle(other), /relinearize is "group", not "leaf" or absent/, 'an unknown relinearization form is refused');
  // A single-record form with more outputs than the model: the client would not read the extra results.
  const single = m.server.single!;
  const extra = join(dir, 'extra-output');
  const [values] = single.leafValues as number[][];
  await writeTreeBundle(extra, m.client, { ...m.server, single: { ...single, leafValues: [values, values] } }, { bits: m.report.bits });
  await t.rejects(
    readTreeBundle(extra),
    /the single-record form makes 2 outputs, the model has 1/,
    'a single-record form of other outputs than the model is refused',
  );
  // A server part stretched (its rotations too) where the client part is not: the client would read the wrong slots.
  const stretched = join(dir, 'stretched');
  const twice = { ...single, stretch: 2, galoisSteps: single.galoisSteps.map((r) => 2 * r) };
  await writeTreeBundle(stretched, m.client, { ...m.server, single: twice }, { bits: m.report.bits });
  await t.rejects(readTreeBundle(stretched), /disagree on the single-record form's stretch/, 'a server part stretched unlike the client part is refused');
  // The factored form's trie is checked before any evaluation reads it.
  const root = m.server.circuit.factored!;
  t.ok(root, 'diabetes compiles to the factored form');
  const edited = (change: (r: typeof root) => void) => {
    const copy = JSON.parse(JSON.stringify(root)) as typeof root;
    change(copy);
    return { ...m.server, circuit: { ...m.server.circuit, factored: copy } };
  };
  const refusals: [string, (r: typeof root) => void, RegExp][] = [
    [
      'a factor on an input the circuit does not read',
      (r) => (r.children![0].factor = [m.client.inputs, -1]),
      /a factor is \[\d+,-1\], not \[lo, hi\] inputs below/,
    ],
    ['a factor with no input', (r) => (r.children![0].factor = [-1, -1]), /a factor is \[-1,-1\]/],
    ['a leaf with values for other outputs', (r) => (r.children![0].values = [1, 2]), /values do not match the outputs/],
    [
      'a path of five factors',
      (r) => {
        let n = r.children![0];
        for (let i = 0; i < 5; i++) n = (n.children = [{ factor: [0, -1] }])[0];
      },
      /more than 4 factors/,
    ],
  ];
  for (const [what, change, re] of refusals) {
    const dirOf = join(dir, what.replace(/\W+/g, '-'));
    await writeTreeBundle(dirOf, m.client, edited(change), { bits: m.report.bits });
    await t.rejects(readTreeBundle(dirOf), re, `${what}: refused`);
  }
});

t.test("missing values follow the splits' default direction, or are refused when the splits disagree", async (t) => {
  const d = data('breast-cancer');
  const doc = JSON.parse(readFileSync(join(DIR, 'breast-cancer.xgb.json'), 'utf8'));
  const trees = doc.learner.gradient_booster.model.trees as { split_indices: number[]; left_children: number[]; default_left: number[] }[];
  // Feature of the first root: make its splits disagree on where a missing value goes.
  const f = trees[0].split_indices[0];
  let flipped = 0;
  for (const tr of trees)
    tr.split_indices.forEach((s, i) => {
      if (s === f && tr.left_children[i] >= 0) tr.default_left[i] = flipped++ % 2;
    });
  const m = compileTreeModel(new TextEncoder().encode(JSON.stringify(doc)), 'xgboost-json', d.train, { bits: 5 });
  t.equal(m.client.bins.missing[f], 'refuse', 'mixed default directions: the client refuses NaN there');
  const x = d.test[0].slice();
  x[f] = NaN;
  t.throws(() => binsOf(m.client.bins, x), /is missing, and this model has no single default direction/, 'NaN in that feature is refused with a hint');
  // Another feature whose splits agree: NaN goes where every split sends it.
  const g = m.client.bins.missing.findIndex(
    (r, i) => r !== 'refuse' && i !== f && m.ensemble.trees.some((tr) => Array.from(tr.feature).some((ff, n) => ff === i && tr.left[n] >= 0)),
  );
  const y = d.test[1].slice();
  y[g] = NaN;
  const b = binsOf(m.client.bins, y);
  t.equal(b[g], m.client.bins.missing[g] === 'low' ? 0 : m.client.bins.edges[g].length, `feature ${g}: NaN goes ${m.client.bins.missing[g]}`);
  t.equal(
    predictionOf(m.ensemble, quantizedScores(m.quantized, b)),
    predict(m.ensemble, y),
    'and the quantized model predicts as the original does on the record with NaN',
  );
});

t.test('ONNX-ML: a small classifier built here, x <= t splits, and the refusals', async (t) => {
  const protobuf = (await import('protobufjs')).default;
  const { ONNX_SUBSET } = await import('../../src/model/trees/onnx.ts');
  const Model = protobuf.parse(ONNX_SUBSET, { keepCase: true }).root.lookupType('onnx.ModelProto');
  const enc = (x: string) => new TextEncoder().encode(x);
  const make = (o: { mode?: string; aggregate?: string; post?: string } = {}) => {
    const ints = (name: string, v: number[]) => ({ name, ints: v, type: 7 });
    const floats = (name: string, v: number[]) => ({ name, floats: v, type: 6 });
    const attribute = [
      ints('nodes_treeids', [0, 0, 0]),
      ints('nodes_nodeids', [0, 1, 2]),
      ints('nodes_featureids', [1, 0, 0]),
      floats('nodes_values', [0.5, 0, 0]),
      { name: 'nodes_modes', strings: [o.mode ?? 'BRANCH_LEQ', 'LEAF', 'LEAF'].map(enc), type: 8 },
      ints('nodes_truenodeids', [1, 0, 0]),
      ints('nodes_falsenodeids', [2, 0, 0]),
      ints('class_treeids', [0, 0, 0, 0]),
      ints('class_nodeids', [1, 1, 2, 2]),
      ints('class_ids', [0, 1, 0, 1]),
      floats('class_weights', [0.9, 0.1, 0.2, 0.8]),
      ints('classlabels_int64s', [0, 1]),
      { name: 'post_transform', s: enc(o.post ?? 'NONE'), type: 3 },
      ...(o.aggregate ? [{ name: 'aggregate_function', s: enc(o.aggregate), type: 3 }] : []),
    ];
    return Model.encode(
      Model.fromObject({ ir_version: 8, graph: { node: [{ op_type: 'TreeEnsembleClassifier', domain: 'ai.onnx.ml', attribute }] } }),
    ).finish();
  };
  const e = importTrees(make(), 'onnx-ml');
  t.equal(e.features, 2);
  t.same(
    scores(e, [0, 0.5]).map((v) => Math.round(v * 1e6) / 1e6),
    [0.9, 0.1],
    'x = t goes to the true branch (x <= t)',
  );
  t.same(
    scores(e, [0, 0.50001]).map((v) => Math.round(v * 1e6) / 1e6),
    [0.2, 0.8],
    'x > t goes to the false branch',
  );
  const refuses = (b: Uint8Array, re: RegExp, what: string) => {
    try {
      importTrees(b, 'onnx-ml');
      t.fail(`${what}: accepted`);
    } catch (err) {
      t.ok(err instanceof SealedError && re.test(err.message) && !!err.hint, `${what}: ${(err as Error).message}`);
    }
  };
  refuses(make({ mode: 'BRANCH_EQ' }), /BRANCH_EQ split/, 'equality split');
  refuses(make({ aggregate: 'MAX' }), /aggregates trees with MAX/, 'MAX aggregation');
  refuses(make({ post: 'PROBIT' }), /post_transform PROBIT/, 'PROBIT');
});
