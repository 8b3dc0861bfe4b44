// The single-record form of a tree bundle: the leaves-in-slots layout (slots.ts) compiled next
// to the batch circuit, at its own CKKS parameters (slotsChain), so with keys of its own. The
// server part holds the layout (masks, constants, leaf values). The client part holds what
// encrypting one record needs: parameters, scales, copies, period and rotation steps. The steps
// are the giant steps the placement uses (9 of 31 for breast cancer), the two products' and the
// folds': a little of the layout, as a network's steps say a little of its architecture
// (docs/threat-model.md). Every giant step would hide it at twice the keys: 245 MB (zstd) to upload and
// ~530 MB of SEAL memory per loaded key set at ring 16384, against 106 and ~250.
import { SealedError } from '../../errors.ts';
import { checkParams, type CkksParams } from '../../fhe/params.ts';
import type { Privacy } from '../../fhe/privacy.ts';
import { resultCount, slotsRotations, validStretch, type SlotsLayout } from '../../fhe/tree-slots-layout.ts';
import { MAX_SPARES } from '../../fhe/single-privacy.ts';
import { SEGMENTS, placeLeaves, slotsLeaves } from './slots.ts';
import { affordablePrecision } from './precision.ts';
import { slotsChain, slotsNoiseBound, slotsScales } from './slots-chain.ts';

/** Rotated copies of its record the client sends (baby steps): 29 MB of query at ring 16384 (seeded, uncompressed). */
export const SINGLE_COPIES = 32;
const SLOTS = 8192;

export interface SingleClientPart {
  params: CkksParams;
  input_scale_bits: number;
  copies: number;
  period: number;
  galois_steps: number[];
  /** Slots per position (SlotsLayout.stretch): output k is in result k / stretch, slot k mod stretch; absent: 1. */
  stretch?: number;
}

export interface SingleServerPart {
  params: CkksParams;
  inputScaleBits: number;
  maskScaleBits: number;
  leafScaleBits: number;
  /** Data primes dropped before the folds (slots.ts resultDrop); absent (0) in bundles from before it. */
  resultDrop?: number;
  copies: number;
  /** Slots per position (SlotsLayout.stretch; absent: 1, as bundles from before it). */
  stretch?: number;
  /** The rotations the layout makes (the keys must hold them). */
  galoisSteps: number[];
  /** Diagonal d -> its nonzero mask entries [slot, value] over one period. */
  masks: [number, [number, number][]][];
  /** Nonzero entries [slot, value] of the constant added to the gathered factors. */
  constant: [number, number][];
  /**
   * Per output, each position's leaf value: a segment (256 or 512 positions; the period is four
   * segments). Bundles compiled before several outputs hold one output's list as a flat number[].
   */
  leafValues: number[][] | number[];
  privacy: Privacy;
  /** log2 of the bound on the unflooded result's honest noise |v|_2 (slotsNoiseBound x the result's scale). */
  noiseL2Bits: number;
  floodSecurityBits: number;
}

/**
 * Memory the serving workers of a process share for the form: the gather's masks (one polynomial
 * per diagonal, in memory every worker's kernel reads, src/fhe/gather-kernel.ts SharedMasks).
 */
export function singleMasksBytes(part: SingleServerPart): number {
  return part.masks.length * (part.params.coeffModulusBits.length - 1) * part.params.polyModulusDegree * 8;
}

/**
 * Memory a serving worker holds for the form beyond the shared masks (singleMasksBytes), in SEAL
 * and in its gather kernel (src/fhe/gather-kernel.ts): the constant and the leaf values (SEAL), one loaded key set (the Galois keys and the
 * relinearization key: each L key-switching components of two polynomials over the L + 1 primes
 * of the key level), and the query's copies a part loads (at most all, two polynomials each at
 * the top level) twice: SEAL's, then the kernel's; the kernel's accumulators, output and scratch
 * (under four polynomials); the flood masks made ahead (MAX_SPARES, two polynomials each); one
 * key's bytes (seeded: one polynomial per component) twice, packed and unpacked, kept for the next
 * key set, and SEAL's copy of them while it loads (src/fhe/load.ts loads a set one key at a time).
 * WebAssembly heaps keep the room once grown.
 */
export function singleWorkerBytes(part: SingleServerPart): number {
  const poly = part.params.polyModulusDegree * 8;
  const L = part.params.coeffModulusBits.length - 1;
  const kernel = part.copies * 2 * L * poly + 4 * L * poly;
  const spares = MAX_SPARES * 2 * L * poly;
  return (
    (1 + singleResults(part)) * L * poly +
    (part.galoisSteps.length + 1) * L * 2 * (L + 1) * poly +
    3 * L * (L + 1) * poly +
    part.copies * 2 * L * poly +
    kernel +
    spares
  );
}

/** The form's outputs. */
export function singleOutputs(part: Pick<SingleServerPart, 'leafValues'>): number {
  return Array.isArray(part.leafValues[0]) ? part.leafValues.length : 1;
}

/** The form's result ciphertexts: stretch outputs in each. */
export function singleResults(part: Pick<SingleServerPart, 'leafValues' | 'stretch'>): number {
  return resultCount(singleOutputs(part), part.stretch ?? 1);
}

/**
 * A bound on the size of the form's keys object (wire kind 2): seeded Galois and
 * relinearization keys (each L components of one polynomial over the key level's L + 1 primes;
 * SEAL's zstd only shrinks them) and a seeded public key.
 */
export function singleKeysBytesBound(part: SingleServerPart): number {
  const poly = part.params.polyModulusDegree * 8;
  const L = part.params.coeffModulusBits.length - 1;
  return (part.galoisSteps.length + 1) * L * (L + 1) * poly + 2 * (L + 1) * poly + 64 * 1024;
}

/**
 * The single-record form of an ensemble's leaves (the batch circuit's, with literals), or why it
 * has none: more leaves than a segment, or no chain within 128-bit security that holds the flood.
 */
export function compileSingle(
  leaves: { lits: number[]; values: number[] }[],
  offsets: number[],
  inputs: number,
  outputs: number,
  scoreBound: number,
  precisionBits: number,
  privacy: Privacy,
  lambda: number,
): { client: SingleClientPart; server: SingleServerPart; precisionBits: number } | { refused: string } {
  if (leaves.some((l) => l.values.length !== outputs)) throw new SealedError('internal', `a leaf without ${outputs} values`);
  let layout: SlotsLayout;
  let chain: ReturnType<typeof slotsChain>;
  let heldBits: number;
  try {
    layout = placeLeaves(slotsLeaves(leaves, offsets), inputs, SINGLE_COPIES, SLOTS);
    // Several outputs share result ciphertexts (as many as the slots hold periods, in powers of
    // two): fewer leaf products, folds and floods. One output keeps one slot per position.
    if (outputs > 1) layout.stretch = Math.min(SLOTS / layout.constant.length, 2 ** Math.ceil(Math.log2(outputs)));
    // Precision above the floor only while it takes no other prime (precision.ts).
    ({ chain, bits: heldBits } = affordablePrecision(
      precisionBits,
      (bits) => slotsChain(layout, scoreBound, { lambda, precisionBits: bits }),
      (c) => c.dataBits.length,
    ));
  } catch (e) {
    if (e instanceof SealedError) return { refused: e.message };
    throw e;
  }
  const params: CkksParams = {
    scheme: 'ckks',
    polyModulusDegree: 2 * SLOTS,
    coeffModulusBits: [...chain.dataBits, chain.maskBits, 60],
    securityLevel: 128,
  };
  const resultBits = slotsScales(chain).sOut;
  const sparse = (v: ArrayLike<number>) => Array.from(v, (x, i) => [i, x] as [number, number]).filter(([, x]) => x !== 0);
  return {
    client: {
      params,
      input_scale_bits: chain.inputBits,
      copies: SINGLE_COPIES,
      period: layout.constant.length,
      galois_steps: slotsRotations(layout),
      ...(layout.stretch && { stretch: layout.stretch }),
    },
    server: {
      params,
      galoisSteps: slotsRotations(layout),
      inputScaleBits: chain.inputBits,
      maskScaleBits: chain.maskBits,
      leafScaleBits: chain.leafBits,
      resultDrop: chain.resultDrop,
      copies: SINGLE_COPIES,
      ...(layout.stretch && { stretch: layout.stretch }),
      masks: [...layout.masks].sort(([x], [y]) => x - y).map(([d, m]) => [d, sparse(m)]),
      constant: sparse(layout.constant),
      leafValues: layout.leafValues.map((v) => Array.from(v)),
      privacy,
      noiseL2Bits: Math.log2(slotsNoiseBound(layout, chain)) + resultBits,
      floodSecurityBits: lambda,
    },
    precisionBits: heldBits,
  };
}

/** The layout a server part holds, checked: entries inside the period, finite values, a chain that holds it. */
export function singleLayout(part: SingleServerPart, where: string): SlotsLayout {
  const bad = (why: string) => new SealedError('bad-bundle', `${where}: the single-record layout ${why}`, 'compile the model again');
  checkParams(part.params);
  const slots = part.params.polyModulusDegree / 2;
  if (part.params.coeffModulusBits.length < 3 || part.params.coeffModulusBits.at(-2) !== part.maskScaleBits) throw bad('has a chain without its mask prime');
  // The result keeps at least one prime: the chain's data primes, less the three rescales, less the drop.
  const drop = part.resultDrop ?? 0;
  if (!Number.isInteger(drop) || drop < 0 || drop > part.params.coeffModulusBits.length - 2 - 3 - 1) throw bad(`drops ${JSON.stringify(drop)} primes`);
  if (!Array.isArray(part.leafValues) || part.leafValues.length === 0) throw bad('has no leaf values');
  const perOutput = (Array.isArray(part.leafValues[0]) ? part.leafValues : [part.leafValues]) as unknown[];
  const SEGMENT = Array.isArray(perOutput[0]) ? perOutput[0].length : 0;
  if (!(SEGMENTS as readonly number[]).includes(SEGMENT)) throw bad(`has ${SEGMENT} leaf values, not ${SEGMENTS.join(' or ')}`);
  if (!perOutput.every((v) => Array.isArray(v) && v.length === SEGMENT)) throw bad(`has outputs with other than ${SEGMENT} leaf values`);
  const leafValues = (perOutput as unknown[][]).map((v) => {
    if (!v.every(Number.isFinite)) throw bad('has a leaf value that is not a number');
    return Float64Array.from(v as number[]);
  });
  const PERIOD = 4 * SEGMENT;
  if (!Number.isInteger(part.copies) || part.copies < 1 || PERIOD % part.copies !== 0) throw bad(`has ${part.copies} copies, not a divisor of ${PERIOD}`);
  const dense = (entries: unknown, length: number, what: string) => {
    const v = new Float64Array(length);
    if (!Array.isArray(entries)) throw bad(`has no ${what}`);
    for (const e of entries) {
      if (!Array.isArray(e) || !Number.isInteger(e[0]) || e[0] < 0 || e[0] >= length || !Number.isFinite(e[1])) throw bad(`has a bad entry in ${what}`);
      v[e[0] as number] = e[1] as number;
    }
    return v;
  };
  const masks = new Map<number, Float64Array>();
  if (!Array.isArray(part.masks) || part.masks.length === 0) throw bad('has no masks');
  for (const [d, entries] of part.masks) {
    if (!Number.isInteger(d) || d < 0 || d >= PERIOD || masks.has(d)) throw bad(`has a diagonal ${JSON.stringify(d)}`);
    masks.set(d, dense(entries, PERIOD, `diagonal ${d}`));
  }
  if (!Number.isFinite(part.noiseL2Bits)) throw bad('has no noise bound');
  const stretch = part.stretch ?? 1;
  if (!validStretch(stretch, PERIOD, slots)) throw bad(`stretches each position over ${JSON.stringify(stretch)} slots, not a power of two with room for it`);
  const layout: SlotsLayout = { slots, copies: part.copies, masks, constant: dense(part.constant, PERIOD, 'the constant'), leafValues, stretch };
  if (JSON.stringify(part.galoisSteps) !== JSON.stringify(slotsRotations(layout))) throw bad('names other rotations than it makes');
  return layout;
}
