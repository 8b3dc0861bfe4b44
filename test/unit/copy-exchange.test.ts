// The exchange through which the threads gathering one record's parts load each copy once
// (src/fhe/copy-exchange.ts): one thread claims a copy, the others take its bytes; a thread
// never waits for a copy nobody is loading, and a failed or late copy is loaded by the waiter.
// With a real second thread for the waits.
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { allocateCopyExchange, CopyExchange } from '../../src/fhe/copy-exchange.ts';

const helper = new URL('../helpers/copy-exchange-worker.ts', import.meta.url);

/** Starts the helper thread on `buffers`; resolves once it has claimed copy 0. */
async function second(buffers: ReturnType<typeof allocateCopyExchange>, delayMs: number, fail = false) {
  const w = new Worker(helper, { workerData: { buffers, delayMs, fail } });
  const done = new Promise<void>((resolve) => w.on('message', (m: { done?: boolean }) => m.done && resolve()));
  const claimed = await new Promise<boolean>((resolve) => w.once('message', (m: { claimed: boolean }) => resolve(m.claimed)));
  return { claimed, done: done.then(() => w.terminate()) };
}

t.test('one thread claims a copy, the others take its bytes', async (t) => {
  const buffers = allocateCopyExchange(3, 16);
  const a = new CopyExchange(buffers);
  const b = new CopyExchange(buffers);
  t.equal(a.copies, 3);
  t.ok(a.claim(1), 'the first claim wins');
  t.notOk(b.claim(1), 'a second claim loses');
  a.publish(1, Uint8Array.from([1, 2, 3, 4]));
  t.same(Array.from(b.take(1)!), [1, 2, 3, 4], 'the published bytes, at their length');
  t.notOk(b.claim(1), 'a published copy cannot be claimed again');
  t.equal(b.take(2), undefined, 'a copy nobody claimed: load it yourself (no wait)');
  t.ok(b.claim(0));
  b.fail(0);
  t.equal(a.take(0), undefined, 'a failed copy: load it yourself');
  t.throws(() => a.publish(2, new Uint8Array(17)), /17 bytes in an exchange of 16/);
  t.equal(b.take(2), undefined, 'and a copy too large to publish counts as failed');
});

t.test('across threads: a waiter wakes when the copy is published, or loads it itself', async (t) => {
  const buffers = allocateCopyExchange(1, 8);
  const here = new CopyExchange(buffers);
  const other = await second(buffers, 200);
  t.ok(other.claimed, 'the other thread claimed copy 0');
  const t0 = performance.now();
  const got = here.take(0, 5000);
  const waited = performance.now() - t0;
  t.same(Array.from(got ?? []), [7, 8, 9], `published by the other thread after ${waited.toFixed(0)} ms of waiting`);
  t.ok(waited < 4000, 'woken by the publication, not by the timeout');
  await other.done;

  const failing = allocateCopyExchange(1, 8);
  const f = await second(failing, 100, true);
  t.equal(new CopyExchange(failing).take(0, 5000), undefined, 'failed by the other thread: load it yourself');
  await f.done;

  const late = allocateCopyExchange(1, 8);
  const l = await second(late, 400);
  const t1 = performance.now();
  t.equal(new CopyExchange(late).take(0, 100), undefined, 'its claimer is late (or died): load it yourself after the timeout');
  t.ok(performance.now() - t1 < 300, 'without waiting for the claimer');
  await l.done;
});
