// The client's encryption pool (encrypt-pool.ts, encrypt-worker.ts): ciphertexts made in worker
// threads decrypt under the key given with each run. The key travels once per run, in shared
// memory under a number: a second key on the same pool is used for its own run (the workers load
// a key when its number changes), the same key in a new array keeps its number, and close zeroes
// the shared copies.
import t, { type Test } from 'tap';
import { EncryptPool, sharedMatrix } from '../../src/client/encrypt-pool.ts';
import { SealedError } from '../../src/errors.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateSecretKey } from '../../src/fhe/keys.ts';
import type { CkksParams } from '../../src/fhe/params.ts';
import { primes as chainPrimes } from '../../src/fhe/params.ts';
import { buildRaw } from '../../src/fhe/raw-ciphertext.ts';
import type { SeededLevel } from '../../src/fhe/seeded-batch.ts';
import { decodeSeededSection } from '../../src/fhe/seeded-decode.ts';

const N = 8192;
const params: CkksParams = { scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: [26, 26, 26, 26, 26], securityLevel: 128 };
const scaleBits = 26;

/** A session, one secret key and its holder, and a pool of `threads`: closed when the test ends. */
async function keyed(t: Test, threads: number) {
  const s = await CkksSession.open(params, { topLevelOnly: true });
  const secretKey = generateSecretKey(s);
  const holder = new SecretKeyHolder(s, secretKey);
  const pool = new EncryptPool(threads);
  t.teardown(async () => {
    holder.close();
    s.close();
    await pool.close();
  });
  return { s, secretKey, holder, pool };
}

t.test('ciphertexts from the pool decrypt under the key of their run; keys switch, are shared once, zeroed at close', async (t) => {
  const s = await CkksSession.open(params, { topLevelOnly: true });
  const keyA = generateSecretKey(s);
  const keyB = generateSecretKey(s);
  const [a, b] = [new SecretKeyHolder(s, keyA), new SecretKeyHolder(s, keyB)];
  const pool = new EncryptPool(1);
  t.teardown(async () => {
    a.close();
    b.close();
    s.close();
    await pool.close();
  });
  const all = chainPrimes(s.seal, s.context).map(Number);
  const level: SeededLevel = { parmsId: s.shape.data[0].parmsId, primes: all.slice(0, -1), degree: N };
  const k = level.primes.length;
  /** Section j decrypted by `holder`: the values of its first `n` slots. */
  const open = (holder: SecretKeyHolder, section: Uint8Array, n: number) => {
    const residues = new Uint32Array(2 * k * N);
    decodeSeededSection(section, level, 2 ** scaleBits, residues, 0, 'a pool ciphertext');
    return Array.from(holder.decrypt(buildRaw({ parmsId: level.parmsId, degree: N, primes: k, scale: 2 ** scaleBits }, 2, residues, 0)).subarray(0, n));
  };
  // 20 features: two tasks (16 features, then 4), each ciphertext written into its task's buffer.
  const features = 20;
  const rows = Array.from({ length: 3 }, (_, r) => Array.from({ length: features }, (_, j) => (r + 1) * 0.1 + j * 0.01));
  const worst = (holder: SecretKeyHolder, sections: Uint8Array[]) =>
    Math.max(...sections.flatMap((c, j) => open(holder, c, rows.length).map((v, r) => Math.abs(v - rows[r][j]))));
  const run = (secretKey: Uint8Array) => pool.encryptAll(rows, features, { params, secretKey, scaleBits, slots: N / 2 });

  const first = await run(keyA);
  t.equal(first.length, features, 'one ciphertext per feature');
  t.ok(worst(a, first) < 2 ** -12, `under key A: the records' values (largest error ${worst(a, first).toExponential(1)})`);
  const second = await run(keyB);
  t.ok(worst(b, second) < 2 ** -12, 'a run with key B on the same pool (and thread): decrypts under B');
  t.ok(worst(a, second) > 1, 'and not under A');
  const third = await run(Uint8Array.from(keyA));
  t.ok(worst(a, third) < 2 ** -12, 'key A again, in a new array: decrypts under A');
  const shared = (pool as unknown as { keys: Map<string, { id: number; shared: Uint8Array }> }).keys;
  t.same(
    [...shared.values()].map((x) => x.id),
    [1, 2],
    'two keys shared, each once: the same key in a new array is the same entry',
  );
  const copies = [...shared.values()].map((x) => x.shared);
  t.ok(
    copies.every((c) => c.some((x) => x !== 0)),
    'the shared copies hold the keys',
  );
  await pool.close();
  t.ok(
    copies.every((c) => c.every((x) => x === 0)),
    'close zeroes them',
  );
});

t.test('a result ciphertext the precheck refuses comes back from the pool as the SealedError it is', async (t) => {
  const { secretKey, holder, pool } = await keyed(t, 1);
  const garbage = new Uint8Array(64).fill(7);
  const here = t.throws(() => holder.decrypt(garbage)) as SealedError;
  const e: unknown = await pool.decryptAll([garbage], { params, secretKey }).catch((x: unknown) => x);
  // Thrown across the thread it would be a plain Error: no class, no code for the CLI's exit status.
  t.ok(e instanceof SealedError, `a SealedError (${String(e)})`);
  t.equal((e as SealedError).code, here.code, `with the code decrypting here gives (${here.code})`);
  t.equal((e as SealedError).message, here.message, 'and its message');
  t.equal((e as SealedError).hint, here.hint, 'and its hint');
});

t.test('results in shared memory (as predict downloads them) decrypt in place, as from an ordinary buffer', async (t) => {
  const { secretKey, holder, pool } = await keyed(t, 2);
  const values = [0, 1, 2].map((i) => Float64Array.from({ length: N / 2 }, (_, j) => Math.sin(i + j / 100)));
  const cts = values.map((v) => holder.encrypt(v, scaleBits));
  const shared = new Uint8Array(new SharedArrayBuffer(cts.reduce((a, c) => a + c.length + 3, 0)));
  let at = 3; // views at odd offsets, as sections within a result are
  const views = cts.map((c) => {
    const v = shared.subarray(at, at + c.length);
    v.set(c);
    at += c.length + 1;
    return v;
  });
  const [fromShared, fromPlain] = [await pool.decryptAll(views, { params, secretKey }), await pool.decryptAll(cts, { params, secretKey })];
  t.equal(fromShared.length, 3);
  t.ok(
    fromShared.every((d, i) => d.every((x, j) => x === fromPlain[i][j])),
    'slot for slot the same',
  );
  t.ok(Math.abs(fromShared[2][5] - values[2][5]) < 2 ** -10, 'and the values encrypted');
  t.equal(shared.subarray(3, 3 + cts[0].length).toString(), cts[0].toString(), 'the shared bytes are left as they were');
});

t.test('recycled task buffers: later tasks write into consumed ones, and every ciphertext decrypts as it is yielded', async (t) => {
  const { s, secretKey, holder, pool } = await keyed(t, 1);
  const all = chainPrimes(s.seal, s.context).map(Number);
  const level: SeededLevel = { parmsId: s.shape.data[0].parmsId, primes: all.slice(0, -1), degree: N };
  const k = level.primes.length;
  const slots = N / 2;
  // 96 features: six tasks of 16; the pool runs two ahead on its one thread.
  const features = 96;
  const records = 3;
  const matrix = sharedMatrix(features * slots);
  for (let j = 0; j < features; j++) for (let r = 0; r < records; r++) matrix[j * slots + r] = (r + 1) * 0.1 + j * 0.001;
  // The tasks as handed to the threads: which of them carried a buffer to write into.
  const inner = (pool as unknown as { piscina: { run(task: { into?: ArrayBuffer }, o?: unknown): Promise<unknown> } }).piscina;
  const runTask = inner.run.bind(inner);
  let given = 0;
  inner.run = (task, o) => {
    if (task.into && task.into.byteLength > 0) given++;
    return runTask(task, o);
  };
  const run = async (recycle: boolean) => {
    given = 0;
    let worst = 0;
    let j = 0;
    for await (const c of pool.encryptColumns(matrix, records, features, { params, secretKey, scaleBits, slots }, recycle)) {
      // Read after the pool's other work has had its turn, as an upload reads it: a buffer handed to
      // a task too early is moved to its thread (this view then empty) or written over.
      await new Promise((r) => setImmediate(r));
      const residues = new Uint32Array(2 * k * N);
      decodeSeededSection(c, level, 2 ** scaleBits, residues, 0, 'a pool ciphertext');
      const got = holder.decrypt(buildRaw({ parmsId: level.parmsId, degree: N, primes: k, scale: 2 ** scaleBits }, 2, residues, 0));
      for (let r = 0; r < records; r++) worst = Math.max(worst, Math.abs(got[r] - matrix[j * slots + r]));
      j++;
    }
    return { given, worst, count: j };
  };
  const fresh = await run(false);
  t.equal(fresh.count, features, 'every feature, without recycling');
  t.equal(fresh.given, 0, 'no task given a buffer');
  const first = await run(true);
  const again = await run(true);
  t.equal(again.count, features, 'every feature, recycling');
  t.ok(first.worst < 2 ** -12 && again.worst < 2 ** -12, `each decrypts to its column (largest error ${Math.max(first.worst, again.worst).toExponential(1)})`);
  t.ok(first.given >= 3, `tasks wrote into earlier tasks' buffers (${first.given} of 6 in the first run)`);
  t.equal(again.given, 6, 'and every task of a run after it (buffers kept by the pool)');
});
