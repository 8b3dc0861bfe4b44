// The SDK serves tree ensembles as it serves networks: createClient on a tree bundle, a real
// inference server and a local S3. Forty records go through the batch circuit, one record through
// the single-record form (its keys made on first use and saved beside the batch set in keysDir);
// a second client on the same keysDir reuses both sets and uploads nothing. Every prediction is
// the quantized model's. The first 8 trees of the breast-cancer model at 2 bits keep it short.
import t from 'tap';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, endpointTransport, isTreeClientPart, sha256Hex, type SealedClient, type Transport } from '../src/client/index.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { predictionOf } from '../src/model/trees/ensemble.ts';
import { binsOf, quantizedScores } from '../src/model/trees/quantize.ts';
import { serveTrees, writeFirstTrees } from './helpers/trees.ts';

const FIX = join(import.meta.dirname, 'fixtures', 'trees');

t.test('createClient on a tree bundle: batch, single record, keys kept in keysDir', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const dir = await mkdtemp(join(tmpdir(), 'sealed-sdk-trees-'));
  const xgb = join(dir, 'model.xgb.json');
  await writeFirstTrees(join(FIX, 'breast-cancer.xgb.json'), xgb, 8);
  const m = compileTreeModel(new Uint8Array(await readFile(xgb)), 'xgboost-json', d.train, { bits: 2 });
  t.ok(m.client.single, 'the model has a single-record form');
  const served = await serveTrees(dir, m);
  const { modelDir, route } = served;
  const clients: SealedClient[] = [];
  t.teardown(async () => {
    for (const c of clients) await c.close();
    await served.close();
    await rm(dir, { recursive: true, force: true });
  });
  const keysDir = join(dir, 'keys');
  const open = async () => {
    const c = await createClient({ model: modelDir, ...route, keysDir });
    clients.push(c);
    return c;
  };
  const quantized = (r: number[]) => predictionOf(m.ensemble, quantizedScores(m.quantized, binsOf(m.client.bins, r)));

  const a = await open();
  t.ok(isTreeClientPart(a.model), 'the client reads the tree model');
  t.same(a.features, m.client.features, "the model's features");
  const records = d.test.slice(0, 40);
  const batch = await a.predictWithStats(records);
  t.equal(batch.stats.layout, 'batch', 'forty records go through the batch circuit');
  t.same(
    batch.predictions.map((p) => p.label),
    records.map(quantized),
    "every prediction is the quantized model's",
  );
  t.ok(
    batch.predictions.every((p) => p.probabilities?.length === 2 && Math.abs(p.probabilities[0] + p.probabilities[1] - 1) < 1e-9),
    'with probabilities',
  );

  // One record, as an object keyed by feature name.
  const named = Object.fromEntries(a.features.map((f, j) => [f, d.test[40][j]]));
  const one = await a.predictWithStats([named]);
  t.equal(one.stats.layout, 'single', 'one record goes through the single-record form');
  t.ok(one.stats.ms.keygen > 0 && one.stats.keys_uploaded, 'its key set was made and uploaded');
  t.equal(one.predictions[0].label, quantized(d.test[40]), "the quantized model's class");
  t.ok(a.keys?.singleRecord, 'the client holds the single-record set beside the batch set');
  t.ok((await stat(join(keysDir, 'single', 'secret.key'))).size > 0, "the single-record secret key was saved in keysDir's single/");

  // The second client records what its transport brings back.
  const results: { query: Uint8Array; result: Uint8Array }[] = [];
  const inner = endpointTransport(route);
  const transport: Transport = {
    batch: true,
    evaluate: async (query, keys, info) => {
      const ev = await inner.evaluate(query, keys, info);
      results.push({ query, result: ev.result });
      return ev;
    },
  };
  const b = await createClient({ model: modelDir, transport, keysDir });
  clients.push(b);
  t.teardown(() => inner.close?.());
  t.equal(b.keys?.evaluationKeysId, a.keys?.evaluationKeysId, 'a second client loads the batch set');
  t.equal(b.keys?.singleRecord?.evaluationKeysId, a.keys?.singleRecord?.evaluationKeysId, 'and the single-record set');
  const again = await b.predictWithStats([d.test[41]]);
  t.equal(again.stats.ms.keygen, 0, 'it makes no keys');
  t.notOk(again.stats.keys_uploaded, 'and uploads none');
  t.equal(again.predictions[0].label, quantized(d.test[41]), "the quantized model's class");

  // A result is decrypted only for the query it answers.
  const [{ query, result }] = results;
  t.equal(b.decrypt(result, { querySha256: sha256Hex(query) })[0].label, quantized(d.test[41]), 'the result of its query decrypts');
  const other = b.encrypt([d.test[42]]);
  t.throws(() => b.decrypt(result, { querySha256: sha256Hex(other) }), /answers another query/, 'a result for another query is refused');
});

t.test('a broken tree client part is refused before any key is made', async (t) => {
  const d = JSON.parse(await readFile(join(FIX, 'breast-cancer.data.json'), 'utf8')) as { train: number[][] };
  const dir = await mkdtemp(join(tmpdir(), 'sealed-sdk-trees-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const xgb = join(dir, 'model.xgb.json');
  await writeFirstTrees(join(FIX, 'breast-cancer.xgb.json'), xgb, 2);
  const part = compileTreeModel(new Uint8Array(await readFile(xgb)), 'xgboost-json', d.train, { bits: 2, single: false }).client;
  const broken = [
    [{ ...part, inputs: part.inputs + 1 }, /bins that do not match its input count/],
    [{ ...part, bins: { ...part.bins, edges: part.bins.edges.map((e) => [...e].reverse()) } }, /no bins per feature/],
    [{ ...part, post: 'exp' }, /unknown post-processing/],
    [{ ...part, model_id: 'x' }, /no valid model_id/],
    [{ ...part, params: { ...part.params, securityLevel: 0 } }, /security level/],
  ] as const;
  for (const [model, why] of broken) await t.rejects(createClient({ model: model as typeof part }), why, String(why));
  const c = await createClient({ model: part });
  t.ok(isTreeClientPart(c.model), 'the unbroken part opens');
  await c.close();
});
