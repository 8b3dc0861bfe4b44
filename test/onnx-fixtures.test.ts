// The committed ONNX fixtures (scripts/onnx-fixtures.py: PyTorch and onnx.helper exports) against
// onnxruntime: the lowering (dense maps + true activations) reproduces the original, the compiled
// program in plaintext simulation reproduces it exactly where the model is polynomial (x^2,
// linear) and within the fitted polynomials' error elsewhere, and the Python side's expected
// outputs agree with onnxruntime-node (the files are what they claim).
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { classOfOutputs, classOfScores, compileOnnx, exactScores, headOutputs, outputError, simulatedScores } from '../src/model/onnx/compile.ts';
import { openReference } from '../src/model/onnx/reference.ts';
import { batchModeFor } from '../src/train/onnx-job.ts';

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
      // Three activations fit batch mode's shape, but not its flood at ring 16384: the report says
      // how far the best plan is from the precision the compiler requires.
      const b = await batchModeFor(m, fx.inputs);
      t.equal(b.batch, undefined, 'lenet: no batch plan');
      t.match(
        'unsupported' in b.batchReport ? b.batchReport.unsupported : '',
        /within 2\^-12 of the largest under circuit privacy: the best reaches 2\^-?[0-9.]+/,
        `lenet: the report says why (${JSON.stringify(b.batchReport)})`,
      );
    }
  });
