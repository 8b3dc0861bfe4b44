// How `sealed predict --transform` cuts records into parts, and the checks on a plan read back
// from its state directory or from S3 (where anyone with write access to the prefix could change it).
import t from 'tap';
import { checkPlan, cutParts, type Plan } from '../../src/cli/predict-transform.ts';

const MB = 1024 * 1024;

t.test('body: as many whole batches per part as fit the payload; s3: one batch per part', async (t) => {
  t.same(cutParts(20_000, 4096, 'body', 27 * MB, 100 * MB), [
    { start: 0, end: 12_288 },
    { start: 12_288, end: 20_000 },
  ]);
  t.same(cutParts(5000, 4096, 'body', 60 * MB, 100 * MB), [
    { start: 0, end: 4096 },
    { start: 4096, end: 5000 },
  ]);
  t.same(
    cutParts(9000, 4096, 's3', 147 * MB, 100 * MB).map((p) => p.end - p.start),
    [4096, 4096, 808],
  );
  t.same(cutParts(40, 4096, 'body', 27 * MB, 100 * MB), [{ start: 0, end: 40 }]);
  t.throws(() => cutParts(10, 4096, 'body', 147 * MB, 100 * MB), { message: /over the payload limit/ });
});

t.test('a plan that does not cut the records in order is refused', async (t) => {
  const plan = (parts: unknown, transport: unknown = 's3') => ({ job: 'j', records: 10, transport, parts }) as unknown as Plan;
  t.doesNotThrow(() =>
    checkPlan(
      plan([
        { start: 0, end: 6 },
        { start: 6, end: 10 },
      ]),
      10,
    ),
  );
  for (const [why, p] of [
    [
      'a gap',
      plan([
        { start: 0, end: 4 },
        { start: 6, end: 10 },
      ]),
    ],
    [
      'an overlap',
      plan([
        { start: 0, end: 6 },
        { start: 4, end: 10 },
      ]),
    ],
    ['short', plan([{ start: 0, end: 9 }])],
    ['empty', plan([])],
    ['not numbers', plan([{ start: '0', end: 10 }])],
    ['an unknown transport', plan([{ start: 0, end: 10 }], 'ftp')],
  ] as const)
    t.throws(() => checkPlan(p, 10), { message: /does not cut 10 records in order/ }, why);
});
