// Compiles a linear model (linear regression, logistic regression, multiclass linear) into a
// CKKS program over many records per ciphertext.
//
// Layout: each record owns a block; its n features sit at offsets 0..n-1 of a cyclic window of
// P = nextPow2(n) slots, and the first m-1 features are repeated after the window so the
// diagonals never read the next record (m = nextPow2(outputs)). With the hybrid diagonal
// method, z[t] = sum_{d<m} W[t mod m, (t+d) mod P] x[(t+d) mod P]; folding z by m, 2m, ..., P/2
// leaves output c at offset c. Cost per ciphertext: m multiplications, m-1 + log2(P/m)
// rotations, no ciphertext product: depth 0, so the whole chain is one data prime.
import type { Program } from '../fhe/program.ts';
import { rotationsOf } from '../fhe/program.ts';
import { SealedError } from '../errors.ts';
import { chooseParams } from './chain.ts';
import { MAX_BITS_128, type CkksParams } from '../fhe/params.ts';
import { FLOOD_SECURITY_BITS, SEAL_NOISE_SIGMA, floodExtraBits, type Privacy } from '../fhe/privacy.ts';
import { bsgsStep, nextPow2, type Diagonal } from './diagonal.ts';
import type { InputLayout, OutputLayout } from './layout.ts';
import { packRecords } from './layout.ts';
import { simulate, type SimulationTrace } from './simulate.ts';

export interface LinearWeights {
  /** outputs x features */
  weights: number[][];
  bias: number[];
}

export interface CompiledModel {
  program: Program;
  masks: Float64Array[];
  input: InputLayout;
  output: OutputLayout;
}

const INPUT_SCALE_BITS = 28;
// Mask encoding error is about sqrt(N)/2^bits in absolute slot value: 22 bits keep it near 1e-5.
const MIN_WEIGHT_SCALE_BITS = 22;
const MAX_WEIGHT_SCALE_BITS = 30;

export interface LinearCompileOptions {
  /** Circuit privacy (privacy.ts): default 'flood'; 'none' leaves the weights readable from results. */
  privacy?: Privacy;
  floodSecurityBits?: number;
}

/**
 * Bits the flood needs above floodExtraBits: the bound below (canonical-embedding norms, folds
 * doubling it) is about 2^6 above the typical |v|_2 of these programs.
 */
const FLOOD_BOUND_SLACK_BITS = 6;
/** The flooded chain: two data primes, the first of SEAL's largest size. */
const FLOOD_FIRST_PRIME_BITS = 60;

/** `samples`: pre-processed records that bound the values the program will see. */
export function compileLinear(w: LinearWeights, samples: ArrayLike<number>[], o: LinearCompileOptions = {}): CompiledModel {
  const privacy = o.privacy ?? 'flood';
  const lambda = o.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  const flood = privacy === 'flood';
  const k = w.weights.length;
  const n = w.weights[0]?.length ?? 0;
  if (k === 0 || n === 0 || w.bias.length !== k || w.weights.some((r) => r.length !== n)) {
    throw new SealedError('bad-data', 'weights must be a non-empty outputs x features matrix with one bias per output');
  }
  const m = nextPow2(k);
  const P = Math.max(nextPow2(n), m);
  const stride = P + m - 1;

  const build = (slots: number, weightScaleBits: number) => {
    const R = Math.floor(slots / stride);
    const diagonals: Diagonal[] = [];
    for (let d = 0; d < m; d++) {
      const mask = new Float64Array(slots);
      for (let r = 0; r < R; r++) {
        for (let t = 0; t < P; t++) {
          const c = t % m;
          const j = (t + d) % P;
          if (c < k && j < n) mask[r * stride + t] = w.weights[c][j];
        }
      }
      diagonals.push({ offset: d, mask });
    }
    const folds: number[] = [];
    for (let f = m; f < P; f *= 2) folds.push(f);
    // Every rotation comes after the multiplication: key switching adds noise of a fixed size,
    // negligible at the product's scale (2^50 and more) but not at the fresh input's (2^28),
    // because at depth 0 the data prime is as large as the special prime. It costs m-1
    // rotations instead of about 2*sqrt(m), shared by all the records of a ciphertext.
    const { step, masks } = bsgsStep(diagonals, (d) => [d, 0], folds, false, 0, weightScaleBits);
    const bias = new Float64Array(slots);
    for (let r = 0; r < R; r++) for (let c = 0; c < k; c++) bias[r * stride + c] = w.bias[c];
    step.bias = masks.length;
    masks.push(bias);
    const featureSlots = Array.from({ length: n }, (_, j) => (j < m - 1 ? [j, P + j] : [j]));
    const input: InputLayout = { slots, recordsPerCiphertext: R, recordStride: stride, featureSlots };
    const output: OutputLayout = { count: k, recordStride: stride, offsets: Array.from({ length: k }, (_, c) => c) };
    return { steps: [step], masks, input, output };
  };

  // Size the modulus from the values the program takes on the samples (all slots count).
  const probe = build(Math.max(2048, nextPow2(stride)), MIN_WEIGHT_SCALE_BITS);
  const headroom = headroomBits(probe.steps, probe.masks, probe.input, samples);
  // Depth 0: the chain is one data prime plus the special prime. Take the smallest ring whose
  // first prime leaves the weights at least MIN_WEIGHT_SCALE_BITS of precision.
  let weightBits = MIN_WEIGHT_SCALE_BITS;
  let params: CkksParams | undefined;
  let inputScaleBits = INPUT_SCALE_BITS;
  if (flood) {
    // The flood costs floodExtraBits of precision: the input scale grows by that much, the
    // result (input + weight scale + headroom) then needs two data primes, which it keeps.
    inputScaleBits = INPUT_SCALE_BITS + floodExtraBits(16384, lambda) + FLOOD_BOUND_SLACK_BITS;
    weightBits = MAX_WEIGHT_SCALE_BITS;
    const need = inputScaleBits + weightBits + headroom + 1;
    const second = Math.max(20, need - FLOOD_FIRST_PRIME_BITS);
    if (second > 60)
      throw new SealedError(
        'bad-data',
        `a flooded linear model needs ${need} bits for its results, more than two primes hold`,
        'standardise the features, or use privacy none',
      );
    const bits = [FLOOD_FIRST_PRIME_BITS, second, FLOOD_FIRST_PRIME_BITS];
    const total = bits.reduce((a, b) => a + b, 0);
    const n = [4096, 8192, 16384, 32768].find((d) => d / 2 >= stride && total <= MAX_BITS_128[d]);
    if (!n) throw new SealedError('bad-data', `no 128-bit parameter set holds ${total} modulus bits and ${stride} slots`);
    params = { scheme: 'ckks', polyModulusDegree: n, coeffModulusBits: bits, securityLevel: 128 };
  }
  for (const n of flood ? [] : [4096, 8192, 16384]) {
    const room = Math.min(60, Math.floor(MAX_BITS_128[n] / 2)) - 1 - headroom - INPUT_SCALE_BITS;
    if (n / 2 >= stride && room >= MIN_WEIGHT_SCALE_BITS) {
      weightBits = Math.min(room, MAX_WEIGHT_SCALE_BITS);
      break;
    }
  }
  params ??= chooseParams({
    depth: 0,
    slotsNeeded: stride,
    inputScaleBits: INPUT_SCALE_BITS,
    finalScaleBits: INPUT_SCALE_BITS + weightBits,
    headroomBits: headroom,
  });
  const built = build(params.polyModulusDegree / 2, weightBits);
  const program: Program = { params, inputScaleBits, steps: built.steps, galoisSteps: rotationsOf(built.steps), relin: false };
  if (flood) {
    // Only flooded programs carry the field: 'none' bundles stay byte-identical to older ones.
    program.privacy = 'flood';
    program.resultPrimes = 2;
    program.floodSecurityBits = lambda;
    program.noiseL2Bits = Math.log2(linearNoiseL2Bound(params.polyModulusDegree, weightBits, built.masks.slice(0, -1), P / m, program.galoisSteps.length));
  }
  verifyLinear(program, built.masks, built.input, built.output, w, samples);
  return { program, masks: built.masks, input: built.input, output: built.output };
}

/**
 * A bound on |v|_2 (coefficient domain) of the results' honest noise, for the flood. The query's
 * phase is Delta_x emb^-1(x) + v_in (SEAL's noise, sigma SEAL_NOISE_SIGMA = 3.24, and the encoder's rounding);
 * with |p|_2 <= |p|_can,inf and |a b|_can <= |a|_can |b|_can:
 *   - each diagonal's product: |pt_M|_can <= 2^w max|M| + N/2 (rounding, worst case) times
 *     |v_in|_can <= 6 sqrt(N) sqrt(3.2^2 + 1/12) (six standard deviations in every coordinate);
 *   - rotations preserve the norm and add key-switching noise, below 2^20 each (generous: the
 *     special prime is as large as the data primes, so it is about sqrt(N) sigma);
 *   - each fold doubles the sum: a factor P / m.
 */
function linearNoiseL2Bound(N: number, weightBits: number, masks: Float64Array[], foldFactor: number, rotations: number): number {
  const vin = 6 * Math.sqrt(N) * Math.sqrt(SEAL_NOISE_SIGMA ** 2 + 1 / 12);
  let sum = 0;
  for (const m of masks) {
    let max = 0;
    for (const x of m) max = Math.max(max, Math.abs(x));
    sum += (2 ** weightBits * max + N / 2) * vin;
  }
  return foldFactor * sum + rotations * 2 ** 20 * foldFactor;
}

function headroomBits(steps: Program['steps'], masks: Float64Array[], input: InputLayout, samples: ArrayLike<number>[]): number {
  const prog = { steps } as Program;
  let max = 1;
  for (const v of packRecords(input, samples)) {
    const trace: SimulationTrace = { maxAbs: [] };
    simulate(prog, masks, v, trace);
    max = Math.max(max, ...trace.maxAbs);
  }
  // x4 margin: records outside the samples may be somewhat larger.
  return Math.ceil(Math.log2(max * 4));
}

/** Proves the plan: simulated outputs must equal W x + b for every sample record. */
function verifyLinear(p: Program, masks: Float64Array[], input: InputLayout, output: OutputLayout, w: LinearWeights, samples: ArrayLike<number>[]): void {
  const vectors = packRecords(input, samples);
  vectors.forEach((v, ci) => {
    const out = simulate(p, masks, v);
    for (let r = 0; r < input.recordsPerCiphertext; r++) {
      const idx = ci * input.recordsPerCiphertext + r;
      if (idx >= samples.length) break;
      for (let c = 0; c < output.count; c++) {
        let want = w.bias[c];
        for (let j = 0; j < w.weights[c].length; j++) want += w.weights[c][j] * samples[idx][j];
        const got = out[r * output.recordStride + output.offsets[c]];
        if (Math.abs(got - want) > 1e-9 * Math.max(1, Math.abs(want))) {
          throw new SealedError('internal', `compiler self-check failed: record ${idx} output ${c} simulates to ${got}, expected ${want}`);
        }
      }
    }
  });
}
