// npm run bench -- trees [--fixtures breast-cancer,diabetes,digits] [--bits B] [--no-single] [--form grouped|factored]
//   [--served [--rounds R]]
//
// Per fixture (test/fixtures/trees, made by scripts/tree-fixtures.py), one JSON line: the
// original model's accuracy (R^2 for regression) on the held-out records, the quantized
// plaintext model's and the encrypted one's, agreement, batch-mode server time per record (one
// full batch: the held-out records repeated to fill every slot), single-record server time and
// key generation, query / key / result bytes, and the measured server time next to the operation
// counts x unit costs measured in the same run. The last line gathers them. Progress goes to stderr.
// --served adds one record through the real server with one worker and with two (bench-trees-served.ts).
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { treeOpCounts } from '../src/fhe/tree-circuit.ts';
import { measureTreeUnitCosts } from '../src/fhe/tree-cost.ts';
import { compileTreeModel, type TreeModelKind } from '../src/model/trees/compile.ts';
import { predict, predictionOf } from '../src/model/trees/ensemble.ts';
import { binsOf, quantizedScores } from '../src/model/trees/quantize.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { TreeServer } from '../src/model/trees/server.ts';
import { SingleTreeClient } from '../src/model/trees/single-query.ts';
import { servedSingle } from './bench-trees-served.ts';

const err = (s: string) => process.stderr.write(s + '\n');
const DIR = join(import.meta.dirname, '..', 'test', 'fixtures', 'trees');
const FIXTURES: Record<string, { file: string; kind: TreeModelKind }> = {
  'breast-cancer': { file: 'breast-cancer.xgb.json', kind: 'xgboost-json' },
  diabetes: { file: 'diabetes.xgb.json', kind: 'xgboost-json' },
  digits: { file: 'digits-rf.onnx', kind: 'onnx-ml' },
};

async function runFixture(name: string, bits: number | undefined, single: boolean, form?: 'grouped' | 'factored', servedRounds = 0) {
  const f = FIXTURES[name];
  if (!f) throw new Error(`unknown fixture ${name}`);
  const d = JSON.parse(readFileSync(join(DIR, `${name}.data.json`), 'utf8')) as {
    features: string[];
    train: number[][];
    test: number[][];
    test_labels: number[];
  };
  const t0 = performance.now();
  const m = compileTreeModel(new Uint8Array(readFileSync(join(DIR, f.file))), f.kind, d.train, { bits, features: d.features, form });
  const compileMs = performance.now() - t0;
  const regression = m.ensemble.post === 'identity';
  err(
    `${name}: compiled in ${compileMs.toFixed(0)} ms: ${m.report.bits} bits, ${m.client.inputs} inputs, ring ${m.client.params.polyModulusDegree}, primes ${m.client.params.coeffModulusBits.join(',')}`,
  );
  const unit = await measureTreeUnitCosts(m.server.circuit);
  err(`${name}: unit costs (ms) ${JSON.stringify(unit)}`);
  const R = m.client.records_per_batch;
  // One full batch: the held-out records, repeated.
  const records = Array.from({ length: R }, (_, i) => d.test[i % d.test.length]);
  const client = await TreeClient.open(m.client);
  const server = await TreeServer.open(m.server);
  try {
    let t = performance.now();
    const keys = client.keys();
    const keygenMs = performance.now() - t;
    t = performance.now();
    const query = client.encryptQuery(records);
    const encryptMs = performance.now() - t;
    err(
      `${name}: keys ${(keys.length / 1e6).toFixed(1)} MB in ${keygenMs.toFixed(0)} ms, query ${(query.length / 1e6).toFixed(0)} MB in ${encryptMs.toFixed(0)} ms`,
    );
    const ops: Record<string, number> = {};
    t = performance.now();
    const result = server.evaluate(query, keys, ops);
    const batchMs = performance.now() - t;
    err(`${name}: batch of ${R} records evaluated in ${batchMs.toFixed(0)} ms`);
    const got = client.decryptResult(result, query);
    let singleMs: number | undefined;
    let singleKeygenMs: number | undefined;
    if (single) {
      // The single-record form when the bundle has one (its keys loaded by a first query, as a
      // serving worker keeps them), else the batch circuit on a one-record batch.
      const one = m.client.single ? await SingleTreeClient.open(m.client) : undefined;
      t = performance.now();
      const k1 = one ? one.keys() : keys;
      if (one) singleKeygenMs = performance.now() - t;
      const q1 = one ? one.encryptRecord(d.test[0]) : client.encryptQuery([d.test[0]]);
      if (one) server.evaluate(q1, k1, undefined, undefined, 'bench');
      t = performance.now();
      const r1 = server.evaluate(q1, k1, undefined, undefined, 'bench');
      singleMs = performance.now() - t;
      const g1 = (one ?? client).decryptResult(r1, q1);
      one?.close();
      if (g1.predictions[0] !== got.predictions[0] && !regression) err(`${name}: single-record prediction differs from the batch's`);
    }
    // Metrics on the held-out records (the first d.test.length slots).
    const n = d.test.length;
    const orig = d.test.map((x) => predict(m.ensemble, x));
    const quant = d.test.map((x) => predictionOf(m.ensemble, quantizedScores(m.quantized, binsOf(m.client.bins, x))));
    const enc = got.predictions.slice(0, n);
    const metric = (p: number[]) => {
      if (!regression) return p.filter((v, i) => v === d.test_labels[i]).length / n;
      const mean = d.test_labels.reduce((a, b) => a + b, 0) / n;
      const ss = p.reduce((a, v, i) => a + (v - d.test_labels[i]) ** 2, 0);
      const st = d.test_labels.reduce((a, v) => a + (v - mean) ** 2, 0);
      return 1 - ss / st;
    };
    const agree = (a: number[], b: number[]) =>
      regression ? a.reduce((w, v, i) => Math.max(w, Math.abs(v - b[i])), 0) : a.filter((v, i) => v === b[i]).length / n;
    // Every slot of the batch, not only the first n: encrypted vs quantized.
    let slotsAgree = 0;
    got.predictions.forEach((p, i) => {
      const q = quant[i % n];
      if (regression ? Math.abs(p - q) < 2 ** -8 * Math.max(1, Math.abs(q)) : p === q) slotsAgree++;
    });
    const served = servedRounds > 0 ? await servedSingle(m, d.test[0], servedRounds) : undefined;
    const counts = treeOpCounts(m.server.circuit);
    const predictedMs = Object.entries(ops).reduce((a, [k, c]) => a + c * (unit[k] ?? 0), 0);
    return {
      fixture: name,
      source: m.ensemble.source,
      trees: m.ensemble.trees.length,
      form: m.report.form,
      outputs: m.ensemble.outputs,
      task: m.ensemble.task,
      metric: regression ? 'r2' : 'accuracy',
      target_std: regression ? Math.sqrt(d.test_labels.reduce((a, v) => a + (v - d.test_labels.reduce((x, y) => x + y, 0) / n) ** 2, 0) / n) : undefined,
      original: metric(orig),
      quantized: metric(quant),
      encrypted: metric(enc),
      agreement_encrypted_vs_original: agree(enc, orig),
      agreement_encrypted_vs_quantized: agree(enc, quant),
      batch_slots_agreeing_with_quantized: slotsAgree / R,
      bits: m.report.bits,
      calibration_agreement: m.report.calibrationAgreement,
      closest_call: m.report.precision.closestCall,
      precision_bits: m.report.precision.batchBits,
      inputs: m.client.inputs,
      ring: m.client.params.polyModulusDegree,
      coeff_modulus_bits: m.client.params.coeffModulusBits,
      privacy: m.server.circuit.privacy,
      records_per_batch: R,
      batch_server_ms: Math.round(batchMs),
      server_ms_per_record: batchMs / R,
      single_record_server_ms: singleMs === undefined ? undefined : Math.round(singleMs),
      single_record_keygen_ms: singleKeygenMs === undefined ? undefined : Math.round(singleKeygenMs),
      single_record_form: m.client.single ? 'slots' : 'batch circuit',
      single_record_served: served,
      keygen_ms: Math.round(keygenMs),
      client_encrypt_ms_per_record: encryptMs / R,
      query_bytes: query.length,
      key_bytes: keys.length,
      result_bytes: result.length,
      ops,
      planned_ops: counts,
      unit_ms: Object.fromEntries(Object.entries(unit).map(([k, v]) => [k, Number(v.toFixed(3))])),
      predicted_server_ms: Math.round(predictedMs),
      load_average: loadavg()[0],
    };
  } finally {
    client.close();
    server.close();
  }
}

export async function benchTrees(args: string[]) {
  const { values } = parseArgs({
    args,
    options: {
      fixtures: { type: 'string', default: 'breast-cancer,diabetes,digits' },
      bits: { type: 'string' },
      single: { type: 'boolean', default: true },
      form: { type: 'string' },
      served: { type: 'boolean', default: false },
      rounds: { type: 'string', default: '5' },
    },
    allowNegative: true,
  });
  if (values.form !== undefined && values.form !== 'grouped' && values.form !== 'factored') throw new Error('--form is grouped or factored');
  const lines = [];
  for (const name of values.fixtures.split(',')) {
    const line = await runFixture(
      name,
      values.bits ? Number(values.bits) : undefined,
      values.single,
      values.form as 'grouped' | 'factored' | undefined,
      values.served ? Number(values.rounds) : 0,
    );
    console.log(JSON.stringify(line));
    lines.push(line);
  }
  return {
    bench: 'trees',
    fixtures: lines.map((l) => l.fixture),
    // Regression: the largest |encrypted - quantized| within 1% of the held-out targets' standard deviation.
    all_agree_with_quantized: lines.every((l) =>
      l.metric === 'r2' ? l.agreement_encrypted_vs_quantized <= 0.01 * l.target_std! : l.agreement_encrypted_vs_quantized === 1,
    ),
    server_ms_per_record: Object.fromEntries(lines.map((l) => [l.fixture, l.server_ms_per_record])),
    single_record_server_ms: Object.fromEntries(lines.map((l) => [l.fixture, l.single_record_server_ms])),
    single_record_served_pool_wall_ms: values.served
      ? Object.fromEntries(lines.map((l) => [l.fixture, Object.fromEntries(l.single_record_served!.map((s) => [`workers_${s.workers}`, s.pool_wall_ms_p50]))]))
      : undefined,
    cpu: cpus()[0]?.model,
    cores: cpus().length,
  };
}
