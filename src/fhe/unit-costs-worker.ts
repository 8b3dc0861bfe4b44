// One thread of a concurrent unit-cost measurement (batch-cost.ts): the pool runs this many
// workers at once, and a core does less when its neighbours are busy (shared caches, memory
// bandwidth), so unit costs for W workers are measured with W threads measuring at once.
import { parentPort, workerData } from 'node:worker_threads';
import type { BatchPlan } from './batch-plan.ts';
import { measureBatchUnitCosts } from './batch-cost.ts';

const { plan, start } = workerData as { plan: BatchPlan; start: SharedArrayBuffer };
// Start together: every thread waits at the same gate.
const gate = new Int32Array(start);
Atomics.add(gate, 0, 1);
while (Atomics.load(gate, 1) === 0) Atomics.wait(gate, 1, 0, 5);
parentPort!.postMessage(await measureBatchUnitCosts(plan));
