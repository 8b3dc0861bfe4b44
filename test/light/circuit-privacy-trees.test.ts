// Circuit privacy of tree ensembles (compile.ts treeNoiseBound, tree-eval.ts): the honest noise
// of the circuit's result, measured, stays below the bound B the flood is sized for, in both
// relinearization forms; and the flood is there. As in circuit-privacy-network.test.ts, two
// encryptions of the same thermometer bits have the same message, so the phase of (result 1 -
// result 2) is v1 - v2 exactly (no rescale happens in this circuit): |v1 - v2|_2 <= 2B must hold,
// and its / sqrt(2) estimates |v|_2.
//
// The ensembles are random (full trees of depth 3, random splits and leaf values): the bound is a
// property of the circuit's shape and leaf values, not of a fitted model.
import t from 'tap';
import type { Ciphertext } from 'node-seal/throws';
import { CkksSession } from '../../src/fhe/ckks.ts';
import { SecretKeyHolder } from '../../src/fhe/keys.ts';
import { loadCiphertext } from '../../src/fhe/load.ts';
import { TreeEvaluator } from '../../src/fhe/tree-eval.ts';
import { compileTreeEnsemble } from '../../src/model/trees/compile.ts';
import { emptyTree, type TreeEnsemble } from '../../src/model/trees/ensemble.ts';
import { binsOf, quantizedScores } from '../../src/model/trees/quantize.ts';
import { TreeClient } from '../../src/model/trees/query.ts';
import { decodeWire, type KeysHeader, type QueryHeader } from '../../src/wire/format.ts';
import { differencePhaseL2 } from '../helpers/phase.ts';
import { rng } from '../helpers/networks.ts';

const FEATURES = 6;
/** Uniform in [0, 1) (rng's values are in [-0.5, 0.5)). */
const uniform = (seed: number) => {
  const r = rng(seed);
  return () => r() + 0.5;
};

/** `trees` full trees of depth 3 over FEATURES features in [0, 1), leaf values in [-1, 1). */
function randomEnsemble(seed: number, trees: number, outputs: number): TreeEnsemble {
  const r = uniform(seed);
  const nodes = 15;
  return {
    task: outputs === 1 ? 'binary' : 'multiclass',
    features: FEATURES,
    outputs,
    trees: Array.from({ length: trees }, () => {
      const tree = emptyTree(nodes, outputs);
      for (let n = 0; n < 7; n++) {
        tree.feature[n] = Math.floor(r() * FEATURES);
        tree.threshold[n] = 0.15 + 0.7 * r();
        tree.left[n] = 2 * n + 1;
        tree.right[n] = 2 * n + 2;
      }
      for (let n = 7; n < nodes; n++) for (let k = 0; k < outputs; k++) tree.value[n * outputs + k] = 2 * r() - 1;
      return tree;
    }),
    base: Array<number>(outputs).fill(0.25),
    post: outputs === 1 ? 'sigmoid' : 'softmax',
    float32: false,
    source: 'xgboost-json',
  };
}

const oneOutput = randomEnsemble(31, 3, 1);
const fourOutputs = randomEnsemble(37, 2, 4);
const cases: [string, TreeEnsemble, 'factored' | 'grouped', 'leaf' | undefined][] = [
  ['one output, factored', oneOutput, 'factored', undefined],
  ['one output, grouped (sums relinearized per group)', oneOutput, 'grouped', undefined],
  ['four outputs, grouped (each leaf product relinearized)', fourOutputs, 'grouped', 'leaf'],
  ['four outputs, factored', fourOutputs, 'factored', undefined],
];

for (const [name, ensemble, form, relinearize] of cases)
  t.test(`${name}: honest noise below B, flood present`, async (t) => {
    const r = uniform(41);
    const calibration = Array.from({ length: 200 }, () => Array.from({ length: FEATURES }, () => r()));
    const m = compileTreeEnsemble(ensemble, calibration, { bits: 2, form });
    const c = m.server.circuit;
    t.equal(c.privacy, 'flood');
    t.equal(c.factored !== undefined, form === 'factored', `the circuit's form: ${form}`);
    t.equal(c.relinearize, relinearize, `relinearized ${relinearize ? 'per leaf' : 'per sum'}`);
    const N = c.params.polyModulusDegree;
    const B = 2 ** c.noiseL2Bits!;

    const client = await TreeClient.open(m.client);
    const s = await CkksSession.open(c.params);
    const [relinKeys, publicKey] = decodeWire<KeysHeader>('keys', client.keys(), 'the keys').sections;
    const honest = new TreeEvaluator(s, { ...c, privacy: 'none' }, relinKeys);
    const flooded = new TreeEvaluator(s, c, relinKeys, publicKey);
    const sk = new s.seal.SecretKey();
    sk.loadFromArray(s.context, client.exportSecretKey());
    const decryptor = new s.seal.Decryptor(s.context, sk);
    t.teardown(() => {
      honest.close();
      flooded.close();
      decryptor.delete();
      sk.delete();
      s.close();
      client.close();
    });

    const records = calibration.slice(0, 64);
    const inputs = () => decodeWire<QueryHeader>('query', client.encryptQuery(records), 'the query').sections;
    /** Per output, |phase(r1 - r2)|_2 of two results (bytes) of the same records. */
    const phaseOfDifference = (r1: Uint8Array[], r2: Uint8Array[]) =>
      r1.map((bytes, k) => {
        const x: Ciphertext = loadCiphertext(s, bytes, 'result 1');
        const y: Ciphertext = loadCiphertext(s, r2[k], 'result 2');
        try {
          return differencePhaseL2(s, decryptor, x, y);
        } finally {
          x.delete();
          y.delete();
        }
      });

    const first = honest.evaluate(inputs());
    const v = phaseOfDifference(first, honest.evaluate(inputs()));
    t.equal(v.length, ensemble.outputs, 'one result per output');
    v.forEach((d, k) =>
      t.ok(
        d <= 2 * B,
        `output ${k}: |v1 - v2|_2 = 2^${Math.log2(d).toFixed(1)} <= 2B = 2^${Math.log2(2 * B).toFixed(1)} ` +
          `(|v|_2 ~ 2^${Math.log2(d / Math.SQRT2).toFixed(1)}, ${Math.log2(B / (d / Math.SQRT2)).toFixed(1)} bits below B)`,
      ),
    );
    // Against an honest result: the flood's noise, which dwarfs the honest noise of both.
    const f = phaseOfDifference(flooded.evaluate(inputs()), first);
    f.forEach((d, k) => t.ok(d > 2 ** 20 * B, `output ${k}: flooded, |f - r1|_2 = 2^${Math.log2(d).toFixed(1)}, far above B (N = ${N})`));

    // The circuit computes the quantized model: a noise test of a result that computed nothing
    // would pass too.
    const holder = new SecretKeyHolder(s, client.exportSecretKey());
    const plain = first.map((bytes) => holder.decrypt(bytes));
    holder.close();
    let worst = 0;
    records.forEach((x, i) => {
      const want = quantizedScores(m.quantized, binsOf(m.client.bins, x));
      want.forEach((w, k) => (worst = Math.max(worst, Math.abs(plain[k][i] - w))));
    });
    t.ok(worst < 1e-6, `decrypted scores = the quantized model's on ${records.length} records (largest difference ${worst.toExponential(1)})`);
  });
