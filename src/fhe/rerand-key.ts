import { SealedError } from '../errors.ts';
import { floodNoiseResidues } from './flood-wide.ts';
import { randomWords, smallNoise, ternary } from './noise.ts';
import { mulmod, NegacyclicNtt, reduceSmall } from './ntt.ts';

// Batch mode (raw residues, primes below 2^26): the client's re-randomization key and the
// server's step. The key covers the data primes of the batch parameters (results stay at the
// top level in batch mode).

/**
 * The client's re-randomization key for results of `size` polynomials: (a_0, .., a_{size-1}) per
 * data prime, residues in NTT form, a_0 = -(a_1 s + a_2 s^2) + e. The bytes it uploads:
 *   "SRK1" | size u32 | primes u32 | degree u32 | prime values u32 x primes | residues u32 [poly][prime][coeff]
 */
export interface RerandKey {
  size: number;
  degree: number;
  primes: number[];
  /** [poly][prime][coeff] */
  residues: Uint32Array;
}

const KEY_MAGIC = 0x314b5253; // "SRK1"

/**
 * The secret key's residues (NTT form) for the first `primes` primes, from SEAL's bytes: a
 * SecretKey is saved as a Plaintext of (data primes + special prime) x N residues, last in the
 * stream (SEALHeader | parms_id | coeff_count | scale | DynArray header | count | data).
 */
export function secretKeyResidues(skUncompressed: Uint8Array, degree: number, allPrimes: number, primes: number): Uint32Array {
  const count = degree * allPrimes;
  const at = skUncompressed.length - 8 * count;
  const v = new DataView(skUncompressed.buffer, skUncompressed.byteOffset, skUncompressed.byteLength);
  if (at < 0 || Number(v.getBigUint64(at - 8, true)) !== count) throw new SealedError('bad-keys', 'the secret key does not have the expected layout');
  const out = new Uint32Array(degree * primes);
  for (let i = 0; i < out.length; i++) out[i] = Number(v.getBigUint64(at + 8 * i, true));
  return out;
}

/** Makes the re-randomization key (client side; `s`: secretKeyResidues for the data primes). */
export function makeRerandKey(s: Uint32Array, primes: number[], degree: number, size: 2 | 3 | 5 | 9): RerandKey {
  const N = degree;
  const residues = new Uint32Array(size * primes.length * N);
  const e = smallNoise(N);
  const at = (poly: number, p: number) => (poly * primes.length + p) * N;
  primes.forEach((q, p) => {
    const ntt = NegacyclicNtt.of(q, N);
    const eHat = reduceSmall(e, q);
    ntt.forward(eHat);
    const uni = randomWords(2 * (size - 1) * N);
    for (let c = 0; c < N; c++) {
      const sc = s[p * N + c];
      let power = sc; // s^j at this NTT point
      let acc = 0;
      for (let j = 1; j < size; j++) {
        // 64 random bits modulo q: bias below 2^-38, negligible.
        const aj = (uni[2 * ((j - 1) * N + c)] * 4294967296 + uni[2 * ((j - 1) * N + c) + 1]) % q;
        residues[at(j, p) + c] = aj;
        acc = (acc + mulmod(aj, power, q)) % q;
        power = mulmod(power, sc, q);
      }
      residues[at(0, p) + c] = (q - acc + eHat[c]) % q;
    }
  });
  return { size, degree, primes: [...primes], residues };
}

/** Bytes of a saved re-randomization key. */
export const rerandKeyBytes = (primes: number, degree: number, size: number) => 16 + 4 * primes + 4 * size * primes * degree;

export function saveRerandKey(k: RerandKey): Uint8Array {
  const head = 16 + 4 * k.primes.length;
  const out = new Uint8Array(head + 4 * k.residues.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, KEY_MAGIC, true);
  v.setUint32(4, k.size, true);
  v.setUint32(8, k.primes.length, true);
  v.setUint32(12, k.degree, true);
  k.primes.forEach((q, i) => v.setUint32(16 + 4 * i, q, true));
  new Uint8Array(out.buffer, head).set(new Uint8Array(k.residues.buffer, k.residues.byteOffset, 4 * k.residues.length));
  return out;
}

/** Loads and checks a re-randomization key against the parameters the server expects. */
export function loadRerandKey(bytes: Uint8Array, primes: number[], degree: number, size: number): RerandKey {
  const bad = (why: string) => new SealedError('bad-keys', `the re-randomization key ${why}`, 'make keys for this model with `sealed keygen`');
  if (bytes.length < 16) throw bad('is truncated');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint32(0, true) !== KEY_MAGIC) throw bad('is not a sealed re-randomization key');
  if (v.getUint32(4, true) !== size) throw bad(`has ${v.getUint32(4, true)} polynomials, results have ${size}`);
  // A client older than the bundle's result rescale makes its key at the results' level, not the flood's.
  if (v.getUint32(8, true) !== primes.length || v.getUint32(12, true) !== degree)
    throw bad(
      `is for ${v.getUint32(8, true)} primes at ring degree ${v.getUint32(12, true)}; this model floods its results at ${primes.length} primes, ring degree ${degree} (a client older than the model makes it for another level: update the client)`,
    );
  const head = 16 + 4 * primes.length;
  if (bytes.length !== head + 4 * size * primes.length * degree) throw bad('has the wrong length');
  primes.forEach((q, i) => {
    if (v.getUint32(16 + 4 * i, true) !== q) throw bad('is for other primes');
  });
  const residues = new Uint32Array(size * primes.length * degree);
  new Uint8Array(residues.buffer).set(bytes.subarray(head));
  for (let poly = 0; poly < size; poly++)
    primes.forEach((q, p) => {
      const o = (poly * primes.length + p) * degree;
      for (let c = 0; c < degree; c++) if (residues[o + c] >= q) throw bad('has a residue above its prime');
    });
  return { size, degree, primes: [...primes], residues };
}

/**
 * Re-randomizes and floods one result in place: `residues` at `offset` hold its `size`
 * polynomials, [poly][prime][coeff], NTT form (as the batch kernel writes them).
 */
export function rerandomizeResidues(key: RerandKey, residues: Uint32Array, offset: number, sigma: number, ntts: NegacyclicNtt[]): void {
  const { size, degree: N, primes } = key;
  const u = ternary(N);
  const floods = floodNoiseResidues(N, sigma, primes);
  const e = Array.from({ length: size }, () => smallNoise(N));
  // Two scratch polynomials for every prime and polynomial: a fresh one each was ~100 arrays of
  // N doubles per result, new memory paid page by page (1.6 s of a LeNet batch's server, --cpu-prof).
  const uHat = new Float64Array(N);
  const scratch = new Float64Array(N);
  for (let p = 0; p < primes.length; p++) {
    const q = primes[p];
    reduceSmallInto(u, q, uHat);
    ntts[p].forward(uHat);
    for (let poly = 0; poly < size; poly++) {
      const eHat = poly === 0 ? addSmall(floods[p], e[0], q) : reduceSmallInto(e[poly], q, scratch);
      ntts[p].forward(eHat);
      const k = (poly * primes.length + p) * N;
      mulAddInto(residues, offset + k, uHat, key.residues, k, eHat, q, N);
    }
  }
}

/** reduceSmall into `out` (x.length long). */
function reduceSmallInto(x: ArrayLike<number>, q: number, out: Float64Array): Float64Array {
  for (let i = 0; i < x.length; i++) out[i] = x[i] < 0 ? x[i] + q : x[i];
  return out;
}

/** a + e modulo q in place (a in [0, q), |e| < q). */
function addSmall(a: Float64Array, e: Int32Array, q: number): Float64Array {
  for (let c = 0; c < a.length; c++) {
    const f = a[c] + e[c];
    a[c] = f < 0 ? f + q : f >= q ? f - q : f;
  }
  return a;
}

/**
 * dst[at + c] = u[c] key[k + c] + e[c] + dst[at + c] mod q, every term in [0, q). The quotient
 * from x (1 / q) is off by at most one (x / q < 2^27, relative error ~2^-52) and the product is
 * below 2^52, so every step is exact: no division in the loop.
 */
function mulAddInto(dst: Uint32Array, at: number, u: Float64Array, key: Uint32Array, k: number, e: Float64Array, q: number, n: number): void {
  const qInv = 1 / q;
  for (let c = 0; c < n; c++) {
    const prod = u[c] * key[k + c];
    let v = prod - Math.floor(prod * qInv) * q + e[c] + dst[at + c];
    v -= Math.floor(v * qInv) * q;
    dst[at + c] = v < 0 ? v + q : v >= q ? v - q : v;
  }
}
