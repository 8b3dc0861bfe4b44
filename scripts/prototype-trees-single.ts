// PROTOTYPE, not part of the product: the "leaves in slots" layout for one tree-ensemble record
// (docs/trees.md, Not done yet) on the breast-cancer model: placed by src/model/trees/slots.ts,
// evaluated by src/fhe/tree-slots.ts, and timed against the factored batch circuit on a one-record
// query, alternated in one process. It checks the layout decrypts to the quantized model's score;
// its timing floods with a stand-in bound (same cost as the real one); no wire format, no serving.
// Run: sh scripts/with-node.sh node scripts/prototype-trees-single.ts [--copies 32] [--rounds 5]
// [--input-bits 63] [--mask-bits 30] [--leaf-bits 30] [--data-bits 58] [--data-primes 5]
// [--parts 2] (also timed: the gather in parts on worker threads, then finishParts). Last
// stdout line: one JSON object. With --noise it times nothing and measures instead what a flood
// bound must cover: the honest noise of the unflooded result (two encryptions of one record,
// evaluated alike: |phase(r1 - r2)|_2 / sqrt(2) estimates |v|_2, as
// test/light/circuit-privacy-trees.test.ts does) relative to the result's scale, against the proved
// bound (slotsNoiseBound) and what the flood needs; and the result's distance to the quantized
// model's score (deterministic: the rounding of the masks and leaf values the server encodes).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import type { Ciphertext } from 'node-seal/throws';
import { CkksSession } from '../src/fhe/ckks.ts';
import { SecretKeyHolder, generateKeys } from '../src/fhe/keys.ts';
import { loadEvaluationKeys } from '../src/fhe/load-keys.ts';
import { floodSigma } from '../src/fhe/privacy.ts';
import { release } from '../src/fhe/seal.ts';
import { SinglePrivacy, makePublicKey } from '../src/fhe/single-privacy.ts';
import { encryptSlotsQuery, slotsRotations } from '../src/fhe/tree-slots-layout.ts';
import { SlotsEvaluator } from '../src/fhe/tree-slots.ts';
import { FLOOD_PRECISION_BITS } from '../src/model/compile-batch.ts';
import { buildCircuit, thermometer } from '../src/model/trees/circuit.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { binsOf, inputOffsets, quantizedScores } from '../src/model/trees/quantize.ts';
import { giantGroups, placeLeaves, slotsLeaves } from '../src/model/trees/slots.ts';
import { slotsNoiseBound } from '../src/model/trees/slots-chain.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { TreeServer } from '../src/model/trees/server.ts';
import { differencePhaseL2 } from '../test/helpers/phase.ts';

const { values: opts } = parseArgs({
  options: {
    copies: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '5' },
    'input-bits': { type: 'string', default: '63' },
    'mask-bits': { type: 'string', default: '30' },
    'leaf-bits': { type: 'string', default: '30' },
    'data-bits': { type: 'string', default: '58' },
    'data-primes': { type: 'string', default: '5' },
    noise: { type: 'boolean', default: false },
    parts: { type: 'string', default: '2' },
  },
});
/** Scales: the client's input, the masks (the gather rescales by a prime of this size), the leaf values. */
const [A, MASK_BITS, LEAF_BITS] = [opts['input-bits'], opts['mask-bits'], opts['leaf-bits']].map(Number);
/** The primes the products and the leaf values consume (the result keeps all of them). */
const [DATA_BITS, DATA_PRIMES] = [opts['data-bits'], opts['data-primes']].map(Number);
const COPIES = Number(opts.copies);
const SLOTS = 8192;
const err = (s: string) => process.stderr.write(s + '\n');

const DIR = join(import.meta.dirname, '..', 'test', 'fixtures', 'trees');
const d = JSON.parse(readFileSync(join(DIR, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
const m = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'breast-cancer.xgb.json'))), 'xgboost-json', d.train, { form: 'factored' });
const { offsets, inputs } = inputOffsets(m.client.bins.edges);
const built = buildCircuit(m.quantized, m.client.bins.edges, offsets, inputs);
const leaves = slotsLeaves(built.leaves, offsets);
const slotsLayout = placeLeaves(leaves, inputs, COPIES, SLOTS);
const { masks } = slotsLayout;
const giants = giantGroups(slotsLayout); // keyed by the giant rotation
err(`${leaves.length} leaves: ${masks.size} diagonals in ${giants.size} giant groups, ${COPIES} copies from the client`);

const record = d.test[0];
const recordBins = binsOf(m.client.bins, record);
const bits = thermometer(recordBins, m.client.bins.edges, offsets, inputs);
const want = quantizedScores(m.quantized, recordBins)[0];

// Ring 16384: DATA_PRIMES primes of DATA_BITS, one of MASK_BITS for the gather's rescale, the special prime.
const s = await CkksSession.open({
  scheme: 'ckks',
  polyModulusDegree: 2 * SLOTS,
  coeffModulusBits: [...Array<number>(DATA_PRIMES).fill(DATA_BITS), MASK_BITS, 60],
  securityLevel: 128,
});
const scales = { inputScaleBits: A, maskScaleBits: MASK_BITS, leafScaleBits: LEAF_BITS };
const steps = slotsRotations(slotsLayout);
const km = generateKeys(s, steps, true);
const holder = new SecretKeyHolder(s, km.secretKey);
const evalKeys = loadEvaluationKeys(s, km.galoisKeys, km.relinKeys, steps, true);
const evaluator = new SlotsEvaluator(s, slotsLayout, scales);
const sk = new s.seal.SecretKey();
sk.loadFromArray(s.context, km.secretKey);
const decryptor = new s.seal.Decryptor(s.context, sk);
const privacy = new SinglePrivacy(s, makePublicKey(s, km.secretKey), 2 ** 200);
const encryptQuery = () => encryptSlotsQuery(holder, { ...slotsLayout, period: slotsLayout.constant.length }, A, bits);
let query = encryptQuery();
const client = await TreeClient.open(m.client);
const server = await TreeServer.open(m.server);
const keys = client.keys();
err(
  `query ${(query.reduce((a, q) => a + q.length, 0) / 1e6).toFixed(1)} MB, Galois keys ${(km.galoisKeys.length / 1e6).toFixed(1)} MB (${steps.length} steps)`,
);

/** The score (slot 0, plus the ensemble's base) and the largest difference between slots. */
function decode(ct: Ciphertext): { score: number; spread: number } {
  const out = holder.decrypt(ct.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array);
  let spread = 0;
  for (const v of out) spread = Math.max(spread, Math.abs(v - out[0]));
  return { score: out[0] + m.quantized.base[0], spread };
}

if (opts.noise) {
  const results = [];
  for (let round = 0; round < Number(opts.rounds); round++) {
    const [o1] = evaluator.run(query, evalKeys);
    query = encryptQuery();
    const [o2] = evaluator.run(query, evalKeys);
    const v = differencePhaseL2(s, decryptor, o1, o2) / Math.SQRT2;
    results.push({
      v_rel_bits: +Math.log2(v / o1.scale()).toFixed(2),
      error: Math.abs(decode(o1).score - want),
      out_scale_bits: +Math.log2(o1.scale()).toFixed(2),
    });
    o1.delete();
    o2.delete();
    query = encryptQuery();
    err(JSON.stringify(results.at(-1)));
  }
  const bound = Math.max(1, ...built.outBound);
  // The flood's error per slot, sigma sqrt(N/2) / Delta_out, must stay below 2^-12 of the score bound.
  const needs = (2 ** -FLOOD_PRECISION_BITS * bound) / (floodSigma(1) * Math.sqrt(SLOTS));
  const proved = slotsNoiseBound(slotsLayout, { inputBits: A, maskBits: MASK_BITS, leafBits: LEAF_BITS, dataBits: Array<number>(DATA_PRIMES).fill(DATA_BITS) });
  console.log(
    JSON.stringify({
      prototype: 'trees-single-layout-noise',
      fixture: 'breast-cancer',
      input_bits: A,
      mask_bits: MASK_BITS,
      leaf_bits: LEAF_BITS,
      copies: COPIES,
      chain_bits: DATA_PRIMES * DATA_BITS + MASK_BITS + 60,
      score_bound: bound,
      flood_needs_rel_bits: +Math.log2(needs).toFixed(2),
      bound_rel_bits: +Math.log2(proved).toFixed(2),
      honest_noise_rel_bits_worst: Math.max(...results.map((r) => r.v_rel_bits)),
      error_vs_quantized_worst: Math.max(...results.map((r) => r.error)),
      rounds: results,
    }),
  );
  process.exit(0);
}

// Parts: worker threads, each with its own session, keys and evaluator (made before timing),
// each gathering its giant groups of the same query; the main thread adds them and finishes.
const PARTS = Number(opts.parts);
const partWorkers = await Promise.all(
  Array.from({ length: PARTS > 1 ? PARTS : 0 }, async () => {
    const url = (f: string) => new URL(`../src/fhe/${f}`, import.meta.url).href;
    const w = new Worker(
      `const { parentPort, workerData: d } = require('node:worker_threads');
      (async () => {
        const [{ CkksSession }, { loadEvaluationKeys }, { SlotsEvaluator }] = await Promise.all([import(d.ckks), import(d.load), import(d.slots)]);
        const s = await CkksSession.open(d.params);
        const keys = loadEvaluationKeys(s, d.galois, d.relin, d.steps, true);
        const ev = new SlotsEvaluator(s, d.layout, d.scales);
        parentPort.on('message', ({ query, part, parts }) => {
          const t0 = performance.now();
          const bytes = ev.runPart(query, keys, part, parts);
          parentPort.postMessage({ bytes, ms: performance.now() - t0 });
        });
        parentPort.postMessage('ready');
      })();`,
      {
        eval: true,
        workerData: {
          ckks: url('ckks.ts'),
          load: url('load-keys.ts'),
          slots: url('tree-slots.ts'),
          params: s.params,
          galois: km.galoisKeys,
          relin: km.relinKeys,
          steps,
          layout: slotsLayout,
          scales,
        },
      },
    );
    await new Promise((resolve) => w.once('message', resolve));
    return w;
  }),
);
async function inParts(): Promise<{ ms: number; parts_ms: number[]; finish_ms: number; score: number }> {
  const t0 = performance.now();
  const results = await Promise.all(
    partWorkers.map(
      (w, part) =>
        new Promise<{ bytes: Uint8Array; ms: number }>((resolve) => {
          w.once('message', resolve);
          w.postMessage({ query, part, parts: PARTS });
        }),
    ),
  );
  const t1 = performance.now();
  const [out] = evaluator.finishParts(
    results.map((r) => r.bytes),
    evalKeys,
  );
  const flooded = privacy.apply(out);
  const t2 = performance.now();
  const { score } = decode(out);
  out.delete();
  flooded.delete();
  return { ms: t2 - t0, parts_ms: results.map((r) => Math.round(r.ms)), finish_ms: Math.round(t2 - t1), score };
}

const rounds: { layout_ms: number; flood_ms: number; parts?: { ms: number; parts_ms: number[]; finish_ms: number }; batch_circuit_ms: number }[] = [];
let worst = 0;
for (let round = 0; round < Number(opts.rounds); round++) {
  const t = performance.now();
  const [out] = evaluator.run(query, evalKeys);
  const tEvaluated = performance.now();
  const flooded = privacy.apply(out); // the stand-in bound: for its time only
  const total = performance.now() - t;
  const r = decode(out);
  worst = Math.max(worst, Math.abs(r.score - want), r.spread);
  out.delete();
  flooded.delete();
  let parts;
  if (partWorkers.length) {
    const p = await inParts();
    worst = Math.max(worst, Math.abs(p.score - want));
    parts = { ms: Math.round(p.ms), parts_ms: p.parts_ms, finish_ms: p.finish_ms };
  }
  const q = client.encryptQuery([record]);
  const t0 = performance.now();
  server.evaluate(q, keys);
  const batchMs = performance.now() - t0;
  rounds.push({
    layout_ms: Math.round(total),
    flood_ms: Math.round(t + total - tEvaluated),
    ...(parts ? { parts } : {}),
    batch_circuit_ms: Math.round(batchMs),
  });
  err(JSON.stringify(rounds.at(-1)));
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(
  JSON.stringify({
    prototype: 'trees-single-layout',
    fixture: 'breast-cancer',
    leaves: leaves.length,
    diagonals: masks.size,
    giant_groups: giants.size,
    copies: COPIES,
    query_bytes: query.reduce((a, q) => a + q.length, 0),
    galois_key_bytes: km.galoisKeys.length,
    largest_error_vs_quantized: worst,
    layout_ms_median: median(rounds.map((r) => r.layout_ms)),
    layout_ms_range: [Math.min(...rounds.map((r) => r.layout_ms)), Math.max(...rounds.map((r) => r.layout_ms))],
    ...(partWorkers.length
      ? {
          parts: PARTS,
          parts_ms_median: median(rounds.map((r) => r.parts!.ms)),
          parts_ms_range: [Math.min(...rounds.map((r) => r.parts!.ms)), Math.max(...rounds.map((r) => r.parts!.ms))],
        }
      : {}),
    batch_circuit_single_ms_median: median(rounds.map((r) => r.batch_circuit_ms)),
    batch_circuit_single_ms_range: [Math.min(...rounds.map((r) => r.batch_circuit_ms)), Math.max(...rounds.map((r) => r.batch_circuit_ms))],
    rounds,
  }),
);
await Promise.all(partWorkers.map((w) => w.terminate()));
privacy.close();
evaluator.close();
evalKeys.close();
holder.close();
release(decryptor, sk);
client.close();
server.close();
