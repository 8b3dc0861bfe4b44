// Writes test/vectors/: a small real model (iris, multiclass linear) and, for three records, the
// secret key, evaluation keys, query, result and expected scores. A client or server in another
// language (with Microsoft SEAL 4.1) can check itself against them; test/vectors.test.ts checks
// that ours still reads and produces them. Run again only when the wire format changes.
//
//   node scripts/make-test-vectors.ts
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClientSession } from '../src/client/session.ts';
import { CkksSession, loadEvaluationKeys, loadQueryCiphertext } from '../src/fhe/ckks.ts';
import { Engine } from '../src/fhe/engine.ts';
import { readClientPart, readServerPart } from '../src/model/bundle.ts';
import { parseCsv, splitTarget } from '../src/train/csv.ts';
import { parseHyperparameters, train } from '../src/train/train.ts';
import { decodeWire, encodeWire, type KeysHeader, type QueryHeader } from '../src/wire/format.ts';

const out = fileURLToPath(new URL('../test/vectors/', import.meta.url));
const iris = fileURLToPath(new URL('../data/iris/iris.csv', import.meta.url));
const work = await mkdtemp(join(tmpdir(), 'sealed-vectors-'));
await mkdir(join(work, 'train'));
await copyFile(iris, join(work, 'train', 'iris.csv'));
await rm(out, { recursive: true, force: true });
await train({ trainDir: join(work, 'train'), modelDir: join(out, 'model') }, parseHyperparameters({ target: 'species', epochs: '200', learning_rate: '0.05', labels: 'setosa,versicolor,virginica' }), () => {});
const { modelId, client } = await readClientPart(join(out, 'model'));
const server = await readServerPart(join(out, 'model'));
const session = await ClientSession.open(modelId, client);
const keys = session.generateKeys();
const records = splitTarget(parseCsv(await readFile(iris, 'utf8'), 'iris'), 'species').x.filter((_, i) => i % 50 === 0);
const query = session.encrypt(records);

// The server's side, exactly as a worker does it.
const s = await CkksSession.open(client.params);
const kh = decodeWire<KeysHeader>('keys', keys.evaluationKeys, 'keys');
const ek = loadEvaluationKeys(s, kh.sections[0], kh.sections[1], server.program.galoisSteps, server.program.relin);
const engine = new Engine(s, server.program, server.masks);
const q = decodeWire<QueryHeader>('query', query, 'query');
const results = q.sections.map((b) => {
  const ct = loadQueryCiphertext(s, b, server.program.inputScaleBits);
  const r = engine.run(ct, ek);
  ct.delete();
  const bytes = r.saveToArray(s.seal.ComprModeType.zstd) as Uint8Array;
  r.delete();
  return bytes;
});
// The result names the query it answers (its SHA-256), as the server writes it.
const result = encodeWire('result', { ...q.header, query_sha256: createHash('sha256').update(query).digest('hex') }, results);
const scores = session.decryptScores(result);

await writeFile(join(out, 'secret.key'), keys.secretKey);
await writeFile(join(out, 'evaluation.keys'), keys.evaluationKeys);
await writeFile(join(out, 'query.bin'), query);
await writeFile(join(out, 'result.bin'), result);
await writeFile(
  join(out, 'expected.json'),
  JSON.stringify({ model_id: modelId, records, scores, labels: session.decrypt(result).map((p) => p.label), tolerance: 1e-4 }, null, 1) + '\n',
);
engine.close();
ek.close();
s.close();
session.close();
await rm(work, { recursive: true, force: true });
console.log(`test vectors for model ${modelId} in ${out}`);
