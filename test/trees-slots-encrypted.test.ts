// The leaves-in-slots circuit for one record, encrypted (src/fhe/tree-slots.ts), on the
// breast-cancer model at the chain slotsChain picks (src/model/trees/slots.ts: the fewest primes
// whose proved bound meets the flood's need; input 2^70, primes 5 x 53 + 30 + 60). Checks, as test/light/circuit-privacy-trees.test.ts
// does for the batch forms: the honest noise, measured from two encryptions of one record, is
// below the bound B; flooded with B, the score is the quantized model's within the flood's
// stated precision, and the flood is there. Twice: as compiled (one output), and with a second
// output stretched beside it (each position in two slots, one result ciphertext for both).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CkksSession } from '../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../src/fhe/keys.ts';
import { loadEvaluationKeys } from '../src/fhe/load-keys.ts';
import { SinglePrivacy, makePublicKey } from '../src/fhe/single-privacy.ts';
import { encryptSlotsQuery, slotsRotations, type SlotsLayout } from '../src/fhe/tree-slots-layout.ts';
import { SlotsEvaluator } from '../src/fhe/tree-slots.ts';
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

interface Case {
  layout: SlotsLayout;
  /** The quantized model's scores of a record, as the layout's outputs hold them. */
  want(bins: number[]): number[];
}

const cases: [string, Case][] = [
  ['one output', { layout, want: (bins) => quantizedScores(m.quantized, bins) }],
  // Two outputs stretched over two slots per position, as compileSingle lays out several: the
  // second output's leaf values are the first's times -1/2 (no base), so its score is known.
  [
    'two outputs stretched over two slots',
    {
      layout: { ...layout, leafValues: [layout.leafValues[0], layout.leafValues[0].map((v) => -v / 2)], stretch: 2 },
      want: (bins) => {
        const [s] = quantizedScores(m.quantized, bins);
        return [s, -(s - m.quantized.base[0]) / 2];
      },
    },
  ],
];

for (const [name, c] of cases)
  t.test(`${name}: honest noise below the proved bound; flooded with it, the quantized scores within the precision`, async (t) => {
    const chain = slotsChain(c.layout, Math.max(1, ...built.outBound));
    const scales = { inputScaleBits: chain.inputBits, maskScaleBits: chain.maskBits, leafScaleBits: chain.leafBits, resultDrop: chain.resultDrop };
    const G = c.layout.stretch ?? 1;
    const shape = { slots: c.layout.slots, copies: c.layout.copies, period: c.layout.constant.length, stretch: G };
    const s = await CkksSession.open({
      scheme: 'ckks',
      polyModulusDegree: 2 * c.layout.slots,
      coeffModulusBits: [...chain.dataBits, chain.maskBits, 60],
      securityLevel: 128,
    });
    const steps = slotsRotations(c.layout);
    const km = generateKeys(s, steps, true);
    const holder = new SecretKeyHolder(s, km.secretKey);
    const keys = loadEvaluationKeys(s, km.galoisKeys, km.relinKeys, steps, true);
    const evaluator = new SlotsEvaluator(s, c.layout, scales);
    const sk = new s.seal.SecretKey();
    sk.loadFromArray(s.context, km.secretKey);
    const decryptor = new s.seal.Decryptor(s.context, sk);
    const rho = slotsNoiseBound(c.layout, chain);
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
    t.equal(evaluator.results, 1, `${c.layout.leafValues.length} output(s) in one result ciphertext`);

    const outBound = Math.max(1, ...built.outBound);
    const precision = 2 ** -FLOOD_PRECISION_BITS * outBound;
    const N = s.params.polyModulusDegree;
    let worstV = 0; // |v|_2 relative to the result's scale
    for (const record of data.test.slice(0, 2)) {
      const bins = binsOf(m.client.bins, record);
      const bits = thermometer(bins, edges, offsets, inputs);
      const want = c.want(bins);
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
      // Slot t holds output t mod G's score (the base is the client's to add, to output 0 here).
      const slots = (ct: typeof out1) => holder.decrypt(ct.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
      const base = (k: number) => (k === 0 ? m.quantized.base[0] : 0);
      const [honest, got] = [slots(out1), slots(flooded)];
      let worstHonest = 0;
      for (let j = 0; j < honest.length; j++) worstHonest = Math.max(worstHonest, Math.abs(honest[j] + base(j % G) - want[j % G]));
      t.ok(worstHonest < 1e-5, `unflooded: every slot within ${worstHonest.toExponential(2)} of its output's quantized score (the masks' rounding)`);
      for (let k = 0; k < G; k++)
        t.ok(
          Math.abs(got[k] + base(k) - want[k]) < 6 * precision,
          `flooded, output ${k}: within ${Math.abs(got[k] + base(k) - want[k]).toExponential(2)} of the quantized score (precision ${precision.toExponential(2)}, std)`,
        );
      if (record === data.test[0]) {
        // Two threads' parts, added and finished: the same operations in another order, so the same ciphertext.
        const [joined] = evaluator.finishParts(
          [0, 1].map((k) => evaluator.runPart(query, keys, k, 2)),
          keys,
        );
        const bytes = (ct: typeof out1) => ct.saveToArray(s.seal.ComprModeType.none) as Uint8Array;
        t.ok(Buffer.from(bytes(joined)).equals(Buffer.from(bytes(out1))), 'two parts, then finishParts: the same ciphertext as run');
        joined.delete();
      }
      for (const ct of [out1, out2, flooded]) ct.delete();
    }
    t.ok(
      worstV < rho,
      `honest noise |v|_2 ~ 2^${Math.log2(worstV).toFixed(2)} of the result's scale, below the bound 2^${Math.log2(rho).toFixed(2)} (${Math.log2(rho / worstV).toFixed(1)} bits of slack)`,
    );
  });
