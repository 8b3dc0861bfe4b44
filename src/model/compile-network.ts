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
//  - quadratic a x^2 + b x + c = a (x + b/2a)^2 + (c - b^2/4a): b/2a joins the previous bias,
//    a and the constant join the next dense layer, so each activation is one square.
// Rescaled steps encode masks at the scale of the prime they drop, so scales stay near 2^30;
// the last dense layer is not rescaled (its masks at 2^w), which saves a level.
// With privacy 'flood' the same steps run at much larger scales, in the ring and chain the flood
// needs (compileFlooded, floodNoiseBound below).
import { SealedError } from '../errors.ts';
import { MAX_BITS_128, type CkksParams } from '../fhe/params.ts';
import { rotationsOf, type LinearStep, type Program, type Step } from '../fhe/program.ts';
import { bsgsStep, nextPow2, squareSplit, type Diagonal } from './diagonal.ts';
import type { InputLayout, OutputLayout } from './layout.ts';
import { packRecords } from './layout.ts';
import { convOutputShape, forward, parityCol, parityRow, perFeature, type Dense, type Network } from './network.ts';
import { simulate, type SimulationTrace } from './simulate.ts';
import type { CompiledModel } from './compile-linear.ts';
import { FLOOD_PRECISION_BITS } from './compile-batch.ts';
import { FLOOD_SECURITY_BITS, floodSigma, type Privacy } from '../fhe/privacy.ts';

const INPUT_SCALE_BITS = 30;
const LEVEL_BITS = 30;
const FIRST_PRIME_BITS = 60;

interface Layout {
  period: number;
  /** slot (in [0, period)) of each feature */
  slot: Int32Array;
}

export interface CompileOptions {
  slots?: number;
  /**
   * Circuit privacy (privacy.ts), default 'flood': it chooses its own ring (8192, 16384 or 32768: the smallest that holds the depth) and
   * scales unless `slots` fixes the ring. 'none' leaves the weights readable from results.
   */
  privacy?: Privacy;
  /** lambda of the flood (default FLOOD_SECURITY_BITS). */
  floodSecurityBits?: number;
}

interface BuiltNetwork {
  steps: Step[];
  masks: Float64Array[];
  input: InputLayout;
  output: OutputLayout;
}

export function compileNetwork(net: Network, samples: ArrayLike<number>[], o: CompileOptions = {}): CompiledModel {
  if ((o.privacy ?? 'flood') === 'flood') return compileFlooded(net, samples, o);
  const S = o.slots ?? 4096;
  const { steps, masks, input, output } = buildNetwork(net, S);

  const depth = steps.filter((s) => s.op === 'square' || s.rescale).length;
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
  if (weightBits < 16) throw new SealedError('bad-data', `values up to ${maxAbs.toFixed(1)} leave only ${weightBits} bits for the last layer's weights`, 'control the activation range in training');
  const last = steps[steps.length - 1] as LinearStep;
  last.weightScaleBits = weightBits;
  const bits = [FIRST_PRIME_BITS, ...Array<number>(depth).fill(LEVEL_BITS), FIRST_PRIME_BITS];
  const total = bits.reduce((x, y) => x + y, 0);
  const N = 2 * S;
  if (total > MAX_BITS_128[N]) throw new SealedError('bad-data', `depth ${depth} needs ${total} modulus bits, over the 128-bit bound ${MAX_BITS_128[N]} of ring ${N}`, 'use fewer layers or more slots');
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

/** The steps, masks and layouts of a network in S slots (the last layer's weight scale left unset). */
function buildNetwork(net: Network, S: number): BuiltNetwork {
  const H = net.input.height;
  const W = net.input.width;
  const inPeriod = nextPow2(H * W);
  if (inPeriod > S) throw new SealedError('bad-data', `an input of ${H}x${W} does not fit ${S} slots`);
  let layout: Layout = { period: inPeriod, slot: Int32Array.from({ length: H * W }, (_, j) => j) };
  // Where the client writes each input feature: by default the image repeated every inPeriod slots.
  let featureSlots = Array.from({ length: H * W }, (_, j) => Array.from({ length: S / inPeriod }, (_, c) => c * inPeriod + j));

  const steps: Step[] = [];
  const masks: Float64Array[] = [];
  const add = (parts: { step: LinearStep; masks: Float64Array[] }) => {
    steps.push(parts.step);
    masks.push(...parts.masks);
  };
  // Pending activation scale/offset per feature of the current layout, folded into the next dense.
  let pending: { a: number[]; g: number[] } | undefined;
  const lastDense = net.layers.map((l) => l.type).lastIndexOf('dense');

  for (let li = 0; li < net.layers.length; li++) {
    const layer = net.layers[li];
    if (layer.type === 'conv2d-parity') {
      if (li !== 0) throw new SealedError('bad-data', 'conv2d-parity must be the first layer');
      const { height: oh, width: ow, filters: F } = convOutputShape(net, layer);
      const k = layer.kernel[0].length;
      const copies = S / inPeriod;
      if (Math.ceil(F / 4) > copies) throw new SealedError('bad-data', `${F} filters need ${Math.ceil(F / 4)} copies of the image, ${copies} fit in ${S} slots`);
      const slotOf = (y: number, x: number, f: number) => (f >> 2) * inPeriod + parityRow(y, f) * W + parityCol(x, f);
      const diagonals: Diagonal[] = [];
      for (let dy = 0; dy < k; dy++)
        for (let dx = 0; dx < k; dx++) {
          const mask = new Float64Array(S);
          for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) for (let f = 0; f < F; f++) mask[slotOf(y, x, f)] = layer.kernel[f][dy][dx];
          diagonals.push({ offset: dy * W + dx, mask });
        }
      const parts = bsgsStep(diagonals, (d) => [d - (d % W), d % W], [], true, masks.length);
      const bias = new Float64Array(S);
      for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) for (let f = 0; f < F; f++) bias[slotOf(y, x, f)] = layer.bias[f];
      parts.step.bias = masks.length + parts.masks.length;
      parts.masks.push(bias);
      add(parts);
      const slot = new Int32Array(oh * ow * F);
      for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) for (let f = 0; f < F; f++) slot[(y * ow + x) * F + f] = slotOf(y, x, f);
      layout = { period: S, slot };
    } else if (layer.type === 'quadratic') {
      const prev = steps[steps.length - 1];
      if (!prev || prev.op !== 'linear' || prev.bias === undefined) throw new SealedError('bad-data', 'a quadratic activation must follow a conv2d or dense layer');
      const n = layout.slot.length;
      const a = Array.from({ length: n }, (_, j) => perFeature(layer.a, j));
      if (a.some((v) => Math.abs(v) < 1e-9)) throw new SealedError('bad-data', 'quadratic activations need a non-zero x^2 coefficient');
      const bias = masks[prev.bias];
      const g: number[] = [];
      for (let j = 0; j < n; j++) {
        const b = perFeature(layer.b, j);
        const shift = b / (2 * a[j]);
        g.push(perFeature(layer.c, j) - (b * b) / (4 * a[j]));
        for (let s = layout.slot[j]; s < S; s += layout.period) bias[s] += shift;
      }
      steps.push({ op: 'square' });
      pending = { a, g };
    } else if (li === 0 && S / inPeriod > 1 && nextPow2(layer.weights.length) >= S / inPeriod && nextPow2(layer.weights.length) <= inPeriod) {
      const first = firstDenseStep(layer, H * W, inPeriod, S, li === lastDense, masks.length);
      add(first.parts);
      featureSlots = first.featureSlots;
      layout = first.layout;
    } else {
      add(denseStep(layer, layout, S, pending, li === lastDense, masks.length));
      const m = nextPow2(layer.weights.length);
      layout = { period: m, slot: Int32Array.from({ length: layer.weights.length }, (_, o) => o) };
      pending = undefined;
    }
  }
  if (net.layers[net.layers.length - 1]?.type !== 'dense') throw new SealedError('bad-data', 'the network must end with a dense layer');

  const input: InputLayout = {
    slots: S,
    recordsPerCiphertext: 1,
    recordStride: S,
    featureSlots,
  };
  const outCount = (net.layers[lastDense] as Dense).weights.length;
  const output: OutputLayout = { count: outCount, recordStride: S, offsets: Array.from({ length: outCount }, (_, c) => c) };

  return { steps, masks, input, output };
}

// ---------------------------------------------------------------------------------------------
// Circuit privacy: the flood (privacy.ts). SinglePrivacy adds to the result a Gaussian F of
// sigma = 2^lambda B / 2 per coefficient, B a bound on the result's honest noise |v|_2: in the
// slots that is an error of standard deviation sigma sqrt(N/2) / Delta_out, which must stay below
// 2^-FLOOD_PRECISION_BITS max(1, largest |output|). Since B / Delta_out is the result's noise
// relative to its scale, what sets it is the noise the evaluation adds at the scales it runs at:
// the flooded chain runs at large scales (input scale ~2^75, more than one prime holds, so the
// results keep several primes) and the compiler raises the input scale until the bound meets the
// target, in the smallest ring (8192, else 16384 slots x 2) whose 128-bit budget holds the chain.
//
// The chain (top level first): result primes (<= 50 bits each, as many as the result needs),
// then one prime per rescale in reverse order of use: 30 bits for a rescaled linear step (its
// masks are encoded at that prime, as with privacy 'none'), 50 or 60 bits for a square; then the
// special prime, 60 bits. Data primes well below the special prime keep the key-switching noise
// small (see floodNoiseBound).

/** Rescaled linear steps drop a prime of this size (their masks' scale), as with privacy 'none'. */
const FLOOD_LINEAR_PRIME_BITS = 30;
/** Sizes tried for the prime a square drops (the one that gives the shorter chain is kept). */
const FLOOD_SQUARE_PRIME_BITS = [50, 60];
/** Result primes are at most this size: 2^-10 of the special prime in key switching. */
const FLOOD_RESULT_PRIME_MAX_BITS = 50;
const SPECIAL_PRIME_BITS = 60;
/** Scale of the last layer's weights (it is not rescaled). */
const FLOOD_WEIGHT_BITS = 30;
/** Failure probability allowed to each probabilistic bound on the keys' randomness. */
const FLOOD_DELTA = 2 ** -40;
/** Bound on how many key polynomials' noise the key-switching bound is taken over (union bound). */
const MAX_KEY_POLYS = 4096;
/**
 * Scales are tracked at the primes' nominal sizes; SEAL's primes of b >= 30 bits (the largest
 * ones = 1 mod 2N below 2^b) are within 2^-10 of 2^b, which moves the final scale by less than
 * this factor (test/circuit-privacy-network.test.ts checks the primes).
 */
const PRIME_SIZE_MARGIN = 1.01;

interface FloodChain {
  /** Data primes, top level first (the coefficient modulus without the special prime). */
  dataBits: number[];
  /** The prime each rescale drops, in the order the steps drop them. */
  rescaleBits: number[];
  resultPrimes: number;
  outScaleBits: number;
  totalBits: number;
}

/** The chain for input scale 2^a, or undefined when some scale falls below 2^20. */
function floodChain(steps: Step[], a: number, squareBits: number, headroom: number): FloodChain | undefined {
  let scale = a;
  let level = 0;
  const need: number[] = [a + headroom + 1];
  const rescaleBits: number[] = [];
  const at = (l: number, bits: number) => (need[l] = Math.max(need[l] ?? 0, bits));
  for (const st of steps) {
    if (st.op === 'square') {
      at(level, 2 * scale + headroom + 1);
      scale = 2 * scale - squareBits;
      rescaleBits.push(squareBits);
    } else if (st.rescale) {
      at(level, scale + FLOOD_LINEAR_PRIME_BITS + headroom + 1);
      rescaleBits.push(FLOOD_LINEAR_PRIME_BITS);
    } else {
      scale += st.weightScaleBits!;
      at(level, scale + headroom + 1);
      continue;
    }
    if (scale < 20) return undefined;
    level++;
    at(level, scale + headroom + 1);
  }
  const depth = rescaleBits.length;
  // Q at level l = result bits + the primes dropped at level l or later.
  const above = (l: number) => rescaleBits.slice(l).reduce((x, y) => x + y, 0);
  let resultBits = need[depth];
  for (let l = 0; l < depth; l++) resultBits = Math.max(resultBits, need[l] - above(l));
  const k = Math.ceil(resultBits / FLOOD_RESULT_PRIME_MAX_BITS);
  const each = Math.max(20, Math.ceil(resultBits / k));
  const dataBits = [...Array<number>(k).fill(each), ...[...rescaleBits].reverse()];
  return { dataBits, rescaleBits, resultPrimes: k, outScaleBits: scale, totalBits: dataBits.reduce((x, y) => x + y, 0) + SPECIAL_PRIME_BITS };
}

/** |M| + the largest error of M's encoding at scale 2^bits (rounding, double precision), slot-wise. */
function absMask(m: Float64Array, N: number, scaleBits: number): Float64Array {
  let max = 0;
  for (const x of m) max = Math.max(max, Math.abs(x));
  const eps = N / 2 ** scaleBits + 2 ** -24 * max;
  return m.map((x) => Math.abs(x) + eps);
}

/**
 * Schur's bound on the operator norm (slot domain) of a linear step, or of its terms with one
 * baby step: sqrt(max row sum * max column sum) of the entrywise absolute values. Output slot s
 * is sum_F sum_t M_t[s+F+g_t] x[s+F+g_t+b_t] (F over the fold subset sums), so the row sums are
 * the fold sums of sum_t |M_t[u+g_t]| and the column sums 2^folds sum_t |M_t[i-b_t]|.
 */
function schurGain(st: LinearStep, abs: Float64Array[], S: number, baby?: number): number {
  let row = new Float64Array(S);
  const col = new Float64Array(S);
  for (const t of st.terms) {
    if (baby !== undefined && t.baby !== baby) continue;
    const m = abs[t.mask];
    for (let s = 0; s < S; s++) {
      row[s] += m[(s + t.giant) % S];
      col[(s + t.baby) % S] += m[s];
    }
  }
  for (const f of st.folds) {
    const r = row;
    row = r.map((v, s) => v + r[(s + f) % S]);
  }
  let maxRow = 0, maxCol = 0;
  for (let s = 0; s < S; s++) {
    maxRow = Math.max(maxRow, row[s]);
    maxCol = Math.max(maxCol, col[s]);
  }
  return Math.sqrt(maxRow * maxCol * 2 ** st.folds.length);
}

interface FloodAnalysis {
  steps: Step[];
  N: number;
  S: number;
  /** Slots the client writes, and the largest |input| on the samples. */
  written: Uint8Array;
  inputMax: number;
  /** Per step: 4x the largest |value| on the samples (the range the modulus is sized for). */
  cap: number[];
  /** The masks' absolute values plus their encoding error (absMask; biases at scales >= 2^30). */
  abs: Float64Array[];
  /** Schur gains per linear step: of the whole step and of each baby step's terms. */
  gains: Map<number, { all: number; baby: Map<number, number> }>;
}

function analyse(steps: Step[], masks: Float64Array[], N: number, S: number, written: Uint8Array, inputMax: number, cap: number[]): FloodAnalysis {
  const abs = masks.slice();
  const gains = new Map<number, { all: number; baby: Map<number, number> }>();
  steps.forEach((st, i) => {
    if (st.op !== 'linear') return;
    for (const t of st.terms) abs[t.mask] = absMask(masks[t.mask], N, st.rescale ? FLOOD_LINEAR_PRIME_BITS : st.weightScaleBits!);
    if (st.bias !== undefined) abs[st.bias] = absMask(masks[st.bias], N, 30);
    const baby = new Map<number, number>();
    for (const b of new Set(st.terms.map((t) => t.baby))) if (b !== 0) baby.set(b, schurGain(st, abs, S, b));
    gains.set(i, { all: schurGain(st, abs, S), baby });
  });
  return { steps, N, S, written, inputMax, cap, abs, gains };
}

/**
 * A bound B on |v|_2, the coefficient-domain L2 norm of the honest noise of the result, returned
 * relative to the result's scale (B / Delta_out). Honest: fresh encryptions under honestly made
 * keys of inputs whose features are within the samples' largest |value| (images: pixels in [0, 1])
 * and whose values at every step stay within 4x the samples' largest (what the modulus is sized
 * for; beyond it the result is garbage, flooded or not).
 *
 * Messages. As in compile-batch.ts, the input is what the client's plaintext polynomial holds
 * (mu = emb(m)/Delta_in: the encoder's rounding is the client's choice), and the masks and biases
 * are what the server's plaintexts hold (their rounding is part of the model the server evaluates:
 * deterministic, known to the server). Plaintext products, additions, rotations and mod-switching
 * are exact on messages (emb is a ring homomorphism, rotations are automorphisms), rescaling is an
 * exact division up to its rounding, so the result's message is exactly that model on mu, and the
 * noise v is what the engine adds: fresh noise, rescale rounding, key switching.
 *
 * Tools, in the slot domain (|p|_2 = sqrt(2/N) |emb(p) on the N/2 slots|_2, emb/sqrt(N) unitary):
 * |a b|_2 <= |a|_can |b|_2 (|.|_can: the largest slot of emb); rotations keep |.|_2 and |.|_can;
 * a linear step maps noise as the slot-domain matrix of its masks, rotations and folds, whose norm
 * is at most Schur's bound (schurGain) with the masks' encoding error counted in (absMask).
 * Sources, each a bound that holds always or with probability 1 - 2^-40 over the keys:
 *  - fresh: SEAL's noise is bounded by 21 (centered binomial; clipped normal: 19.2):
 *    |e|_2 <= 21 sqrt(N).
 *  - rounding (rescale, and the division by the special prime P in key switching): e0 + e1 s with
 *    |e_i|_inf <= 1/2: |.|_2 <= sqrt(N)/2 (1 + |s|_can); s uniform ternary, each slot a sum of N
 *    terms in [-1, 1] with sum cos^2 = N/2, so by Hoeffding and a union bound over the N real and
 *    imaginary parts |s|_can <= sqrt(2 N ln(4N/delta)).
 *  - key switching at a level with primes q_i: (1/P) sum_i d_i e_i + rounding, d_i the digits of
 *    the switched polynomial (coefficients in [0, q_i)), e_i the key's noise (independent,
 *    subgaussian with variance proxy 10.5): |d_i e_i|_2 <= |d_i|_2 |e_i|_can <= sqrt(N) q_i |e_i|_can
 *    with |e_i|_can <= sqrt(21 N ln(4 N K / delta)) (K key polynomials). q_i / P <= 2^-10 for
 *    the result primes, so the rounding dominates; a 60-bit square prime adds about 7x it.
 * Propagation (rho = |v|_2 / Delta, at the nominal scales, which only underestimate the actual
 * ones; the 1.01 margin covers the final scale):
 *  - linear step: rho -> G rho + sum_b G_b K_b / Delta + 2^folds (R per rescaled giant group +
 *    K per giant rotation) / Delta' + sum_j 2^(folds-1-j) K / Delta' (fold j's rotation).
 *  - square: (m + v)^2 - m^2 = 2 m v + v^2 with |m|_can = Delta max_slot |z| <= Delta U (U: the
 *    interval bound of the values, from the absolute masks and the input range, capped at 4x the
 *    samples' largest) and |v^2|_2 <= |v|_can |v|_2 <= sqrt(N) |v|_2^2; then relinearization (K at
 *    Delta^2) and the rescale (R at the new scale).
 * The bound is sound but loose: test/circuit-privacy-network.test.ts measures honest noise 2^15
 * to 2^18 below it. It allows each step's most amplified direction, U at its interval bound, and
 * rounding errors of +-1/2 lined up with both; measured, rounding errors behave like independent
 * uniform ones, but nothing guarantees it (they are deterministic functions of the ciphertexts),
 * and a bound that holds for every rounding pattern cannot be much lower. The slack costs input
 * scale, hence modulus bits, not precision: the scales grow until the flood meets its target.
 */
function floodNoiseBound(f: FloodAnalysis, a: number, chain: FloodChain): number {
  const { steps, N } = f;
  const sqrtN = Math.sqrt(N);
  const sCan = Math.sqrt(2 * N * Math.log((4 * N) / FLOOD_DELTA));
  const eCan = Math.sqrt(21 * N * Math.log((4 * N * MAX_KEY_POLYS) / FLOOD_DELTA));
  const R = (sqrtN / 2) * (1 + sCan);
  const K = (level: number) => {
    const digits = chain.dataBits.slice(0, chain.dataBits.length - level);
    return sqrtN * eCan * digits.reduce((acc, b) => acc + 2 ** (b - SPECIAL_PRIME_BITS), 0) + R;
  };
  const eps = N / 2 ** a + 2 ** -24 * f.inputMax;
  let U = Float64Array.from(f.written, (w) => (w ? f.inputMax : 0) + eps);
  let rho = (21 * sqrtN) / 2 ** a;
  let scale = a;
  let level = 0;
  let rescales = 0;
  steps.forEach((st, i) => {
    if (st.op === 'square') {
      let maxU = 0;
      for (const u of U) maxU = Math.max(maxU, u);
      rho = 2 * maxU * rho + sqrtN * rho * rho + K(level) / 2 ** (2 * scale);
      scale = 2 * scale - chain.rescaleBits[rescales++];
      level++;
      rho += R / 2 ** scale;
      U = U.map((u) => Math.min(u * u, f.cap[i]));
      return;
    }
    const g = f.gains.get(i)!;
    let out = g.all * rho;
    for (const [, gb] of g.baby) out += (gb * K(level)) / 2 ** scale;
    const nextScale = st.rescale ? scale : scale + st.weightScaleBits!;
    const nextLevel = st.rescale ? level + 1 : level;
    if (st.rescale) rescales++;
    const giants = new Set(st.terms.map((t) => t.giant));
    const k = K(nextLevel) / 2 ** nextScale;
    const groups = (st.rescale ? giants.size * R : 0) / 2 ** nextScale + [...giants].filter((x) => x !== 0).length * k;
    out += 2 ** st.folds.length * groups;
    st.folds.forEach((_, j) => (out += 2 ** (st.folds.length - 1 - j) * k));
    rho = out;
    scale = nextScale;
    level = nextLevel;
    // Interval bound of the values: the step on |masks| and the bounds (the bias mask included).
    U = simulate({ steps: [st] } as Program, f.abs, U).map((u) => Math.min(u, f.cap[i]));
  });
  return rho;
}

function compileFlooded(net: Network, samples: ArrayLike<number>[], o: CompileOptions): CompiledModel {
  const lambda = o.floodSecurityBits ?? FLOOD_SECURITY_BITS;
  let why = '';
  for (const S of o.slots ? [o.slots] : [4096, 8192, 16384]) {
    const N = 2 * S;
    const { steps, masks, input, output } = buildNetwork(net, S);
    const last = steps[steps.length - 1] as LinearStep;
    last.weightScaleBits = FLOOD_WEIGHT_BITS;
    // The samples' ranges, and the self-check (the program, simulated, computes the network).
    const cap = steps.map(() => 0);
    let inputMax = 0, outMax = 0;
    packRecords(input, samples).forEach((v, i) => {
      const trace: SimulationTrace = { maxAbs: [] };
      const out = simulate({ steps } as Program, masks, v, trace);
      trace.maxAbs.forEach((m, j) => (cap[j] = Math.max(cap[j], 4 * m)));
      for (const x of v) inputMax = Math.max(inputMax, Math.abs(x));
      forward(net, samples[i]).forEach((w, c) => {
        const got = out[output.offsets[c]];
        if (Math.abs(got - w) > 1e-8 * Math.max(1, Math.abs(w))) throw new SealedError('internal', `compiler self-check failed: sample ${i} output ${c} simulates to ${got}, expected ${w}`);
        outMax = Math.max(outMax, Math.abs(got));
      });
    });
    const headroom = Math.ceil(Math.log2(Math.max(1, inputMax * 4, ...cap)));
    const written = new Uint8Array(S);
    for (const slots of input.featureSlots) for (const s of slots) written[s] = 1;
    const analysis = analyse(steps, masks, N, S, written, inputMax, cap);
    // The flood's error in the slots, sigma sqrt(N/2) / Delta_out, relative to the target.
    const target = 2 ** -FLOOD_PRECISION_BITS * Math.max(1, outMax);
    let best: { a: number; chain: FloodChain; rho: number } | undefined;
    for (const squareBits of FLOOD_SQUARE_PRIME_BITS) {
      for (let a = 40; a <= 120; a++) {
        const chain = floodChain(steps, a, squareBits, headroom);
        if (!chain) continue;
        if (chain.totalBits > MAX_BITS_128[N]) break; // the chain only grows with a
        const rho = floodNoiseBound(analysis, a, chain) * PRIME_SIZE_MARGIN;
        if (floodSigma(rho, lambda) * Math.sqrt(N / 2) > target) continue;
        const better = !best || chain.dataBits.length < best.chain.dataBits.length || (chain.dataBits.length === best.chain.dataBits.length && chain.totalBits < best.chain.totalBits);
        if (better) best = { a, chain, rho };
        break;
      }
    }
    if (!best) {
      why = `no chain within the 128-bit bound ${MAX_BITS_128[N]} of ring ${N} gives the flood 2^-${FLOOD_PRECISION_BITS} precision`;
      continue;
    }
    const { a, chain, rho } = best;
    const params: CkksParams = { scheme: 'ckks', polyModulusDegree: N, coeffModulusBits: [...chain.dataBits, SPECIAL_PRIME_BITS], securityLevel: 128 };
    const program: Program = { params, inputScaleBits: a, steps, galoisSteps: rotationsOf(steps), relin: steps.some((s) => s.op === 'square') };
    program.privacy = 'flood';
    // log2 B, rounded up (B = rho Delta_out, at the nominal output scale: PRIME_SIZE_MARGIN covers the actual one).
    program.noiseL2Bits = Math.ceil((Math.log2(rho) + chain.outScaleBits) * 100) / 100;
    program.resultPrimes = chain.resultPrimes;
    program.floodSecurityBits = lambda;
    return { program, masks, input, output };
  }
  throw new SealedError('bad-data', `privacy flood: ${why}`, 'use fewer layers, or privacy none');
}

function denseStep(layer: Dense, layout: Layout, S: number, pending: { a: number[]; g: number[] } | undefined, last: boolean, maskBase: number) {
  const out = layer.weights.length;
  const n = layer.weights[0].length;
  if (n !== layout.slot.length) throw new SealedError('bad-data', `a dense layer takes ${n} inputs but receives ${layout.slot.length}`);
  const m = nextPow2(out);
  if (m > S) throw new SealedError('bad-data', `a dense layer of ${out} outputs does not fit ${S} slots`, 'use narrower layers');
  // A wider layer than its input's period reads the input over m slots: the layout repeats
  // every period across all slots, so it also repeats every m (both powers of two).
  const P = Math.max(layout.period, m);
  const featureAt = new Int32Array(P).fill(-1);
  layout.slot.forEach((s, j) => (featureAt[s] = j));
  const w = (o: number, j: number) => layer.weights[o][j] * (pending ? pending.a[j] : 1);
  const diagonals: Diagonal[] = [];
  for (let d = 0; d < m; d++) {
    const mask = new Float64Array(S);
    for (let t = 0; t < S; t++) {
      const o = t % m;
      const j = featureAt[(t + d) % P];
      if (o < out && j >= 0) mask[t] = w(o, j);
    }
    diagonals.push({ offset: d, mask });
  }
  const folds: number[] = [];
  for (let f = m; f < P; f *= 2) folds.push(f);
  const parts = bsgsStep(diagonals, squareSplit(m), folds, !last, maskBase);
  const perOut = layer.bias.map((b, o) => (pending ? layer.weights[o].reduce((acc, wj, j) => acc + wj * pending.g[j], b) : b));
  const bias = new Float64Array(S);
  for (let t = 0; t < S; t++) if (t % m < out) bias[t] = perOut[t % m];
  parts.step.bias = maskBase + parts.masks.length;
  parts.masks.push(bias);
  return parts;
}

/**
 * A first dense layer (out x n) where the client controls the layout: the R = slots/period
 * copies of the input are interleaved (slot R*s + c) and copy c is pre-rotated by c*m/R, so a
 * rotation by R*j serves diagonal j of every copy at once: m/R diagonals instead of m. Folds:
 * 1, 2, ..., R/2 (the copies), then R*m, 2R*m, ... (the hybrid method's blocks). Output o ends
 * at slot R*o, repeated every R*m slots.
 */
function firstDenseStep(layer: Dense, n: number, period: number, S: number, last: boolean, maskBase: number) {
  const out = layer.weights.length;
  const m = nextPow2(out);
  const R = S / period;
  const per = m / R; // diagonals per copy
  const inputAt = (s: number, c: number) => (s + c * per) % period; // feature read at slot R*s + c
  const diagonals: Diagonal[] = [];
  for (let j = 0; j < per; j++) {
    const mask = new Float64Array(S);
    for (let s = 0; s < period; s++)
      for (let c = 0; c < R; c++) {
        const o = s % m;
        const f = inputAt(s + j, c);
        if (o < out && f < n) mask[R * s + c] = layer.weights[o][f];
      }
    diagonals.push({ offset: R * j, mask });
  }
  const folds: number[] = [];
  for (let f = 1; f < R; f *= 2) folds.push(f);
  for (let f = R * m; f < S; f *= 2) folds.push(f);
  const b = 2 ** Math.ceil(Math.log2(Math.max(1, per)) / 2);
  const parts = bsgsStep(diagonals, (d) => [d - (d % (R * b)), d % (R * b)], folds, !last, maskBase);
  const bias = new Float64Array(S);
  for (let s = 0; s < period; s++) if (s % m < out) bias[R * s] = layer.bias[s % m];
  parts.step.bias = maskBase + parts.masks.length;
  parts.masks.push(bias);
  const featureSlots = Array.from({ length: n }, (_, f) => Array.from({ length: R }, (_, c) => R * ((((f - c * per) % period) + period) % period) + c));
  const layout: Layout = { period: R * m, slot: Int32Array.from({ length: out }, (_, o) => R * o) };
  return { parts, featureSlots, layout };
}
