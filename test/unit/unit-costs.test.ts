// SEAL's unit costs (cost.ts) are measured once per parameters in a process: a compile job asks
// for them twice (its report, then the batch crossover), and the second time costs nothing.
import t from 'tap';
import { fillLevels, fitQuadratic, measureUnitCosts, sampleLevels } from '../../src/fhe/cost.ts';

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

t.test('levels between the sampled ones are fitted: a key switch in q^2, the rest in q', async (t) => {
  t.same(sampleLevels(3), [0, 1, 2, 3], 'up to five levels: every one measured');
  t.same(sampleLevels(16), [0, 5, 11, 15, 16], 'more: the top, the last two and two between');
  // Synthetic measurements at the sampled levels of 16 (q = 17 - level primes left).
  const rotate = (q: number) => 0.4 + 0.2 * q + q * q;
  const add = (q: number) => 0.05 * q;
  const measured: Record<string, number> = {};
  for (const level of sampleLevels(16)) {
    measured[`rotate@${level}`] = rotate(17 - level);
    measured[`add@${level}`] = add(17 - level);
    if (level < 16) measured[`relinearize@${level}`] = rotate(17 - level);
  }
  const filled = fillLevels(measured, 16);
  for (let level = 0; level <= 16; level++) {
    t.ok(Math.abs(filled[`rotate@${level}`] - rotate(17 - level)) < 1e-3, `rotate@${level}: ${filled[`rotate@${level}`]}`);
    t.ok(Math.abs(filled[`add@${level}`] - add(17 - level)) < 1e-3, `add@${level}: ${filled[`add@${level}`]}`);
  }
  t.ok(Math.abs(filled['relinearize@7'] - rotate(10)) < 1e-3, 'relinearize between its samples');
  t.equal(filled['relinearize@16'], undefined, 'and none below the last level it can rescale from');
  t.equal(fitQuadratic([[2, 3]])(5), 3, 'one point: a constant');
  t.equal(
    fitQuadratic([
      [1, 1],
      [3, 5],
    ])(2),
    3,
    'two: a line',
  );

  // Six levels of ring 8192 within its 218 bits: levels 1 and 3 are fitted.
  const six = { ...params, coeffModulusBits: [36, 24, 24, 24, 24, 24, 24, 36] };
  const costs = await measureUnitCosts(six, 6, 1);
  for (const op of ['rotate', 'multiplyPlain', 'add', 'addPlain']) for (let l = 0; l <= 6; l++) t.ok(costs[`${op}@${l}`] >= 0, `${op}@${l}`);
  for (const op of ['square', 'relinearize', 'rescale']) for (let l = 0; l < 6; l++) t.ok(costs[`${op}@${l}`] >= 0, `${op}@${l}`);
});
