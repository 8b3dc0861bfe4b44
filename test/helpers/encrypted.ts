// Runs a compiled program end to end in one process: fresh keys, encryption of each slot
// vector (and the rotated copies the program reads), evaluation by the engine, decryption. For tests of the engine and the compilers.
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../../src/fhe/keys.ts';
import { loadQuerySection } from '../../src/fhe/load.ts';
import { loadEvaluationKeys } from '../../src/fhe/load-keys.ts';
import { Engine } from '../../src/fhe/engine.ts';
import type { Program } from '../../src/fhe/program.ts';
import { rotate } from '../../src/model/simulate.ts';

export async function runEncrypted(
  program: Program,
  masks: Float64Array[],
  vectors: Float64Array[],
  onQuery?: (bytes: Uint8Array) => void,
): Promise<Float64Array[]> {
  const s = await CkksSession.open(program.params);
  const k = generateKeys(s, program.galoisSteps, program.relin);
  const holder = new SecretKeyHolder(s, k.secretKey);
  const keys = loadEvaluationKeys(s, k.galoisKeys, k.relinKeys, program.galoisSteps, program.relin);
  const engine = new Engine(s, program, masks);
  try {
    // The client's rotated copies of each input, where the program's first step reads them.
    const first = program.steps[0];
    const rotations = first?.op === 'linear' ? (first.inputRotations ?? []) : [];
    return vectors.map((v) => {
      const q = holder.encryptSection([v, ...rotations.map((k) => rotate(v, k))], program.inputScaleBits);
      onQuery?.(q);
      const cts = loadQuerySection(s, q, engine.inputCiphertexts, program.inputScaleBits);
      const out = engine.run(cts, keys);
      for (const ct of cts) ct.delete();
      const bytes = out.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
      out.delete();
      return holder.decrypt(bytes);
    });
  } finally {
    engine.close();
    keys.close();
    holder.close();
    s.close();
  }
}
