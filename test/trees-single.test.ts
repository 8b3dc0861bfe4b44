// One tree-ensemble record, encrypted, in process: the bundle's single-record form from the
// client's keys and query (SingleTreeClient) through the server's pure evaluation
// (SingleTreeServer), whole and in two parts with the flood's mask made beside them, to the
// decrypted prediction; and what the server refuses (wrong query shape, wrong keys).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { allocateCopyExchange, CopyExchange } from '../src/fhe/copy-exchange.ts';
import { isPackedKeys, unpackKeys } from '../src/fhe/packed-keys.ts';
import { ciphertextBytesBound } from '../src/fhe/params.ts';
import { FLOOD_PRECISION_BITS } from '../src/model/compile-batch.ts';
import { compileTreeModel } from '../src/model/trees/compile.ts';
import { predictionOf } from '../src/model/trees/ensemble.ts';
import { TreeClient } from '../src/model/trees/query.ts';
import { binsOf, quantizedScores } from '../src/model/trees/quantize.ts';
import { SingleTreeClient } from '../src/model/trees/single-query.ts';
import { SingleTreeServer } from '../src/model/trees/single-server.ts';
import { singleKeysBytesBound } from '../src/model/trees/single.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader } from '../src/wire/format.ts';
import { sameBytes } from './helpers/same-bytes.ts';

const DIR = join(import.meta.dirname, 'fixtures', 'trees');
const data = JSON.parse(readFileSync(join(DIR, 'breast-cancer.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
const m = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'breast-cancer.xgb.json'))), 'xgboost-json', data.train);
const precision = 2 ** -FLOOD_PRECISION_BITS * 9.15; // the flood's stated precision: 2^-12 of the score bound (9.14)
// One client, its keys (15 Galois steps: ~1.5 s of key generation on the 2-core AMD VM) and one
// server for every test.
const client = await SingleTreeClient.open(m.client);
const server = await SingleTreeServer.open(m.server.model_id, m.server.single!);
const keys = client.keys();
t.teardown(() => (client.close(), server.close()));

t.test('one record: client -> server (whole, and in two parts) -> the quantized prediction', async (t) => {
  const post = { post: m.ensemble.post, outputs: 1 };
  for (const record of data.test.slice(0, 2)) {
    const want = quantizedScores(m.quantized, binsOf(m.client.bins, record))[0];
    const query = client.encryptRecord(record);
    const whole = client.decryptResult(server.evaluate(query, keys, 'client-1'), query);
    const { sections } = server.checkQuery(query);
    const set = server.keysOf(keys, 'client-1');
    const partials = [1, 0].map((k) => server.evaluatePart(sections, k, 2, set));
    const masks = server.floodMasks(set);
    const parts = client.decryptResult(server.resultOf(query, server.finish(partials, masks, set)), query);
    for (const [how, got] of [
      ['whole', whole],
      ['two parts', parts],
    ] as const) {
      const score = got.scores[0][0];
      t.ok(
        Math.abs(score - want) < 6 * precision,
        `${how}: ${score.toFixed(5)} against the quantized ${want.toFixed(5)} (precision ${precision.toExponential(2)})`,
      );
      t.equal(got.predictions[0], predictionOf(post, [want]), `${how}: the quantized model's class`);
    }
    t.not(whole.scores[0][0], parts.scores[0][0], 'each result has its own flood');
  }
});

t.test('two parts sharing a copy exchange: each copy loaded by one of them, the same gathers byte for byte', async (t) => {
  const query = client.encryptRecord(data.test[0]);
  const { sections } = server.checkQuery(query);
  const set = server.keysOf(keys, 'client-1');
  const alone = [0, 1].map((k) => server.evaluatePart(sections, k, 2, set));
  const buffers = allocateCopyExchange(sections.length, ciphertextBytesBound(m.server.single!.params));
  // Part 1 first: it loads every copy it reads (none is claimed yet) and publishes them.
  const second = server.evaluatePart(sections, 1, 2, set, new CopyExchange(buffers));
  // Part 0 is then given garbage for every copy part 1 published: it must take them from the
  // exchange, not load them again.
  const exchange = new CopyExchange(buffers);
  const published = sections.map((_, j) => exchange.take(j, 0) !== undefined);
  t.ok(published.filter(Boolean).length > sections.length / 2, `part 1 published ${published.filter(Boolean).length} of ${sections.length} copies`);
  const spoiled = sections.map((c, j) => (published[j] ? new Uint8Array(c.length) : c));
  const first = server.evaluatePart(spoiled, 0, 2, set, exchange);
  sameBytes(t, first, alone[0], "part 0's gather, from the exchange's copies, is the same byte for byte");
  sameBytes(t, second, alone[1], "part 1's too");

  // A bad copy that both parts read: whoever claims it refuses it, and so does the part that
  // finds it failed in the exchange.
  const own = allocateCopyExchange(sections.length, ciphertextBytesBound(m.server.single!.params));
  server.evaluatePart(sections, 0, 2, set, new CopyExchange(own));
  const readByPart0 = new CopyExchange(own);
  const j = sections.findIndex((_, j) => published[j] && readByPart0.take(j, 0) !== undefined);
  t.ok(j >= 0, `copy ${j} is read by both parts`);
  const bad = sections.map((c, k) => (k === j ? new Uint8Array(c.length) : c));
  const shared = allocateCopyExchange(sections.length, ciphertextBytesBound(m.server.single!.params));
  const message = new RegExp(`ciphertext ${j} of the encrypted query`);
  for (const part of [1, 0])
    t.throws(() => server.evaluatePart(bad, part, 2, set, new CopyExchange(shared)), { code: 'bad-query', message }, `part ${part} refuses it`);
});

t.test("each part loads only its own rotations, the finish the rest: together, the model's", async (t) => {
  const query = client.encryptRecord(data.test[0]);
  const { sections } = server.checkQuery(query);
  const set = server.keysOf(keys, 'client-parts');
  const all = m.server.single!.galoisSteps.length;
  const partials = [server.evaluatePart(sections, 1, 2, set)];
  const afterPart1 = server.loadedKeys;
  t.ok(afterPart1 > 0 && afterPart1 < all / 2 + 2, `part 1 of 2 loaded ${afterPart1} of the ${all} keys`);
  partials.push(server.evaluatePart(sections, 0, 2, set));
  const afterParts = server.loadedKeys;
  t.ok(afterParts > afterPart1 && afterParts < all, `both parts: ${afterParts} (the finish's rotations are not theirs)`);
  const result = server.finish(partials, server.floodMasks(set), set);
  t.equal(server.loadedKeys, all, 'the finish loaded the rest: every key the model has is used by one task');
  const want = quantizedScores(m.quantized, binsOf(m.client.bins, data.test[0]))[0];
  const got = client.decryptResult(server.resultOf(query, result), query).scores[0][0];
  t.ok(Math.abs(got - want) < 6 * precision, `and the result is right: ${got.toFixed(5)} against ${want.toFixed(5)}`);
});

/** A SEAL object whose header claims zlib (the clients wrote the single-record keys uncompressed, and zstd before; packed now). */
const zlibLabelled = (b: Uint8Array) => {
  const x = b.slice();
  x[5] = 1;
  return x;
};

/** A section whose SEAL header claims zstd (the clients write the single-record query uncompressed). */
const zstdLabelled = (b: Uint8Array) => {
  const x = b.slice();
  x[5] = 2;
  return x;
};

t.test('what the server refuses, with the reason', async (t) => {
  const batch = await TreeClient.open(m.client);
  t.teardown(() => batch.close());
  const query = client.encryptRecord(data.test[0]);
  const q = decodeWire<QueryHeader>('query', query, 'q');
  const k = decodeWire<KeysHeader>('keys', keys, 'k');
  // The Galois keys as SEAL saves them (uncompressed): what the clients wrote before packing them.
  const sealGalois = unpackKeys(k.sections[0], 'the Galois keys', singleKeysBytesBound(m.server.single!));
  const refusals: [string, () => unknown, { code: string; message: RegExp }][] = [
    [
      'a copy left out',
      () => server.evaluate(encodeWire('query', q.header, q.sections.slice(1)), keys),
      { code: 'bad-query', message: /declares 1 record in 31 ciphertexts; a single-record query holds 1 record in 32/ },
    ],
    [
      'two records declared',
      () => server.evaluate(encodeWire('query', { ...q.header, records: 2 }, q.sections), keys),
      { code: 'bad-query', message: /declares 2 records/ },
    ],
    [
      'a batch query',
      () => server.evaluate(encodeWire('query', { ...q.header, layout: 'batch' }, q.sections), keys),
      { code: 'bad-query', message: /not a single-record/ },
    ],
    ['the batch keys', () => server.evaluate(query, batch.keys()), { code: 'bad-keys', message: /other parameters/ }],
    [
      'keys without the public key',
      () => server.evaluate(query, encodeWire('keys', { ...k.header, public_key: false }, k.sections.slice(0, 2))),
      { code: 'bad-keys', message: /public key/ },
    ],
    [
      'keys without a rotation',
      () => server.evaluate(query, encodeWire('keys', k.header, [batch.keys().slice(0, 0), ...k.sections.slice(1)])),
      { code: 'bad-keys', message: /Galois keys/ },
    ],
    [
      'a copy compressed (zstd)',
      () => server.evaluate(encodeWire('query', q.header, [zstdLabelled(q.sections[0]), ...q.sections.slice(1)]), keys),
      { code: 'bad-query', message: /ciphertext 0 of the encrypted query: the data uses SEAL compression mode "zstd"; this model's clients write "none"/ },
    ],
    [
      'Galois keys labelled zlib',
      () => server.evaluate(query, encodeWire('keys', k.header, [zlibLabelled(sealGalois), ...k.sections.slice(1)])),
      { code: 'bad-keys', message: /the Galois keys: the data uses SEAL compression mode "zlib"/ },
    ],
    [
      'another query relabelled',
      () => server.evaluate(encodeWire('query', { ...q.header, model_id: 'f'.repeat(64) }, q.sections), keys),
      { code: 'wrong-model', message: /another model/ },
    ],
  ];
  for (const [what, run, error] of refusals) t.throws(run, error, what);
  // Key sets saved before the keys were packed (uncompressed) and before that (zstd) still work.
  const gk = new server.session.seal.GaloisKeys();
  gk.loadFromArray(server.session.context, sealGalois);
  const zstdKeys = encodeWire('keys', k.header, [gk.saveToArray(server.session.seal.ComprModeType.zstd) as Uint8Array, ...k.sections.slice(1)]);
  gk.delete();
  t.ok(isPackedKeys(decodeWire<KeysHeader>('keys', keys, 'k').sections[0]), "the client writes its Galois keys packed at the primes' widths");
  const quantizedClass = predictionOf({ post: m.ensemble.post, outputs: 1 }, [quantizedScores(m.quantized, binsOf(m.client.bins, data.test[0]))[0]]);
  t.equal(client.decryptResult(server.evaluate(query, zstdKeys), query).predictions[0], quantizedClass, 'zstd Galois keys: the quantized class');
  const uncompressedKeys = encodeWire('keys', k.header, [sealGalois, ...k.sections.slice(1)]);
  t.equal(
    client.decryptResult(server.evaluate(query, uncompressedKeys), query).predictions[0],
    quantizedClass,
    'uncompressed Galois keys: the quantized class',
  );
  const result = server.evaluate(query, keys, 'client-1');
  const other = client.encryptRecord(data.test[1]);
  t.throws(() => client.decryptResult(result, other), { code: 'bad-query', message: /another query/ }, 'the client refuses a result of another query');
  t.ok(Number.isFinite(client.decryptResult(result, query).scores[0][0]), 'and the server still answers correctly after the refusals');
  // A key set the server does not hold makes it release the one it holds before loading (a
  // worker's budget, singleWorkerBytes, has room for one loaded set), so even a set then refused does.
  t.equal(server.keptKeySets, 1, "client-1's key set is held");
  const truncatedRelin = encodeWire('keys', k.header, [k.sections[0], k.sections[1].slice(0, 100), ...k.sections.slice(2)]);
  t.throws(
    () => server.evaluate(query, truncatedRelin, 'client-2'),
    { code: 'bad-keys', message: /relinearization keys/ },
    'a second client with truncated keys: refused',
  );
  t.equal(server.keptKeySets, 0, 'the held set was released before the second was loaded: never two in the heap');
});

t.test('segments of 512 (diabetes, 383 leaves, regression): the quantized value, keys within the bound the server allows', async (t) => {
  const d = JSON.parse(readFileSync(join(DIR, 'diabetes.data.json'), 'utf8')) as { train: number[][]; test: number[][] };
  const dm = compileTreeModel(new Uint8Array(readFileSync(join(DIR, 'diabetes.xgb.json'))), 'xgboost-json', d.train);
  t.equal((dm.server.single!.leafValues as number[][])[0].length, 512);
  const c = await SingleTreeClient.open(dm.client);
  const s = await SingleTreeServer.open(dm.server.model_id, dm.server.single!);
  t.teardown(() => (c.close(), s.close()));
  const k = c.keys();
  t.ok(
    k.length <= singleKeysBytesBound(dm.server.single!),
    `keys ${(k.length / 1e6).toFixed(1)} MB within the bound ${(singleKeysBytesBound(dm.server.single!) / 1e6).toFixed(1)} MB`,
  );
  t.ok(keys.length <= singleKeysBytesBound(m.server.single!), `breast cancer's too (${(keys.length / 1e6).toFixed(1)} MB)`);
  const record = d.test[0];
  const query = c.encryptRecord(record);
  const got = c.decryptResult(s.evaluate(query, k), query).scores[0][0];
  const want = quantizedScores(dm.quantized, binsOf(dm.client.bins, record))[0];
  const bound = 2 ** -FLOOD_PRECISION_BITS * 384; // the flood's precision: 2^-12 of the score bound (383.6)
  t.ok(Math.abs(got - want) < 6 * bound, `${got.toFixed(3)} against the quantized ${want.toFixed(3)} (precision ${bound.toFixed(3)})`);
});
