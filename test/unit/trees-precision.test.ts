// A tree model's score precision follows its calibration records' closest call (precision.ts):
// the margins it reads for each kind of model, the bits it asks for, and the bits a chain holds
// at the floor's cost.
import t from 'tap';
import { SealedError } from '../../src/errors.ts';
import { FLOOD_PRECISION_BITS } from '../../src/model/compile-batch.ts';
import { MAX_DECISION_PRECISION_BITS, affordablePrecision, decisionMargin, decisionPrecision } from '../../src/model/trees/precision.ts';

const multi = { post: 'proba' as const, outputs: 3 };

t.test('the margin of a decision, per kind of model', async (t) => {
  t.equal(decisionMargin(multi, [0.2, 0.5, 0.3]), 0.2, 'several classes: the two best scores apart');
  t.equal(decisionMargin(multi, [0.5, 0.2, 0.3]), 0.2, 'whichever position the best holds');
  t.equal(decisionMargin(multi, [0.4, 0.4, 0.2]), 0, 'a tie');
  t.equal(decisionMargin({ post: 'softmax', outputs: 2 }, [-1, 2]), 3, 'softmax: the margins apart');
  t.equal(decisionMargin({ post: 'sigmoid', outputs: 1 }, [-0.25]), 0.25, 'a logistic margin: its distance from 0');
  t.equal(decisionMargin({ post: 'proba', outputs: 1 }, [0.75]), 0.25, "a binary forest's vote fraction: its distance from 1/2");
  t.equal(decisionMargin({ post: 'identity', outputs: 1 }, [3]), undefined, 'regression decides nothing');
});

t.test('the bits asked for: five standard deviations of a difference within the closest call', async (t) => {
  t.same(decisionPrecision(multi, [[0.1, 0.6, 0.3]], 1), { bits: FLOOD_PRECISION_BITS, closestCall: 0.3 }, 'far calls keep the floor');
  // The digits forest's closest calibration call: 1.15e-4 -> 16 bits (5 sqrt 2 2^-16 = 1.08e-4).
  const digits = decisionPrecision(
    multi,
    [
      [0.1, 0.6, 0.3],
      [0.45, 0.45 - 1.15e-4, 0.1],
    ],
    1,
  );
  t.equal(digits.bits, 16, 'a call 1.15e-4 apart asks for 16 bits');
  t.ok(5 * Math.SQRT2 * 2 ** -digits.bits <= digits.closestCall! && 5 * Math.SQRT2 * 2 ** -(digits.bits - 1) > digits.closestCall!, 'the fewest that do');
  t.equal(decisionPrecision(multi, [[0.45, 0.45 - 1.15e-4, 0.1]], 8).bits, 19, 'relative to the score bound when it is above 1');
  t.equal(
    decisionPrecision(
      multi,
      [
        [0.4, 0.4, 0.2],
        [0.1, 0.6, 0.3],
      ],
      1,
    ).bits,
    FLOOD_PRECISION_BITS,
    'exact ties are left out: no precision decides them',
  );
  t.equal(decisionPrecision(multi, [[0.5, 0.5 - 1e-12, 0]], 1).bits, MAX_DECISION_PRECISION_BITS, 'a call closer than the cap asks for the cap');
  t.same(decisionPrecision({ post: 'identity', outputs: 1 }, [[1], [1.0001]], 10), { bits: FLOOD_PRECISION_BITS }, 'regression: the floor');
});

t.test('the bits held: the most that cost no more than the floor', async (t) => {
  // A chain of one prime per 4 bits of precision beyond 10 (the floor, 12, takes 1 prime).
  const primes = (bits: number) => Math.max(1, Math.ceil((bits - 10) / 4));
  t.same(
    affordablePrecision(16, primes, (p) => p),
    { chain: 1, bits: 14 },
    "16 and 15 would take a second prime: 14 keeps the floor's one",
  );
  t.same(
    affordablePrecision(
      13,
      (b) => b,
      () => 1,
    ),
    { chain: 13, bits: 13 },
    'what is asked when it costs nothing more',
  );
  const refusing = affordablePrecision(
    20,
    (b) => {
      if (b > 15) throw new SealedError('bad-data', 'no chain', 'fewer bits');
      return 1;
    },
    (c) => c,
  );
  t.equal(refusing.bits, 15, 'a precision no chain holds is skipped');
  t.throws(
    () =>
      affordablePrecision(
        16,
        (b) => {
          if (b > 15) throw new TypeError('a bug');
          return 1;
        },
        (c) => c,
      ),
    TypeError,
    'any other error is not a refusal: it propagates',
  );
  t.throws(
    () =>
      affordablePrecision(
        16,
        () => {
          throw new Error('no chain at all');
        },
        () => 0,
      ),
    /no chain at all/,
    "the floor's own refusal is the caller's",
  );
});
