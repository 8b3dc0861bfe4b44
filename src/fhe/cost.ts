// The cost model: measured unit costs of each SEAL operation at each level, times the
// program's operation counts, gives the time an evaluation should take on this machine with
// this library. Benchmarks report it next to the measured time.
import { CkksSession } from './ckks.ts';
import { SecretKeyHolder } from './keys.ts';
import { loadCiphertext } from './load.ts';
import { release } from './seal.ts';
import { paramsKey, type CkksParams } from './params.ts';
import { opCountsByLevel, type OpKind, type Program } from './program.ts';

export type UnitCosts = Record<string, number>; // `${op}@${level}` -> ms

/**
 * Measurements made in this process, by parameters and levels, with their repeat count: a
 * compile job measures its program's parameters for the report and again for the batch
 * crossover (batch-cost.ts, measureSingleCost). A later call takes one made with at least as many
 * repeats.
 */
const measured = new Map<string, { repeat: number; costs: Promise<UnitCosts> }>();

/** SEAL's cost of each operation at each level from the top down to `levels` below it (ms, means of `repeat` runs after one to warm; levels between those sampleLevels picks are fitted). */
export function measureUnitCosts(params: CkksParams, levels: number, repeat = 20): Promise<UnitCosts> {
  const key = `${paramsKey(params)}/${levels}`;
  const known = measured.get(key);
  if (known && known.repeat >= repeat) return known.costs;
  const costs = measure(params, levels, repeat);
  measured.set(key, { repeat, costs });
  // A failed measurement is not kept.
  costs.catch(() => measured.delete(key));
  return costs;
}

async function measure(params: CkksParams, levels: number, repeat: number): Promise<UnitCosts> {
  const s = await CkksSession.open(params);
  const { seal, evaluator: ev, encoder } = s;
  // Keys made in place, not saved and loaded as a client's are: that round trip (seeded keys,
  // expanded on load) took 1.7 s of an 11.6 s measurement at ring 32768 (sampleLevels' figures).
  const kg = new seal.KeyGenerator(s.context);
  const sk = kg.secretKey();
  const holder = new SecretKeyHolder(s, sk.saveToArray(seal.ComprModeType.none) as Uint8Array);
  const rotation = kg.createGaloisKeysWithSteps(Int32Array.of(1));
  const relin = kg.createRelinKeys();
  release(sk, kg);
  const v = Float64Array.from({ length: s.slots }, (_, i) => Math.sin(i));
  const costs: UnitCosts = {};
  const time = (name: string, fn: () => void) => {
    fn(); // warm
    const t0 = performance.now();
    for (let i = 0; i < repeat; i++) fn();
    costs[name] = +((performance.now() - t0) / repeat).toFixed(3);
  };
  // Costs do not depend on scales: small ones keep every product within every level's modulus
  // (circuit privacy's chains end on a prime of 40-odd bits: 2^30 x 2^16 would not fit).
  const sampled = new Set(sampleLevels(levels));
  let ct = loadCiphertext(s, holder.encrypt(v, 20), 'probe');
  for (let level = 0; level <= levels; level++) {
    if (!sampled.has(level)) {
      const next = new seal.Ciphertext();
      ev.cipherModSwitchToNext(ct, next);
      ct.delete();
      ct = next;
      continue;
    }
    const pt = new seal.Plaintext();
    encoder.encode(v, 2 ** 10, pt);
    const ptAdd = new seal.Plaintext();
    encoder.encode(v, ct.scale(), ptAdd);
    if (level > 0) {
      ev.plainModSwitchToInplace(pt, ct.parmsId());
      ev.plainModSwitchToInplace(ptAdd, ct.parmsId());
    }
    const out = new seal.Ciphertext();
    time(`rotate@${level}`, () => ev.rotateVector(ct, 1, rotation, out));
    time(`multiplyPlain@${level}`, () => ev.multiplyPlain(ct, pt, out));
    time(`add@${level}`, () => ev.add(ct, ct, out));
    time(`addPlain@${level}`, () => ev.addPlain(ct, ptAdd, out));
    if (level < levels) {
      time(`square@${level}`, () => ev.square(ct, out));
      ev.square(ct, out);
      time(`relinearize@${level}`, () => {
        const c = out.copy();
        ev.relinearizeInplace(c, relin);
        c.delete();
      });
      time(`rescale@${level}`, () => {
        const c = ct.copy();
        ev.rescaleToNextInplace(c);
        c.delete();
      });
      const next = new seal.Ciphertext();
      ev.cipherModSwitchToNext(ct, next); // down one level, same scale
      ct.delete();
      ct = next;
    }
    pt.delete();
    ptAdd.delete();
    out.delete();
  }
  ct.delete();
  release(rotation, relin);
  holder.close();
  s.close();
  return fillLevels(costs, levels);
}

/**
 * The levels measured: every one up to five, else the top, the last two and two between. At ring
 * 32768 a key switch at the top costs ~50 times one at the bottom, and measuring every level took
 * most of a compile. 16 data primes, repeat 3, 2-core AMD VM: 25.9 s before, 10.0 s with five
 * levels and the keys made in place. Fitted levels are within 15% of measured ones, about the
 * measurement's own spread between neighbouring levels.
 */
export function sampleLevels(levels: number): number[] {
  if (levels < 5) return Array.from({ length: levels + 1 }, (_, l) => l);
  return [...new Set([0, Math.round(levels / 3), Math.round((2 * levels) / 3), levels - 1, levels])];
}

/**
 * Costs at the levels not measured, from those measured. An operation at level l works on the
 * q = levels + 1 - l primes left: NTTs, products and sums in q, a key switch (rotate,
 * relinearize) in q^2 (each of q primes raised to q + 1). So each operation's costs are fitted by
 * a + b q + c q^2 (least squares) and the fit fills the gaps; measured levels keep their figure.
 */
export function fillLevels(measured: UnitCosts, levels: number): UnitCosts {
  const byOp = new Map<string, [number, number][]>();
  for (const [key, ms] of Object.entries(measured)) {
    const [op, level] = key.split('@');
    const points = byOp.get(op) ?? [];
    points.push([levels + 1 - Number(level), ms]);
    byOp.set(op, points);
  }
  const out: UnitCosts = { ...measured };
  for (const [op, points] of byOp) {
    const top = op === 'square' || op === 'relinearize' || op === 'rescale' ? levels - 1 : levels; // no product below the last level it can rescale from
    const fit = fitQuadratic(points);
    for (let level = 0; level <= top; level++) {
      const key = `${op}@${level}`;
      if (!(key in out)) out[key] = +Math.max(0, fit(levels + 1 - level)).toFixed(3);
    }
  }
  return out;
}

/** Least-squares a + b x + c x^2 through the points (a lower degree when fewer than three). */
export function fitQuadratic(points: [number, number][]): (x: number) => number {
  const degree = Math.min(2, points.length - 1);
  const n = degree + 1;
  // Normal equations: sum x^(i+j) * coef_j = sum y x^i.
  const a = Array.from({ length: n }, (_, i) =>
    Array.from({ length: n + 1 }, (_, j) => points.reduce((acc, [x, y]) => acc + x ** i * (j < n ? x ** j : y), 0)),
  );
  for (let col = 0; col < n; col++) {
    const pivot = a.slice(col).reduce((best, row, k) => (Math.abs(row[col]) > Math.abs(a[best][col]) ? col + k : best), col);
    [a[col], a[pivot]] = [a[pivot], a[col]];
    for (let row = 0; row < n; row++) {
      if (row === col) continue;
      const f = a[row][col] / a[col][col];
      for (let j = col; j <= n; j++) a[row][j] -= f * a[col][j];
    }
  }
  const coef = a.map((row, i) => row[n] / row[i]);
  return (x) => coef.reduce((acc, c, i) => acc + c * x ** i, 0);
}

/** Predicted evaluation time (ms) and its breakdown by operation. */
export function predictTime(p: Program, costs: UnitCosts): { total: number; byOp: Partial<Record<OpKind, number>>; counts: Record<string, number> } {
  const byOp: Partial<Record<OpKind, number>> = {};
  let total = 0;
  const counts = opCountsByLevel(p);
  for (const [key, n] of counts) {
    const op = key.split('@')[0] as OpKind;
    const ms = n * (costs[key] ?? 0);
    byOp[op] = +((byOp[op] ?? 0) + ms).toFixed(2);
    total += ms;
  }
  return { total: +total.toFixed(2), byOp, counts: Object.fromEntries(counts) };
}
