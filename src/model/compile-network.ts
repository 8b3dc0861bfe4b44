// Compiles a network (conv2d-parity | dense, quadratic activations) into a CKKS program for one
// image per ciphertext.
//
// Layouts are periodic: a feature sits at an offset in [0, P) and is repeated every P slots.
//  - input: the image row-major, P = 1024 (so four copies in 4096 slots; the client writes them).
//  - conv2d-parity: filter f is computed in copy f >> 2, on the slots (2y+a_f)*W + (2x+b_f) of a
//    full stride-1 convolution: one set of rotations (offsets dy*W + dx, split baby dx / giant
//    dy*W) serves every filter. Output: P = slots, no repetition.
//  - dense (out x in) from period P: hybrid diagonal method, z[t] = sum_{d<m} W[t mod m, in(t+d)],
//    m = nextPow2(out), then folds m, 2m, ..., P/2 leave output o at every slot t = o (mod m).
//  - other dense layouts (network-layouts.ts), taken where they are cheaper (buildNetwork keeps
//    the cheapest combination by networkCost, the hybrid ones on a tie): a first layer whose
//    output is replicated at every slot (the client writes the input for it), a row sum (one
//    product, folds 1..P/2: output o at slot P*o) and, from that, a sparse step (output k at
//    slot S - k). The MNIST x^2 MLP 784-128-64-10: 30 rotations and 27 products instead of 38 and 96.
//    Their noise bounds differ, so with privacy 'flood' the two are compared on their chains.
//  - quadratic a x^2 + b x + c = a (x + b/2a)^2 + (c - b^2/4a): b/2a joins the previous bias,
//    a and the constant join the next dense layer, so each activation is one square.
// Rescaled steps encode masks at the scale of the prime they drop, so scales stay near 2^30;
// the last dense layer is not rescaled (its masks at 2^w), which saves a level.
// With privacy 'flood' the same steps run at much larger scales, in the ring and chain the flood
// needs (compileFlooded below; the noise bound in network-flood.ts). The steps themselves are
// built in network-steps.ts.
import { SealedError } from '../errors.ts';
import { MAX_BITS_128, type CkksParams } from '../fhe/params.ts';
import { compactRotations, depthOf, rotationsOf, type LinearStep, type Program, type Step } from '../fhe/program.ts';
import type { OutputLayout } from './layout.ts';
import { packRecords } from './layout.ts';
import { forward, type Network } from './network.ts';
import { simulate, type SimulationTrace } from './simulate.ts';
import type { CompiledModel } from './compile-linear.ts';
import { FLOOD_PRECISION_BITS } from './compile-batch.ts';
import { FLOOD_SECURITY_BITS, floodSigma, type Privacy } from '../fhe/privacy.ts';
import { buildNetwork, buildNetworks, networkCost, type BuiltNetwork } from './network-steps.ts';
import { withInputCopies } from './input-copies.ts';
import {
  analyse,
  deferRescales,
  floodChain,
  FLOOD_DEFERRED_PRIME_BITS,
  FLOOD_DEFERRED_RESULT_BITS,
  FLOOD_RESULT_PRIME_MAX_BITS,
  floodNoiseBound,
  FLOOD_MIN_INPUT_SCALE_BITS,
  FLOOD_SQUARE_PRIME_BITS,
  FLOOD_WEIGHT_BITS,
  PRIME_SIZE_MARGIN,
  SPECIAL_PRIME_BITS,
  type FloodChain,
} from './network-flood.ts';

const INPUT_SCALE_BITS = 30;
const LEVEL_BITS = 30;
const FIRST_PRIME_BITS = 60;

export interface CompileOptions {
  slots?: number;
  /**
   * Circuit privacy (privacy.ts), default 'flood': it chooses its own ring (8192, 16384 or 32768: the smallest that holds the depth) and
   * scales unless `slots` fixes the ring. 'none' leaves the weights readable from results.
   */
  privacy?: Privacy;
  /** lambda of the flood (default FLOOD_SECURITY_BITS). */
  floodSecurityBits?: number;
  /**
   * With 'flood': the program's form (network-flood.ts). Default: the plain form where it fits a
   * ring, else the deferred one; tests fix one to check each.
   */
  floodForm?: 'plain' | 'deferred';
  /**
   * At most this many ciphertexts per query section: the input and rotated copies of it, which
   * take the first step's rotations off the server where that many cover them (input-copies.ts).
   * Default 1: no copies.
   */
  inputCopies?: number;
}

/** The built network with the client's copies of its input, where `o.inputCopies` allows them. */
const copiesOf = (built: BuiltNetwork, o: CompileOptions) => ((o.inputCopies ?? 1) > 1 ? withInputCopies(built, o.inputCopies!) : built);

export function compileNetwork(net: Network, samples: ArrayLike<number>[], o: CompileOptions = {}): CompiledModel {
  if ((o.privacy ?? 'flood') === 'flood') return compileFlooded(net, samples, o);
  const S = o.slots ?? 4096;
  const { steps, masks, input, output } = copiesOf(buildNetwork(net, S), o);

  const depth = depthOf(steps);
  // Values bound the first prime: the last layer's weights get what the headroom leaves.
  let maxAbs = 1;
  const vectors = packRecords(input, samples);
  for (const v of vectors) {
    const trace: SimulationTrace = { maxAbs: [] };
    simulate({ steps } as Program, masks, v, trace);
    maxAbs = Math.max(maxAbs, ...trace.maxAbs);
  }
  const headroom = Math.ceil(Math.log2(maxAbs * 4));
  const weightBits = Math.min(30, FIRST_PRIME_BITS - 1 - headroom - LEVEL_BITS);
  if (weightBits < 16)
    throw new SealedError(
      'bad-data',
      `values up to ${maxAbs.toFixed(1)} leave only ${weightBits} bits for the last layer's weights`,
      'control the activation range in training',
    );
  const last = steps[steps.length - 1] as LinearStep;
  last.weightScaleBits = weightBits;
  const bits = [FIRST_PRIME_BITS, ...Array<number>(depth).fill(LEVEL_BITS), FIRST_PRIME_BITS];
  const total = bits.reduce((x, y) => x + y, 0);
  const N = 2 * S;
  if (total > MAX_BITS_128[N])
    throw new SealedError(
      'bad-data',
      `depth ${depth} needs ${total} modulus bits, over the 128-bit bound ${MAX_BITS_128[N]} of ring ${N}`,
      'use fewer layers or more slots',
    );
  const params: CkksParams = { scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: bits, securityLevel: 128 };
  const program: Program = { params, inputScaleBits: INPUT_SCALE_BITS, steps, galoisSteps: rotationsOf(steps), relin: steps.some((s) => s.op === 'square') };
  selfCheck(net, program, masks, output, vectors, samples);
  return { program, masks, input, output };
}

/** Proof: the program, simulated, computes the network on every sample. */
function selfCheck(net: Network, program: Program, masks: Float64Array[], output: OutputLayout, vectors: Float64Array[], samples: ArrayLike<number>[]): void {
  vectors.forEach((v, i) => {
    const got = simulate(program, masks, v);
    const want = forward(net, samples[i]);
    want.forEach((w, c) => {
      if (Math.abs(got[output.offsets[c]] - w) > 1e-8 * Math.max(1, Math.abs(w))) {
        throw new SealedError('internal', `compiler self-check failed: sample ${i} output ${c} simulates to ${got[output.offsets[c]]}, expected ${w}`);
      }
    });
  });
}

function compileFlooded(net: Network, samples: ArrayLike<number>[], o: CompileOptions): CompiledModel {
  const lambda = o.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  let why = '';
  for (const S of o.slots ? [o.slots] : [4096, 8192, 16384]) {
    const N = 2 * S;
    // The cheapest layouts (buildNetworks) unless the flood's chain makes them dearer than the
    // hybrid ones (their noise bounds differ, so may the number of primes) or does not fit.
    const layouts = buildNetworks(net, S);
    const hybrid = copiesOf(layouts.hybrid, o);
    const cheapest = layouts.cheapest === layouts.hybrid ? hybrid : copiesOf(layouts.cheapest, o);
    let built = hybrid;
    let found = floodForms(net, samples, hybrid, N, lambda, o);
    if (cheapest !== hybrid) {
      const other = floodForms(net, samples, cheapest, N, lambda, o);
      const cost = (f: NonNullable<typeof found>) => networkCost(f.steps, f.chain.dataBits.length);
      if (other && (!found || cost(other) < cost(found))) {
        built = cheapest;
        found = other;
      }
    }
    if (!found) {
      why = `no chain within the 128-bit bound ${MAX_BITS_128[N]} of ring ${N} gives the flood 2^-${FLOOD_PRECISION_BITS} precision`;
      continue;
    }
    const { steps, galoisSteps, a, chain, rho } = found;
    const params: CkksParams = { scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: [...chain.dataBits, SPECIAL_PRIME_BITS], securityLevel: 128 };
    const program: Program = { params, inputScaleBits: a, steps, galoisSteps, relin: steps.some((s) => s.op === 'square') };
    program.privacy = 'flood';
    // log2 B, rounded up (B = rho Delta_out, at the nominal output scale: PRIME_SIZE_MARGIN covers the actual one).
    program.noiseL2Bits = Math.ceil((Math.log2(rho) + chain.outScaleBits) * 100) / 100;
    program.resultPrimes = chain.resultPrimes;
    program.floodSecurityBits = lambda;
    return { program, masks: built.masks, input: built.input, output: built.output };
  }
  throw new SealedError('bad-data', `privacy flood: ${why}`, 'use fewer layers, or privacy none');
}

/**
 * The plain form first (unchanged programs for the models it fits), then the deferred one
 * (network-flood.ts), which needs fewer modulus bits when there are several squares.
 * The deferred form also takes fewer Galois keys (compactRotations: same rotations, their
 * key switches counted in the noise bound).
 */
/**
 * The plain form first (unchanged programs for the models it fits), then the deferred one
 * (network-flood.ts), which needs fewer modulus bits when there are several squares. The
 * deferred form takes compact Galois keys (compactRotations: the same rotations with fewer keys,
 * the extra key switches of baby steps reached by binary digits counted in the noise bound); the
 * plain form keeps a key per rotation: compact keys would take the MNIST CNN's from 66.8 to
 * 46.9 MB, but its evaluations measured 819-827 ms median against 724-778 ms with full keys
 * (in process, alternating, three runs of nine), and 67 MB is well within the key budget.
 */
function floodForms(net: Network, samples: ArrayLike<number>[], built: BuiltNetwork, N: number, lambda: number, o: CompileOptions) {
  const last = built.steps[built.steps.length - 1] as LinearStep;
  last.weightScaleBits = FLOOD_WEIGHT_BITS;
  const deferred = deferRescales(built.steps);
  return (
    (o.floodForm !== 'deferred'
      ? floodSearch(net, samples, built, built.steps, rotationsOf(built.steps), N, lambda, FLOOD_SQUARE_PRIME_BITS, [FLOOD_RESULT_PRIME_MAX_BITS])
      : undefined) ??
    (o.floodForm !== 'plain'
      ? floodSearch(net, samples, built, deferred, compactRotations(deferred), N, lambda, FLOOD_DEFERRED_PRIME_BITS, FLOOD_DEFERRED_RESULT_BITS)
      : undefined)
  );
}

/**
 * The input scale and chain for `steps` in ring N: the smallest input scale whose noise bound
 * gives the flood its precision, per square prime size and result prime cap; of those within the
 * 128-bit bound, the one with fewest data primes (keys grow with their square), then fewest bits.
 */
function floodSearch(
  net: Network,
  samples: ArrayLike<number>[],
  built: BuiltNetwork,
  steps: Step[],
  galoisSteps: number[],
  N: number,
  lambda: number,
  squarePrimeBits: number[],
  resultMaxBits: number[],
): { steps: Step[]; galoisSteps: number[]; a: number; chain: FloodChain; rho: number } | undefined {
  const S = N / 2;
  const { masks, input, output } = built;
  // The samples' ranges, and the self-check (the program, simulated, computes the network).
  const cap = steps.map(() => 0);
  let inputMax = 0,
    outMax = 0;
  packRecords(input, samples).forEach((v, i) => {
    const trace: SimulationTrace = { maxAbs: [] };
    const out = simulate({ steps } as Program, masks, v, trace);
    trace.maxAbs.forEach((m, j) => (cap[j] = Math.max(cap[j], 4 * m)));
    for (const x of v) inputMax = Math.max(inputMax, Math.abs(x));
    forward(net, samples[i]).forEach((w, c) => {
      const got = out[output.offsets[c]];
      if (Math.abs(got - w) > 1e-8 * Math.max(1, Math.abs(w)))
        throw new SealedError('internal', `compiler self-check failed: sample ${i} output ${c} simulates to ${got}, expected ${w}`);
      outMax = Math.max(outMax, Math.abs(got));
    });
  });
  const headroom = Math.ceil(Math.log2(Math.max(1, inputMax * 4, ...cap)));
  const written = new Uint8Array(S);
  for (const slots of input.featureSlots) for (const s of slots) written[s] = 1;
  const analysis = analyse(steps, masks, N, S, written, inputMax, cap, galoisSteps);
  // The flood's error in the slots, sigma sqrt(N/2) / Delta_out, relative to the target.
  const target = 2 ** -FLOOD_PRECISION_BITS * Math.max(1, outMax);
  let best: { steps: Step[]; galoisSteps: number[]; a: number; chain: FloodChain; rho: number } | undefined;
  for (const squareBits of squarePrimeBits) {
    for (const resultBits of resultMaxBits) {
      for (let a = FLOOD_MIN_INPUT_SCALE_BITS; a <= 120; a++) {
        const chain = floodChain(steps, a, squareBits, headroom, resultBits);
        if (!chain) continue;
        if (chain.totalBits > MAX_BITS_128[N]) break; // the chain only grows with a
        const rho = floodNoiseBound(analysis, a, chain) * PRIME_SIZE_MARGIN;
        if (floodSigma(rho, lambda) * Math.sqrt(N / 2) > target) continue;
        const better =
          !best ||
          chain.dataBits.length < best.chain.dataBits.length ||
          (chain.dataBits.length === best.chain.dataBits.length && chain.totalBits < best.chain.totalBits);
        if (better) best = { steps, galoisSteps, a, chain, rho };
        break;
      }
    }
  }
  return best;
}
