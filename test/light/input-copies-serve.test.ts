// A model compiled with --input-copies, served: the client sends each input with rotated copies
// of it in one section, the server's workers read exactly that many ciphertexts per section and
// evaluate without rotating for them. Through the real path (sealed compile's job, the server and
// its worker pool, the local S3): scores equal the plaintext simulation; a query whose sections
// hold the input alone, or a copy more, is refused with a 4xx saying what the model reads, and
// the server keeps serving.
import t from 'tap';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { invokeHttp, predict } from '../../src/client/predict.ts';
import { readServerPart } from '../../src/model/bundle.ts';
import { FLOOD_PRECISION_BITS } from '../../src/model/compile-batch.ts';
import { packRecords } from '../../src/model/layout.ts';
import { preprocessRecord } from '../../src/model/postprocess.ts';
import { simulate } from '../../src/model/simulate.ts';
import { formatS3Uri } from '../../src/storage/s3.ts';
import { compileOnnxJob } from '../../src/train/onnx-job.ts';
import { decodeWire, encodeWire, type QueryHeader } from '../../src/wire/format.ts';
import { servedClient } from '../helpers/fixture.ts';
import { buildModel, gemm, gemmWeights } from '../helpers/onnx-build.ts';

// 512 features -> 64 -> x^2 -> 10: the first layer reads 4 diagonals in 8192 slots.
const onnxBytes = buildModel({
  inputs: [['x', ['N', 512]]],
  outputs: [['y', ['N', 10]]],
  initializers: [...gemmWeights('fc1', 512, 64, 3), ...gemmWeights('fc2', 64, 10, 4)],
  nodes: [gemm('fc1', 'x', 'h'), { op: 'Mul', inputs: ['h', 'h'], outputs: ['s'], name: 'square' }, gemm('fc2', 's', 'y')],
});
let seed = 9;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
const rows = Array.from({ length: 40 }, () => Array.from({ length: 512 }, () => rand()));

const dir = await mkdtemp(join(tmpdir(), 'sealed-copies-'));
const modelDir = join(dir, 'model');
await writeFile(join(dir, 'model.onnx'), onnxBytes);
await writeFile(join(dir, 'calibration.csv'), rows.map((r) => r.join(',')).join('\n') + '\n');
const { report } = await compileOnnxJob({
  onnx: join(dir, 'model.onnx'),
  calibration: join(dir, 'calibration.csv'),
  modelDir,
  inputCopies: 16,
  log: () => undefined,
});
const { stack, client, session, keys, transport } = await servedClient(t, modelDir, dir, 1);
const server = await readServerPart(modelDir);

t.test('each section: the input and its rotated copies; scores equal the plaintext simulation', async (t) => {
  const rotations = client.input.rotations ?? [];
  const first = server.program.steps[0];
  t.ok(rotations.length > 0, `the client sends ${rotations.length} rotated copies with each input`);
  t.same(first.op === 'linear' ? first.inputRotations : undefined, rotations, "the server's first step reads the same ones");
  t.equal(report.params.input_ciphertexts, rotations.length + 1, 'the compile report says how many ciphertexts a section holds');
  const few = rows.slice(0, 3);
  const r = await predict(session, keys, few, transport, { layout: 'single' });
  t.ok((r.stats.query_bytes ?? 0) > 0, `query ${r.stats.query_bytes} bytes for ${few.length} records`);
  let worst = 0,
    outMax = 1;
  few.forEach((x, i) => {
    const [v] = packRecords(client.input, [preprocessRecord(x, client)]);
    const want = simulate(server.program, server.masks, v);
    client.output.offsets.forEach((o, c) => {
      worst = Math.max(worst, Math.abs(r.scores[i][c] - want[o]));
      outMax = Math.max(outMax, Math.abs(want[o]));
    });
  });
  // The flood's error per output has standard deviation 2^-12 max(1, |output|): 6 of them bound it.
  const bound = 6 * 2 ** -FLOOD_PRECISION_BITS * outMax;
  t.ok(worst < bound, `largest difference from the plaintext simulation ${worst.toExponential(2)} < ${bound.toExponential(2)}`);
});

t.test('sections holding another number of ciphertexts are refused, and the server keeps serving', async (t) => {
  const q = decodeWire<QueryHeader>('query', session.encrypt(rows.slice(0, 1)), 'q');
  const section = q.sections[0];
  const n = (client.input.rotations ?? []).length + 1;
  const firstSize = Number(new DataView(section.buffer, section.byteOffset).getBigUint64(8, true));
  const send = async (sections: Uint8Array[]) => {
    const loc = { bucket: stack.bucket, key: `raw/${Math.random()}` };
    await stack.store.put(loc, encodeWire('query', q.header, sections), 'query');
    await stack.store.put({ bucket: stack.bucket, key: 'raw/keys' }, keys.evaluationKeys, 'keys');
    return invokeHttp(stack.server.url, {
      encrypted_query_uri: formatS3Uri(loc),
      evaluation_keys_uri: formatS3Uri({ bucket: stack.bucket, key: 'raw/keys' }),
      output_uri: formatS3Uri({ bucket: stack.bucket, key: 'raw/out' }),
    }).then(
      () => undefined,
      (e: Error & { status?: number }) => e,
    );
  };
  const alone = await send([section.subarray(0, firstSize)]);
  t.match(alone?.message, new RegExp(`holds 1 ciphertexts; this model reads ${n} per section`), 'the input alone');
  const extra = await send([new Uint8Array([...section, ...section.subarray(0, firstSize)])]);
  t.match(extra?.message, /bytes after its \d+ ciphertexts/, 'a copy more');
  const r = await predict(session, keys, rows.slice(0, 1), transport, { layout: 'single' });
  t.equal(r.scores.length, 1, 'still serving');
});
