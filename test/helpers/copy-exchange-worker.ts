// A second thread for test/unit/copy-exchange.test.ts: claims copy 0 of the exchange it is given,
// publishes it after `delayMs` (or, with `fail`, fails it), then says so.
import { parentPort, workerData } from 'node:worker_threads';
import { CopyExchange, type CopyExchangeBuffers } from '../../src/fhe/copy-exchange.ts';

const { buffers, delayMs, fail } = workerData as { buffers: CopyExchangeBuffers; delayMs: number; fail: boolean };
const exchange = new CopyExchange(buffers);
const claimed = exchange.claim(0);
parentPort!.postMessage({ claimed });
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, delayMs);
if (fail) exchange.fail(0);
else exchange.publish(0, Uint8Array.from([7, 8, 9]));
parentPort!.postMessage({ done: true });
