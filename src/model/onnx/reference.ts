// The original model, run by onnxruntime (CPU) in plaintext: the reference every compile report
// and fixture test measures the compiled program against. Loaded lazily: only `sealed compile`,
// its tests and the benchmark need it.
import { SealedError } from '../../errors.ts';

export interface ReferenceRunner {
  run(rows: ArrayLike<number>[]): Promise<Record<string, number[]>[]>;
  close(): Promise<void>;
}

export async function openReference(bytes: Uint8Array, inputName: string, shape: number[]): Promise<ReferenceRunner> {
  const ort = await import('onnxruntime-node');
  let session: Awaited<ReturnType<typeof ort.InferenceSession.create>>;
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
  } catch (e) {
    throw new SealedError('bad-data', `onnxruntime cannot load the model: ${(e as Error).message}`, 'check the file with onnx.checker.check_model');
  }
  return {
    async run(rows) {
      const out: Record<string, number[]>[] = [];
      for (const r of rows) {
        const feeds = { [inputName]: new ort.Tensor('float32', Float32Array.from(r), shape) };
        const res = await session.run(feeds);
        const rec: Record<string, number[]> = {};
        for (const [name, t] of Object.entries(res)) rec[name] = Array.from(t.data as ArrayLike<number | bigint>, Number);
        out.push(rec);
      }
      return out;
    },
    async close() {
      await session.release();
    },
  };
}
