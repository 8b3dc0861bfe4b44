// The cost model of batch mode, and the crossover with the single layout. Unit costs are
// measured on this machine (the kernel's loops, SEAL's load/save/encrypt/decrypt); times the
// plan's operation counts they predict a batch's time, which benchmarks set against measurement.
import { SecretKeyHolder, generateSecretKey } from './keys.ts';
import { BatchSession } from './batch-io.ts';
import { measureKernelUnits } from './batch-kernel.ts';
import { dataPrimesOf, laterLayers, layerScales, outputsOf, recordsPerBatch, rescalesOf, resultSize, type BatchPlan } from './batch-plan.ts';
import { REDUCE_EVERY } from './kernel-limits.ts';
import { ProductRescale } from './rescale.ts';
import { measureUnitCosts, predictTime } from './cost.ts';
import { inputCiphertexts, type Program } from './program.ts';
import { CkksSession } from './ckks.ts';

/**
 * Operation counts for one batch, in units of one residue lane (one coefficient modulo one
 * prime): `macFirst` multiply-adds of the first layer, `macSecond` of the later ones (their
 * nonzero weights), `square` (reduce a hidden value's two residues, then three modular
 * products), `reduce` other modular reductions. `decode`/`encode`: ciphertexts SEAL loads
 * (queries) and saves (results). `rescale`: polynomials rescaled (rescale.ts, ProductRescale:
 * divided by the product of the primes dropped), the values of each layer a plan rescales (three
 * per row of the second, five of the third).
 */
export function batchOpCounts(p: BatchPlan): {
  macFirst: number;
  macSecond: number;
  square: number;
  reduce: number;
  decode: number;
  encode: number;
  rescale: number;
  lanes: number;
} {
  const lanes = dataPrimesOf(p) * p.params.polyModulusDegree;
  const later = laterLayers(p);
  const scales = layerScales(p);
  // After a rescale the squares and layers after it run over the primes it leaves: each later
  // layer's share of the lanes is its level's.
  const level = (i: number) => scales[i + 1].values.primes / dataPrimesOf(p);
  let macSecond = 0,
    square = p.square ? p.first.rows : 0,
    reduce = p.square ? 0 : p.first.rows * 2;
  later.forEach((l, i) => {
    // Layer i's products are the second's kind (weight x reduced square), on size-(2^(i+1) + 1) values.
    const size = 2 ** (i + 1) + 1;
    const rowsBefore = i === 0 ? p.first.rows : later[i - 1].rows;
    // Zero weights are skipped (the second layer's four rows at a time: a convolution's share them).
    macSecond += l.weight.reduce((n, w) => n + (w === 0 ? 0 : 1), 0) * size * level(i);
    reduce += l.rows * size * (1 + Math.floor(rowsBefore / REDUCE_EVERY)) * level(i);
    // A square of a size-s value (s(s + 1)/2 products) counts as s(s + 1)/6 size-2 ones (three each).
    if (i > 0) square += ((rowsBefore * (2 ** i + 1) * (2 ** i + 2)) / 6) * level(i);
  });
  return {
    macFirst: p.first.index.length * 2 * lanes,
    macSecond: macSecond * lanes,
    square: square * lanes,
    reduce: reduce * lanes,
    decode: p.inputs,
    encode: outputsOf(p),
    rescale: rescalesOf(p).reduce((a, r) => a + r.rows * r.size, 0),
    lanes,
  };
}

export interface BatchUnitCosts {
  /** ns per lane */
  mac_first_ns: number;
  mac_second_ns: number;
  square_ns: number;
  reduce_ns: number;
  /** ms per ciphertext (save_ms: with the result rescale, where the plan has one) */
  load_ms: number;
  save_ms: number;
  /** ms per polynomial rescaled as the plan does (0 for plans that do not rescale) */
  rescale_ms?: number;
  encrypt_ms: number;
  decrypt_ms: number;
}

export async function measureBatchUnitCosts(plan: BatchPlan, repeat = 16): Promise<BatchUnitCosts> {
  const units = measureKernelUnits();
  const bs = await BatchSession.open(plan);
  const holder = new SecretKeyHolder(bs.session, generateSecretKey(bs.session));
  const v = Float64Array.from({ length: recordsPerBatch(plan) }, (_, i) => (i % 256) / 255);
  const time = (fn: () => void) => {
    fn();
    const t0 = performance.now();
    for (let i = 0; i < repeat; i++) fn();
    return +((performance.now() - t0) / repeat).toFixed(3);
  };
  let ct: Uint8Array = new Uint8Array();
  const encrypt_ms = time(() => (ct = holder.encryptPacked(v, plan.inputScaleBits)));
  const lanes = new Uint32Array(2 * bs.lanes);
  const load_ms = time(() => bs.decodeInto(ct, lanes, 0));
  // A kernel output of the plan's size and primes (residues of the fresh ciphertext, padded):
  // the cost does not depend on the values. With a result rescale, saving includes it.
  const size = resultSize(plan);
  const res = new Uint32Array(size * bs.outputLanes);
  for (let poly = 0; poly < 2; poly++) res.set(lanes.subarray(poly * bs.lanes, poly * bs.lanes + bs.outputLanes), poly * bs.outputLanes);
  const k = plan.resultRescalePrimes;
  const resultRescale = k ? new ProductRescale(bs.outputPrimes, plan.params.polyModulusDegree, k) : undefined;
  const rescaled = resultRescale ? new Uint32Array(size * bs.resultLanes) : res;
  let saved: Uint8Array = new Uint8Array();
  const save_ms = time(() => {
    resultRescale?.ciphertext(res, rescaled, size);
    saved = bs.encodeResult(rescaled, 0, size);
  });
  const decrypt_ms = time(() => holder.decrypt(saved));
  let rescale_ms = 0;
  // The first rescale's: later ones drop primes from fewer, a little cheaper per polynomial.
  const first = rescalesOf(plan)[0];
  if (first) {
    const rescale = new ProductRescale(bs.primes.slice(0, first.primesBefore), plan.params.polyModulusDegree, first.primesBefore - first.primesAfter);
    const poly = lanes.subarray(0, bs.lanes);
    rescale_ms = time(() => rescale.polynomial(poly, res));
  }
  holder.close();
  bs.close();
  return {
    mac_first_ns: +units.macFirst.toFixed(3),
    mac_second_ns: +units.macSecond.toFixed(3),
    square_ns: +units.square.toFixed(3),
    reduce_ns: +units.reduce.toFixed(3),
    load_ms,
    save_ms,
    encrypt_ms,
    decrypt_ms,
    rescale_ms,
  };
}

/**
 * Unit costs measured by `threads` threads at once (each with its own SEAL), averaged: what
 * each of `threads` busy workers gets from its core.
 */
export async function measureBatchUnitCostsConcurrent(plan: BatchPlan, threads: number): Promise<BatchUnitCosts> {
  if (threads <= 1) return measureBatchUnitCosts(plan);
  const { Worker } = await import('node:worker_threads');
  const start = new SharedArrayBuffer(8);
  const gate = new Int32Array(start);
  const workers = Array.from({ length: threads }, () => new Worker(new URL('./unit-costs-worker.ts', import.meta.url), { workerData: { plan, start } }));
  const results = workers.map(
    (w) =>
      new Promise<BatchUnitCosts>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      }),
  );
  while (Atomics.load(gate, 0) < threads) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(gate, 1, 1);
  Atomics.notify(gate, 1);
  const all = await Promise.all(results);
  await Promise.all(workers.map((w) => w.terminate()));
  const mean = (k: keyof BatchUnitCosts) => +(all.reduce((a, c) => a + (c[k] ?? 0), 0) / all.length).toFixed(3);
  return {
    mac_first_ns: mean('mac_first_ns'),
    mac_second_ns: mean('mac_second_ns'),
    square_ns: mean('square_ns'),
    reduce_ns: mean('reduce_ns'),
    load_ms: mean('load_ms'),
    save_ms: mean('save_ms'),
    encrypt_ms: mean('encrypt_ms'),
    decrypt_ms: mean('decrypt_ms'),
    rescale_ms: mean('rescale_ms'),
  };
}

/** Predicted times (ms, one core) for one batch: the server's kernel and SEAL work, the client's. */
export function predictBatch(
  plan: BatchPlan,
  u: BatchUnitCosts,
): { kernel: number; load: number; save: number; server: number; client: number; byOp: Record<string, number> } {
  const c = batchOpCounts(plan);
  const byOp = {
    mac_first: (c.macFirst * u.mac_first_ns) / 1e6,
    mac_second: (c.macSecond * u.mac_second_ns) / 1e6,
    square: (c.square * u.square_ns) / 1e6,
    reduce: (c.reduce * u.reduce_ns) / 1e6,
    rescale: c.rescale * (u.rescale_ms ?? 0),
  };
  const kernel = byOp.mac_first + byOp.mac_second + byOp.square + byOp.reduce + byOp.rescale;
  const load = c.decode * u.load_ms;
  const save = c.encode * u.save_ms;
  const client = plan.inputs * u.encrypt_ms + outputsOf(plan) * u.decrypt_ms;
  const r = (x: number) => +x.toFixed(1);
  return {
    kernel: r(kernel),
    load: r(load),
    save: r(save),
    server: r(kernel + load + save),
    client: r(client),
    byOp: { mac_first: r(byOp.mac_first), mac_second: r(byOp.mac_second), square: r(byOp.square), reduce: r(byOp.reduce), rescale: r(byOp.rescale) },
  };
}

/** Single layout: predicted ms per ciphertext (evaluation from unit costs, plus encrypt and decrypt). Its unit costs are the compile job's (cost.ts keeps them: the same repeat count). */
export async function measureSingleCost(program: Program, repeat = 3): Promise<{ evaluate: number; encrypt: number; decrypt: number }> {
  const depth = program.params.coeffModulusBits.length - 2;
  const evaluate = predictTime(program, await measureUnitCosts(program.params, depth, repeat)).total;
  const s = await CkksSession.open(program.params);
  const holder = new SecretKeyHolder(s, generateSecretKey(s));
  const v = Float64Array.from({ length: s.slots }, (_, i) => Math.sin(i));
  let ct: Uint8Array = new Uint8Array();
  let t0 = performance.now();
  for (let i = 0; i < repeat; i++) ct = holder.encrypt(v, program.inputScaleBits);
  // A section is the input and the client's rotated copies of it: one encryption each.
  const encrypt = ((performance.now() - t0) / repeat) * inputCiphertexts(program);
  t0 = performance.now();
  for (let i = 0; i < repeat; i++) holder.decrypt(ct);
  const decrypt = (performance.now() - t0) / repeat;
  holder.close();
  s.close();
  return { evaluate, encrypt: +encrypt.toFixed(3), decrypt: +decrypt.toFixed(3) };
}

/**
 * The smallest record count from which batch mode costs no more than the single layout (total
 * CPU time, client and server): single costs per ciphertext of `recordsPerCiphertext` records,
 * batch per batch of up to recordsPerBatch records.
 */
export function crossover(
  plan: BatchPlan,
  batchCosts: BatchUnitCosts,
  single: { evaluate: number; encrypt: number; decrypt: number },
  recordsPerCiphertext: number,
): number {
  const p = predictBatch(plan, batchCosts);
  const perBatch = p.server + p.client;
  const perCiphertext = single.evaluate + single.encrypt + single.decrypt;
  const S = recordsPerBatch(plan);
  for (let n = 1; n <= S; n++) {
    if (perBatch <= Math.ceil(n / recordsPerCiphertext) * perCiphertext) return n;
  }
  return S;
}
