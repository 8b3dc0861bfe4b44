// `sealed demo --web`: the demo in a browser. Trains the breast-cancer model as `sealed demo`
// does, starts the local S3-compatible server, the inference server and the web demo's server
// (src/web/server.ts), and prints the page's URL. In the page, keys are made, the record is
// encrypted and the answer decrypted; the servers only ever see ciphertexts and public keys.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
}

export interface WebDemo {
  url: string;
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
    throw new SealedError('bad-request', `the web page is not built (${WEB_ASSETS_DIR} has no app.js) and esbuild is not installed`, 'run `npm ci` and `npm run build:web`');
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
    say('1. model owner: training a logistic-regression diagnosis model on 80% of the records (plaintext)');
    const { trainDir, testDir } = await splitCsv(BREAST_CANCER_CSV, join(work, 'data'));
    const modelDir = join(work, 'model');
    const { metrics } = await train({ trainDir, testDir, modelDir }, parseHyperparameters({ task: 'binary', target: 'diagnosis', labels: 'malignant,benign' }), (l) => say(`   ${l}`));
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
    const samples: Sample[] = test.x.slice(0, 10).map((values, i) => ({ name: `held-out record ${i + 1} (${labels[test.y[i]]})`, values, label: labels[test.y[i]] }));
    const web = await startWebServer({ modelDir, endpoint: server.url, store, bucket, samples, port: o.port ?? 8000, host: o.host ?? '127.0.0.1' });
    closers.push(() => web.close());
    say(`   S3 at ${s3.endpoint}, inference server at ${server.url} (${server.pool.size} workers)`);
    say('3. client: open the page; it makes keys, encrypts, and decrypts in the browser');
    say(`   ${web.url}/`);
    return { url: web.url, close };
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
