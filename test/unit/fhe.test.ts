// The FHE core: 128-bit security or refusal, typed errors from SEAL's exceptions.
import t from 'tap';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../../src/fhe/keys.ts';
import { loadCiphertext, loadQueryCiphertext } from '../../src/fhe/load.ts';
import { loadEvaluationKeys } from '../../src/fhe/load-keys.ts';
import { checkParams, type CkksParams } from '../../src/fhe/params.ts';
import { SealedError } from '../../src/errors.ts';

const good: CkksParams = { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [60, 40, 40, 60], securityLevel: 128 };

t.test('parameters under 128-bit security are refused before SEAL sees them', async (t) => {
  t.doesNotThrow(() => checkParams(good));
  t.throws(() => checkParams({ ...good, coeffModulusBits: [60, 60, 60, 60] }), { code: 'insecure-parameters', message: /exceeds 218 bits/ });
  t.throws(() => checkParams({ ...good, securityLevel: 64 as 128 }), { message: /security level 64 is refused/ });
  t.throws(() => checkParams({ ...good, polyModulusDegree: 2048 }), { message: /ring degree 2048/ });
  await t.rejects(CkksSession.open({ ...good, coeffModulusBits: [60, 60, 60, 60] }), { code: 'insecure-parameters' });
});

t.test('SEAL exceptions become SealedErrors a user understands', async (t) => {
  const s = await CkksSession.open(good);
  const k = generateKeys(s, [1, 2], true);
  const holder = new SecretKeyHolder(s, k.secretKey);
  const ct = holder.encrypt(new Float64Array(s.slots).fill(0.5), 40);
  t.throws(() => loadCiphertext(s, ct.subarray(0, ct.length - 100), 'the query'), { code: 'bad-query', message: /the query: the data is truncated/ });
  const junk = new Uint8Array(4000).map((_, i) => (i * 7919) % 251);
  t.throws(() => loadCiphertext(s, junk, 'the query'), { code: 'bad-query', message: /not a SEAL object/ });
  t.throws(() => loadQueryCiphertext(s, ct, 30), { code: 'bad-query', message: /scale 2\^40.00, expected 2\^30/ });
  t.throws(() => loadEvaluationKeys(s, k.galoisKeys, k.relinKeys, [1, 2, 4], true), { code: 'bad-keys', message: /lack the rotation by 4/ });
  t.throws(() => loadEvaluationKeys(s, k.galoisKeys, undefined, [1], true), { code: 'bad-keys', message: /relinearization/ });
  // Keys of another ring degree do not load into this context.
  const s2 = await CkksSession.open({ ...good, polyModulusDegree: 16384 });
  const k2 = generateKeys(s2, [1], false);
  const err = (() => {
    try {
      loadEvaluationKeys(s, k2.galoisKeys, undefined, [1], false);
    } catch (e) {
      return e;
    }
  })();
  t.ok(err instanceof SealedError, 'a SealedError, not a raw WebAssembly.Exception');
  t.equal((err as SealedError).code, 'bad-keys');
  t.match((err as SealedError).message, /Galois keys/);
  holder.close();
  s2.close();
  s.close();
});
