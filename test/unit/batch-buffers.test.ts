// The batch buffers a server keeps between requests (src/server/batch-buffers.ts): reused by
// size, reserved in the memory budget while kept, given back when a request needs the memory.
import t from 'tap';
import { BatchBuffers } from '../../src/server/batch-buffers.ts';
import { MemoryBudget } from '../../src/server/budget.ts';

const KiB = 1024;

t.test('a finished request’s buffers serve the next one, reserved while kept', async (t) => {
  const budget = new MemoryBudget(100 * KiB);
  const buffers = new BatchBuffers(60 * KiB, budget);
  const a = buffers.take(20 * KiB);
  const b = buffers.take(10 * KiB);
  t.equal(budget.reserved, 0, 'taking new buffers reserves nothing (the request reserved them)');
  new Uint8Array(a).fill(7);
  buffers.give([a, b]);
  t.equal(budget.reserved, 30 * KiB, 'kept buffers are reserved');
  const again = buffers.take(20 * KiB);
  t.equal(again, a, 'the same buffer, its pages already touched');
  t.equal(new Uint8Array(again)[0], 7, 'not cleared: every batch writes all of it before reading (batch-buffers.ts)');
  t.equal(budget.reserved, 10 * KiB, 'a buffer taken back leaves the cache’s reservation');
  t.not(buffers.take(30 * KiB), b, 'another size: a new buffer');
});

t.test('kept buffers give way: to a reservation that needs the memory, and to the size limit', async (t) => {
  const budget = new MemoryBudget(100 * KiB);
  const buffers = new BatchBuffers(80 * KiB, budget);
  buffers.give([new SharedArrayBuffer(40 * KiB), new SharedArrayBuffer(40 * KiB), new SharedArrayBuffer(40 * KiB)]);
  t.equal(buffers.keptBytes, 80 * KiB, 'kept up to maxBytes');
  t.equal(budget.reserved, 80 * KiB);
  const r = budget.reserve(50 * KiB, 'a request');
  t.equal(buffers.keptBytes, 0, 'a request that would be refused gets the kept memory first');
  t.equal(budget.reserved, 50 * KiB, 'and only its own bytes are reserved');
  buffers.give([new SharedArrayBuffer(60 * KiB)]);
  t.equal(buffers.keptBytes, 0, 'no room left in the budget: not kept');
  t.equal(budget.reserved, 50 * KiB);
  r.release();
  t.throws(() => budget.reserve(101 * KiB, 'too much'), { code: 'bad-request' }, 'what could never fit is still refused');
});

t.test('a reservation that makes every holder give memory back leaves nothing reserved for buffers no longer kept', async (t) => {
  const budget = new MemoryBudget(100 * KiB);
  const a = new BatchBuffers(80 * KiB, budget);
  const b = new BatchBuffers(80 * KiB, budget);
  a.give([new SharedArrayBuffer(60 * KiB)]);
  // b's own reservation is over the budget: every holder is asked to give back, b among them.
  b.give([new SharedArrayBuffer(60 * KiB)]);
  t.equal(a.keptBytes + b.keptBytes, 0, 'both gave their buffers back');
  t.equal(budget.reserved, a.keptBytes + b.keptBytes, 'and nothing stays reserved for them');
});
