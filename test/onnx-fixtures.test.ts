// The committed ONNX fixtures (scripts/onnx-fixtures.py: PyTorch and onnx.helper exports) against
// onnxruntime: the lowering (dense maps + true activations) reproduces the original, the compiled
// program in plaintext simulation reproduces it exactly where the model is polynomial (x^2,
// linear) and within the fitted polynomials' error elsewhere, and the Python side's expected
// outputs agree with onnxruntime-node (the files are what they claim).
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { classOfOutputs, classOfScores, compileOnnx, exactScores, headOutputs, outputError, simulatedScores } from '../src/model/onnx/compile.ts';
import { openReference } from '../src/model/onnx/reference.ts';
import { dataPrimesOf } from '../src/fhe/batch-plan.ts';
import { FLOOD_PRECISION_BITS, compileBatch } from '../src/model/compile-batch.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { simulateBatch } from '../src/model/simulate-batch.ts';
import { imageShape } from '../src/train/onnx-job.ts';

interface Fixture {
  input: string;
  shape: number[];
  inputs: number[][];
  outputs: Record<string, number[][]>;
  labels: number[];
}

const dir = new URL('./fixtures/onnx/', import.meta.url);
const load = async (name: string) => ({
  bytes: new Uint8Array(await readFile(new URL(`${name}.onnx`, dir))),
  fx: JSON.parse(await readFile(new URL(`${name}.json`, dir), 'utf8')) as Fixture,
});

// [name, polynomial (exact under encryption up to CKKS noise), expected layer kinds]
const cases: [string, boolean, string[]][] = [
  ['sklearn_linear', true, ['dense']],
  ['mlp_square', true, ['dense', 'quadratic', 'dense', 'quadratic', 'dense']],
  ['mlp_relu', false, ['dense', 'quadratic', 'dense', 'quadratic', 'dense']],
  ['lenet', true, ['dense', 'quadratic', 'dense', 'quadratic', 'dense', 'quadratic', 'dense']],
  ['cnn3', false, ['dense', 'quadratic', 'dense', 'quadratic', 'dense']],
];

for (const [name, polynomial, kinds] of cases)
  t.test(`${name}: lowering = onnxruntime; simulation ${polynomial ? '= onnxruntime' : 'within the fitted error'}`, async (t) => {
    const { bytes, fx } = await load(name);
    const m = compileOnnx(bytes, fx.inputs);
    t.same(
      m.network.layers.map((l) => l.type),
      kinds,
      'every linear chain became one dense map',
    );
    t.equal(m.compiled.program.privacy, 'flood');
    const ref = await openReference(bytes, m.lowered.inputName, m.lowered.inputShape);
    const ort = await ref.run(fx.inputs);
    await ref.close();
    let fixtureErr = 0,
      loweringErr = 0,
      simErr = 0,
      agree = 0;
    fx.inputs.forEach((x, i) => {
      for (const [k, rows] of Object.entries(fx.outputs))
        rows[i].forEach((v, j) => (fixtureErr = Math.max(fixtureErr, Math.abs(v - ort[i][k][j]) / Math.max(1, Math.abs(v)))));
      loweringErr = Math.max(loweringErr, outputError(m.lowered.head, headOutputs(m.lowered.head, exactScores(m.lowered, x)), ort[i]));
      const s = simulatedScores(m, x);
      simErr = Math.max(simErr, outputError(m.lowered.head, headOutputs(m.lowered.head, s), ort[i]));
      if (classOfScores(m.client, s) === classOfOutputs(m.lowered.head, ort[i])) agree++;
    });
    t.ok(fixtureErr < 1e-4, `fixture outputs = onnxruntime-node's (relative error ${fixtureErr.toExponential(2)})`);
    t.ok(loweringErr < 1e-4, `lowered graph = onnxruntime (${loweringErr.toExponential(2)})`);
    if (polynomial) {
      t.ok(simErr < 1e-4, `simulated program = onnxruntime (${simErr.toExponential(2)})`);
      t.equal(agree, fx.inputs.length, 'every class agrees');
      t.ok(
        m.fits.every((f) => f.exact),
        'x^2 activations are exact',
      );
    } else {
      t.ok(
        m.fits.some((f) => !f.exact && f.rmse > 0),
        'the activations are fitted polynomials, and say so',
      );
      t.ok(agree >= fx.inputs.length - 2, `${agree}/${fx.inputs.length} classes agree`);
    }
    if (name === 'lenet') {
      // Three activations: ring 16384 holds a plan whose flood keeps the outputs within 2^-12
      // (16 data primes); with a flood 2^2 larger it holds none (the compiler reports how close
      // the best comes), and the compiler goes on to ring 32768.
      const pre = fx.inputs.map((x) => preprocessRecord(x, m.client));
      const plan = compileBatch(m.network, pre)!;
      t.equal(plan?.params.polyModulusDegree, 16384, `lenet: a batch plan at ring 16384 (${plan && dataPrimesOf(plan)} data primes)`);
      const report: { precisionBits?: number } = {};
      const floodSecurityBits = 32;
      t.equal(compileBatch(m.network, pre, { degree: 16384, report, floodSecurityBits }), undefined, 'lenet, lambda 32: no batch plan at ring 16384');
      t.ok(
        report.precisionBits! > 0 && report.precisionBits! < FLOOD_PRECISION_BITS,
        `lenet, lambda 32: the best at ring 16384 reaches 2^-${report.precisionBits?.toFixed(1)}`,
      );
      const wide = compileBatch(m.network, pre, { floodSecurityBits });
      t.equal(wide?.params.polyModulusDegree, 32768, `lenet, lambda 32: a batch plan at ring 32768 (${wide && dataPrimesOf(wide)} data primes)`);
      t.equal(plan?.privacy, 'flood', 'with circuit privacy');
      // Conv + 2x2 average pooling first: the client encrypts the 27 x 27 box sums of the image,
      // and each of the first layer's 576 rows sums 25 products instead of 36, at no extra prime.
      const image = imageShape(m.lowered.inputShape, 784);
      t.same(image, { channels: 1, height: 28, width: 28 }, 'lenet: the input is a 28 x 28 image');
      const boxed = compileBatch(m.network, pre, { image })!;
      t.same(boxed?.inputBox, image, 'lenet: a plan over box sums');
      t.equal(boxed?.inputs, 729);
      t.equal(boxed?.first.index.length, 576 * 25, '25 taps per row');
      t.equal(boxed && dataPrimesOf(boxed), dataPrimesOf(plan), 'as many data primes as over the pixels');
      const worst = Math.max(...pre.map((x) => Math.max(...simulateBatch(boxed, x).map((v, k) => Math.abs(v - simulateBatch(plan, x)[k])))));
      t.ok(worst < 1e-2, `the two plans agree in plaintext (largest difference ${worst.toExponential(2)})`);
    }
  });
