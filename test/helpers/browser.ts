// What the two browser suites share: Chromium found or the suite skipped (failed under
// SEALED_REQUIRE_BROWSER=1, so a missing install step cannot hide), a fresh profile, and a page
// whose requests and errors are recorded for the checks on what left it.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import type { BrowserContext, Page } from 'playwright-core';
import type { ObjectStore } from '../../src/storage/s3.ts';

export const CHROMIUM = process.env.SEALED_CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = fileURLToPath(new URL('../../out/test-artifacts/', import.meta.url));

/** Runs `run` as the suite's one test when Chromium is there. */
export function browserSuite(name: string, run: (t: Test) => Promise<void>): void {
  if (!existsSync(CHROMIUM) && process.env.SEALED_REQUIRE_BROWSER === '1') {
    t.fail(`Chromium is not installed at ${CHROMIUM}, and SEALED_REQUIRE_BROWSER=1 (install it with \`apt-get install -y chromium\`)`);
  } else if (!existsSync(CHROMIUM)) {
    t.plan(0, `Chromium is not installed at ${CHROMIUM}: browser test skipped (install it with \`apt-get install -y chromium\`)`);
  } else {
    t.test(name, { timeout: 900_000 }, run);
  }
}

export interface Sent {
  method: string;
  url: string;
  body: Buffer | null;
}

export interface Browser {
  context: BrowserContext;
  page: Page;
  /** Every request the page made, with its body. */
  sent: Sent[];
  /** Uncaught exceptions and console errors. */
  errors: string[];
  close(): Promise<void>;
}

export async function openBrowser(viewport: { width: number; height: number }): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  const profile = await mkdtemp(join(tmpdir(), 'sealed-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const sent: Sent[] = [];
  const errors: string[] = [];
  page.on('request', (r) => sent.push({ method: r.method(), url: r.url(), body: r.postDataBuffer() }));
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  return {
    context,
    page,
    sent,
    errors,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/**
 * What a page sent to the sealed web server at `origin`, under its routes at `at` ('' or '/digit'),
 * checked: it talked to its own origin only; every request that could carry a body was a key upload
 * (PUT `at`/api/keys/<id>, exactly one) or a query (POST `at`/api/predict, `queries` of them); every
 * body is a wire-format object; none holds one of `values` as text (those long enough not to occur by chance).
 * The keys go up as a Blob, which the DevTools protocol does not record: their bytes are read back
 * from S3, where the web server stored exactly the bytes that hash to the id in the URL.
 */
export async function checkSent(
  t: Test,
  sent: Sent[],
  o: { origin: string; at: string; s3: { store: ObjectStore; bucket: string }; queries: number; values?: number[] },
): Promise<{ keys: Buffer; queries: Buffer[] }> {
  const path = (s: Sent) => new URL(s.url).pathname;
  t.ok(
    sent.every((s) => s.url.startsWith(o.origin)),
    'the page only talked to its own origin',
  );
  const puts = sent.filter((s) => s.method === 'PUT' && path(s).startsWith(`${o.at}/api/keys/`));
  const posts = sent.filter((s) => s.method === 'POST' && path(s) === `${o.at}/api/predict`);
  const writes = sent.filter((s) => s.method !== 'GET');
  t.equal(
    writes.length,
    puts.length + posts.length,
    `every request that could carry a body was PUT ${o.at}/api/keys or POST ${o.at}/api/predict (${writes.map((s) => `${s.method} ${path(s)}`).join(', ')})`,
  );
  t.equal(puts.length, 1, 'the evaluation keys were uploaded once');
  t.equal(posts.length, o.queries, `${o.queries} encrypted queries were sent`);
  const keys = puts.length
    ? Buffer.from((await o.s3.store.get({ bucket: o.s3.bucket, key: `sealed/keys/${path(puts[0]).split('/').pop()}.keys` }, 2 ** 30, 'keys')).bytes)
    : Buffer.alloc(0);
  const queries = posts.map((p) => p.body ?? Buffer.alloc(0));
  for (const [what, body] of [[`PUT ${o.at}/api/keys`, keys] as const, ...queries.map((b) => [`POST ${o.at}/api/predict`, b] as const)]) {
    t.equal(body.subarray(0, 6).toString('latin1'), 'SEALED', `${what}: body starts with the wire magic`);
    if (!o.values) continue;
    // A value's text found in the body by chance: ~bytes x 256^-length expected hits. Random key
    // bytes of 126 MB hold some 5-character text (a tree model's single-record keys did once), so
    // the shortest text checked grows with the body: 5 characters up to ~5 MB, 6 beyond.
    const shortest = Math.max(5, Math.ceil(Math.log(body.length) / Math.log(256) + 2.2));
    const leaked = o.values.map(String).filter((v) => v.length >= shortest && body.includes(Buffer.from(v, 'latin1')));
    t.same(leaked, [], `${what}: no plaintext feature value in the body`);
  }
  return { keys, queries };
}
