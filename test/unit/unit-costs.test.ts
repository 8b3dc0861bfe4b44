// SEAL's unit costs (cost.ts) are measured once per parameters in a process: a compile job asks
// for them twice (its report, then the batch crossover), and the second time costs nothing.
import t from 'tap';
import { measureUnitCosts } from '../../src/fhe/cost.ts';

const params = { scheme: 'ckks' as const, polyModulusDegree: 8192, coeffModulusBits: [40, 30, 30, 40], securityLevel: 128 as const };

t.test('measured once per parameters and levels, again for more repeats', async (t) => {
  const first = await measureUnitCosts(params, 2, 2);
  t.ok(first['rotate@0'] > 0 && first['multiplyPlain@2'] > 0, 'every operation at every level down to the last');
  t.equal(first['square@2'], undefined, 'no square below the last level it can rescale from');
  t.equal(await measureUnitCosts(params, 2, 2), first, 'the same measurement, not a new one');
  t.equal(await measureUnitCosts(params, 2, 1), first, 'also for fewer repeats');
  t.not(await measureUnitCosts(params, 1, 2), first, 'other levels: measured');
  const more = await measureUnitCosts(params, 2, 3);
  t.not(more, first, 'more repeats: measured again');
  t.equal(await measureUnitCosts(params, 2, 2), more, 'and kept');
});
