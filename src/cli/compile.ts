// `sealed compile`: an ONNX model (PyTorch, Keras via tf2onnx, scikit-learn via skl2onnx) and
// calibration records -> the bundle `sealed train` writes, with a compile report; or, with
// --trees, a tree ensemble -> a tree bundle (compile-trees.ts, docs/trees.md). An ONNX file
// given with --onnx that holds a tree ensemble goes to the tree compiler: the user named the
// file they have, and what it holds decides how it is compiled.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { onnxTreeOperator } from '../model/trees/onnx.ts';
import { compileOnnxJob } from '../train/onnx-job.ts';
import { compileTreesCommand } from './compile-trees.ts';

interface CompileOpts {
  onnx?: string;
  trees?: string;
  bits?: number;
  calibration: string;
  model: string;
  target?: string;
  inputScale?: number;
  limit?: number;
  verify?: number;
  inputCopies?: number;
  /** false with --no-refit. */
  refit?: boolean;
  /** false with --no-single-record (trees). */
  singleRecord?: boolean;
  report?: string;
  json?: boolean;
}

export async function compileCommand(o: CompileOpts): Promise<void> {
  const positive = (name: string, v: number | undefined, integer: boolean) => {
    if (v !== undefined && !(Number.isFinite(v) && v >= 0 && (!integer || Number.isInteger(v)) && (integer || v > 0)))
      throw new SealedError('bad-data', `--${name} ${v} is not a ${integer ? 'whole number >= 0' : 'positive number'}`);
  };
  positive('input-scale', o.inputScale, false);
  positive('limit', o.limit, true);
  positive('verify', o.verify, true);
  positive('input-copies', o.inputCopies, true);
  if ((o.onnx === undefined) === (o.trees === undefined))
    throw new SealedError(
      'bad-request',
      o.onnx === undefined ? 'no model to compile' : '--onnx and --trees both given',
      'give one: --onnx FILE (a network in ONNX) or --trees FILE (XGBoost model.json, or an ONNX-ML tree ensemble)',
    );
  const onnx = o.onnx;
  // An unreadable file is left to the ONNX importer, which says so.
  const treeOp = onnx === undefined ? undefined : onnxTreeOperator(new Uint8Array(await readFile(onnx).catch(() => new Uint8Array(0))));
  if (onnx === undefined || treeOp) {
    const networkOnly = (
      [
        ['input-scale', o.inputScale],
        ['limit', o.limit],
        ['verify', o.verify],
        ['input-copies', o.inputCopies],
        ['no-refit', o.refit === false ? true : undefined],
      ] as const
    ).find(([, v]) => v !== undefined);
    if (networkOnly)
      throw new SealedError(
        'bad-request',
        `--${networkOnly[0]} applies to networks, and ${onnx ?? o.trees} is a tree ensemble`,
        'leave it out: a tree ensemble is quantized on the calibration records (--bits), and `sealed predict` checks it end to end',
      );
    if (treeOp) process.stderr.write(`${onnx} holds a ${treeOp}: compiling it as a tree ensemble, as --trees does (docs/trees.md)\n`);
    return compileTreesCommand({
      trees: onnx ?? o.trees!,
      kind: treeOp ? 'onnx-ml' : undefined,
      calibration: o.calibration,
      model: o.model,
      target: o.target,
      bits: o.bits,
      single: o.singleRecord,
      report: o.report,
      json: o.json,
      defaultTarget: true,
    });
  }
  const treesOnly = o.bits !== undefined ? 'bits' : o.singleRecord === false ? 'no-single-record' : undefined;
  if (treesOnly)
    throw new SealedError(
      'bad-request',
      `--${treesOnly} applies to tree ensembles, and ${onnx} holds a network`,
      'leave it out; networks are calibrated with --limit records',
    );
  const { report } = await compileOnnxJob({
    onnx,
    calibration: o.calibration,
    modelDir: o.model,
    target: o.target,
    inputScale: o.inputScale,
    limit: o.limit,
    verify: o.verify,
    refit: o.refit,
    inputCopies: o.inputCopies,
    log: o.json ? (s) => process.stderr.write(s + '\n') : console.log,
  });
  if (o.report) {
    await mkdir(join(o.report, '..'), { recursive: true });
    await writeFile(o.report, JSON.stringify(report, null, 1) + '\n');
  }
  if (o.json) console.log(JSON.stringify(report));
}
