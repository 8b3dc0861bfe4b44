// The web demo's server: serves the page (out/web, built by scripts/build-web.ts), the model's
// client part, and a small proxy for browsers, which cannot easily sign S3 requests:
//
//   GET  /model/client.json     the client part (parameters, layout, scaling, labels; no weights)
//   GET  /api/samples           example records to prefill the form
//   GET  /api/keys/:id          {uploaded}: whether evaluation keys with this content id are in S3
//   PUT  /api/keys/:id          evaluation keys (wire format, kind 2), stored in S3 once
//   POST /api/predict?keys=ID   an encrypted query (wire format, kind 1) -> the encrypted result
//   GET  /api/demos             {digit}: whether the draw-a-digit page is served
//
// With `digits` (an MNIST image model and the inference server that serves it), the same routes
// for that model are under /digit/, with the draw-a-digit page (digit.html, digit.js and its Web
// Worker, seal-worker.js, which both pages use) at /digit/.
//
// It writes the objects to S3 and calls the inference server's POST /invocations exactly as
// `sealed predict` does (src/client/predict.ts). It is not part of the SageMaker server: it
// only ever holds wire-format objects, never a secret key or a plaintext record.
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { SealedError } from '../errors.ts';
import { errorHandler, notFoundHandler } from '../server/http-errors.ts';
import type { ObjectStore } from '../storage/s3.ts';
import { modelRoutes, readServedModel } from './model-routes.ts';

/**
 * Where scripts/build-web.ts writes the pages: index.html, style.css, app.js, seal_throws.wasm,
 * seal-worker.js (both pages' Web Worker: SEAL, the keys and the SDK), and the draw-a-digit page:
 * digit.html, digit.js.
 */
export const WEB_ASSETS_DIR = fileURLToPath(new URL('../../out/web/', import.meta.url));

export interface Sample {
  /** Shown in the sample picker, e.g. "record 3 (malignant)". */
  name: string;
  values: number[];
  label?: string;
}

export interface WebServerOptions {
  /** The model bundle (a network's, a linear model's or a tree ensemble's); only its client part is read and served. */
  modelDir: string;
  /** Base URL of the inference server (POST /invocations). */
  endpoint: string;
  /** The S3 (or S3-compatible) store the inference server reads from, and the bucket to use. */
  store: ObjectStore;
  bucket: string;
  prefix?: string;
  /** The built page (default: out/web). */
  assetsDir?: string;
  samples?: Sample[];
  /**
   * The draw-a-digit page: an MNIST image model (28x28 pixels, e.g. `sealed train` on IDX
   * images) and the base URL of the inference server that serves it, under /digit/.
   */
  digits?: { modelDir: string; endpoint: string };
  port?: number;
  host?: string;
  logger?: FastifyServerOptions['logger'];
  maxKeyBytes?: number;
  maxQueryBytes?: number;
}

const ASSETS: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/style.css': 'style.css',
  '/app.js': 'app.js',
  '/app.js.map': 'app.js.map',
  '/seal_throws.wasm': 'seal_throws.wasm',
  '/seal-worker.js': 'seal-worker.js',
  '/seal-worker.js.map': 'seal-worker.js.map',
};
/** The draw-a-digit page's files, served when `digits` is given. */
const DIGIT_ASSETS: Record<string, string> = {
  '/digit/': 'digit.html',
  '/digit/index.html': 'digit.html',
  '/digit/digit.js': 'digit.js',
  '/digit/digit.js.map': 'digit.js.map',
};
const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  map: 'application/json',
  wasm: 'application/wasm',
};
// The page may talk to its own origin only, and compile WebAssembly (SEAL) but no other code.
const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export async function buildWebApp(o: WebServerOptions): Promise<FastifyInstance> {
  const main = await readServedModel(o.modelDir);
  const digits = o.digits && { ...(await readServedModel(o.digits.modelDir)), endpoint: o.digits.endpoint };
  if (digits && (digits.features !== 28 * 28 || !digits.image)) {
    throw new SealedError(
      'bad-bundle',
      `the draw-a-digit page needs a 28x28 image model; ${o.digits!.modelDir} takes ${digits.features} features${digits.image ? '' : ' and is not an image model'}`,
      'train one on MNIST IDX images (`sealed train`) or use .cache/models from `npm run bench -- mnist`',
    );
  }
  const assetsDir = o.assetsDir ?? WEB_ASSETS_DIR;
  const routes = { ...ASSETS, ...(digits ? DIGIT_ASSETS : {}) };
  const assets = new Map<string, Buffer>();
  for (const file of new Set(Object.values(routes))) {
    try {
      assets.set(file, await readFile(join(assetsDir, file)));
    } catch {
      if (!file.endsWith('.map'))
        throw new SealedError('bad-request', `the web page is not built: ${join(assetsDir, file)} is missing`, 'run `npm run build:web` first');
    }
  }
  const maxKeyBytes = o.maxKeyBytes ?? 256 * 1024 * 1024;
  const maxQueryBytes = o.maxQueryBytes ?? 64 * 1024 * 1024;

  const app = Fastify({ logger: o.logger ?? false, bodyLimit: 64 * 1024, genReqId: () => randomUUID() });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setErrorHandler(
    errorHandler({
      validation: 'send the wire-format object as application/octet-stream',
      body: 'send the wire-format object as application/octet-stream',
      internal: 'retry; if it persists, look at the server log',
    }),
  );

  app.addHook('onSend', async (_req, reply) => {
    reply.header('content-security-policy', CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('cache-control', 'no-store');
  });

  for (const [route, file] of Object.entries(routes)) {
    const bytes = assets.get(file);
    if (!bytes) continue;
    app.get(route, async (_req, reply) => reply.type(TYPES[file.split('.').pop()!]).send(bytes));
  }
  app.get('/api/samples', async () => o.samples ?? []);
  app.get('/api/demos', async () => ({ digit: Boolean(digits) }));

  const limits = { maxKeyBytes, maxQueryBytes };
  modelRoutes(app, '', { ...main, endpoint: o.endpoint }, o, limits);
  if (digits) {
    app.get('/digit', async (_req, reply) => reply.redirect('/digit/'));
    modelRoutes(app, '/digit', digits, o, limits);
  }

  app.setNotFoundHandler(notFoundHandler('open / for the demo page'));
  return app;
}

export interface RunningWebServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

export async function startWebServer(o: WebServerOptions): Promise<RunningWebServer> {
  const app = await buildWebApp(o);
  const address = await app.listen({ port: o.port ?? 0, host: o.host ?? '127.0.0.1' });
  return { app, url: address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1'), close: () => app.close() };
}
