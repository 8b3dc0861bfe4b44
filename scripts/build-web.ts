// Builds the web demo into out/web, bundled for browsers by esbuild: app.js (src/web/app.ts),
// the pages' Web Worker seal-worker.js (src/web/seal-worker.ts and the SDK it imports: SEAL and
// the secret key), node-seal's seal_throws.wasm, index.html and style.css; and the draw-a-digit
// page: digit.html, digit.js (src/web/digit.ts).
//
//   node scripts/build-web.ts            (npm run build:web)
//
// The build fails if any Node-only module (node:*, the AWS SDK, fastify, src/storage, the
// server) would end up in the page: the browser bundle must hold the client's code only.
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Inputs that must never be in the browser bundle. */
const FORBIDDEN = [
  /^node:/,
  /@aws-sdk\//,
  /node_modules\/(fastify|pino|piscina|s3rver|tar|@tensorflow)\//,
  /^src\/(storage|server|train|cli|sagemaker)\//,
  /^src\/model\/bundle\.ts$/,
  /^src\/client\/(predict|key-files|model-source|route|keys-upload|invoke|invoke-sagemaker|transport-s3|transport-body|open-route)\.ts$/,
];

export interface WebBuild {
  outDir: string;
  /** Bytes of each written file. */
  files: Record<string, number>;
  /** The bundles' source files (relative to the repository), all bundles together. */
  inputs: string[];
  /** Each bundle's source files, by bundle (app.js, digit.js, seal-worker.js). */
  bundles: Record<string, string[]>;
  ms: number;
}

export async function buildWeb(o: { outDir?: string; minify?: boolean } = {}): Promise<WebBuild> {
  const t0 = performance.now();
  const outDir = resolve(o.outDir ?? join(root, 'out', 'web'));
  await mkdir(outDir, { recursive: true });
  const r = await build({
    absWorkingDir: root,
    entryPoints: { app: 'src/web/app.ts', digit: 'src/web/digit.ts', 'seal-worker': 'src/web/seal-worker.ts' },
    outdir: outDir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2023'],
    minify: o.minify ?? true,
    sourcemap: true,
    metafile: true,
    legalComments: 'linked',
    // node-seal's Emscripten module imports "module" only when it runs in Node: never in a page.
    external: ['module'],
    logLevel: 'silent',
  });
  const inputs = Object.keys(r.metafile.inputs);
  const bundles: Record<string, string[]> = {};
  for (const [out, meta] of Object.entries(r.metafile.outputs)) if (out.endsWith('.js')) bundles[out.split('/').pop()!] = Object.keys(meta.inputs);
  const bad = inputs.filter((i) => FORBIDDEN.some((re) => re.test(i)));
  if (bad.length) throw new Error(`the browser bundle would include Node-only modules: ${bad.join(', ')}`);
  await copyFile(join(root, 'node_modules', 'node-seal', 'dist', 'seal_throws.wasm'), join(outDir, 'seal_throws.wasm'));
  for (const f of ['index.html', 'digit.html', 'style.css']) await copyFile(join(root, 'src', 'web', f), join(outDir, f));
  const files: Record<string, number> = {};
  for (const f of ['index.html', 'style.css', 'app.js', 'seal_throws.wasm', 'digit.html', 'digit.js', 'seal-worker.js'])
    files[f] = (await stat(join(outDir, f))).size;
  return { outDir, files, inputs, bundles, ms: Math.round(performance.now() - t0) };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildWeb()
    .then((b) => {
      console.log(`web demo built in ${b.ms} ms -> ${b.outDir}`);
      for (const [f, n] of Object.entries(b.files)) console.log(`  ${f.padEnd(18)} ${n.toLocaleString('en-US')} bytes`);
    })
    .catch((e: unknown) => {
      console.error(`error: ${(e as Error).message}`);
      process.exit(1);
    });
}
