// The single layout's steps for a network: buildNetwork lays the layers out in the slots and
// emits their linear steps (bsgsStep, denseStep, firstDenseStep, and the layouts of
// network-layouts.ts) and squares, with their masks. The layouts are described at the top of
// compile-network.ts.
import { SealedError } from '../errors.ts';
import { depthOf, opCountsByLevel, rotationsOf, type LinearStep, type Program, type Step } from '../fhe/program.ts';
import { bsgsStep, nextPow2, squareSplit, type Diagonal } from './diagonal.ts';
import type { InputLayout, OutputLayout } from './layout.ts';
import { convOutputShape, parityCol, parityRow, perFeature, type Dense, type Network } from './network.ts';
import {
  foldedBias,
  replicatedFirstDense,
  replicatedTerms,
  rowSumFits,
  rowSumStep,
  sparseSpacing,
  sparseStep,
  type Layout,
  type Pending,
} from './network-layouts.ts';

export interface BuiltNetwork {
  steps: Step[];
  masks: Float64Array[];
  input: InputLayout;
  output: OutputLayout;
}

/**
 * How a dense layer is laid out: 'hybrid' (denseStep), 'first' (firstDenseStep), or one of the
 * layouts of network-layouts.ts. Each layer's options depend on the layout the previous ones leave.
 */
export type DenseKind = 'hybrid' | 'first' | 'replicated' | 'rowsum' | 'sparse';
type Chooser = (denseIndex: number, options: DenseKind[]) => DenseKind;

/**
 * The steps, masks and layouts of a network in S slots (the last layer's weight scale left unset):
 * of every combination of dense layouts that applies, the cheapest by networkCost; on a tie the
 * first one tried, the hybrid/first layouts, so programs only change where another is cheaper.
 */
export function buildNetwork(net: Network, S: number): BuiltNetwork {
  return buildNetworks(net, S).cheapest;
}

/** The cheapest layouts (buildNetwork) and the hybrid ones (the same object when nothing is cheaper). */
export function buildNetworks(net: Network, S: number): { cheapest: BuiltNetwork; hybrid: BuiltNetwork } {
  // Depth-first over the choices: each build takes the first option past its prefix and
  // records the others, which are then tried as prefixes of their own.
  const best = buildNetworkWith(net, S, []);
  let bestCost = networkCost(best.built.steps);
  let winner = best.built;
  const visit = (options: DenseKind[][], chosen: DenseKind[], from: number) => {
    for (let i = from; i < options.length; i++)
      for (const alt of options[i].slice(1)) {
        const prefix = [...chosen.slice(0, i), alt];
        let tried: { built: BuiltNetwork; options: DenseKind[][]; chosen: DenseKind[] };
        try {
          tried = buildNetworkWith(net, S, prefix);
        } catch (e) {
          if (e instanceof SealedError) continue; // this combination does not fit; others may
          throw e;
        }
        const cost = networkCost(tried.built.steps);
        if (cost < bestCost) {
          bestCost = cost;
          winner = tried.built;
        }
        visit(tried.options, tried.chosen, i + 1);
      }
  };
  visit(best.options, best.chosen, 0);
  return { cheapest: winner, hybrid: best.built };
}

/**
 * A machine-independent proxy of the evaluation time, to compare layouts of one network (same
 * depth): a rotation costs about the number of primes left at its level (key switching over
 * them; measured at ring 16384: 61 ms with 7 primes, 19 ms with 3), a plaintext product about a
 * fifteenth of that. `primes`: the data primes at level 0, when the chain is known.
 */
export function networkCost(steps: Step[], primes = depthOf(steps) + 2): number {
  let cost = 0;
  for (const [key, n] of opCountsByLevel({ steps, galoisSteps: rotationsOf(steps) } as Program)) {
    const [op, at] = key.split('@');
    const left = primes - Number(at);
    if (op === 'rotate') cost += n * left;
    else if (op === 'multiplyPlain') cost += (n * left) / 15;
  }
  return cost;
}

/** The network with the dense layouts `prefix` (then the first option of each later layer), and the options it met. */
export function buildNetworkWith(net: Network, S: number, prefix: DenseKind[]): { built: BuiltNetwork; options: DenseKind[][]; chosen: DenseKind[] } {
  const options: DenseKind[][] = [];
  const chosen: DenseKind[] = [];
  const choose: Chooser = (i, opts) => {
    options.push(opts);
    const pick = i < prefix.length ? prefix[i] : opts[0];
    if (!opts.includes(pick)) throw new SealedError('internal', `dense layout ${pick} does not apply to layer ${i}`);
    chosen.push(pick);
    return pick;
  };
  return { built: buildChosen(net, S, choose), options, chosen };
}

function buildChosen(net: Network, S: number, choose: Chooser): BuiltNetwork {
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
  let pending: Pending | undefined;
  let denseIndex = 0;
  const lastDense = net.layers.map((l) => l.type).lastIndexOf('dense');

  for (let li = 0; li < net.layers.length; li++) {
    const layer = net.layers[li];
    if (layer.type === 'conv2d-parity') {
      if (li !== 0) throw new SealedError('bad-data', 'conv2d-parity must be the first layer');
      const { height: oh, width: ow, filters: F } = convOutputShape(net, layer);
      const k = layer.kernel[0].length;
      const copies = S / inPeriod;
      if (Math.ceil(F / 4) > copies)
        throw new SealedError('bad-data', `${F} filters need ${Math.ceil(F / 4)} copies of the image, ${copies} fit in ${S} slots`);
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
      if (!prev || prev.op !== 'linear' || prev.bias === undefined)
        throw new SealedError('bad-data', 'a quadratic activation must follow a conv2d or dense layer');
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
    } else {
      const out = layer.weights.length;
      const n = layer.weights[0].length;
      if (n !== layout.slot.length) throw new SealedError('bad-data', `a dense layer takes ${n} inputs but receives ${layout.slot.length}`);
      const last = li === lastDense;
      const first = li === 0 && S / inPeriod > 1 && nextPow2(out) >= S / inPeriod && nextPow2(out) <= inPeriod;
      const options: DenseKind[] = [first ? 'first' : 'hybrid'];
      if (li === 0 && replicatedTerms(out, n, S) !== undefined) options.push('replicated');
      if (rowSumFits(out, layout, S)) options.push('rowsum');
      if (sparseSpacing(out, layout) !== undefined) options.push('sparse');
      const kind = choose(denseIndex++, options);
      if (kind === 'first' || kind === 'replicated') {
        const built = kind === 'first' ? firstDenseStep(layer, n, inPeriod, S, last, masks.length) : replicatedFirstDense(layer, n, S, last, masks.length);
        add(built.parts);
        featureSlots = built.featureSlots;
        layout = built.layout;
      } else if (kind === 'rowsum' || kind === 'sparse') {
        const built = (kind === 'rowsum' ? rowSumStep : sparseStep)(layer, layout, S, pending, last, masks.length);
        add(built.parts);
        layout = built.layout;
      } else {
        add(denseStep(layer, layout, S, pending, last, masks.length));
        layout = { period: nextPow2(out), slot: Int32Array.from({ length: out }, (_, o) => o) };
      }
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
  const output: OutputLayout = { count: outCount, recordStride: S, offsets: Array.from(layout.slot) };

  return { steps, masks, input, output };
}

function denseStep(layer: Dense, layout: Layout, S: number, pending: Pending | undefined, last: boolean, maskBase: number) {
  const out = layer.weights.length;
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
  const perOut = foldedBias(layer, pending);
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
