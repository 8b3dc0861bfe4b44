// Batch mode's constants shared by the main thread (batch.ts, which splits each batch's lanes
// into tasks) and the workers (worker.ts, which runs the kernel on them). A module of its own, so
// the worker does not import batch.ts (which imports the worker's and the pool's types).

/** Lanes per kernel call (the kernel's working set stays in cache). */
export const CHUNK = 1024;
