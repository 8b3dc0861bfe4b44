// Evaluation keys loaded as evaluations need them (src/fhe/load-keys.ts KeysOnDemand): a thread
// that runs one part of a single-record tree query loads only its part's rotations. The set is
// checked whole at the first load as far as that takes no SEAL work (layout, key count, every
// rotation the model needs); each key is checked whole and given to SEAL when first asked for.
import t from 'tap';
import { SealedError } from '../../src/errors.ts';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { generateKeys } from '../../src/fhe/keys.ts';
import { KeysOnDemand, loadEvaluationKeys } from '../../src/fhe/load-keys.ts';
import { packedGaloisLayout } from '../../src/fhe/packed-galois.ts';
import { galoisElement } from '../../src/fhe/params.ts';

const params = { scheme: 'ckks' as const, polyModulusDegree: 8192, coeffModulusBits: [53, 30, 53, 60], securityLevel: 128 as const };
const s = await CkksSession.open(params);
t.teardown(() => s.close());
const STEPS = [1, 2, 5];
const k = generateKeys(s, STEPS, true);
const fail = (why: string) => new Error(why);

const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof SealedError) return `${e.code}: ${e.message}`;
    throw e;
  }
  return 'accepted';
};

/** The Galois keys with the residues in the middle of step `step`'s key all ones: above its primes, which the precheck refuses. */
function spoiled(step: number): Uint8Array {
  const bytes = k.galoisKeys.slice();
  const key = packedGaloisLayout(bytes, 8192, fail).keys.find((x) => x.element === galoisElement(step, 8192))!;
  const mid = (key.at + key.end) >> 1;
  bytes.fill(0xff, mid, mid + 256);
  return bytes;
}

t.test('only the rotations asked for are given to SEAL, each once', async (t) => {
  const keys = new KeysOnDemand(s, STEPS);
  t.teardown(() => keys.close());
  keys.load(k.galoisKeys, k.relinKeys, [2], false);
  t.equal(keys.loaded, 1, 'one key loaded for one rotation');
  t.ok(keys.rotation(2).hasKey(galoisElement(2, 8192)), 'the rotation by 2');
  t.throws(() => keys.rotation(1), { code: 'internal', message: /no Galois key was loaded for the rotation by 1/ }, 'a rotation not asked for is not there');
  t.equal(keys.relin, undefined, 'no relinearization keys until asked for');
  keys.load(k.galoisKeys, k.relinKeys, [1, 2, 5], true);
  t.equal(keys.loaded, 3, 'the other two added, the rotation by 2 not loaded again');
  t.ok(
    STEPS.every((step) => keys.rotation(step).hasKey(galoisElement(step, 8192))),
    'every rotation',
  );
  t.ok(keys.relin, 'and the relinearization keys');
  keys.close();
  t.equal(keys.loaded, 0, 'closed: nothing held');
});

t.test('the first load checks the whole set: a rotation the model needs missing is refused whatever is asked for', async (t) => {
  const fewer = generateKeys(s, [1, 2], false);
  const keys = new KeysOnDemand(s, STEPS);
  t.teardown(() => keys.close());
  t.match(
    refusal(() => keys.load(fewer.galoisKeys, undefined, [1], false)),
    /^bad-keys: the evaluation keys lack the rotation by 5 this model needs/,
  );
  t.equal(keys.loaded, 0, 'nothing loaded');
  const many = generateKeys(
    s,
    Array.from({ length: 40 }, (_, i) => i + 1),
    false,
  );
  t.match(
    refusal(() => new KeysOnDemand(s, STEPS).load(many.galoisKeys, undefined, [1], false)),
    /^bad-keys: the Galois keys hold more than 29 keys/,
  );
  const truncated = k.galoisKeys.subarray(0, k.galoisKeys.length - 100);
  t.match(
    refusal(() => new KeysOnDemand(s, STEPS).load(truncated, undefined, [1], false)),
    /^bad-keys: the Galois keys are truncated/,
  );
  t.match(
    refusal(() => new KeysOnDemand(s, STEPS).load(k.galoisKeys, undefined, [1], true)),
    /^bad-keys: .*lack relinearization keys/,
  );
});

t.test('a bad key is refused when it is first asked for; loading every key refuses it at once', async (t) => {
  const bad = spoiled(5);
  t.match(
    refusal(() => loadEvaluationKeys(s, bad, undefined, STEPS, false).close()),
    /^bad-keys: the Galois keys/,
    'loadEvaluationKeys (every key) refuses the set',
  );
  const keys = new KeysOnDemand(s, STEPS);
  t.teardown(() => keys.close());
  t.equal(
    refusal(() => keys.load(bad, undefined, [1, 2], false)),
    'accepted',
    'the other keys load: the bad one is not read',
  );
  t.match(
    refusal(() => keys.load(bad, undefined, [5], false)),
    /^bad-keys: the Galois keys/,
    'asked for, it is refused',
  );
  t.equal(keys.loaded, 2, 'and not kept');
});

t.test('keys not packed (zstd, as older clients wrote them) load whole on the first call', async (t) => {
  const kg = new s.seal.KeyGenerator(s.context);
  const gk = kg.createGaloisKeysSerializableWithSteps(Int32Array.from(STEPS));
  const zstd = gk.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
  gk.delete();
  kg.delete();
  const keys = new KeysOnDemand(s, STEPS);
  t.teardown(() => keys.close());
  keys.load(zstd, undefined, [1], false);
  t.equal(keys.loaded, 1, 'one GaloisKeys');
  t.ok(
    STEPS.every((step) => keys.rotation(step).hasKey(galoisElement(step, 8192))),
    'holding every rotation',
  );
});
