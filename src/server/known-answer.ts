// The health probe's known answer: a throwaway secret key (no client's) and a ciphertext of known
// values. `check` doubles it, saves it, loads it back (precheck and all) and decrypts: the paths
// every evaluation takes. Right within 1e-3 (CKKS noise here is ~1e-6) or not healthy.
import { CkksSession } from '../fhe/ckks.ts';
import { SecretKeyHolder, generateSecretKey } from '../fhe/keys.ts';
import { loadCiphertext } from '../fhe/load.ts';
import { noteSealError, release } from '../fhe/seal.ts';

export class KnownAnswer {
  private readonly session: CkksSession;
  private readonly values: Float64Array;
  private readonly key: SecretKeyHolder;
  /** A valid ciphertext (also what the test hooks load to see whether SEAL still works). */
  readonly ciphertext: Uint8Array;

  constructor(session: CkksSession, scaleBits: number) {
    this.session = session;
    this.values = Float64Array.from({ length: Math.min(16, session.slots) }, (_, i) => (i - 8) / 16);
    this.key = new SecretKeyHolder(session, generateSecretKey(session));
    this.ciphertext = this.key.encrypt(this.values, scaleBits);
  }

  /** Why the SEAL instance cannot be trusted, or undefined when it computed the known answer. */
  check(): string | undefined {
    const { seal, evaluator } = this.session;
    let ct, sum;
    let failure: string | undefined;
    try {
      ct = loadCiphertext(this.session, this.ciphertext, 'the probe ciphertext');
      sum = new seal.Ciphertext();
      evaluator.add(ct, ct, sum);
      const got = this.key.decrypt(sum.saveToArray(seal.ComprModeType.zstd) as Uint8Array);
      const worst = Math.max(...this.values.map((v, i) => Math.abs(got[i] - 2 * v)));
      if (!(worst < 1e-3)) failure = `the probe decrypted to a wrong answer (error ${worst.toExponential(1)})`;
    } catch (e) {
      noteSealError(e);
      failure = `the probe failed (${e instanceof Error ? e.name : 'error'})`;
    } finally {
      try {
        release(sum, ct);
      } catch {
        failure ??= 'the probe could not release its objects';
      }
    }
    return failure;
  }
}
