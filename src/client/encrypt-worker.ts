// Worker thread of the client's encryption pool (Node only): batch mode makes one ciphertext
// per input feature per batch, hundreds per batch, each encrypted independently. The secret
// key reaches this thread of the client's own process and nowhere else.
import { CkksSession, SecretKeyHolder } from '../fhe/ckks.ts';
import type { CkksParams } from '../fhe/params.ts';

export interface EncryptTask {
  params: CkksParams;
  secretKey: Uint8Array;
  scaleBits: number;
  /** records x features, row-major (float64), shared by all tasks of a batch. */
  values: SharedArrayBuffer;
  records: number;
  features: number;
  slots: number;
  /** Features [first, first + count) become ciphertexts. */
  first: number;
  count: number;
}

let current: { key: Uint8Array; session: CkksSession; holder: SecretKeyHolder } | undefined;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export default async function encrypt(task: EncryptTask): Promise<Uint8Array[]> {
  if (!current || !sameBytes(current.key, task.secretKey)) {
    current?.holder.close();
    current?.session.close();
    const session = await CkksSession.open(task.params);
    current = { key: task.secretKey, session, holder: new SecretKeyHolder(session, task.secretKey) };
  }
  const values = new Float64Array(task.values);
  const v = new Float64Array(task.slots);
  const out: Uint8Array[] = [];
  for (let i = task.first; i < task.first + task.count; i++) {
    for (let r = 0; r < task.records; r++) v[r] = values[r * task.features + i];
    out.push(current.holder.encryptPacked(v, task.scaleBits));
  }
  return out;
}
