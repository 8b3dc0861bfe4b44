// npm run bench -- mnist-batch [--n N] [--workers W] [--epochs E]
//
// Batch mode end to end on the first N official MNIST test images, in three phases so each is
// timed alone: the client encrypts (on --client-threads threads, default --workers) and uploads
// (streamed, multipart), the server evaluates (one
// /invocations request for all N, streamed a batch at a time through every worker), the client
// downloads and decrypts. Then the cost model: the plan's operation counts times unit costs
// measured in this run. Last stdout line: one JSON object.
import { createHash } from 'node:crypto';
import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { performance as nodePerformance } from 'node:perf_hooks';
import { invokeHttp } from '../src/client/predict.ts';
import { ClientSession } from '../src/client/session.ts';
import { EncryptPool, sharedMatrix } from '../src/client/encrypt-pool.ts';
import { measureBatchUnitCosts, measureBatchUnitCostsConcurrent, predictBatch } from '../src/fhe/batch-cost.ts';
import { recordsPerBatch } from '../src/fhe/batch-plan.ts';
import { batchOpCounts } from '../src/fhe/batch-cost.ts';
import { readClientPart, readServerPart } from '../src/model/bundle.ts';
import { simulateBatch } from '../src/model/simulate-batch.ts';
import { preprocessRecord } from '../src/model/postprocess.ts';
import { formatS3Uri } from '../src/storage/s3.ts';
import { CNN_DEFAULTS } from '../src/train/cnn.ts';
import { loadIdxPair, MNIST_TEST_IMAGES, MNIST_TEST_LABELS } from '../src/train/mnist.ts';
import { readWireStream, writeWireStream } from '../src/wire/stream.ts';
import { ensureMnistModel } from './mnist-model.ts';
import { BENCH_BUCKET, startBenchStack } from './bench-stack.ts';
import { cpuMeter } from './cpu-meter.ts';

const err = (s: string) => process.stderr.write(s + '\n');
const argmax = (v: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
};

export async function mnistBatch(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args,
    options: {
      n: { type: 'string' },
      workers: { type: 'string' },
      'client-threads': { type: 'string' },
      epochs: { type: 'string' },
      'no-cost-model': { type: 'boolean', default: false },
    },
  });
  const test = await loadIdxPair(MNIST_TEST_IMAGES, MNIST_TEST_LABELS);
  // More than the 10,000 test images: they repeat (to measure large payloads and memory).
  const n = Number(values.n ?? test.images.length);
  const epochs = Number(values.epochs ?? CNN_DEFAULTS.epochs);
  const modelDir = await ensureMnistModel({ arch: 'cnn', epochs, deskew: true, retrain: false, test, log: err });
  const { modelId, client } = await readClientPart(modelDir);
  const plan = (await readServerPart(modelDir)).batch!;
  const images = Array.from({ length: n }, (_, i) => test.images[i % test.images.length]);
  const labels = Array.from({ length: n }, (_, i) => test.labels[i % test.labels.length]);

  const { running, store, workers, close } = await startBenchStack(modelDir, values.workers ? Number(values.workers) : undefined);
  const session = await ClientSession.open(modelId, client);
  const batchKey = session.generateBatchKey()!;
  const queryLoc = { bucket: BENCH_BUCKET, key: 'batch/query' };
  const outLoc = { bucket: BENCH_BUCKET, key: 'batch/result' };

  // Phase 1: encrypt (on `client-threads` threads, default: as many as server workers) and
  // upload, overlapped: ciphertexts are made as the multipart upload takes them.
  const clientThreads = Number(values['client-threads'] ?? workers);
  const pool = new EncryptPool(clientThreads);
  // Warm-up: every thread loads SEAL and the key (one task of 16 ciphertexts each).
  for await (const c of pool.encryptColumns(sharedMatrix(16 * clientThreads * recordsPerBatch(plan)), 1, 16 * clientThreads, {
    params: plan.params,
    secretKey: batchKey,
    scaleBits: plan.inputScaleBits,
    slots: recordsPerBatch(plan),
  }))
    void c;
  // Peak resident memory of this process (client, server, S3) per phase, sampled every 50 ms.
  const peak = { client: 0, server: 0 };
  let phase: keyof typeof peak = 'client';
  const sampler = setInterval(() => (peak[phase] = Math.max(peak[phase], process.memoryUsage().rss)), 50);
  const rssBefore = process.memoryUsage().rss;
  const t0 = performance.now();
  const cpu = cpuMeter();
  const q = session.encryptBatchWith(images, pool, true); // streamed into the upload, copied section by section
  // The query's SHA-256, computed as it streams out: the request names it, so the server can
  // stream the result out while it reads the query once (and the result is bound to the query).
  const hash = createHash('sha256');
  async function* hashed(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      hash.update(chunk);
      yield chunk;
    }
  }
  const { bytes: uploadBytes } = await store.putStream(queryLoc, hashed(writeWireStream('query', q.header, q.count, q.sections)), 'encrypted query');
  const querySha256 = hash.digest('hex');
  const t1 = performance.now();
  phase = 'server';
  await pool.close();
  const encryptMs = t1 - t0;
  err(`encrypted and uploaded ${n} images: ${q.count} ciphertexts, ${(uploadBytes / 1e6).toFixed(1)} MB in ${((t1 - t0) / 1000).toFixed(1)} s`);

  // Phase 2: one request; the server streams it through the pool. This thread is the server's
  // main thread (and the embedded S3's): its busy time is the request's main-thread work.
  const elu0 = nodePerformance.eventLoopUtilization();
  const server = (await invokeHttp(running.url, {
    encrypted_query_uri: formatS3Uri(queryLoc),
    output_uri: formatS3Uri(outLoc),
    query_sha256: querySha256,
  })) as { timings_ms: Record<string, number> };
  const t2 = performance.now();
  const mainBusyMs = nodePerformance.eventLoopUtilization(elu0).active;
  phase = 'client';
  err(`server: ${JSON.stringify(server.timings_ms)}`);

  // Phase 3: download and decrypt.
  const { bytes: result } = await store.get(outLoc, 2 ** 31, 'encrypted result');
  const t3 = performance.now();
  const scores = session.decryptScores(result);
  const t4 = performance.now();
  const cpuUsed = cpu.read(t4 - t0, n);
  clearInterval(sampler);

  let correct = 0,
    agree = 0,
    plainCorrect = 0;
  scores.forEach((s, i) => {
    const c = argmax(s);
    const plain = argmax(simulateBatch(plan, preprocessRecord(images[i], client)));
    if (c === labels[i]) correct++;
    if (plain === labels[i]) plainCorrect++;
    if (c === plain) agree++;
  });
  const batches = Math.ceil(n / recordsPerBatch(plan));
  const wall = (t4 - t0) / 1000;
  const out: Record<string, unknown> = {
    bench: 'mnist-batch',
    n,
    wall_s: +wall.toFixed(2),
    server_s: +((t2 - t1) / 1000).toFixed(2),
    // Client: encrypt + upload (overlapped), then download + decrypt. Server: the request.
    client_s: +((t1 - t0 + (t4 - t2)) / 1000).toFixed(2),
    images_per_s: +(n / wall).toFixed(1),
    cpu_time: cpuUsed,
    accuracy_encrypted: correct / n,
    accuracy_plaintext_plan: plainCorrect / n,
    privacy: plan.privacy ?? 'none',
    agreement_with_plaintext_plan: agree / n,
    upload_bytes: uploadBytes,
    download_bytes: result.length,
    workers,
    batches,
    records_per_batch: recordsPerBatch(plan),
    client_threads: clientThreads,
    distinct_images: Math.min(n, test.images.length),
    rss_mb: {
      before: Math.round(rssBefore / 2 ** 20),
      peak_client_phases: Math.round(peak.client / 2 ** 20),
      peak_server_phase: Math.round(peak.server / 2 ** 20),
    },
    phases_s: {
      encrypt_and_upload: +((t1 - t0) / 1000).toFixed(2),
      server: +((t2 - t1) / 1000).toFixed(2),
      download: +((t3 - t2) / 1000).toFixed(2),
      decrypt: +((t4 - t3) / 1000).toFixed(2),
    },
    server_timings_ms: server.timings_ms,
    server_images_per_s: +(n / ((t2 - t1) / 1000)).toFixed(1),
    evaluation_keys_bytes: 0,
    modulus_chain: plan.params.coeffModulusBits.join('+'),
    ring_degree: plan.params.polyModulusDegree,
    crossover_records: client.batch?.crossover,
  };
  // The server's main thread streams the query in (S3 GET, framing) while the workers compute,
  // on the same cores: its time alone, here, bounds the request from below.
  const ts = performance.now();
  const body = await store.getStream(queryLoc, 2 ** 31, 'encrypted query');
  const parsed = await readWireStream('query', body.stream, 'the encrypted query');
  for await (const section of parsed.sections) void section;
  const streamMs = performance.now() - ts;
  let units: Awaited<ReturnType<typeof measureBatchUnitCosts>> | undefined;
  if (!values['no-cost-model']) {
    // Unit costs as W busy workers get them: measured by W threads at once (and by one alone).
    units = await measureBatchUnitCostsConcurrent(plan, workers);
    out.unit_costs_one_thread = await measureBatchUnitCosts(plan);
  }
  session.close();
  await close();
  if (units) {
    // Cost model: operation counts x unit costs measured in this run, against the workers'
    // measured times and the request's wall time.
    const p = predictBatch(plan, units);
    const counts = batchOpCounts(plan);
    const t = server.timings_ms;
    out.ops_per_batch = counts;
    out.unit_costs = units;
    out.cost_model_ms = {
      kernel: +(p.kernel * batches).toFixed(0),
      load: +(p.load * batches).toFixed(0),
      save: +(p.save * batches).toFixed(0),
      client: +(p.client * batches).toFixed(0),
      by_op_per_batch: p.byOp,
    };
    out.measured_ms = { kernel: t.evaluate, load: t.deserialize, save: t.serialize, client_encrypt_upload_wall: +encryptMs.toFixed(0) };
    out.measured_over_model = {
      kernel: +(t.evaluate / (p.kernel * batches)).toFixed(2),
      load: +(t.deserialize / (p.load * batches)).toFixed(2),
      server_cpu: +((t.evaluate + t.deserialize + t.serialize) / (p.server * batches)).toFixed(2),
    };
    // The "limit": all the CPU work of the request - the workers' operations (modeled) and the
    // main thread's (measured: S3 streaming, framing, dispatch) - spread over the cores, if
    // nothing ever waited; no less than either part alone.
    const workerMs = p.server * batches;
    const cores = availableParallelism();
    out.server_stream_ms = +streamMs.toFixed(0);
    out.server_main_thread_busy_ms = +mainBusyMs.toFixed(0);
    out.server_limit_s = +(Math.max(workerMs / Math.min(workers, cores), (workerMs + mainBusyMs) / cores, mainBusyMs) / 1000).toFixed(2);
    out.server_measured_over_limit = +(Number(out.server_s) / Number(out.server_limit_s)).toFixed(2);
  }
  out.cpu = cpus()[0]?.model;
  return out;
}
