// validateBatchPlan: the plans the compiler makes pass, and each rule refuses a real plan broken
// in one place, naming the field; a bundle whose batch.json breaks a rule is refused at load
// (readServerPart, so the server and its workers refuse to start).
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isSealedError } from '../../src/errors.ts';
import { type BatchPlan } from '../../src/fhe/batch-plan.ts';
import { validateBatchPlan } from '../../src/fhe/batch-plan-check.ts';
import { MAX_INT_WEIGHT, MAX_TAPS } from '../../src/fhe/kernel-limits.ts';
import { readServerPart, writeBundle } from '../../src/model/bundle.ts';
import { compileBatch } from '../../src/model/compile-batch.ts';
import type { Network } from '../../src/model/network.ts';
import { startServer } from '../../src/server/serve.ts';
import { compileImageModel } from '../../src/train/image-model.ts';
import { rng, side, smallCnn } from '../helpers/networks.ts';
import type { Program } from '../../src/fhe/program.ts';

const r = rng(5);
const samples = (n: number, features: number) => Array.from({ length: n }, () => Array.from({ length: features }, () => r() + 0.5));
const dense = (rows: number, cols: number, scale: number) => Array.from({ length: rows }, () => Array.from({ length: cols }, () => r() * scale));
const linearNet: Network = { input: { height: 1, width: 6 }, layers: [{ type: 'dense', weights: dense(3, 6, 4), bias: [0.5, -1, 2] }] };
const denseNet: Network = {
  input: { height: 1, width: 20 },
  layers: [
    { type: 'dense', weights: dense(8, 20, 1), bias: dense(1, 8, 1)[0] },
    { type: 'quadratic', a: 0.3, b: -0.5, c: 0.2 },
    { type: 'dense', weights: dense(4, 8, 1), bias: [0.1, 0.2, 0.3, 0.4] },
  ],
};
/** One dense row of exactly `taps` inputs: the most taps a row may have. */
const wideNet = (taps: number): Network => ({
  input: { height: 1, width: taps },
  layers: [{ type: 'dense', weights: [dense(1, taps, 1)[0].map((w) => w + 1)], bias: [0] }],
});

const cnn = compileBatch(smallCnn, samples(30, side * side))!;
const linear = compileBatch(linearNet, samples(20, 6))!;
const dq = compileBatch(denseNet, samples(20, 20))!;
const copy = (p: BatchPlan): BatchPlan => structuredClone(p);

t.test('the plans the compiler makes are valid, also after a JSON round trip', async (t) => {
  for (const [name, plan] of Object.entries({ cnn, linear, dq, wide: compileBatch(wideNet(MAX_TAPS), samples(3, MAX_TAPS))! })) {
    t.ok(plan, `${name}: the compiler made a plan`);
    t.equal(validateBatchPlan(plan), plan, `${name}: valid`);
    t.doesNotThrow(() => validateBatchPlan(JSON.parse(JSON.stringify(plan)) as unknown), `${name}: valid as read from batch.json`);
  }
  t.equal(compileBatch(wideNet(MAX_TAPS + 1), samples(3, MAX_TAPS + 1)), undefined, 'a row of 2,049 taps: no plan');
  const edge = copy(cnn);
  edge.first.weight[0] = MAX_INT_WEIGHT;
  edge.first.weight[1] = -MAX_INT_WEIGHT;
  edge.second!.weight[0] = -MAX_INT_WEIGHT;
  t.doesNotThrow(() => validateBatchPlan(edge), 'weights of +-32,767 are within the limit');
});

/** Gives row j of `p` exactly n taps (all on input 0, weight 1), keeping the rest of the plan consistent. */
function setTaps(p: BatchPlan, j: number, n: number): BatchPlan {
  const f = p.first;
  const [a, b] = [f.start[j], f.start[j + 1]];
  f.index.splice(a, b - a, ...new Array<number>(n).fill(0));
  f.weight.splice(a, b - a, ...new Array<number>(n).fill(1));
  for (let k = j + 1; k < f.start.length; k++) f.start[k] += n - (b - a);
  return p;
}

type Mutation = [string, BatchPlan, (p: BatchPlan & Record<string, unknown>) => unknown, RegExp];
const last = (a: number[]) => a.length - 1;
const mutations: Mutation[] = [
  ['not an object', cnn, () => null, /the plan is null, not an object/],
  ['an array', cnn, () => [], /the plan is an array, not an object/],
  ['no params', cnn, (p) => void delete (p as Partial<BatchPlan>).params, /params is undefined, not an object/],
  ['another scheme', cnn, (p) => void Object.assign(p.params, { scheme: 'bfv' }), /params\.scheme is "bfv", not ckks/],
  ['another security level', cnn, (p) => void Object.assign(p.params, { securityLevel: 192 }), /params\.securityLevel is 192, not 128/],
  ['another ring degree', cnn, (p) => void (p.params.polyModulusDegree = 4096), /params\.polyModulusDegree is 4096, not 8192, 16384 or 32768/],
  ['no data prime', cnn, (p) => void (p.params.coeffModulusBits = [26]), /params\.coeffModulusBits must list at least one data prime/],
  ['a 27-bit data prime', cnn, (p) => void (p.params.coeffModulusBits[0] = 27), /params\.coeffModulusBits\[0\] is 27, outside \[20, 26\]/],
  ['a fractional prime size', cnn, (p) => void (p.params.coeffModulusBits[1] = 25.5), /params\.coeffModulusBits\[1\] is 25\.5, not an integer/],
  ['more bits than 128-bit security allows', cnn, (p) => void (p.params.coeffModulusBits = new Array<number>(9).fill(26)), /params are refused: .*218 bits/],
  ['a bad special prime', cnn, (p) => void (p.params.coeffModulusBits[last(p.params.coeffModulusBits)] = 61), /params are refused: coefficient modulus/],
  ['input scale 0', cnn, (p) => void (p.inputScaleBits = 0), /inputScaleBits is 0, outside \[1, /],
  ['fractional input scale', cnn, (p) => void (p.inputScaleBits = 25.5), /inputScaleBits is 25\.5, not an integer/],
  ['input scale past the modulus', cnn, (p) => void (p.inputScaleBits = 500), /inputScaleBits is 500, outside/],
  ['no inputs', cnn, (p) => void (p.inputs = 0), /inputs is 0, outside \[1, /],
  ['inputs as a string', cnn, (p) => void Object.assign(p, { inputs: '144' }), /inputs is "144", not an integer/],
  ['inputs past Int32', cnn, (p) => void (p.inputs = 2 ** 31), /inputs is 2147483648, outside/],
  ['no first layer', cnn, (p) => void delete (p as Partial<BatchPlan>).first, /first is undefined, not an object/],
  ['rows without starts', cnn, (p) => void (p.first.rows += 1), /first\.start has 65 entries, not 66 \(first\.rows \+ 1\)/],
  ['no rows', cnn, (p) => void (p.first.rows = 0), /first\.rows is 0, outside/],
  ['start not at 0', cnn, (p) => void (p.first.start[0] = 1), /first\.start\[0\] is 1, not 0/],
  [
    'decreasing starts',
    cnn,
    (p) => void (p.first.start[3] = p.first.start[4] + 1),
    /first\.start\[4\] is \d+, below first\.start\[3\] = \d+: starts must not decrease/,
  ],
  ['fractional start', cnn, (p) => void (p.first.start[2] += 0.5), /first\.start\[2\] is [\d.]+, not an integer/],
  [
    'starts ending before the taps',
    cnn,
    (p) => void (p.first.index.push(0), p.first.weight.push(1)),
    /first\.start\[64\] is 1600, not first\.index\.length = 1601/,
  ],
  ['a row of 2,049 taps', cnn, (p) => void setTaps(p, 5, MAX_TAPS + 1), /first row 5 has 2049 taps .*at most 2048/],
  ['an index past the inputs', cnn, (p) => void (p.first.index[7] = p.inputs), /first\.index\[7\] is 144, outside \[0, 144\) \(inputs\)/],
  ['a negative index', cnn, (p) => void (p.first.index[0] = -1), /first\.index\[0\] is -1, outside/],
  ['a fractional index', cnn, (p) => void (p.first.index[3] = 1.5), /first\.index\[3\] is 1\.5, not an integer/],
  ['an index as a string', cnn, (p) => void ((p.first.index as unknown[])[3] = '3'), /first\.index\[3\] is "3", not an integer/],
  ['index not an array', cnn, (p) => void Object.assign(p.first, { index: {} }), /first\.index is an object, not an array/],
  ['a weight of 2^15', cnn, (p) => void (p.first.weight[9] = 2 ** 15), /first\.weight\[9\] is 32768, outside \[-32767, 32767\]/],
  ['a weight of -2^15', cnn, (p) => void (p.first.weight[9] = -(2 ** 15)), /first\.weight\[9\] is -32768, outside/],
  ['a fractional weight', cnn, (p) => void (p.first.weight[2] = 0.5), /first\.weight\[2\] is 0\.5, not an integer/],
  ['a NaN weight (null in JSON)', cnn, (p) => void ((p.first.weight as unknown[])[2] = null), /first\.weight\[2\] is null, not an integer/],
  ['a weight missing', cnn, (p) => void p.first.weight.pop(), /first\.weight has 1599 entries, not 1600/],
  ['fractional weight scale', cnn, (p) => void (p.first.weightScaleBits += 0.5), /first\.weightScaleBits is [\d.]+, not an integer/],
  [
    'hidden scale past the modulus',
    cnn,
    (p) => void ((p.first.weightScaleBits += 40), (p.outputScaleBits += 80)),
    /first\.weightScaleBits gives hidden values at scale 2\^\d+ and squares at 2\^\d+, outside/,
  ],
  ['a bias missing', cnn, (p) => void p.first.bias.pop(), /first\.bias has 63 entries, not 64 \(first\.rows\)/],
  ['a NaN bias (null in JSON)', cnn, (p) => void ((p.first.bias as unknown[])[4] = null), /first\.bias\[4\] is null, not a finite number/],
  ['a bias too large to scale', cnn, (p) => void (p.first.bias[4] = 1e300), /first\.bias\[4\] is 1e\+300, not a finite number at scale/],
  ['square not a boolean', cnn, (p) => void Object.assign(p, { square: 'yes' }), /square is "yes", not a boolean/],
  ['a square without a second layer', cnn, (p) => void delete p.second, /second is missing/],
  [
    'a second layer without a square',
    linear,
    (p) => void (p.second = { rows: 1, weight: [1, 1, 1], weightScaleBits: 0, bias: [0] }),
    /second is present, but the plan does not square/,
  ],
  ['no outputs', cnn, (p) => void (p.second!.rows = 0), /second\.rows is 0, outside/],
  ['outputs without weights', cnn, (p) => void (p.second!.rows = 11), /second\.weight has 640 entries, not 704 \(second\.rows x first\.rows\)/],
  ['a second weight of 40,000', cnn, (p) => void (p.second!.weight[5] = 40000), /second\.weight\[5\] is 40000, outside \[-32767, 32767\]/],
  ['a fractional second weight', cnn, (p) => void (p.second!.weight[5] = 2.5), /second\.weight\[5\] is 2\.5, not an integer/],
  ['a second bias missing', cnn, (p) => void p.second!.bias.pop(), /second\.bias has 9 entries, not 10/],
  ['an infinite second bias', cnn, (p) => void (p.second!.bias[0] = Infinity), /second\.bias\[0\] is Infinity, not a finite number/],
  [
    'result scale past the modulus',
    cnn,
    (p) => void ((p.second!.weightScaleBits += 60), (p.outputScaleBits += 60)),
    /second\.weightScaleBits gives results at scale 2\^\d+, outside/,
  ],
  ['an output scale other than the layers give', cnn, (p) => void (p.outputScaleBits += 1), /outputScaleBits is \d+, not \d+, the scale the layers give/],
  ['no output scale', linear, (p) => void delete (p as Partial<BatchPlan>).outputScaleBits, /outputScaleBits is undefined, not \d+/],
  ['a linear plan with another output scale', linear, (p) => void (p.outputScaleBits = 2 * p.outputScaleBits), /outputScaleBits is \d+, not \d+/],
  ['a dense index past the inputs', dq, (p) => void (p.first.index[last(p.first.index)] = 20), /first\.index\[\d+\] is 20, outside \[0, 20\)/],
];

t.test('each rule refuses a real plan broken in one place, naming the field', async (t) => {
  t.equal(cnn.first.rows, 64, 'the CNN plan the messages below assume');
  t.equal(cnn.first.index.length, 1600);
  for (const [name, base, mutate, message] of mutations) {
    const p = copy(base) as BatchPlan & Record<string, unknown>;
    const replaced = mutate(p);
    const broken = replaced === undefined ? p : replaced;
    let error: unknown;
    try {
      validateBatchPlan(broken, 'server/batch.json');
    } catch (e) {
      error = e;
    }
    t.ok(isSealedError(error) && error.code === 'bad-bundle' && error.hint, `${name}: a bad-bundle error with a hint`);
    t.match(String((error as Error | undefined)?.message), /^server\/batch\.json: /, `${name}: the message says where`);
    t.match(String((error as Error | undefined)?.message), message, `${name}: ${(error as Error | undefined)?.message}`);
  }
});

t.test('a bundle whose batch.json breaks a rule is refused at load: the server does not start', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-batch-plan-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const images = samples(10, side * side).map((x) => x.map((v) => Math.round((v + 0.5) * 127)));
  const built = compileImageModel(smallCnn, images);
  const good = join(dir, 'good');
  await writeBundle(good, built.client, built.compiled.program, built.compiled.masks, {}, {}, cnn);
  t.same((await readServerPart(good)).batch, cnn, 'a valid plan loads as written');
  const heavy = copy(cnn);
  heavy.first.weight[0] = 2 ** 15;
  const bad = join(dir, 'bad');
  // The manifest hashes the bad plan: only the validation stands between it and the kernel.
  await writeBundle(bad, built.client, built.compiled.program, built.compiled.masks, {}, {}, heavy);
  await t.rejects(readServerPart(bad), { code: 'bad-bundle', message: /server\/batch\.json in .*: first\.weight\[0\] is 32768, outside \[-32767, 32767\]/ });
  await t.rejects(
    startServer({ modelDir: bad, port: 0, host: '127.0.0.1', workers: 1, allowAny: true }),
    { code: 'bad-bundle', message: /first\.weight\[0\] is 32768/ },
    'the server refuses to start',
  );
  // A flooded program must say how much to flood: a bound and a statistical security level.
  const program = built.compiled.program;
  t.equal(program.privacy, 'flood', 'image models are compiled with circuit privacy by default');
  const cases: [string, Partial<Program>, RegExp][] = [
    ['no noise bound', { noiseL2Bits: undefined }, /privacy "flood" needs noiseL2Bits/],
    ['lambda 8', { floodSecurityBits: 8 }, /floodSecurityBits is 8, not an integer in \[20, 128\]/],
    // The engine would have run it as a linear step.
    [
      'an unknown operation',
      { steps: [...program.steps, { op: 'relu' } as unknown as Program['steps'][number]] },
      /step \d+ has operation "relu", which this server does not run/,
    ],
  ];
  for (const [name, change, message] of cases) {
    const dirBad = join(dir, name.replace(/ /g, '-'));
    await writeBundle(dirBad, built.client, { ...program, ...change }, built.compiled.masks, {}, {}, cnn);
    await t.rejects(readServerPart(dirBad), { code: 'bad-bundle', message }, `program.json with ${name} is refused`);
  }
});
