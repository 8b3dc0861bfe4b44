// The keys circuit privacy takes from clients are untrusted: a broken public key is refused in
// TypeScript before SEAL sees it (each SEAL exception leaks WASM stack, seal.ts), and a broken
// re-randomization key is refused before any residue is used.
import t from 'tap';
import { makeBatchRerandKey } from '../../src/fhe/batch-privacy.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { generateSecretKey } from '../../src/fhe/keys.ts';
import { primes } from '../../src/fhe/params.ts';
import { loadRerandKey } from '../../src/fhe/privacy.ts';
import { sealExceptionCount } from '../../src/fhe/seal.ts';
import { SinglePrivacy, makePublicKey } from '../../src/fhe/single-privacy.ts';

const s = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [60, 40, 60], securityLevel: 128 });
t.teardown(() => s.close());
const sk = generateSecretKey(s);

t.test('a good public key loads; broken ones are refused before SEAL sees them', async (t) => {
  const pk = makePublicKey(s, sk);
  new SinglePrivacy(s, pk, 2 ** 20).close();
  const broken: [string, Uint8Array][] = [
    ['truncated', pk.slice(0, pk.length - 10)],
    ['bad magic', Uint8Array.from(pk, (b, i) => (i === 0 ? b ^ 0xff : b))],
    ['trailing bytes', Uint8Array.from([...pk, 1, 2, 3])],
    ['corrupted zstd body', Uint8Array.from(pk, (b, i) => (i > 40 && i < 60 ? b ^ 0x5a : b))],
  ];
  for (const [name, bytes] of broken) {
    const before = sealExceptionCount();
    t.throws(() => new SinglePrivacy(s, bytes, 2 ** 20), { code: 'bad-keys', message: /the public key/ }, `${name}: refused`);
    t.equal(sealExceptionCount(), before, `${name}: SEAL never saw it`);
  }
});

t.test('a re-randomization key for other parameters, or with a residue above its prime, is refused', async (t) => {
  const all = primes(s.seal, s.context).map(Number);
  const data = all.slice(0, -1);
  // Batch keys need primes below 2^26: a session of such primes.
  const b = await CkksSession.open({ scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [26, 26, 26], securityLevel: 128 });
  t.teardown(() => b.close());
  const bp = primes(b.seal, b.context).map(Number).slice(0, -1);
  const key = makeBatchRerandKey(b, 2, generateSecretKey(b));
  t.equal(loadRerandKey(key, bp, 8192, 2).size, 2, 'a good key loads');
  t.throws(() => loadRerandKey(key, bp, 8192, 3), { code: 'bad-keys', message: /has 2 polynomials, results have 3/ });
  t.throws(() => loadRerandKey(key, data, 8192, 2), { code: 'bad-keys', message: /other (parameters|primes)/ });
  t.throws(() => loadRerandKey(key.slice(0, key.length - 4), bp, 8192, 2), { code: 'bad-keys', message: /wrong length/ });
  const high = key.slice();
  new DataView(high.buffer).setUint32(high.length - 4, 0xffffffff, true);
  t.throws(() => loadRerandKey(high, bp, 8192, 2), { code: 'bad-keys', message: /residue above its prime/ });
});
