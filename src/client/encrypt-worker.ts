// Worker thread of the client's encryption pool (Node only): batch mode makes one ciphertext
// per input feature per batch, hundreds per batch, each encrypted independently. The secret
// key reaches this thread of the client's own process and nowhere else.
import { Piscina } from 'piscina';
import { isSealedError, type PlainError } from '../errors.ts';
import { CkksSession } from '../fhe/ckks.ts';
import { SecretKeyHolder } from '../fhe/keys.ts';
import { isPacked } from '../fhe/raw-ciphertext.ts';
import type { CkksParams } from '../fhe/params.ts';

export interface EncryptTask {
  params: CkksParams;
  /**
   * The secret key, in shared memory (a task carries a reference, not a copy: at ring 32768 a
   * key is megabytes, and every task copied and compared it), and the pool's number for it.
   */
  secretKey: Uint8Array<SharedArrayBuffer>;
  keyId: number;
  scaleBits: number;
  /** The batch's values (float64), column by column: feature i of record r at i slots + r; shared by all its tasks. */
  values: SharedArrayBuffer;
  records: number;
  slots: number;
  /** Features [first, first + count) become ciphertexts. */
  first: number;
  count: number;
  /** An earlier task's buffer handed back (EncryptPool recycles them): written into when large enough. */
  into?: ArrayBuffer;
  /**
   * 'packed' (default): residues packed in 26 bits, batch mode's primes; 'compact': at their
   * primes' widths, as SecretKeyHolder.encryptCompact saves them (tree queries, whose primes are wider).
   */
  form?: 'packed' | 'compact';
}

/** Batch-mode result ciphertexts to decrypt (EncryptPool.decryptAll): their slots come back in one array, in order. */
export interface DecryptTask {
  decrypt: Uint8Array[];
  params: CkksParams;
  secretKey: Uint8Array<SharedArrayBuffer>;
  keyId: number;
}

interface KeyedSession {
  keyId: number;
  session: CkksSession;
  holder: SecretKeyHolder;
}

/** `held` if it holds the task's key, else a new session with that key (`held` closed). */
async function withKey(
  held: KeyedSession | undefined,
  task: { keyId: number; params: CkksParams; secretKey: Uint8Array },
  topLevelOnly: boolean,
): Promise<KeyedSession> {
  if (held?.keyId === task.keyId) return held;
  held?.holder.close();
  held?.session.close();
  const session = await CkksSession.open(task.params, { topLevelOnly });
  return { keyId: task.keyId, session, holder: new SecretKeyHolder(session, task.secretKey) };
}

/** Encryption is always at the top level. */
let current: KeyedSession | undefined;
/** Results are below the top level: decryption needs a session with the whole modulus chain. */
let decrypting: KeyedSession | undefined;

/**
 * A refused ciphertext (the precheck's SealedError) comes back as a PlainError, which the pool
 * revives: thrown across the thread, an error keeps its message but not its class or code.
 */
async function decryptAll(task: DecryptTask): Promise<Float64Array | { error: PlainError }> {
  // Packed results at batch primes are decrypted by our own code (packed-decrypt.ts), which needs
  // only the secret key: the encrypting session serves, where SEAL needs a context of the whole chain.
  const own = task.decrypt.every(isPacked) && task.params.coeffModulusBits.slice(0, -1).every((b) => b <= 26);
  const { holder } = own ? (current = await withKey(current, task, true)) : (decrypting = await withKey(decrypting, task, false));
  const slots = task.params.polyModulusDegree / 2;
  const out = new Float64Array(task.decrypt.length * slots);
  try {
    task.decrypt.forEach((c, i) => out.set(holder.decrypt(c).subarray(0, slots), i * slots));
  } catch (e) {
    if (!isSealedError(e)) throw e;
    return { error: { code: e.code, message: e.message, hint: e.hint } };
  }
  return Piscina.move(out) as Float64Array;
}

/**
 * The task's ciphertexts in one buffer, moved (not copied) to the caller:
 * count u32 | count x length u32 | the ciphertexts (see splitCiphertexts). Packed ciphertexts
 * are encrypted straight into it (each a fresh array copied in was a page fault per 4 KiB twice).
 */
export default async function encrypt(task: EncryptTask | DecryptTask): Promise<Uint8Array | Float64Array | { error: PlainError }> {
  if ('decrypt' in task) return decryptAll(task);
  const { holder } = (current = await withKey(current, task, true));
  // Column i (feature i of every record) lies at i slots (encrypt-pool.ts encryptColumns): a view,
  // read in place; the slots past `records` are the encoding's zeros.
  const values = new Float64Array(task.values);
  const column = (i: number) => values.subarray(i * task.slots, i * task.slots + task.records);
  const head = 4 + 4 * task.count;
  if (task.form === 'compact') {
    const out: Uint8Array[] = [];
    // SEAL's encoder gets a copy of its own (SEAL copies it into its heap anyway): not a view of shared memory.
    for (let i = task.first; i < task.first + task.count; i++) out.push(holder.encryptCompact(column(i).slice(), task.scaleBits));
    return Piscina.move(gather(head, out)) as Uint8Array;
  }
  const each = holder.packedBytes();
  const need = head + task.count * each;
  const bytes = task.into && task.into.byteLength >= need ? new Uint8Array(task.into, 0, need) : new Uint8Array(need);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, task.count, true);
  for (let j = 0; j < task.count; j++) {
    view.setUint32(4 + 4 * j, each, true);
    holder.encryptPacked(column(task.first + j), task.scaleBits, bytes.subarray(head + j * each, head + (j + 1) * each));
  }
  return Piscina.move(bytes) as Uint8Array;
}

function gather(head: number, out: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(head + out.reduce((a, c) => a + c.length, 0));
  const view = new DataView(bytes.buffer);
  view.setUint32(0, out.length, true);
  let o = head;
  out.forEach((c, i) => {
    view.setUint32(4 + 4 * i, c.length, true);
    bytes.set(c, o);
    o += c.length;
  });
  return bytes;
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
