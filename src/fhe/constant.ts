// Constant plaintexts (every slot the same value) built directly in NTT form. CKKS encodes a
// constant vector as the constant polynomial round(v * scale), and the NTT of a constant
// polynomial is that constant at every point, so the plaintext is, per prime q, N copies of
// round(v * scale) mod q: what SEAL's encoder computes through a full inverse FFT and an NTT per
// prime (test/unit/constant.test.ts checks the bytes are the same). The tree evaluator needs
// one per (leaf, output) per batch: at ring 16384 with 5 primes on the 2-core VM, 3.4 ms each
// with the encoder (5.1 ms in another hour), 0.54 ms built here.
import type { Plaintext } from 'node-seal/throws';
import type { CkksSession } from './ckks.ts';
import { writeSealHeader } from './raw-ciphertext.ts';

// A Plaintext as SEAL 4.x saves it uncompressed: SEALHeader (16) | parms_id (32) | coeff_count
// u64 | scale f64 | DynArray: SEALHeader (16) | count u64 | count x u64.
const HEADER = 16;
const PARMS = HEADER;
const COEFF_COUNT = PARMS + 32;
const SCALE = COEFF_COUNT + 8;
const DYN = SCALE + 8;
const COUNT = DYN + HEADER;
const DATA = COUNT + 8;

/**
 * The plaintext of `value` in every slot at scale 2^scaleBits, at the top data level (NTT form).
 * With `liftBits`, value is still rounded at 2^scaleBits and the plaintext is that integer times
 * 2^liftBits, at scale 2^(scaleBits + liftBits): the same rounded value at a larger scale, exactly.
 */
export function constantPlaintext(s: CkksSession, value: number, scaleBits: number, liftBits = 0): Plaintext {
  const level = s.shape.data[0];
  const N = s.shape.degree;
  const count = N * level.primes.length;
  const bytes = new Uint8Array(DATA + 8 * count);
  const v = new DataView(bytes.buffer);
  writeSealHeader(v, 0, bytes.length);
  bytes.set(level.parmsId, PARMS);
  v.setBigUint64(COEFF_COUNT, BigInt(count), true);
  v.setFloat64(SCALE, 2 ** (scaleBits + liftBits), true);
  writeSealHeader(v, DYN, HEADER + 8 + 8 * count);
  v.setBigUint64(COUNT, BigInt(count), true);
  // Rounded as SEAL rounds (half away from zero); exact: |value| 2^scaleBits is far below 2^64.
  const scaled = value * 2 ** scaleBits;
  const c = BigInt(Math.sign(scaled) * Math.round(Math.abs(scaled))) << BigInt(liftBits);
  const data = new BigUint64Array(bytes.buffer, DATA, count);
  level.primes.forEach((q, p) => data.fill(((c % q) + q) % q, p * N, (p + 1) * N));
  const pt = new s.seal.Plaintext();
  try {
    pt.loadFromArray(s.context, bytes);
    return pt;
  } catch (e) {
    pt.delete();
    throw e;
  }
}
