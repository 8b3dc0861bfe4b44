// The leaves-in-slots layout of one tree-ensemble record as plain data (the placement is made by
// src/model/trees/slots.ts, the evaluation is tree-slots.ts), and the client's side of it: the
// keys its rotations need and the query, its thermometer bits replicated with the layout's
// period and rotated by 0 .. copies - 1 positions (the baby steps the client sends).
import { SealedError } from '../errors.ts';
import type { CkksSession } from './ckks.ts';
import { saveGaloisKeys, saveKeys, type SecretKeyHolder } from './keys.ts';
import { guard, release } from './seal.ts';
import { makePublicKey } from './single-privacy.ts';

/** Where the leaves and their factors sit: plain data, made by src/model/trees/slots.ts. */
export interface SlotsLayout {
  /** Ciphertext slots (N / 2); the vectors below repeat over them. */
  slots: number;
  /** Rotated copies of its input the client sends: diagonal d is copy d mod copies, giant step d - (d mod copies). */
  copies: number;
  /** Diagonal d -> its mask over one period. */
  masks: Map<number, Float64Array>;
  /** Added to the gathered factors, over one period (its length is the period: 4 segments). */
  constant: Float64Array;
  /** Per output, each position's leaf value (their length is the segment). */
  leafValues: Float64Array[];
  /**
   * Slots per position (1 when absent): position p of a vector sits in slots p G .. p G + G - 1,
   * and every rotation is G times longer. It needs G periods of room in the slots and lets G
   * outputs share a result ciphertext: slot t of result c adds output c G + (t mod G)'s leaf
   * values (stretchedLeafValues), so the folds sum each output's own slots and no slot holds a
   * partial sum across outputs (which would show differences of leaf values to the client).
   */
  stretch?: number;
}

/** Slots per position (SlotsLayout.stretch). */
export const stretchOf = (layout: Pick<SlotsLayout, 'stretch'>): number => layout.stretch ?? 1;

/** Whether a stretch is one a layout of this period can take: a power of two, G periods within the slots. */
export const validStretch = (G: number, period: number, slots: number): boolean => Number.isInteger(G) && G >= 1 && (G & (G - 1)) === 0 && G * period <= slots;

/** Result ciphertexts of `outputs` stretched by G: output k is in result floor(k / G), in every slot t with t mod G = k mod G. */
export const resultCount = (outputs: number, G: number): number => Math.ceil(outputs / G);

/** A layout's result ciphertexts (resultCount). */
export const resultsOf = (layout: Pick<SlotsLayout, 'stretch' | 'leafValues'>): number => resultCount(layout.leafValues.length, stretchOf(layout));

/** Where output k's score is: its result ciphertext and a slot that holds it. */
export const resultSlot = (layout: Pick<SlotsLayout, 'stretch'>, k: number): [number, number] => [Math.floor(k / stretchOf(layout)), k % stretchOf(layout)];

export interface SlotsScales {
  inputScaleBits: number;
  /** The masks' scale: the gather rescales by the prime after the data primes, of this size. */
  maskScaleBits: number;
  leafScaleBits: number;
  /** Primes dropped (mod switches) before the folds: the result's level is RESULT_LEVEL + resultDrop. */
  resultDrop?: number;
}

/**
 * Levels (primes dropped) at which the leaf values multiply: the gather's rescale by the mask
 * prime, then one rescale per segment product. One more rescale follows them, so the leaf sum's
 * folds and the result are at RESULT_LEVEL: key switches there cost about a quarter of the top's.
 */
export const LEAF_LEVEL = 3;
export const RESULT_LEVEL = 4;

/** The giant rotation of diagonal d. */
export const giantOf = (layout: Pick<SlotsLayout, 'copies'>, d: number): number => d - (d % layout.copies);

/** Rotation steps the Galois keys must hold: the giant steps, the two segment products, the sum's folds (in slots: x G). */
export function slotsRotations(layout: Pick<SlotsLayout, 'masks' | 'copies' | 'leafValues' | 'stretch'>): number[] {
  const segment = layout.leafValues[0].length;
  const giants = new Set([...layout.masks.keys()].map((d) => giantOf(layout, d)).filter((g) => g > 0));
  const folds = Array.from({ length: Math.log2(segment) }, (_, j) => 2 ** j);
  return [...new Set([...giants, 2 * segment, segment, ...folds])].map((r) => r * stretchOf(layout)).sort((a, b) => a - b);
}

/** v repeated over the slots, rotated by `shift` positions, each position in `stretch` slots. */
export const spread = (v: ArrayLike<number>, slots: number, shift = 0, stretch = 1) =>
  Float64Array.from({ length: slots }, (_, t) => v[(((Math.floor(t / stretch) + shift) % v.length) + v.length) % v.length]);

/** Result c's leaf values over the slots: slot t holds output c G + (t mod G)'s value at position floor(t / G) (0 past the last output). */
export function stretchedLeafValues(layout: Pick<SlotsLayout, 'slots' | 'leafValues' | 'stretch'>, c: number): Float64Array {
  const G = stretchOf(layout);
  const segment = layout.leafValues[0].length;
  return Float64Array.from({ length: layout.slots }, (_, t) => layout.leafValues[c * G + (t % G)]?.[Math.floor(t / G) % segment] ?? 0);
}

/**
 * Client side: the evaluation keys a layout's queries need, from a secret key: seeded, packed
 * at the primes' widths (keys.ts saveKeys; not zstd, which a worker took ~1-1.6 s to undo for
 * breast cancer's 17 rotations).
 */
export function makeSlotsKeys(
  s: CkksSession,
  secretKey: Uint8Array,
  steps: number[],
): { galoisKeys: Uint8Array; relinKeys: Uint8Array; publicKey: Uint8Array } {
  const sk = new s.seal.SecretKey();
  guard('bad-keys', 'the secret key', () => sk.loadFromArray(s.context, secretKey));
  const kg = new s.seal.KeyGenerator(s.context, sk);
  const rk = kg.createRelinKeysSerializable();
  try {
    return { galoisKeys: saveGaloisKeys(s, kg, steps), relinKeys: saveKeys(s, rk), publicKey: makePublicKey(s, secretKey) };
  } finally {
    release(rk, kg, sk);
  }
}

/** What the client knows of a layout: the slots, the copies it sends, the period of its bits, the slots per position. */
export interface SlotsShape {
  slots: number;
  copies: number;
  period: number;
  stretch?: number;
}

/** Client side: the query, `copies` ciphertexts: the bits replicated with the period, rotated by 0 .. copies - 1 positions. */
export function encryptSlotsQuery(holder: SecretKeyHolder, shape: SlotsShape, inputScaleBits: number, bits: ArrayLike<number>): Uint8Array[] {
  const { period, slots, copies } = shape;
  if (bits.length > period) throw new SealedError('bad-data', `${bits.length} bits: the layout's period holds ${period}`);
  const x = Float64Array.from({ length: period }, (_, i) => (i < bits.length ? bits[i] : 0));
  // Uncompressed (seeded): each part of the gather loads most copies, and zstd was ~60% of a load.
  // Not packed at the primes' widths either: 23% fewer bytes, but unpacking each copy (~0.8 ms)
  // on the parts' path cost more server time than the smaller download saved (served, alternated).
  return Array.from({ length: copies }, (_, j) => holder.encryptUncompressed(spread(x, slots, j, shape.stretch), inputScaleBits));
}
