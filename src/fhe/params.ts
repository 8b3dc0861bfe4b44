// CKKS encryption parameters: declared as plain data (so bundles and wire headers can carry
// them), checked against the HomomorphicEncryption.org 128-bit table before any context exists.
import { SealedError } from '../errors.ts';
import { guard, type Seal } from './seal.ts';
import type { SEALContext } from 'node-seal/throws';

export interface CkksParams {
  scheme: 'ckks';
  polyModulusDegree: number;
  /** Bit sizes of the coefficient-modulus primes; the last one is the special (key-switching) prime. */
  coeffModulusBits: number[];
  securityLevel: 128;
}

/** Maximal total coefficient-modulus bits for 128-bit classical security (SEAL's tc128 table). */
export const MAX_BITS_128: Readonly<Record<number, number>> = { 1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881 };

/** SEAL's Galois element for a left rotation by `step` (generator 3, as GaloisTool). */
export function galoisElement(step: number, degree: number): number {
  const m = 2 * degree;
  let k = step < 0 ? degree / 2 + step : step;
  let elt = 1;
  while (k-- > 0) elt = (elt * 3) % m;
  return elt;
}

export function totalBits(p: CkksParams): number {
  return p.coeffModulusBits.reduce((a, b) => a + b, 0);
}

export function slotCount(p: CkksParams): number {
  return p.polyModulusDegree / 2;
}

/** Throws unless the parameters give at least 128-bit security and are well formed. */
export function checkParams(p: CkksParams): void {
  const bad = (msg: string) => new SealedError('insecure-parameters', msg, 'use parameters chosen by `sealed train` (128-bit security)');
  if (p.scheme !== 'ckks') throw bad(`scheme ${String(p.scheme)} is not supported (only ckks)`);
  if (p.securityLevel !== 128) throw bad(`security level ${String(p.securityLevel)} is refused: sealed runs at 128-bit security only`);
  const max = MAX_BITS_128[p.polyModulusDegree];
  if (max === undefined || p.polyModulusDegree < 4096) throw bad(`ring degree ${p.polyModulusDegree} is not one of 4096, 8192, 16384, 32768`);
  if (!Array.isArray(p.coeffModulusBits) || p.coeffModulusBits.length < 2 || p.coeffModulusBits.some((b) => !Number.isInteger(b) || b < 20 || b > 60)) {
    throw bad('coefficient modulus must be at least two primes of 20 to 60 bits');
  }
  if (totalBits(p) > max)
    throw bad(`coefficient modulus of ${totalBits(p)} bits exceeds ${max} bits, the 128-bit security bound for ring degree ${p.polyModulusDegree}`);
}

/**
 * The primes SEAL's CoeffModulus::Create picks for `bits` at ring degree `degree`, in its order,
 * for primes of at most 32 bits (batch mode's): for each size, the primes = 1 mod 2N below 2^bits,
 * largest first, handed out from the smallest of those needed (so a size's last prime is its
 * largest). The compiler needs their values before any context exists: a rescale divides the
 * scale by the primes it drops. test/unit/batch-rescale.test.ts compares them with SEAL's.
 */
export function sealPrimes(degree: number, bits: readonly number[]): number[] {
  const key = `${degree}:${bits.join(',')}`;
  let primes = primeLists.get(key);
  if (!primes) primeLists.set(key, (primes = findSealPrimes(degree, bits)));
  return [...primes];
}

/** sealPrimes' results: the compiler asks for the same lists many times over. */
const primeLists = new Map<string, number[]>();

function findSealPrimes(degree: number, bits: readonly number[]): number[] {
  const isPrime = (n: number) => {
    if (n % 2 === 0) return n === 2;
    for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
    return true;
  };
  const found = new Map<number, number[]>();
  for (const b of new Set(bits)) {
    if (!Number.isInteger(b) || b < 2 || b > 32) throw new SealedError('internal', `sealPrimes: ${b}-bit primes are outside 2..32 bits`);
    const count = bits.filter((x) => x === b).length;
    const list: number[] = [];
    for (let v = 2 ** b - 2 * degree + 1; list.length < count && v > 2 ** (b - 1); v -= 2 * degree) if (isPrime(v)) list.push(v);
    if (list.length < count) throw new SealedError('insecure-parameters', `there are not ${count} primes of ${b} bits = 1 mod ${2 * degree}`);
    found.set(b, list);
  }
  return bits.map((b) => found.get(b)!.pop()!);
}

export function paramsKey(p: CkksParams): string {
  return `ckks-${p.polyModulusDegree}-${p.coeffModulusBits.join('.')}-128`;
}

/**
 * A SEAL context; SEAL itself re-checks the 128-bit bound (tc128) and we refuse if it objects.
 * `chain`: build every level below the top (what rescaling needs). node-seal builds a level's
 * NTT and RNS tables with 128-bit divisions emulated in WASM, ~30-60 ms per prime at ring 16384,
 * so a chain costs about levels^2 / 2 such tables; a context without it has only the key level
 * and the top data level.
 */
export function createContext(seal: Seal, p: CkksParams, chain = true): SEALContext {
  checkParams(p);
  const parms = new seal.EncryptionParameters(seal.SchemeType.ckks);
  try {
    parms.setPolyModulusDegree(p.polyModulusDegree);
    const mods = guard('insecure-parameters', 'encryption parameters', () =>
      seal.CoeffModulus.Create(p.polyModulusDegree, Int32Array.from(p.coeffModulusBits)),
    );
    parms.setCoeffModulus(mods);
    mods.delete();
    const ctx = new seal.SEALContext(parms, chain, seal.SecLevelType.tc128);
    if (!ctx.parametersSet()) {
      ctx.delete();
      throw new SealedError('insecure-parameters', `SEAL refused the parameters ${paramsKey(p)} at 128-bit security`);
    }
    return ctx;
  } finally {
    parms.delete();
  }
}

/** The actual prime values of the chain, first data prime first, special prime last. */
export function primes(seal: Seal, ctx: SEALContext): bigint[] {
  const data = ctx.keyContextData();
  const vec = data.parms().coeffModulus();
  const out: bigint[] = [];
  for (let i = 0; i < vec.size(); i++) out.push(vec.get(i)!.value());
  vec.delete();
  data.delete();
  void seal;
  return out;
}

/**
 * Most bytes a serialized ciphertext of `polys` polynomials at the top level can take: SEAL's
 * uncompressed form (8 bytes per coefficient and prime) plus its headers; compression only makes
 * it smaller (zstd's worst case adds a few bytes per 128 KiB block, inside the margin).
 */
export function ciphertextBytesBound(p: CkksParams, polys = 2): number {
  const dataPrimes = p.coeffModulusBits.length - 1;
  const body = polys * p.polyModulusDegree * dataPrimes * 8;
  return body + Math.ceil(body / 1024) + 4096;
}
