// Choosing the ring degree and modulus chain: the smallest ring that holds the layout and the
// bits the program needs, at 128-bit security. Every rescale consumes one prime of
// `levelBits`; the first prime must hold the final scale plus the largest value (headroom).
import { MAX_BITS_128, type CkksParams } from '../fhe/params.ts';
import { SealedError } from '../errors.ts';

export interface ChainRequest {
  depth: number;
  slotsNeeded: number;
  inputScaleBits: number;
  /** log2 of the scale the result ends at (input scale + last layer's weight scale). */
  finalScaleBits: number;
  /** log2 of the largest |value| any slot takes, with margin. */
  headroomBits: number;
  levelBits?: number;
}

export function chooseParams(r: ChainRequest): CkksParams {
  const levelBits = r.levelBits ?? r.inputScaleBits;
  const q0 = r.finalScaleBits + r.headroomBits + 1;
  if (q0 > 60) {
    throw new SealedError(
      'bad-data',
      `the model's values need ${q0} bits in the first prime, over SEAL's 60`,
      'standardise the features, or lower the weight scale',
    );
  }
  const bits = [q0, ...Array<number>(r.depth).fill(levelBits)];
  bits.push(Math.max(...bits)); // special prime: at least as large as any data prime
  const total = bits.reduce((a, b) => a + b, 0);
  for (const n of [4096, 8192, 16384, 32768]) {
    if (n / 2 >= r.slotsNeeded && total <= MAX_BITS_128[n]) return { scheme: 'ckks', polyModulusDegree: n, coeffModulusBits: bits, securityLevel: 128 };
  }
  throw new SealedError('bad-data', `no 128-bit parameter set holds ${total} modulus bits and ${r.slotsNeeded} slots`, 'reduce the model depth or size');
}
