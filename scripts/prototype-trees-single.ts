// PROTOTYPE, not part of the product: the "leaves in slots" layout for one tree-ensemble record
// (docs/trees.md, Not done yet), timed against the factored batch circuit on a one-record query,
// alternated in one process. It checks the layout decrypts to the quantized model's score; it
// has no derived flood bound (the flood is applied with a stand-in bound, for its time only), no
// wire format and no serving. Run: sh scripts/with-node.sh node scripts/prototype-trees-single.ts
// [--copies 32] [--rounds 5] [--input-bits 63] [--mask-bits 30] [--leaf-bits 30]. Last stdout
// line: one JSON object. With --noise it times nothing and measures instead what a flood bound
// must cover: the honest noise of the unflooded result (two encryptions of one record, evaluated
// alike: |phase(r1 - r2)|_2 / sqrt(2) estimates |v|_2, as test/circuit-privacy-trees.test.ts
// does) relative to the result's scale, and the result's distance to the quantized model's score
// (deterministic: the rounding of the masks and leaf values the server encodes).
//
// Layout (ring 16384, 8,192 slots): the client sends its thermometer bits replicated with period
// 1024 and `copies` rotated copies of that vector. A period is 4 segments of 256 positions; each
// leaf gets a position p and each of its (at most 4) factors a segment. The server computes every
// factor at once, F = rescale(sum over diagonals d of M_d * rot(x, d)) + constants, with the
// diagonals grouped by giant step (d = g copies + j: copy j, mask pre-rotated, one rotation per
// g), then the leaf indicators by two rotated products (F * rot(F, 512), then * rot(., 256)),
// multiplies by the leaf values and sums the 256 positions with 8 rotations: every slot holds the
// score. The placement is greedy: for each leaf, the position and segment order adding the fewest
// new diagonals (a new giant step costs 10).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Ciphertext, Plaintext } from 'node-seal/throws';
import { CkksSession } from '../src/fhe/ckks.ts';
import { floodSigma } from '../src/fhe/privacy.ts';
import { SinglePrivacy, makePublicKey } from '../src/fhe/single-privacy.ts';
import { FLOOD_PRECISION_BITS } from '../src/model/compile-batch.ts';
import { buildCircuit, thermometer } from '../src/model/trees/circuit.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { binsOf, inputOffsets, quantizedScores } from '../src/model/trees/quantize.ts';
import { PERIOD, SEGMENT, giantGroups, placeLeaves, slotsLeaves, slotsNoiseBound } from '../src/model/trees/slots.ts';
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
const { masks, constant, leafValues: leafValue } = slotsLayout;
const giants = giantGroups(slotsLayout); // keyed by the giant rotation
err(`${leaves.length} leaves: ${masks.size} diagonals in ${giants.size} giant groups, ${COPIES} copies from the client`);

const repeat = (v: Float64Array) => Float64Array.from({ length: SLOTS }, (_, s) => v[s % v.length]);
const record = d.test[0];
const recordBits = thermometer(binsOf(m.client.bins, record), m.client.bins.edges, offsets, inputs);
const bits = Float64Array.from({ length: PERIOD }, (_, i) => (i < inputs ? recordBits[i] : 0));
const want = quantizedScores(m.quantized, binsOf(m.client.bins, record))[0];

// Ring 16384: DATA_PRIMES primes of DATA_BITS, one of MASK_BITS for the gather's rescale, the special prime.
const s = await CkksSession.open({
  scheme: 'ckks',
  polyModulusDegree: 16384,
  coeffModulusBits: [...Array<number>(DATA_PRIMES).fill(DATA_BITS), MASK_BITS, 60],
  securityLevel: 128,
});
const { seal, context, encoder, evaluator } = s;
const kg = new seal.KeyGenerator(context);
const sk = kg.secretKey();
const relin = kg.createRelinKeys();
const steps = [...[...giants.keys()].filter((g) => g > 0), 2 * SEGMENT, SEGMENT, ...Array.from({ length: 8 }, (_, i) => 2 ** i)];
const galoisBytes = kg.createGaloisKeysSerializableWithSteps(Int32Array.from(steps)).saveToArray(seal.ComprModeType.zstd) as Uint8Array;
const galois = new seal.GaloisKeys();
galois.loadFromArray(context, galoisBytes);
const encryptor = new seal.Encryptor(context, kg.createPublicKey(), sk);
const decryptor = new seal.Decryptor(context, sk);
const privacy = new SinglePrivacy(s, makePublicKey(s, sk.saveToArray(seal.ComprModeType.none) as Uint8Array), 2 ** 200);
const encode = (v: Float64Array, scale: number) => {
  const pt = new seal.Plaintext();
  encoder.encode(v, scale, pt);
  return pt;
};
const x = repeat(bits);
const encryptQuery = () =>
  Array.from({ length: COPIES }, (_, j) => {
    const pt = encode(
      Float64Array.from({ length: SLOTS }, (_, t) => x[(t + j) % SLOTS]),
      2 ** A,
    );
    const ser = encryptor.encryptSymmetricSerializable(pt);
    const bytes = ser.saveToArray(seal.ComprModeType.zstd) as Uint8Array;
    ser.delete();
    pt.delete();
    return bytes;
  });
let query = encryptQuery();
// Model side (made once per model): masks pre-rotated by their giant step g, at 2^MASK_BITS.
const maskPts = new Map<number, { j: number; pt: Plaintext }[]>();
for (const [g, ds] of giants) {
  maskPts.set(
    g,
    ds.map((dd) => {
      const v = repeat(masks.get(dd)!);
      return {
        j: dd - g,
        pt: encode(
          Float64Array.from({ length: SLOTS }, (_, t) => v[(t - g + SLOTS) % SLOTS]),
          2 ** MASK_BITS,
        ),
      };
    }),
  );
}
const client = await TreeClient.open(m.client);
const server = await TreeServer.open(m.server);
const keys = client.keys();
err(`query ${(query.reduce((a, q) => a + q.length, 0) / 1e6).toFixed(1)} MB, Galois keys ${(galoisBytes.length / 1e6).toFixed(1)} MB (${steps.length} steps)`);

/** Evaluates the layout on `query`; with `keep`, the result is left unflooded and pushed there (the caller deletes it). */
function layout(keep?: Ciphertext[]): { ms: Record<string, number>; score: number; spread: number } {
  const ms: Record<string, number> = {};
  let t0 = performance.now();
  const lap = (k: string) => {
    ms[k] = (ms[k] ?? 0) + performance.now() - t0;
    t0 = performance.now();
  };
  const owned: (Ciphertext | Plaintext)[] = [];
  const ct = () => {
    const c = new seal.Ciphertext();
    owned.push(c);
    return c;
  };
  try {
    const copies = query.map((b) => {
      const c = ct();
      c.loadFromArray(context, b);
      return c;
    });
    lap('load');
    const term = ct();
    let F: Ciphertext | undefined;
    for (const [g, list] of maskPts) {
      const inner = ct();
      list.forEach(({ j, pt }, n) => {
        if (n === 0) evaluator.multiplyPlain(copies[j], pt, inner);
        else {
          evaluator.multiplyPlain(copies[j], pt, term);
          evaluator.addInplace(inner, term);
        }
      });
      lap('mask products');
      if (g) evaluator.rotateVectorInplace(inner, g, galois);
      lap('giant rotations');
      if (!F) F = inner;
      else evaluator.addInplace(F, inner);
    }
    if (!F) throw new Error('no diagonals');
    const c = encode(repeat(constant), F.scale());
    owned.push(c);
    evaluator.addPlainInplace(F, c);
    evaluator.rescaleToNextInplace(F);
    lap('constants, rescale');
    const r = ct();
    for (const step of [2 * SEGMENT, SEGMENT]) {
      evaluator.rotateVector(F, step, galois, r);
      evaluator.multiplyInplace(F, r);
      evaluator.relinearizeInplace(F, relin);
    }
    lap('segment products');
    const v = encode(repeat(leafValue), 2 ** LEAF_BITS);
    owned.push(v);
    const pid = F.parmsId();
    evaluator.plainModSwitchToInplace(v, pid);
    pid.delete();
    evaluator.multiplyPlainInplace(F, v);
    for (let i = 0; i < 8; i++) {
      evaluator.rotateVector(F, 2 ** i, galois, r);
      evaluator.addInplace(F, r);
    }
    lap('leaf values, sum');
    if (keep) {
      owned.splice(owned.indexOf(F), 1);
      keep.push(F);
    } else {
      owned.push(privacy.apply(F));
      lap('flood (stand-in bound)');
    }
    const pt = new seal.Plaintext();
    owned.push(pt);
    decryptor.decrypt(F, pt);
    const out = encoder.decodeFloat64(pt) as Float64Array;
    let spread = 0;
    for (const v of out) spread = Math.max(spread, Math.abs(v - out[0]));
    return { ms, score: out[0], spread };
  } finally {
    for (const o of owned) o.delete();
  }
}

if (opts.noise) {
  const kept: Ciphertext[] = [];
  const results = [];
  for (let round = 0; round < Number(opts.rounds); round++) {
    const r1 = layout(kept);
    query = encryptQuery();
    layout(kept);
    const [o1, o2] = kept.splice(0);
    const v = differencePhaseL2(s, decryptor, o1, o2) / Math.SQRT2;
    results.push({ v_rel_bits: +Math.log2(v / o1.scale()).toFixed(2), error: Math.abs(r1.score - want), out_scale_bits: +Math.log2(o1.scale()).toFixed(2) });
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

const rounds: { layout_ms: number; batch_circuit_ms: number; phases_ms: Record<string, number> }[] = [];
let worst = 0;
for (let round = 0; round < Number(opts.rounds); round++) {
  const r = layout();
  const total = Object.values(r.ms).reduce((a, b) => a + b, 0);
  worst = Math.max(worst, Math.abs(r.score - want), r.spread);
  const q = client.encryptQuery([record]);
  const t0 = performance.now();
  server.evaluate(q, keys);
  const batchMs = performance.now() - t0;
  rounds.push({
    layout_ms: Math.round(total),
    batch_circuit_ms: Math.round(batchMs),
    phases_ms: Object.fromEntries(Object.entries(r.ms).map(([k, v]) => [k, Math.round(v)])),
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
    galois_key_bytes: galoisBytes.length,
    largest_error_vs_quantized: worst,
    layout_ms_median: median(rounds.map((r) => r.layout_ms)),
    layout_ms_range: [Math.min(...rounds.map((r) => r.layout_ms)), Math.max(...rounds.map((r) => r.layout_ms))],
    batch_circuit_single_ms_median: median(rounds.map((r) => r.batch_circuit_ms)),
    batch_circuit_single_ms_range: [Math.min(...rounds.map((r) => r.batch_circuit_ms)), Math.max(...rounds.map((r) => r.batch_circuit_ms))],
    rounds,
  }),
);
privacy.close();
client.close();
server.close();
