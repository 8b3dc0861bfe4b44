// `sealed compile`: an ONNX model (PyTorch, Keras via tf2onnx, scikit-learn via skl2onnx) and
// calibration records -> the bundle `sealed train` writes, with a compile report.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { compileOnnxJob } from '../train/onnx-job.ts';

interface CompileOpts {
  onnx: string;
  calibration: string;
  model: string;
  target?: string;
  inputScale?: number;
  limit?: number;
  verify?: number;
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
  const { report } = await compileOnnxJob({
    onnx: o.onnx,
    calibration: o.calibration,
    modelDir: o.model,
    target: o.target,
    inputScale: o.inputScale,
    limit: o.limit,
    verify: o.verify,
    log: o.json ? (s) => process.stderr.write(s + '\n') : console.log,
  });
  if (o.report) {
    await mkdir(join(o.report, '..'), { recursive: true });
    await writeFile(o.report, JSON.stringify(report, null, 1) + '\n');
  }
  if (o.json) console.log(JSON.stringify(report));
}
