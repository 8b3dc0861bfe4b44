// `npm run bench -- copies [--model mlp_square|mlp_relu|digit] [--copies 1,4,16] [--rounds 12] [--finetune] [--served]`:
// the client's rotated copies of its input (sealed compile --input-copies) against none, on one
// ONNX fixture, in one process: the same model compiled at each count, queries evaluated in turn
// (one of each per round, so the machine's drift, which on a shared VM is tens of percent within
// minutes, falls on every count alike). Each evaluation: the section loaded (split, prechecked,
// SEAL load of each ciphertext), the program run, the flood applied. One JSON line per count
// with medians, then a last line gathering them with the rotation counts by level.
// MNIST fixtures calibrate on 300 training digits without the re-fit and fine-tune (--finetune
// runs them, ~3 minutes per count for the ReLU MLP): the costs depend on the shapes, not on them.
// --served: each count's bundle behind its own server instead, requests in turn (served()).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { cpus, tmpdir } from 'node:os';
import { parseArgs } from 'node:util';
import { CkksSession } from '../src/fhe/ckks.ts';
import { Engine } from '../src/fhe/engine.ts';
import { SecretKeyHolder, generateKeys } from '../src/fhe/keys.ts';
import { loadQuerySection } from '../src/fhe/load.ts';
import { loadEvaluationKeys } from '../src/fhe/load-keys.ts';
import { inputCiphertexts, opCountsByLevel } from '../src/fhe/program.ts';
import { predict } from '../src/client/predict.ts';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart, writeBundle } from '../src/model/bundle.ts';
import type { ClientPart } from '../src/model/client-part.ts';
import type { CompiledModel } from '../src/model/compile-linear.ts';
import { BENCH_BUCKET, startBenchStack } from './bench-stack.ts';
import { SinglePrivacy, makePublicKey } from '../src/fhe/single-privacy.ts';
import { packRecords, withRotations } from '../src/model/layout.ts';
import { compileOnnx } from '../src/model/onnx/compile.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { loadNpmMnist } from '../src/train/mnist.ts';
import { compileImageModel } from '../src/train/image-model.ts';
import type { Network } from '../src/model/network.ts';

const DIGIT_NETWORK = new URL('../test/fixtures/digit/network.json.gz', import.meta.url);

const err = (s: string) => process.stderr.write(s + '\n');
const median = (a: number[]) => +[...a].sort((x, y) => x - y)[Math.floor(a.length / 2)].toFixed(1);

export async function copiesBench(args: string[]) {
  const { values } = parseArgs({
    args,
    options: { model: { type: 'string' }, copies: { type: 'string' }, rounds: { type: 'string' }, finetune: { type: 'boolean' }, served: { type: 'boolean' } },
  });
  const model = values.model ?? 'mlp_square';
  const counts = (values.copies ?? '1,4,16').split(',').map(Number);
  const rounds = Number(values.rounds ?? 12);
  const calibration = (await loadNpmMnist()).images.slice(0, values.finetune ? 10000 : 300);
  // digit: the MNIST CNN committed for the draw-a-digit test (what `sealed train` makes), as
  // `sealed train` compiles it; else an ONNX fixture, as `sealed compile` does.
  const digit = model === 'digit' ? (JSON.parse(gunzipSync(await readFile(DIGIT_NETWORK)).toString('utf8')) as Network) : undefined;
  const bytes = digit ? undefined : new Uint8Array(await readFile(new URL(`../test/fixtures/onnx/${model}.onnx`, import.meta.url)));
  const compile = (K: number) =>
    digit
      ? compileImageModel(digit, calibration, true, { inputCopies: K })
      : compileOnnx(bytes!, calibration, { inputScale: 255, inputCopies: K, refit: values.finetune === true });
  if (values.served) return served(model, counts.map(compile), calibration[0], rounds);
  const setups = [];
  for (const K of counts) {
    const m = compile(K);
    const p = m.compiled.program;
    const s = await CkksSession.open(p.params);
    const k = generateKeys(s, p.galoisSteps, p.relin);
    const holder = new SecretKeyHolder(s, k.secretKey);
    const keys = loadEvaluationKeys(s, k.galoisKeys, k.relinKeys, p.galoisSteps, p.relin);
    const engine = new Engine(s, p, m.compiled.masks);
    const privacy = new SinglePrivacy(s, makePublicKey(s, k.secretKey), 2 ** p.noiseL2Bits!, p.floodSecurityBits);
    const [v] = packRecords(m.compiled.input, [preprocessRecord(calibration[0], m.client)]);
    const query = holder.encryptSection(withRotations(m.compiled.input, v), p.inputScaleBits);
    const rotations = Object.fromEntries([...opCountsByLevel(p)].filter(([key]) => key.startsWith('rotate')));
    const keysBytes = k.galoisKeys.length + (k.relinKeys?.length ?? 0);
    err(`${model} with ${K} ciphertexts per query: chain ${p.params.coeffModulusBits.join('+')}, rotations ${JSON.stringify(rotations)}`);
    setups.push({ K, s, holder, keys, engine, privacy, query, p, rotations, keysBytes, load: [] as number[], evaluate: [] as number[] });
  }
  for (let r = 0; r < rounds; r++)
    for (const st of setups) {
      const t0 = performance.now();
      const cts = loadQuerySection(st.s, st.query, st.engine.inputCiphertexts, st.p.inputScaleBits);
      const t1 = performance.now();
      const out = st.engine.run(cts, st.keys);
      for (const ct of cts) ct.delete();
      const flooded = st.privacy.apply(out);
      out.delete();
      flooded.delete();
      st.load.push(t1 - t0);
      st.evaluate.push(performance.now() - t1);
    }
  const lines = setups.map((st) => {
    const total = st.load.map((l, i) => l + st.evaluate[i]);
    const line = {
      bench: 'copies',
      model,
      ciphertexts_per_query: st.engine.inputCiphertexts,
      modulus_chain: st.p.params.coeffModulusBits.join('+'),
      rotations_by_level: st.rotations,
      query_bytes: st.query.length,
      keys_bytes: st.keysBytes,
      load_ms_p50: median(st.load),
      evaluate_ms_p50: median(st.evaluate),
      server_ms_p50: median(total),
      server_ms_range: [+Math.min(...total).toFixed(1), +Math.max(...total).toFixed(1)],
      rounds,
    };
    console.log(JSON.stringify(line));
    st.engine.close();
    st.keys.close();
    st.privacy.close();
    st.holder.close();
    st.s.close();
    return line;
  });
  return { bench: 'copies', model, runs: lines, cpu: cpus()[0]?.model, date: new Date().toISOString() };
}

/**
 * --served: each count's bundle behind its own server (one worker, the embedded S3), one request
 * of one record to each in turn per round, through the SDK's S3 path: the server's own timings.
 */
async function served(model: string, built: { compiled: CompiledModel; client: ClientPart }[], record: ArrayLike<number>, rounds: number) {
  const setups = [];
  for (const b of built) {
    const dir = await mkdtemp(join(tmpdir(), 'sealed-copies-'));
    await writeBundle(dir, b.client, b.compiled.program, b.compiled.masks);
    const { modelId, client } = await readClientPart(dir);
    const stack = await startBenchStack(dir, 1, 2 ** 30);
    const session = await ClientSession.open(modelId, client);
    const keys = session.generateKeys();
    const transport = { store: stack.store, bucket: BENCH_BUCKET, endpoint: stack.running.url };
    await predict(session, keys, [record], transport); // keys uploaded and loaded
    setups.push({
      n: inputCiphertexts(b.compiled.program),
      dir,
      stack,
      session,
      keys,
      transport,
      total: [] as number[],
      phases: {} as Record<string, number[]>,
      query: 0,
    });
  }
  for (let r = 0; r < rounds; r++)
    for (const st of setups) {
      const res = await predict(st.session, st.keys, [record], st.transport);
      const t = (res.stats.server as { timings_ms: Record<string, number> }).timings_ms;
      st.total.push(t.total);
      for (const [k, v] of Object.entries(t)) (st.phases[k] ??= []).push(v);
      st.query = res.stats.query_bytes;
    }
  const lines = [];
  for (const st of setups) {
    const line = {
      bench: 'copies',
      served: true,
      model,
      ciphertexts_per_query: st.n,
      query_bytes: st.query,
      server_ms_p50: median(st.total),
      server_ms_range: [+Math.min(...st.total).toFixed(1), +Math.max(...st.total).toFixed(1)],
      phases_ms_p50: Object.fromEntries(Object.entries(st.phases).map(([k, v]) => [k, median(v)])),
      rounds,
    };
    console.log(JSON.stringify(line));
    lines.push(line);
    st.session.close();
    await st.stack.close();
    await rm(st.dir, { recursive: true, force: true });
  }
  return { bench: 'copies', served: true, model, runs: lines, cpu: cpus()[0]?.model, date: new Date().toISOString() };
}
