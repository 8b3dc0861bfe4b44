// Batch mode's constants shared by the main thread (batch.ts, which splits each batch's lanes
// into tasks) and the workers (worker.ts, which runs the kernel on them). A module of its own, so
// the worker does not import batch.ts (which imports the worker's and the pool's types); the
// memory budget (batch-memory.ts) reads LOAD_GROUP.

/** Lanes per kernel call (the kernel's working set stays in cache). */
export const CHUNK = 1024;

/** Ciphertexts per load task (SEAL's forms): small enough to spread a batch over the workers as it arrives. */
export const LOAD_GROUP = 32;
