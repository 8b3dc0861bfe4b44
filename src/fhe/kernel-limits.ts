// The batch kernel's exactness limits, stated once. The kernel (batch-kernel.ts and its SIMD
// loops, kernel.wat) sums products of integer weights and RNS residues in float64 and reduces
// modulo q once per sum, not once per product. A float64 holds every integer of magnitude up to
// 2^53 exactly, so a sum of integers is exact, in any order, as long as every partial sum stays
// within 2^53. Each limit below keeps one of the kernel's sums there; the compiler
// (compile-batch.ts) stays within them and validateBatchPlan (batch-plan.ts) refuses a plan
// that does not, because past them the kernel would not fail: it would round, silently.
//
//   residues      a data prime q has at most PRIME_BITS = 26 bits, so a residue is <= 2^26 - 1
//   products      |w x| <= (2^15 - 1)(2^26 - 1) < 2^41                 (MAX_INT_WEIGHT)
//   first layer   a row starts from its bias residue and adds at most MAX_TAPS products:
//                 (2^26 - 1) + 2^11 (2^15 - 1)(2^26 - 1) < 2^26 + 2^52 < 2^53
//   second layer  an output accumulator starts from a reduced value (< 2^26) and adds the
//                 products w2 * square of at most REDUCE_EVERY rows before it is reduced again:
//                 the same bound. So second-layer rows (first.rows long) may be of any length.
//   squares       the tensor square multiplies two reduced residues: 2 x y <= 2 (2^26 - 1)^2 < 2^53
//   reductions    a - floor(a / q) q: the quotient, rounded, is off by at most one, which the
//                 kernel corrects; floor(a / q) q is within q of a, so exact while |a| + q <= 2^53
//                 (every sum above is below 2^52 + 2^26). Nearer 2^53 the product rounds and the
//                 residue comes out one off (the batch flood's float reduction did: sessions
//                 46-48; it is reduced in integers now, flood-wide.ts).
//
// The first- and second-layer bounds hold with a factor of two to spare (2^52 + 2^26 against
// 2^53): a weight of exactly 2^15, or up to 4,096 taps at 2^15 - 1, would still sum exactly
// (test/unit/kernel-exactness.test.ts shows it, and where it really breaks). The margin is kept: the
// limits are the contract the compiler, the loader and the kernel share.

/** Bits of a data prime at most (the compiler's primes have exactly this many). */
export const PRIME_BITS = 26;

/** Largest |integer weight| of either layer. */
export const MAX_INT_WEIGHT = 2 ** 15 - 1;

/** Most products the kernel sums unreduced: taps of one first-layer row. */
export const MAX_TAPS = 2 ** 11;

/**
 * The kernel reduces its second-layer accumulators after this many rows. It counts rows four at
 * a time (four pending squares per pass), so this must be a multiple of four to be exact.
 */
export const REDUCE_EVERY = MAX_TAPS;

/** Counts and indices: the kernel keeps the plan's starts and indices in Int32Arrays. */
export const MAX_KERNEL_INDEX = 2 ** 31 - 1;

/** Largest magnitude a sum may reach and stay exact in a float64. */
export const EXACT_BOUND = 2 ** 53;

// Checked when the module loads, so that editing a limit past the bound stops every user of
// the kernel instead of letting it round. Each value is an integer below 2^53: exact itself.
const maxResidue = 2 ** PRIME_BITS - 1;
if (
  maxResidue + MAX_TAPS * MAX_INT_WEIGHT * maxResidue > EXACT_BOUND ||
  maxResidue + REDUCE_EVERY * MAX_INT_WEIGHT * maxResidue > EXACT_BOUND ||
  2 * maxResidue * maxResidue > EXACT_BOUND ||
  REDUCE_EVERY % 4 !== 0
) {
  throw new Error('kernel-limits.ts: the batch kernel limits no longer keep its sums exact');
}
