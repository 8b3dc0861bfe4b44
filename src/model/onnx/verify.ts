// `sealed compile --verify N`: N calibration records through the encrypted path, in this
// process: the client's encryption (its pre-processing, packing, symmetric encryption), the
// server's engine and flood (SinglePrivacy with the client's public key, as the workers do), the
// client's decryption and unpacking. No HTTP or S3: those move bytes and do not change values.
import { CkksSession } from '../../fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../../fhe/keys.ts';
import { loadQuerySection } from '../../fhe/load.ts';
import { loadEvaluationKeys } from '../../fhe/load-keys.ts';
import { Engine } from '../../fhe/engine.ts';
import { SinglePrivacy, makePublicKey } from '../../fhe/single-privacy.ts';
import type { ClientPart } from '../client-part.ts';
import type { CompiledModel } from '../compile-linear.ts';
import { packRecords, unpackOutputs, withRotations } from '../layout.ts';
import { preprocessRecord } from '../postprocess.ts';

export interface EncryptedRun {
  scores: number[][];
  /** Bytes the client uploads once (Galois, relinearization and public keys) and per record. */
  keysBytes: number;
  queryBytes: number;
  resultBytes: number;
  evaluateMs: number[];
}

export async function runEncryptedRecords(
  compiled: CompiledModel,
  client: Pick<ClientPart, 'preprocess' | 'image'>,
  rows: ArrayLike<number>[],
): Promise<EncryptedRun> {
  const p = compiled.program;
  const s = await CkksSession.open(p.params);
  const k = generateKeys(s, p.galoisSteps, p.relin);
  const publicKey = makePublicKey(s, k.secretKey);
  const holder = new SecretKeyHolder(s, k.secretKey);
  const keys = loadEvaluationKeys(s, k.galoisKeys, k.relinKeys, p.galoisSteps, p.relin);
  const engine = new Engine(s, p, compiled.masks);
  const privacy = p.privacy === 'flood' ? new SinglePrivacy(s, publicKey, 2 ** p.noiseL2Bits!, p.floodSecurityBits) : undefined;
  const run: EncryptedRun = {
    scores: [],
    keysBytes: k.galoisKeys.length + (k.relinKeys?.length ?? 0) + publicKey.length,
    queryBytes: 0,
    resultBytes: 0,
    evaluateMs: [],
  };
  try {
    for (const row of rows) {
      const [v] = packRecords(compiled.input, [preprocessRecord(row, client)]);
      const q = holder.encryptSection(withRotations(compiled.input, v), p.inputScaleBits);
      run.queryBytes = q.length;
      const t0 = performance.now();
      const cts = loadQuerySection(s, q, engine.inputCiphertexts, p.inputScaleBits);
      let out = engine.run(cts, keys);
      for (const ct of cts) ct.delete();
      if (privacy) {
        const plain = out;
        out = privacy.apply(plain);
        plain.delete();
      }
      run.evaluateMs.push(performance.now() - t0);
      const bytes = out.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
      out.delete();
      run.resultBytes = bytes.length;
      run.scores.push(unpackOutputs(compiled.output, 1, [holder.decrypt(bytes)], 1)[0]);
    }
    return run;
  } finally {
    engine.close();
    keys.close();
    holder.close();
    s.close();
  }
}
