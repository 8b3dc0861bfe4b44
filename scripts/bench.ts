// Benchmarks (never timed tests). Each prints progress to stderr and, as its last stdout line,
// one JSON object.
//
//   npm run bench -- mnist [--quick] [--n N] [--arch cnn|mlp] [--epochs E] [--retrain] [--workers W] [--no-deskew]
//   npm run bench -- mnist-batch [--n N] [--workers W]      (batch mode, see bench-batch.ts)
//   npm run bench -- trees [--fixtures F,..] [--bits B] [--no-single] [--served]  (tree ensembles, see bench-trees.ts)
//   npm run bench -- sweep [--quick]                        (charts in docs/img, see bench-sweep.ts)
//   npm run bench -- onnx [--n N] [--encrypted E] [--only m1,m2] (the ONNX fixtures, see bench-onnx.ts)
//   npm run bench -- copies [--model M] [--copies 1,4,16] [--rounds R] (--input-copies, see bench-copies.ts)
//
// mnist: trains (or loads from .cache/models) an HE-friendly network on the 10,000 digits of
// the npm package `mnist`, then runs encrypted inference through the real server path (S3
// upload, /invocations, worker pool, S3 download) on the official test set, one image per
// request, as many requests in flight as workers.
import { readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { predict } from '../src/client/predict.ts';
import { ClientSession } from '../src/client/session.ts';
import { opCounts } from '../src/fhe/program.ts';
import { deskew } from '../src/model/deskew.ts';
import { measureUnitCosts, predictTime } from '../src/fhe/cost.ts';
import { readClientPart, readServerPart } from '../src/model/bundle.ts';
import type { Network } from '../src/model/network.ts';
import { CNN_DEFAULTS } from '../src/train/cnn.ts';
import { loadIdxPair, MNIST_TEST_IMAGES, MNIST_TEST_LABELS } from '../src/train/mnist.ts';
import { ensureMnistModel } from './mnist-model.ts';
import { BENCH_BUCKET, startBenchStack } from './bench-stack.ts';

const err = (s: string) => process.stderr.write(s + '\n');
const percentile = (v: number[], p: number) => {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function mnist(args: string[]) {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: 'boolean', default: false },
      n: { type: 'string' },
      arch: { type: 'string', default: 'cnn' },
      epochs: { type: 'string' },
      retrain: { type: 'boolean', default: false },
      workers: { type: 'string' },
      deskew: { type: 'boolean', default: true },
    },
    allowNegative: true,
  });
  const arch = values.arch as 'cnn' | 'mlp';
  const epochs = Number(values.epochs ?? CNN_DEFAULTS.epochs);
  const test = await loadIdxPair(MNIST_TEST_IMAGES, MNIST_TEST_LABELS);
  const n = Math.min(test.images.length, Number(values.n ?? (values.quick ? 500 : test.images.length)));

  const modelDir = await ensureMnistModel({ arch, epochs, deskew: values.deskew, retrain: values.retrain, test, log: err });
  const network = JSON.parse(await readFile(join(modelDir, 'server', 'network.json'), 'utf8')) as Network;
  const images = test.images.slice(0, n);
  const labels = test.labels.slice(0, n);
  const { modelId, client } = await readClientPart(modelDir);
  const server = await readServerPart(modelDir);
  const { forward } = await import('../src/model/network.ts');
  const plainClass = images.map((img) => {
    const l = forward(
      network,
      Array.from(client.image?.deskew ? deskew(img, 28) : img, (v) => v / 255),
    );
    return l.indexOf(Math.max(...l));
  });

  const { running, store, workers, close } = await startBenchStack(modelDir, values.workers ? Number(values.workers) : undefined);
  const session = await ClientSession.open(modelId, client);
  const keys = session.generateKeys();
  const transport = { store, bucket: BENCH_BUCKET, endpoint: running.url };
  // Warm-up: every worker loads the keys once (cached afterwards, as in production).
  await Promise.all(Array.from({ length: workers }, () => predict(session, keys, [images[0]], transport)));

  const serverMs: number[] = [];
  const evalMs: number[] = [];
  const clientMs: number[] = [];
  let correct = 0,
    agree = 0,
    queryBytes = 0,
    resultBytes = 0;
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        const r = await predict(session, keys, [images[i]], transport);
        const s = r.scores[0];
        const cls = s.indexOf(Math.max(...s));
        if (cls === labels[i]) correct++;
        if (cls === plainClass[i]) agree++;
        const tm = (r.stats.server as { timings_ms: { total: number; evaluate: number } }).timings_ms;
        serverMs.push(tm.total);
        evalMs.push(tm.evaluate);
        clientMs.push(r.stats.ms.total);
        queryBytes = r.stats.query_bytes;
        resultBytes = r.stats.result_bytes;
        if ((i + 1) % 100 === 0) err(`${i + 1}/${n} images, encrypted accuracy so far ${(correct / serverMs.length).toFixed(4)}`);
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const ops = opCounts(server.program);
  // Cost model: unit costs measured now, on this machine, times the program's operation counts.
  const depth = server.program.params.coeffModulusBits.length - 2;
  const costs = await measureUnitCosts(server.program.params, depth);
  const model = predictTime(server.program, costs);
  const evalP50 = percentile(evalMs, 50);
  const result = {
    bench: 'mnist',
    arch,
    n_test: n,
    accuracy_plain: plainClass.filter((c, i) => c === labels[i]).length / n,
    accuracy_encrypted: correct / n,
    agreement: agree / n,
    server_ms_single_p50: +percentile(serverMs, 50).toFixed(1),
    server_ms_single_p90: +percentile(serverMs, 90).toFixed(1),
    evaluate_ms_p50: +percentile(evalMs, 50).toFixed(1),
    client_ms_p50: +percentile(clientMs, 50).toFixed(1),
    keys_bytes: keys.evaluationKeys.length,
    query_bytes_single: queryBytes,
    result_bytes_single: resultBytes,
    ring_degree: client.params.polyModulusDegree,
    modulus_bits: client.params.coeffModulusBits.reduce((a, b) => a + b, 0),
    modulus_chain: client.params.coeffModulusBits.join('+'),
    rotation_keys: client.galois_steps.length,
    ops,
    cost_model_ms: model.total,
    cost_model_by_op_ms: model.byOp,
    measured_over_model: +(evalP50 / model.total).toFixed(2),
    unit_costs_ms: costs,
    workers,
    wall_s: +wall.toFixed(1),
    images_per_s: +(n / wall).toFixed(2),
    cpu: cpus()[0]?.model,
  };
  session.close();
  await close();
  console.log(JSON.stringify(result));
}

/** Linear models on the tabular sets: train on 80%, the other 20% encrypted in one request. */
async function tabular(which: string) {
  const { runTabular } = await import('../src/cli/demo.ts');
  const sets: Record<string, { file: string; hp: Record<string, string> }> = {
    'breast-cancer': { file: 'breast_cancer/breast_cancer.csv', hp: { task: 'binary', target: 'diagnosis', labels: 'malignant,benign' } },
    digits: { file: 'digits/digits.csv', hp: { task: 'multiclass', target: 'digit', epochs: '200', learning_rate: '0.01' } },
    iris: { file: 'iris/iris.csv', hp: { task: 'multiclass', target: 'species', epochs: '300', learning_rate: '0.05' } },
  };
  const set = sets[which];
  const csv = fileURLToPath(new URL(`../data/${set.file}`, import.meta.url));
  const summary = await runTabular({ csv, hyperparameters: set.hp, say: err });
  console.log(JSON.stringify({ bench: which, model: `linear-${set.hp.task}`, ...summary, cpu: cpus()[0]?.model }));
}

const [which, ...rest] = process.argv.slice(2);
if (which === 'mnist') await mnist(rest);
else if (which === 'sweep') console.log(JSON.stringify(await (await import('./bench-sweep.ts')).sweep(rest)));
else if (which === 'onnx') console.log(JSON.stringify(await (await import('./bench-onnx.ts')).onnxBench(rest)));
else if (which === 'copies') console.log(JSON.stringify(await (await import('./bench-copies.ts')).copiesBench(rest)));
else if (which === 'mnist-batch') console.log(JSON.stringify(await (await import('./bench-batch.ts')).mnistBatch(rest)));
else if (which === 'trees') console.log(JSON.stringify(await (await import('./bench-trees.ts')).benchTrees(rest)));
else if (which === 'digits' || which === 'breast-cancer' || which === 'iris') await tabular(which);
else {
  err('usage: npm run bench -- mnist [--quick] [--n N] [--arch cnn|mlp] [--epochs E] [--retrain] [--workers W]');
  err('       npm run bench -- mnist-batch [--n N] [--workers W]');
  err('       npm run bench -- sweep [--quick]      (time vs images and workers; writes docs/bench, docs/img)');
  err('       npm run bench -- digits | breast-cancer | iris');
  err('       npm run bench -- trees [--fixtures breast-cancer,diabetes,digits] [--bits B] [--no-single] [--served [--rounds R]]');
  err('       npm run bench -- onnx [--n N] [--encrypted E] [--only m1,m2] [--input-copies K]');
  err('       npm run bench -- copies [--model mlp_square|mlp_relu] [--copies 1,4,16] [--rounds R] [--finetune]');
  process.exit(2);
}
