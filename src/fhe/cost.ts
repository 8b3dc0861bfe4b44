// The cost model: measured unit costs of each SEAL operation at each level, times the
// program's operation counts, gives the time an evaluation should take on this machine with
// this library. Benchmarks report it next to the measured time.
import { CkksSession } from './ckks.ts';
import { SecretKeyHolder, generateKeys } from './keys.ts';
import { loadCiphertext } from './load.ts';
import { loadEvaluationKeys } from './load-keys.ts';
import { paramsKey, type CkksParams } from './params.ts';
import { opCountsByLevel, type OpKind, type Program } from './program.ts';

export type UnitCosts = Record<string, number>; // `${op}@${level}` -> ms

/**
 * Measurements made in this process, by parameters and levels, with their repeat count: a
 * compile job measures its program's parameters for the report and again for the batch
 * crossover (batch-cost.ts, measureSingleCost), 4 s at ring 16384 and 17 s at 32768 each (2-core
 * AMD VM, repeat 3). A later call takes one made with at least as many repeats.
 */
const measured = new Map<string, { repeat: number; costs: Promise<UnitCosts> }>();

/** SEAL's cost of each operation at each level from the top down to `levels` below it (ms, means of `repeat` runs after one to warm). */
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
  const k = generateKeys(s, [1], true);
  const holder = new SecretKeyHolder(s, k.secretKey);
  const keys = loadEvaluationKeys(s, k.galoisKeys, k.relinKeys, [1], true);
  const { seal, evaluator: ev, encoder } = s;
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
  let ct = loadCiphertext(s, holder.encrypt(v, 20), 'probe');
  for (let level = 0; level <= levels; level++) {
    const pt = new seal.Plaintext();
    encoder.encode(v, 2 ** 10, pt);
    const ptAdd = new seal.Plaintext();
    encoder.encode(v, ct.scale(), ptAdd);
    if (level > 0) {
      ev.plainModSwitchToInplace(pt, ct.parmsId());
      ev.plainModSwitchToInplace(ptAdd, ct.parmsId());
    }
    const out = new seal.Ciphertext();
    time(`rotate@${level}`, () => ev.rotateVector(ct, 1, keys.rotation(1), out));
    time(`multiplyPlain@${level}`, () => ev.multiplyPlain(ct, pt, out));
    time(`add@${level}`, () => ev.add(ct, ct, out));
    time(`addPlain@${level}`, () => ev.addPlain(ct, ptAdd, out));
    if (level < levels) {
      time(`square@${level}`, () => ev.square(ct, out));
      ev.square(ct, out);
      time(`relinearize@${level}`, () => {
        const c = out.copy();
        ev.relinearizeInplace(c, keys.relin!);
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
  keys.close();
  holder.close();
  s.close();
  return costs;
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
