// The noise a client can see: |phase(ct)|_2, the decrypted plaintext polynomial in the
// coefficient domain, centered modulo the ciphertext's modulus (CRT over its primes). Tests and
// scripts/measure-flood-network.ts measure the honest noise and the flood with it.
import type { Ciphertext } from 'node-seal/throws';
import type { CkksSession } from '../../src/fhe/ckks.ts';
import { NegacyclicNttBig } from '../../src/fhe/privacy.ts';

const tables = new Map<string, NegacyclicNttBig>();

function modInverse(a: bigint, q: bigint): bigint {
  let r = 1n;
  for (let e = q - 2n, x = a % q; e > 0n; e >>= 1n, x = (x * x) % q) if (e & 1n) r = (r * x) % q;
  return r;
}

export function phaseL2(s: CkksSession, decryptor: InstanceType<CkksSession['seal']['Decryptor']>, ct: Ciphertext): number {
  const N = s.params.polyModulusDegree;
  const k = ct.coeffModulusSize();
  const primes = s.shape.data.find((l) => l.primes.length === k)!.primes;
  const pt = new s.seal.Plaintext();
  decryptor.decrypt(ct, pt);
  const bytes = pt.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
  pt.delete();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = bytes.length - 8 * N * k;
  const residues = primes.map((q, p) => {
    let ntt = tables.get(`${q}:${N}`);
    if (!ntt) tables.set(`${q}:${N}`, (ntt = new NegacyclicNttBig(q, N)));
    const r = BigUint64Array.from({ length: N }, (_, i) => view.getBigUint64(at + 8 * (p * N + i), true));
    ntt.inverse(r);
    return r;
  });
  const Q = primes.reduce((a, b) => a * b, 1n);
  const basis = primes.map((q) => (Q / q) * modInverse((Q / q) % q, q));
  let sum = 0;
  for (let i = 0; i < N; i++) {
    let x = 0n;
    primes.forEach((_, p) => (x += residues[p][i] * basis[p]));
    x %= Q;
    if (x > Q / 2n) x -= Q;
    sum += Number(x) ** 2;
  }
  return Math.sqrt(sum);
}

/**
 * |phase(a - b)|_2. Two ciphertexts with the same message (two encryptions of one plaintext, or
 * results computed from them) give the difference of their noises exactly.
 */
export function differencePhaseL2(s: CkksSession, decryptor: InstanceType<CkksSession['seal']['Decryptor']>, a: Ciphertext, b: Ciphertext): number {
  const d = new s.seal.Ciphertext();
  try {
    s.evaluator.sub(a, b, d);
    return phaseL2(s, decryptor, d);
  } finally {
    d.delete();
  }
}
