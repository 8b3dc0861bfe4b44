// Batch mode for imported models wherever the graph allows it (one dense layer, or dense ->
// activation -> dense, up to three times): `sealed compile` writes the batch plan into the bundle and says so in
// its report, and a batch query of many records, evaluated by the model server in process with
// no evaluation keys, decrypts to the compiled model's outputs. Graphs batch mode cannot hold
// get a report line saying why, and only the single layout (onnx-fixtures.test.ts: LeNet). A
// convolution pooled 2x2 first (LeNet's) makes the client encrypt the images' box sums.
import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart, readServerPart, writeBundle } from '../src/model/bundle.ts';
import { classOfOutputs, classOfScores, compileOnnx, simulatedScores } from '../src/model/onnx/compile.ts';
import { openReference } from '../src/model/onnx/reference.ts';
import { ModelServer } from '../src/server/model-server.ts';
import { dataPrimesOf, outputPrimesOf, rescalesOf, resultPrimesOf } from '../src/fhe/batch-plan.ts';
import { seededBytes } from '../src/fhe/seeded-batch.ts';
import { batchQueryBytes } from '../src/server/batch-memory.ts';
import { batchModeFor, compileOnnxJob, readCalibration } from '../src/train/onnx-job.ts';
import { predict } from '../src/client/predict.ts';
import { servedClient } from './helpers/fixture.ts';
import { buildModel, gemm, gemmWeights, tensor } from './helpers/onnx-build.ts';

/** Compiles `onnx` with `calibration` into a bundle, and runs `rows` through batch mode in process. */
async function batchRun(t: Test, onnx: string, calibration: string, rows: ArrayLike<number>[]) {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-onnx-batch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { report } = await compileOnnxJob({ onnx, calibration, modelDir: dir });
  const { modelId, client } = await readClientPart(dir);
  const part = await readServerPart(dir);
  if (!client.batch || !part.batch) return { dir, report, client, scores: undefined };
  const session = await ClientSession.open(modelId, client);
  session.generateBatchKey();
  const server = await ModelServer.open(part, { recordsPerCiphertext: client.input.recordsPerCiphertext });
  const result = server.evaluateBatch(session.encrypt(rows, 'batch'));
  const scores = session.decryptScores(result);
  session.close();
  return { dir, report, client, scores };
}

/** Largest |batch - simulated| over every record and output, and the largest |simulated| (at least 1). */
function largestError(scores: number[][], simulated: (i: number) => number[]) {
  let worst = 0,
    top = 1;
  scores.forEach((s, i) =>
    simulated(i).forEach((v, c) => {
      worst = Math.max(worst, Math.abs(s[c] - v));
      top = Math.max(top, Math.abs(v));
    }),
  );
  return { worst, top };
}

t.test('scikit-learn pipeline (Scaler + LinearClassifier): batch mode, 569 records in one query = the compiled model', async (t) => {
  const onnx = new URL('./fixtures/onnx/sklearn_linear.onnx', import.meta.url).pathname;
  const csv = new URL('../data/breast_cancer/breast_cancer.csv', import.meta.url).pathname;
  const cal = await readCalibration(csv, 30);
  const { report, client, scores } = await batchRun(t, onnx, csv, cal.rows);
  t.ok('records_per_query' in report.batch, `report: ${JSON.stringify(report.batch)}`);
  t.ok(client.batch && client.batch.records_per_batch >= cal.rows.length, `client part: up to ${client.batch?.records_per_batch} records per batch`);
  // The factors come from the calibration ranges (each feature to about [-1, 1]), not from the weights.
  const f = client.batch?.input_factors ?? [];
  t.equal(f.length, 30, 'per-feature factors: the Scaler leaves weights from 0.0014 to 240');
  const ranges = f.map((_, j) => Math.max(...cal.rows.map((r) => Math.abs(r[j]))));
  t.ok(
    f.every((v, j) => Math.log2(v) % 1 === 0 && v * ranges[j] > 0.5 && v * ranges[j] <= 1),
    'each a power of two that brings its feature to (0.5, 1]',
  );
  t.ok(scores, 'the bundle serves batch queries');
  if (!scores) return;
  t.equal(scores.length, cal.rows.length);
  const bytes = new Uint8Array(await readFile(onnx));
  const m = compileOnnx(bytes, cal.rows, { features: cal.features });
  const ref = await openReference(bytes, m.lowered.inputName, m.lowered.inputShape);
  const ort = await ref.run(cal.rows);
  await ref.close();
  const { worst, top } = largestError(scores, (i) => simulatedScores(m, cal.rows[i]));
  const agree = scores.filter((s, i) => classOfScores(client, s) === classOfOutputs(m.lowered.head, ort[i])).length;
  // The flood's error is 2^-12 of the largest output (one standard deviation); 2^-9 is 8 of them.
  t.ok(worst < 2 ** -9 * top, `batch scores = the compiled model's within ${worst.toExponential(2)} (outputs up to ${top.toFixed(1)})`);
  t.ok(agree >= cal.rows.length - 2, `${agree} of ${cal.rows.length} classes = onnxruntime's`);
});

t.test('dense -> ReLU -> dense, once, twice or three times: batch mode with the fitted quadratics', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-onnx-batch-models-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let s = 5;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s / 2 ** 31);
  const rows = Array.from({ length: 300 }, () => Array.from({ length: 12 }, rnd));
  const csv = join(dir, 'cal.csv');
  await writeFile(csv, rows.map((r) => r.join(',')).join('\n') + '\n');

  const one = join(dir, 'one.onnx');
  await writeFile(
    one,
    buildModel({
      inputs: [['x', ['N', 12]]],
      outputs: [['y', ['N', 3]]],
      initializers: [...gemmWeights('fc1', 12, 8, 3), ...gemmWeights('fc2', 8, 3, 4)],
      nodes: [gemm('fc1', 'x', 'h'), { op: 'Relu', inputs: ['h'], outputs: ['r'], name: 'relu' }, gemm('fc2', 'r', 'y')],
    }),
  );
  const a = await batchRun(t, one, csv, rows);
  t.ok('records_per_query' in a.report.batch, `one activation: ${JSON.stringify(a.report.batch)}`);
  t.ok(a.scores, 'batch query served');
  if (a.scores) {
    const m = compileOnnx(new Uint8Array(await readFile(one)), rows);
    const { worst, top } = largestError(a.scores, (i) => simulatedScores(m, rows[i]));
    t.ok(worst < 2 ** -9 * top, `batch outputs = the compiled model's (ReLU as its quadratic) within ${worst.toExponential(2)}`);
  }

  /** dense 12 -> 8, then (ReLU, dense) for each width in `widths`. */
  const deeper = async (name: string, widths: number[]) => {
    const file = join(dir, `${name}.onnx`);
    const sizes = [12, 8, ...widths];
    await writeFile(
      file,
      buildModel({
        inputs: [['x', ['N', 12]]],
        outputs: [['y', ['N', widths[widths.length - 1]]]],
        initializers: sizes.slice(1).flatMap((out, i) => gemmWeights(`fc${i + 1}`, sizes[i], out, i + 3)),
        nodes: sizes
          .slice(1)
          .flatMap((_, i) => [
            gemm(`fc${i + 1}`, i ? `r${i}` : 'x', i + 2 < sizes.length ? `h${i + 1}` : 'y'),
            ...(i + 2 < sizes.length ? [{ op: 'Relu', inputs: [`h${i + 1}`], outputs: [`r${i + 1}`], name: `relu${i + 1}` }] : []),
          ]),
      }),
    );
    return file;
  };
  const two = await deeper('two', [6, 3]);
  const b = await batchRun(t, two, csv, rows);
  t.ok('records_per_query' in b.report.batch, `two activations: ${JSON.stringify(b.report.batch)}`);
  t.equal(b.client.batch?.params.polyModulusDegree, 16384, 'two activations: ring 16384');
  t.equal(b.client.batch?.result_size, 5, 'size-5 results (two squares, no relinearization)');
  t.ok(b.scores, 'batch query served');
  if (b.scores) {
    const m = compileOnnx(new Uint8Array(await readFile(two)), rows);
    const { worst, top } = largestError(b.scores, (i) => simulatedScores(m, rows[i]));
    t.ok(worst < 2 ** -9 * top, `batch outputs = the compiled model's (two ReLUs as quadratics) within ${worst.toExponential(2)}`);

    // Served: the worker pool's phases over shared memory, the flood in the workers, and the
    // buffers the server keeps between requests (the second request runs on the first's).
    const served = await servedClient(t, b.dir, await mkdtemp(join(tmpdir(), 'sealed-onnx-batch-served-')), 1);
    let resultBytes = 0;
    for (const round of ['first', 'second']) {
      const r = await predict(served.session, served.keys, rows, served.transport, { layout: 'batch' });
      resultBytes = r.stats.result_bytes;
      const e = largestError(r.scores, (i) => simulatedScores(m, rows[i]));
      t.ok(e.worst < 2 ** -9 * e.top, `served, ${round} request: outputs within ${e.worst.toExponential(2)} of the compiled model's`);
    }
    const p = b.client.batch!;
    const [k, N] = [p.params.coeffModulusBits.length - 1, p.params.polyModulusDegree];
    // The plan rescales the second layer's values (batch-plan.ts): its results keep fewer primes.
    const plan = (await readServerPart(b.dir)).batch!;
    t.ok(plan.second!.rescalePrimes, `the plan drops ${plan.second!.rescalePrimes} of its ${k} primes before the second square`);
    // And after the flood, the result rescale (batch-plan.ts, resultRescalePrimes): fewer still.
    t.ok(plan.resultRescalePrimes, `the flooded results are divided by ${plan.resultRescalePrimes} primes more`);
    t.equal(p.result_primes, resultPrimesOf(plan), 'and the client part says how many its results keep');
    t.equal(p.flood_primes, outputPrimesOf(plan), "and how many they have when flooded (the re-randomization key's)");
    // Three results of five polynomials, 26 bits (3.25 bytes) a residue, and their framing.
    const small = 3 * 5 * resultPrimesOf(plan) * N * 3.25;
    t.ok(resultBytes > small && resultBytes < small + 64 * 1024, `the results come back that small: ${resultBytes} bytes`);
    const kept = outputPrimesOf(plan);
    t.equal(
      served.stack.server.memory.budgetInUse.reserved,
      12 * seededBytes(k, N) + 2 * (12 * 2 * N * 4) + plan.second!.rows * 3 * k * N * 4 + 3 * 5 * kept * N * 4,
      "between requests only the kept buffers are reserved: one batch's 12 sections, two primes' residues, the second layer's values and the size-5 outputs",
    );
  }

  // Three activations: size-9 results, the second and third layers' values rescaled (two
  // rescales, each split over the workers). The bundle is written without the compile job's
  // single-layout measurements (ring 32768: 40 s here), then served.
  const m3 = compileOnnx(new Uint8Array(await readFile(await deeper('three', [6, 5, 3]))), rows);
  const c = await batchModeFor(m3, rows);
  t.ok('records_per_query' in c.batchReport, `three activations: ${JSON.stringify(c.batchReport)}`);
  t.equal(m3.client.batch?.result_size, 9, 'size-9 results (three squares, no relinearization)');
  if (c.batch) {
    const dir3 = await mkdtemp(join(tmpdir(), 'sealed-onnx-batch-three-'));
    t.teardown(() => rm(dir3, { recursive: true, force: true }));
    await writeBundle(dir3, m3.client, m3.compiled.program, m3.compiled.masks, {}, {}, c.batch);
    const served = await servedClient(t, dir3, await mkdtemp(join(tmpdir(), 'sealed-onnx-batch-three-served-')), 1);
    const r = await predict(served.session, served.keys, rows, served.transport, { layout: 'batch' });
    const e = largestError(r.scores, (i) => simulatedScores(m3, rows[i]));
    t.ok(e.worst < 2 ** -9 * e.top, `served: outputs within ${e.worst.toExponential(2)} of the compiled model's (three ReLUs as quadratics)`);
    const query = served.session.encrypt(rows, 'batch');
    const bound = batchQueryBytes(c.batch);
    t.ok(query.length <= bound && query.length > bound - 1024 * 1024, `a one-batch query (${query.length} bytes) within the server's sizing of one (${bound})`);
    const rescales = rescalesOf(c.batch);
    t.same(
      rescales.map((x) => x.size),
      [3, 5],
      `two rescales: ${rescales.map((x) => `${x.primesBefore - x.primesAfter} of ${x.primesBefore} primes`).join(', then ')}`,
    );
    const [k, N] = [dataPrimesOf(c.batch), c.batch.params.polyModulusDegree];
    t.equal(
      served.stack.server.memory.budgetInUse.reserved,
      12 * seededBytes(k, N) +
        2 * (12 * 2 * N * 4) +
        rescales.reduce((a, x) => a + x.rows * x.size * x.primesBefore * N * 4, 0) +
        3 * 9 * outputPrimesOf(c.batch) * N * 4,
      "between requests the kept buffers are reserved: the sections, two primes' residues, the values of both rescales and the size-9 outputs",
    );
  }
});

t.test("conv + 2x2 average pooling (LeNet's first layer): the client encrypts the box sums, results = the compiled model", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealed-onnx-batch-box-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const onnx = join(dir, 'pooled.onnx');
  await writeFile(
    onnx,
    buildModel({
      inputs: [['x', ['N', 1, 8, 8]]],
      outputs: [['y', ['N', 3]]],
      initializers: [
        tensor(
          'k',
          [2, 1, 3, 3],
          Array.from({ length: 18 }, (_, i) => Math.sin(i + 2) * 0.7),
        ),
        tensor('kb', [2], [0.1, -0.2]),
        ...gemmWeights('fc', 18, 3, 7),
      ],
      nodes: [
        { op: 'Conv', inputs: ['x', 'k', 'kb'], outputs: ['c'], name: 'conv' },
        { op: 'AveragePool', inputs: ['c'], outputs: ['a'], name: 'pool', attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
        { op: 'Mul', inputs: ['a', 'a'], outputs: ['s'], name: 'square' },
        { op: 'Flatten', inputs: ['s'], outputs: ['f'], name: 'flatten' },
        gemm('fc', 'f', 'y'),
      ],
    }),
  );
  let s = 11;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s / 2 ** 31);
  const rows = Array.from({ length: 200 }, () => Array.from({ length: 64 }, rnd));
  const csv = join(dir, 'cal.csv');
  await writeFile(csv, rows.map((r) => r.join(',')).join('\n') + '\n');
  const { dir: bundle, client, scores } = await batchRun(t, onnx, csv, rows);
  t.same(client.batch?.input_box, { channels: 1, height: 8, width: 8 }, 'the client part says the client sums 2x2 boxes of the 8 x 8 image');
  t.equal(client.batch?.input_factors, undefined, 'and no input factors');
  const plan = (await readServerPart(bundle)).batch!;
  t.equal(plan.inputs, 49, 'the plan takes 7 x 7 box sums');
  t.ok(
    plan.first.start.every((v, j) => j === 0 || v - plan.first.start[j - 1] <= 9),
    `each output sums at most 3 x 3 of them, not 4 x 4 pixels (${plan.first.index.length} taps for ${plan.first.rows} rows)`,
  );
  t.ok(scores, 'batch query served');
  if (!scores) return;
  const m = compileOnnx(new Uint8Array(await readFile(onnx)), rows);
  const { worst, top } = largestError(scores, (i) => simulatedScores(m, rows[i]));
  t.ok(worst < 2 ** -9 * top, `batch outputs = the compiled model's within ${worst.toExponential(2)} (outputs up to ${top.toFixed(2)})`);
});
