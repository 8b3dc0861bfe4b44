// Worker thread of the client's encryption pool (Node only): batch mode makes one ciphertext
// per input feature per batch, hundreds per batch, each encrypted independently. The secret
// key reaches this thread of the client's own process and nowhere else.
import { Piscina } from 'piscina';
import { CkksSession } from '../fhe/ckks.ts';
import { SecretKeyHolder } from '../fhe/keys.ts';
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
  /**
   * 'packed' (default): residues packed in 26 bits, batch mode's primes; 'compact': at their
   * primes' widths, as SecretKeyHolder.encryptCompact saves them (tree queries, whose primes are wider).
   */
  form?: 'packed' | 'compact';
}

let current: { key: Uint8Array; session: CkksSession; holder: SecretKeyHolder } | undefined;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The task's ciphertexts in one buffer, moved (not copied) to the caller:
 * count u32 | count x length u32 | the ciphertexts (see splitCiphertexts).
 */
export default async function encrypt(task: EncryptTask): Promise<Uint8Array> {
  if (!current || !sameBytes(current.key, task.secretKey)) {
    current?.holder.close();
    current?.session.close();
    // Encryption is always at the top level.
    const session = await CkksSession.open(task.params, { topLevelOnly: true });
    current = { key: task.secretKey, session, holder: new SecretKeyHolder(session, task.secretKey) };
  }
  const values = new Float64Array(task.values);
  const v = new Float64Array(task.slots);
  const out: Uint8Array[] = [];
  for (let i = task.first; i < task.first + task.count; i++) {
    for (let r = 0; r < task.records; r++) v[r] = values[r * task.features + i];
    out.push(task.form === 'compact' ? current.holder.encryptCompact(v, task.scaleBits) : current.holder.encryptPacked(v, task.scaleBits));
  }
  const head = 4 + 4 * out.length;
  const bytes = new Uint8Array(head + out.reduce((a, c) => a + c.length, 0));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, out.length, true);
  let o = head;
  out.forEach((c, i) => {
    view.setUint32(4 + 4 * i, c.length, true);
    bytes.set(c, o);
    o += c.length;
  });
  return Piscina.move(bytes) as Uint8Array;
}

/** The ciphertexts of one task's result, as views of its buffer. */
export function splitCiphertexts(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(0, true);
  const out: Uint8Array[] = [];
  let o = 4 + 4 * count;
  for (let i = 0; i < count; i++) {
    const len = view.getUint32(4 + 4 * i, true);
    out.push(bytes.subarray(o, o + len));
    o += len;
  }
  return out;
}
