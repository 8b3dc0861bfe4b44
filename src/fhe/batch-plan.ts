// The batch plan: the instruction set of batch mode, where slot s of every ciphertext belongs
// to record s and ciphertext i holds input feature i of all records (CryptoNets' layout).
// Every weight then multiplies a whole ciphertext by one integer, and the whole evaluation is
// coefficient-wise arithmetic on the RNS residues (NTT form):
//
//   hidden_j = bias1_j + sum_t w1[t] * x[index[t]]      (sparse: conv or dense; size 2)
//   hidden_j^2                                          (tensor square, NOT relinearized: size 3)
//   out_k    = bias2_k + sum_j w2[k, j] * hidden_j^2    (dense; size 3)
//
// or, for networks with two activations, a second square and a third layer after it:
//
//   mid_k    = bias2_k + sum_j w2[k, j] * hidden_j^2    (dense; size 3)
//   mid_k / (q_L ... q_(L-r+1))                         (rescale by the last r primes; optional)
//   mid_k^2                                             (tensor square of size 3: size 5)
//   out_o    = bias3_o + sum_k w3[o, k] * mid_k^2       (dense; size 5, over the primes left)
//
// No rotations, no relinearization: the server needs no evaluation keys at all, and the client
// decrypts the size-3 (or size-5) results with the powers of s up to s^2 (s^4). The scale grows
// with every product, so the modulus is chosen to hold the largest scale times the largest
// value; a rescale (which needs no key either) divides the second layer's values by some of the
// last primes before they are squared, so that the square and the third layer need fewer bits
// (model (b): 12 data primes instead of 16). Two squares take ring 16384.
import { SealedError, isSealedError } from '../errors.ts';
import { MAX_INT_WEIGHT, MAX_KERNEL_INDEX, MAX_TAPS, PRIME_BITS } from './kernel-limits.ts';
import { checkParams, sealPrimes, type CkksParams } from './params.ts';
import type { Privacy } from './privacy.ts';

// batch-io.ts reads the prime size from here.
export { PRIME_BITS };

export interface BatchPlan {
  params: CkksParams;
  inputScaleBits: number;
  inputs: number;
  /** First affine layer as sparse rows: row j uses taps start[j] .. start[j+1]-1. */
  first: { rows: number; start: number[]; index: number[]; weight: number[]; weightScaleBits: number; bias: number[] };
  square: boolean;
  /**
   * Dense outputs x rows(first), row-major; only with `square`. `rescalePrimes` (plans with a
   * third layer): its values, bias included, are divided by that many of the last data primes
   * (rescale.ts) before the second square, which with the third layer then runs over the primes
   * left, at a scale smaller by their product (scaleBitsOf).
   */
  second?: { rows: number; weight: number[]; weightScaleBits: number; bias: number[]; rescalePrimes?: number };
  /**
   * Two activations: the second layer's outputs are squared (size 3 -> 5) and feed this dense
   * layer, outputs x second.rows, row-major. Absent in plans with one square or none.
   */
  third?: { rows: number; weight: number[]; weightScaleBits: number; bias: number[] };
  /** log2 of the results' scale. */
  outputScaleBits: number;
  /**
   * Circuit privacy (privacy.ts): 'flood' re-randomizes and floods every result; absent in
   * bundles made before it, which are read as 'none' (their scales have no room for the flood).
   */
  privacy?: Privacy;
  /** With 'flood': log2 of a bound on |v|_2, the honest noise of each output (one per output). */
  noiseL2Bits?: number[];
  /** With 'flood': lambda, the statistical security of the flood in bits. */
  floodSecurityBits?: number;
}

/** Batch mode's ring degree with at most one square; two squares need BATCH_DEGREE_DEEP's modulus. */
export const BATCH_DEGREE = 8192;
export const BATCH_DEGREE_DEEP = 16384;

export const outputsOf = (p: BatchPlan) => (p.third ? p.third.rows : p.second ? p.second.rows : p.first.rows);
/** Polynomials per result ciphertext: a square of a size-s ciphertext has 2s - 1. */
export const resultSize = (p: BatchPlan) => (p.third ? 5 : p.square ? 3 : 2);
export const dataPrimesOf = (p: BatchPlan) => p.params.coeffModulusBits.length - 1;
export const recordsPerBatch = (p: BatchPlan) => p.params.polyModulusDegree / 2;

/** log2 of each stage's scale: `mid` (second layer) and `square2` equal `out` without a third layer. */
export function scaleBitsOf(p: BatchPlan): { first: number; square: number; mid: number; rescaled: number; square2: number; out: number } {
  const first = p.inputScaleBits + p.first.weightScaleBits;
  const square = p.square ? 2 * first : first;
  const mid = p.second ? square + p.second.weightScaleBits : square;
  // After a rescale, log2 of 2^mid over the dropped primes: not an integer.
  const rescaled = p.third ? mid - Math.log2(rescaleDivisor(p)) : mid;
  const square2 = p.third ? 2 * rescaled : mid;
  const out = p.third ? square2 + p.third.weightScaleBits : mid;
  return { first, square, mid, rescaled, square2, out };
}

/** The data primes a rescale drops (the last second.rescalePrimes of them; SEAL's values: sealPrimes), in the order they go. */
export function droppedPrimes(p: BatchPlan): number[] {
  const k = p.second?.rescalePrimes ?? 0;
  if (k === 0) return [];
  const data = sealPrimes(p.params.polyModulusDegree, p.params.coeffModulusBits).slice(0, -1);
  return data.slice(data.length - k).reverse();
}

/** Their product (1 without a rescale). */
export const rescaleDivisor = (p: BatchPlan) => droppedPrimes(p).reduce((a, q) => a * q, 1);

/** The results' scale, exactly: 2^out, or 2^(2 mid + w3) over the dropped primes squared. */
export function outputScale(p: BatchPlan): number {
  const { mid, out } = scaleBitsOf(p);
  if (!p.second?.rescalePrimes || !p.third) return 2 ** out;
  const D = rescaleDivisor(p);
  return 2 ** (2 * mid + p.third.weightScaleBits) / D / D;
}

/** Data primes the results have: all of them, less those a rescale drops. */
export const resultPrimesOf = (p: BatchPlan) => dataPrimesOf(p) - (p.second?.rescalePrimes ?? 0);

const PLAN_HINT = 'use the bundle `sealed train` wrote (copy it again), or retrain: a batch plan outside the kernel limits would give wrong results';

/**
 * Checks everything the kernel and the batch path rely on and returns `raw` as a plan; throws
 * SealedError('bad-bundle') naming the first field that is wrong. The kernel does no checking of
 * its own (its loops are the hot path): an index past `inputs` would read another feature, a
 * weight past the limits would round, and both would give wrong results, not errors. `where`
 * names the plan in messages (e.g. `server/batch.json in /opt/ml/model`).
 */
export function validateBatchPlan(raw: unknown, where = 'the batch plan'): BatchPlan {
  const bad = (field: string, what: string) => new SealedError('bad-bundle', `${where}: ${field} ${what}`, PLAN_HINT);
  const show = (v: unknown) =>
    typeof v === 'number' || typeof v === 'boolean'
      ? String(v)
      : v === null
        ? 'null'
        : Array.isArray(v)
          ? 'an array'
          : typeof v === 'string'
            ? JSON.stringify(v.slice(0, 32))
            : typeof v === 'object'
              ? 'an object'
              : typeof v;
  const object = (v: unknown, field: string): Record<string, unknown> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(field, `is ${show(v)}, not an object`);
    return v as Record<string, unknown>;
  };
  const int = (v: unknown, field: string, min: number, max: number): number => {
    if (typeof v !== 'number' || !Number.isInteger(v)) throw bad(field, `is ${show(v)}, not an integer`);
    if (v < min || v > max) throw bad(field, `is ${v}, outside [${min}, ${max}]`);
    return v;
  };
  const array = (v: unknown, field: string, length: number, lengthIs: string): unknown[] => {
    if (!Array.isArray(v)) throw bad(field, `is ${show(v)}, not an array`);
    if (v.length !== length) throw bad(field, `has ${v.length} entries, not ${length} (${lengthIs})`);
    return v as unknown[];
  };
  // Element loops report the first bad entry; they run once per load on up to ~10^5 entries.
  const ints = (v: unknown[], field: string, min: number, max: number, range: string) => {
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (typeof x !== 'number' || !Number.isInteger(x)) throw bad(`${field}[${i}]`, `is ${show(x)}, not an integer`);
      if (x < min || x > max) throw bad(`${field}[${i}]`, `is ${x}, outside ${range}`);
    }
    return v as number[];
  };
  // A bias becomes round(b 2^scale) mod q through BigInt, which needs a finite value.
  const biases = (v: unknown[], field: string, scale: number) => {
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (typeof x !== 'number' || !Number.isFinite(x) || !Number.isFinite(x * 2 ** scale))
        throw bad(`${field}[${i}]`, `is ${show(x)}, not a finite number at scale 2^${scale}`);
    }
    return v as number[];
  };

  const p = object(raw, 'the plan');
  const params = object(p.params, 'params');
  if (params.scheme !== 'ckks') throw bad('params.scheme', `is ${show(params.scheme)}, not ckks`);
  if (params.securityLevel !== 128) throw bad('params.securityLevel', `is ${show(params.securityLevel)}, not 128`);
  // The compiler's degrees: chunking, records per batch and the cost model assume one of them.
  if (params.polyModulusDegree !== BATCH_DEGREE && params.polyModulusDegree !== BATCH_DEGREE_DEEP)
    throw bad('params.polyModulusDegree', `is ${show(params.polyModulusDegree)}, not ${BATCH_DEGREE} or ${BATCH_DEGREE_DEEP} (batch mode's ring degrees)`);
  const bits = params.coeffModulusBits;
  if (!Array.isArray(bits) || bits.length < 2) throw bad('params.coeffModulusBits', 'must list at least one data prime and the special prime');
  // The special prime (last) is never used by the kernel; only the data primes bound residues.
  ints(bits.slice(0, -1), 'params.coeffModulusBits', 20, PRIME_BITS, `[20, ${PRIME_BITS}]: the kernel needs data primes of at most ${PRIME_BITS} bits`);
  try {
    checkParams(params as unknown as CkksParams);
  } catch (e) {
    if (isSealedError(e)) throw bad('params', `are refused: ${e.message}`);
    throw e;
  }
  // SEAL accepts a scale only below the data primes' total bit count.
  const dataBits = (bits as number[]).slice(0, -1).reduce((a, b) => a + b, 0);

  int(p.inputScaleBits, 'inputScaleBits', 1, dataBits - 1);
  const inputs = int(p.inputs, 'inputs', 1, MAX_KERNEL_INDEX);

  const f = object(p.first, 'first');
  const rows = int(f.rows, 'first.rows', 1, MAX_KERNEL_INDEX - 1);
  const start = ints(array(f.start, 'first.start', rows + 1, 'first.rows + 1'), 'first.start', 0, MAX_KERNEL_INDEX, `[0, ${MAX_KERNEL_INDEX}]`);
  if (!Array.isArray(f.index)) throw bad('first.index', `is ${show(f.index)}, not an array`);
  const taps = f.index.length;
  if (start[0] !== 0) throw bad('first.start[0]', `is ${start[0]}, not 0`);
  for (let j = 0; j < rows; j++) {
    const n = start[j + 1] - start[j];
    if (n < 0) throw bad(`first.start[${j + 1}]`, `is ${start[j + 1]}, below first.start[${j}] = ${start[j]}: starts must not decrease`);
    if (n > MAX_TAPS) throw bad(`first row ${j}`, `has ${n} taps (first.start[${j}..${j + 1}]); the kernel sums at most ${MAX_TAPS} products exactly`);
  }
  if (start[rows] !== taps) throw bad(`first.start[${rows}]`, `is ${start[rows]}, not first.index.length = ${taps}`);
  ints(f.index, 'first.index', 0, inputs - 1, `[0, ${inputs}) (inputs)`);
  ints(
    array(f.weight, 'first.weight', taps, 'one per tap, first.index.length'),
    'first.weight',
    -MAX_INT_WEIGHT,
    MAX_INT_WEIGHT,
    `[-${MAX_INT_WEIGHT}, ${MAX_INT_WEIGHT}], the kernel's integer weights`,
  );
  int(f.weightScaleBits, 'first.weightScaleBits', -dataBits, dataBits);

  if (typeof p.square !== 'boolean') throw bad('square', `is ${show(p.square)}, not a boolean`);
  // The kernel squares exactly when there is a second layer to take the squares.
  if (p.square !== (p.second !== undefined))
    throw bad('second', p.square ? 'is missing: a plan that squares needs a second layer' : 'is present, but the plan does not square');

  /** A dense layer of `name` over `columns` values (the rows of `of`); its row count. */
  const dense = (v: unknown, name: string, columns: number, of: string): number => {
    const s = object(v, name);
    const n = int(s.rows, `${name}.rows`, 1, MAX_KERNEL_INDEX);
    // Rows of any length: the kernel reduces every REDUCE_EVERY products (kernel-limits.ts).
    ints(
      array(s.weight, `${name}.weight`, n * columns, `${name}.rows x ${of}.rows`),
      `${name}.weight`,
      -MAX_INT_WEIGHT,
      MAX_INT_WEIGHT,
      `[-${MAX_INT_WEIGHT}, ${MAX_INT_WEIGHT}], the kernel's integer weights`,
    );
    int(s.weightScaleBits, `${name}.weightScaleBits`, -dataBits, dataBits);
    return n;
  };
  let outs = 0;
  if (p.second !== undefined) outs = dense(p.second, 'second', rows, 'first');
  if (p.third !== undefined) {
    if (p.second === undefined) throw bad('third', 'is present without a second layer to square');
    outs = dense(p.third, 'third', outs, 'second');
  }
  let keptBits = dataBits;
  const rescale = (p.second as Record<string, unknown> | undefined)?.rescalePrimes;
  if (rescale !== undefined) {
    if (p.third === undefined) throw bad('second.rescalePrimes', 'is set, but only a plan with a third layer rescales');
    const k = int(rescale, 'second.rescalePrimes', 1, (bits as number[]).length - 2);
    keptBits = (bits as number[]).slice(0, -1 - k).reduce((a, b) => a + b, 0);
  }
  // Every scale field is now an integer: the scales the layers give, as the client expects them.
  const plan = raw as BatchPlan;
  const scales = scaleBitsOf(plan);
  const range = `outside [2^0, 2^${dataBits}) (the data primes hold ${dataBits} bits)`;
  if (scales.first < 0 || scales.square >= dataBits)
    throw bad('first.weightScaleBits', `gives hidden values at scale 2^${scales.first}${plan.square ? ` and squares at 2^${scales.square}` : ''}, ${range}`);
  // With a third layer the second's values are squared again; without one they are the results (below).
  // After a rescale the square and the third layer have only the primes left (keptBits).
  const kept = `outside [2^0, 2^${keptBits}) (the data primes left after the rescale hold ${keptBits} bits)`;
  if (plan.third && (scales.mid < 0 || scales.mid >= dataBits || scales.rescaled < 0 || scales.square2 >= keptBits))
    throw bad(
      'second.weightScaleBits',
      `gives values at scale 2^${scales.mid} and squares at 2^${scales.square2.toFixed(2)}, ${keptBits === dataBits ? range : kept}`,
    );
  if (scales.out < 0 || scales.out >= keptBits)
    throw bad(
      plan.third ? 'third.weightScaleBits' : 'second.weightScaleBits',
      `gives results at scale 2^${scales.out}, ${keptBits === dataBits ? range : kept}`,
    );
  biases(array(f.bias, 'first.bias', rows, 'first.rows'), 'first.bias', scales.first);
  if (plan.second) biases(array(plan.second.bias, 'second.bias', plan.second.rows, 'second.rows'), 'second.bias', scales.mid);
  if (plan.third) biases(array(plan.third.bias, 'third.bias', outs, 'third.rows'), 'third.bias', scales.out);
  if (p.outputScaleBits !== scales.out)
    throw bad('outputScaleBits', `is ${show(p.outputScaleBits)}, not ${scales.out}, the scale the layers give (scaleBitsOf)`);
  if (p.privacy !== undefined && p.privacy !== 'flood' && p.privacy !== 'none') throw bad('privacy', `is ${show(p.privacy)}, not "flood" or "none"`);
  if (p.privacy === 'flood') {
    const bitsList = array(p.noiseL2Bits, 'noiseL2Bits', outputsOf(plan), 'one per output');
    bitsList.forEach((b, i) => {
      if (typeof b !== 'number' || !Number.isFinite(b) || b < 0 || b > dataBits)
        throw bad(`noiseL2Bits[${i}]`, `is ${show(b)}, not a bit count in [0, ${dataBits}]`);
    });
    int(p.floodSecurityBits, 'floodSecurityBits', 20, 128);
  }
  return plan;
}
