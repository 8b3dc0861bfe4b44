// Loading a batch plan: every field the kernel and the batch path rely on, checked once per load
// (batch-plan.ts says what the fields mean). The kernel does no checking of its own.
import { SealedError, isSealedError } from '../errors.ts';
import {
  BATCH_DEGREE,
  BATCH_DEGREE_DEEP,
  BATCH_DEGREE_WIDE,
  dataPrimesOf,
  laterLayers,
  layerScales,
  outputPrimesOf,
  outputsOf,
  type BatchPlan,
} from './batch-plan.ts';
import { MAX_INT_WEIGHT, MAX_KERNEL_INDEX, MAX_TAPS, PRIME_BITS } from './kernel-limits.ts';
import { checkParams, type CkksParams } from './params.ts';

/** Messages' names for the later layers. */
const layerName = (i: number) => (i === 0 ? 'second' : i === 1 ? 'third' : `deeper[${i - 2}]`);

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
  if (![BATCH_DEGREE, BATCH_DEGREE_DEEP, BATCH_DEGREE_WIDE].includes(params.polyModulusDegree as number))
    throw bad(
      'params.polyModulusDegree',
      `is ${show(params.polyModulusDegree)}, not ${BATCH_DEGREE}, ${BATCH_DEGREE_DEEP} or ${BATCH_DEGREE_WIDE} (batch mode's ring degrees)`,
    );
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
  if (p.inputBox !== undefined) {
    const b = object(p.inputBox, 'inputBox');
    const boxed =
      int(b.channels, 'inputBox.channels', 1, inputs) *
      (int(b.height, 'inputBox.height', 2, inputs + 1) - 1) *
      (int(b.width, 'inputBox.width', 2, inputs + 1) - 1);
    if (boxed !== inputs) throw bad('inputBox', `holds ${boxed} box sums, not inputs = ${inputs}`);
  }

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
  if (p.third !== undefined && p.second === undefined) throw bad('third', 'is present without a second layer to square');
  if (p.deeper !== undefined) {
    if (p.third === undefined) throw bad('deeper', 'is present without a third layer to square');
    if (!Array.isArray(p.deeper) || p.deeper.length === 0) throw bad('deeper', `is ${show(p.deeper)}, not a list of layers`);
  }
  const later = p.second === undefined ? [] : [p.second, ...(p.third === undefined ? [] : [p.third, ...((p.deeper as unknown[] | undefined) ?? [])])];
  let columns = rows;
  later.forEach((layer, i) => {
    columns = dense(layer, layerName(i), columns, i === 0 ? 'first' : layerName(i - 1));
  });
  // Rescales: never on the last layer (its values are the results), and each leaves a data prime.
  let left = (bits as number[]).length - 1;
  later.forEach((layer, i) => {
    const k = (layer as Record<string, unknown>).rescalePrimes;
    if (k === undefined) return;
    if (i === later.length - 1) throw bad(`${layerName(i)}.rescalePrimes`, 'is set, but only a layer whose values are squared again rescales');
    left -= int(k, `${layerName(i)}.rescalePrimes`, 1, left - 1);
  });
  // Every scale field is now an integer: the scales the layers give, as the client expects them.
  const plan = raw as BatchPlan;
  const scales = layerScales(plan);
  const primeBits = (n: number) => (bits as number[]).slice(0, n).reduce((a, b) => a + b, 0);
  const range = (n: number) =>
    n === (bits as number[]).length - 1
      ? `outside [2^0, 2^${dataBits}) (the data primes hold ${dataBits} bits)`
      : `outside [2^0, 2^${primeBits(n)}) (the data primes left after the rescale hold ${primeBits(n)} bits)`;
  const first = scales[0].values.log2;
  if (first < 0 || (plan.square ? 2 * first : first) >= dataBits)
    throw bad(
      'first.weightScaleBits',
      `gives hidden values at scale 2^${first}${plan.square ? ` and squares at 2^${2 * first}` : ''}, ${range(dataPrimesOf(plan))}`,
    );
  // Each later layer's values fit its level; those squared again fit the level after its rescale.
  later.forEach((_, i) => {
    const { values, rescaled } = scales[i + 1];
    const last = i === later.length - 1;
    const what = `${layerName(i)}.weightScaleBits`;
    if (last) {
      if (values.log2 < 0 || values.log2 >= primeBits(values.primes))
        throw bad(what, `gives results at scale 2^${values.log2 % 1 ? values.log2.toFixed(2) : values.log2}, ${range(values.primes)}`);
    } else if (values.log2 < 0 || values.log2 >= primeBits(values.primes) || rescaled.log2 < 0 || 2 * rescaled.log2 >= primeBits(rescaled.primes))
      throw bad(
        what,
        `gives values at scale 2^${values.log2 % 1 ? values.log2.toFixed(2) : values.log2} and squares at 2^${(2 * rescaled.log2).toFixed(2)}, ${range(rescaled.primes)}`,
      );
  });
  biases(array(f.bias, 'first.bias', rows, 'first.rows'), 'first.bias', first);
  laterLayers(plan).forEach((layer, i) =>
    biases(array(layer.bias, `${layerName(i)}.bias`, layer.rows, `${layerName(i)}.rows`), `${layerName(i)}.bias`, scales[i + 1].values.log2),
  );
  const out = scales[scales.length - 1].values.log2;
  if (p.outputScaleBits !== out) throw bad('outputScaleBits', `is ${show(p.outputScaleBits)}, not ${out}, the scale the layers give (layerScales)`);
  if (p.privacy !== undefined && p.privacy !== 'flood' && p.privacy !== 'none') throw bad('privacy', `is ${show(p.privacy)}, not "flood" or "none"`);
  if (p.privacy === 'flood') {
    const bitsList = array(p.noiseL2Bits, 'noiseL2Bits', outputsOf(plan), 'one per output');
    bitsList.forEach((b, i) => {
      if (typeof b !== 'number' || !Number.isFinite(b) || b < 0 || b > dataBits)
        throw bad(`noiseL2Bits[${i}]`, `is ${show(b)}, not a bit count in [0, ${dataBits}]`);
    });
    int(p.floodSecurityBits, 'floodSecurityBits', 20, 128);
  }
  if (p.resultRescalePrimes !== undefined) {
    // Only after a flood, whose noise hides the rounding (rescale-rounding.ts, resultRescaleFor).
    if (p.privacy !== 'flood') throw bad('resultRescalePrimes', 'is set, but only results that are flooded are rescaled after it');
    int(p.resultRescalePrimes, 'resultRescalePrimes', 1, outputPrimesOf(plan) - 1);
  }
  return plan;
}
