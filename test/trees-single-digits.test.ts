// A multiclass forest's single-record form, served: the digits random forest (ONNX-ML, 476 leaves,
// 10 outputs) behind a real server with two workers and a real S3-compatible store, through the
// SDK. Each position of the layout sits in four slots, so four outputs share a result ciphertext
// (three for ten). The gather runs in two parts, then two finish tasks share the three leaf sums;
// each result ciphertext is flooded, and the class is the quantized model's.
import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '../src/client/index.ts';
import { FLOOD_PRECISION_BITS } from '../src/model/compile-batch.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { predictionOf } from '../src/model/trees/ensemble.ts';
import { binsOf, quantizedScores } from '../src/model/trees/quantize.ts';
import { serveTrees } from './helpers/trees.ts';

const FIX = join(import.meta.dirname, 'fixtures', 'trees');

t.test('digits, one record: ten outputs from the single-record form, the quantized class', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'digits.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const m = compileTreeModel(new Uint8Array(await readFile(join(FIX, 'digits-rf.onnx'))), 'onnx-ml', d.train);
  t.ok(m.server.single, `the forest has a single-record form (${JSON.stringify(m.report.single)})`);
  t.equal((m.server.single!.leafValues as number[][]).length, 10, 'a leaf-value list per class');
  t.equal(m.server.single!.stretch, 4, 'each position in four slots: four outputs per result ciphertext');
  const dir = await mkdtemp(join(tmpdir(), 'sealed-trees-digits-'));
  const served = await serveTrees(dir, m);
  const client = await createClient({ model: served.modelDir, ...served.route });
  t.teardown(async () => {
    await client.close();
    await served.close();
    await rm(dir, { recursive: true, force: true });
  });
  // The flood's stated precision: 2^-bits of the score bound (a forest's scores are vote
  // fractions, at most 1), where bits keep five standard deviations of a difference of two scores
  // within the calibration records' closest call (precision.ts). At the networks' 2^-12 a held-out
  // record whose two best classes lie 4.2e-4 apart could go the other way (up to one query in nine).
  const p = m.report.precision;
  const single = m.report.single as { precisionBits: number };
  t.ok(p.closestCall! > 0 && p.closestCall! < 2 ** -FLOOD_PRECISION_BITS, `the closest call on the calibration records is ${p.closestCall?.toExponential(2)}`);
  t.ok(
    p.bits > FLOOD_PRECISION_BITS && p.batchBits === p.bits && single.precisionBits === p.bits,
    `both forms hold the 2^-${p.bits} it asks for (${JSON.stringify(p)})`,
  );
  t.ok(5 * Math.SQRT2 * 2 ** -p.bits <= p.closestCall!, 'five standard deviations of a difference of two scores within it');
  const precision = 2 ** -single.precisionBits;
  const first: number[][] = [];
  for (const record of d.test.slice(0, 2)) {
    const want = quantizedScores(m.quantized, binsOf(m.client.bins, record));
    const { predictions, scores, stats } = await client.predictWithStats([record]);
    t.equal(stats.layout, 'single', 'one record goes through the single-record form');
    t.match(stats.server, { layout: 'slots', records: 1, threads: 2 }, 'in two parts on two workers');
    t.equal(scores[0].length, 10, 'ten scores');
    const worst = Math.max(...want.map((w, k) => Math.abs(w - scores[0][k])));
    t.ok(worst < 6 * precision, `every score within ${worst.toExponential(2)} of the quantized model's (precision ${precision.toExponential(2)})`);
    const cls = predictionOf(m.ensemble, want);
    t.equal(predictions[0].label, m.client.labels?.[cls] ?? cls, "the quantized model's class");
    first.push(scores[0]);
  }
  // Each result ciphertext is flooded with its own fresh mask: the same record again moves every
  // score by about the flood's precision; without the flood two evaluations differ by ~1e-14.
  const again = (await client.predictWithStats([d.test[0]])).scores[0];
  const moved = again.filter((v, k) => Math.abs(v - first[0][k]) > 1e-8).length;
  t.ok(moved >= 9, `${moved} of 10 scores moved by more than 1e-8 between two queries of one record`);
});
