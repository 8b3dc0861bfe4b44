// The leaves-in-slots circuit for one record, encrypted (src/fhe/tree-slots.ts), on the
// breast-cancer model at the chain slotsChain picks (src/model/trees/slots.ts: the fewest primes
// whose proved bound meets the flood's need; input 2^70, primes 6 x 53 + 30 + 60). Checks, as test/circuit-privacy-trees.test.ts
// does for the batch forms: the honest noise, measured from two encryptions of one record, is
// below the bound B; flooded with B, the score is the quantized model's within the flood's
// stated precision, and the flood is there.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CkksSession } from '../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../src/fhe/keys.ts';
import { loadEvaluationKeys } from '../src/fhe/load.ts';
import { SinglePrivacy, makePublicKey } from '../src/fhe/single-privacy.ts';
import { SlotsEvaluator, encryptSlotsQuery, slotsRotations } from '../src/fhe/tree-slots.ts';
import { FLOOD_PRECISION_BITS } from '../src/model/compile-batch.ts';
import { buildCircuit, thermometer } from '../src/model/trees/circuit.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { binsOf, inputOffsets, quantizedScores } from '../src/model/trees/quantize.ts';
import { placeLeaves, slotsLeaves } from '../src/model/trees/slots.ts';
import { slotsChain, slotsNoiseBound } from '../src/model/trees/slots-chain.ts';
import { differencePhaseL2 } from './helpers/phase.ts';

const DIR = join(import.meta.dirname, 'fixtures', 'trees');
const data = JSON.parse(readFileSync(join(DIR, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
const m = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'breast-cancer.xgb.json'))), 'xgboost-json', data.train, { form: 'factored' });
const { edges } = m.client.bins;
const { offsets, inputs } = inputOffsets(edges);
const built = buildCircuit(m.quantized, edges, offsets, inputs);
const layout = placeLeaves(slotsLeaves(built.leaves, offsets), inputs, 32);
const chain = slotsChain(layout, Math.max(1, ...built.outBound));
const scales = { inputScaleBits: chain.inputBits, maskScaleBits: chain.maskBits, leafScaleBits: chain.leafBits, resultDrop: chain.resultDrop };
const shape = { slots: layout.slots, copies: layout.copies, period: layout.constant.length };

t.test('honest noise below the proved bound; flooded with it, the quantized score within the precision', async (t) => {
  const s = await CkksSession.open({
    scheme: 'ckks',
    polyModulusDegree: 2 * layout.slots,
    coeffModulusBits: [...chain.dataBits, chain.maskBits, 60],
    securityLevel: 128,
  });
  const steps = slotsRotations(layout);
  const km = generateKeys(s, steps, true);
  const holder = new SecretKeyHolder(s, km.secretKey);
  const keys = loadEvaluationKeys(s, km.galoisKeys, km.relinKeys, steps, true);
  const evaluator = new SlotsEvaluator(s, layout, scales);
  const sk = new s.seal.SecretKey();
  sk.loadFromArray(s.context, km.secretKey);
  const decryptor = new s.seal.Decryptor(s.context, sk);
  const rho = slotsNoiseBound(layout, chain);
  let privacy: SinglePrivacy | undefined;
  t.teardown(() => {
    privacy?.close();
    evaluator.close();
    keys.close();
    holder.close();
    decryptor.delete();
    sk.delete();
    s.close();
  });

  const outBound = Math.max(1, ...built.outBound);
  const precision = 2 ** -FLOOD_PRECISION_BITS * outBound;
  const N = s.params.polyModulusDegree;
  let worstV = 0; // |v|_2 relative to the result's scale
  for (const record of data.test.slice(0, 2)) {
    const bins = binsOf(m.client.bins, record);
    const bits = thermometer(bins, edges, offsets, inputs);
    const want = quantizedScores(m.quantized, bins)[0];
    const query = encryptSlotsQuery(holder, shape, chain.inputBits, bits);
    const [out1] = evaluator.run(query, keys);
    const [out2] = evaluator.run(encryptSlotsQuery(holder, shape, chain.inputBits, bits), keys);
    const B = rho * out1.scale();
    privacy ??= new SinglePrivacy(s, makePublicKey(s, km.secretKey), B);
    const dv = differencePhaseL2(s, decryptor, out1, out2);
    worstV = Math.max(worstV, dv / Math.SQRT2 / out1.scale());
    t.ok(dv <= 2 * B, `|v1 - v2|_2 = 2^${Math.log2(dv).toFixed(2)} <= 2B = 2^${Math.log2(2 * B).toFixed(2)}`);
    const flooded = privacy.apply(out1);
    const ratio = differencePhaseL2(s, decryptor, flooded, out1) / (privacy.sigma * Math.sqrt(N));
    t.ok(ratio > 0.9 && ratio < 1.1, `the flood is there: |flooded - honest|_2 / (sigma sqrt(N)) = ${ratio.toFixed(3)}`);
    const score = (ct: typeof out1) => holder.decrypt(ct.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array)[0] + m.quantized.base[0];
    const [honest, got] = [score(out1), score(flooded)];
    t.ok(Math.abs(honest - want) < 1e-5, `unflooded: ${honest.toFixed(7)} against the quantized ${want.toFixed(7)} (the masks' rounding)`);
    t.ok(
      Math.abs(got - want) < 6 * precision,
      `flooded: within ${Math.abs(got - want).toExponential(2)} of the quantized score (precision ${precision.toExponential(2)}, std)`,
    );
    if (record === data.test[0]) {
      // Two threads' parts, added and finished: the same operations in another order, so the same ciphertext.
      const [joined] = evaluator.finishParts(
        [0, 1].map((k) => evaluator.runPart(query, keys, k, 2)),
        keys,
      );
      const bytes = (c: typeof out1) => c.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
      t.ok(Buffer.from(bytes(joined)).equals(Buffer.from(bytes(out1))), 'two parts, then finishParts: the same ciphertext as run');
      joined.delete();
    }
    for (const c of [out1, out2, flooded]) c.delete();
  }
  t.ok(
    worstV < rho,
    `honest noise |v|_2 ~ 2^${Math.log2(worstV).toFixed(2)} of the result's scale, below the bound 2^${Math.log2(rho).toFixed(2)} (${Math.log2(rho / worstV).toFixed(1)} bits of slack)`,
  );
});
