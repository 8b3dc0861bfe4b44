// `sealed demo --web --trees` in headless Chromium (Debian's `chromium` with playwright-core): the
// demo trains a random forest on the breast-cancer CSV and serves it; the page reads the tree
// model's client part, the SDK in the page makes the single-record form's keys (the Galois keys of
// its gather and folds), quantizes and encrypts a record from the sample list and one typed into
// the form, sends each through the web server to the real inference server (real S3-compatible
// server, real workers), and decrypts the class and probability the bundle's circuit gives in
// plaintext on the record's quantized bits. Every object the page sends must be a wire-format
// object: no plaintext, no secret key. Screenshot: out/test-artifacts/browser-trees.png. Skips
// (only) when Chromium is not installed, and fails instead when SEALED_REQUIRE_BROWSER=1 (CI).
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Test } from 'tap';
import { ARTIFACTS, browserSuite, openBrowser, checkSent } from './helpers/browser.ts';

browserSuite('a tree ensemble in the web page: single-record keys, quantization and encryption in the page', run);

async function run(t: Test): Promise<void> {
  const { startWebDemo } = await import('../src/cli/demo-web.ts');
  const { readTreeBundle } = await import('../src/model/trees/bundle.ts');
  const { thermometer } = await import('../src/model/trees/circuit.ts');
  const { predictionOf, probabilitiesOf } = await import('../src/model/trees/ensemble.ts');
  const { simulateTreeCircuit } = await import('../src/model/trees/factored.ts');
  const { binsOf, inputOffsets } = await import('../src/model/trees/quantize.ts');
  const { decodeWire } = await import('../src/wire/format.ts');

  const demo = await startWebDemo({ trees: true, port: 0, quiet: true, digitModel: false, workers: 2 });
  const browser = await openBrowser({ width: 1400, height: 1000 });
  const { page, sent, errors } = browser;
  t.teardown(async () => {
    await browser.close();
    await demo.close();
  });
  const { client, server: serverPart } = await readTreeBundle(demo.modelDir);
  t.ok(client.single, 'the forest has a single-record form');
  const samples = (await (await fetch(new URL('/api/samples', demo.url))).json()) as { values: number[] }[];
  const server = { url: demo.url };
  // As the page fills the form: six significant digits.
  const shown = (r: number[]) => r.map((v) => +v.toPrecision(6));

  // The bundle's circuit in plaintext on the record's quantized bits: what the encrypted path computes.
  const { offsets, inputs } = inputOffsets(client.bins.edges);
  const expected = (record: number[]) => {
    const scores = simulateTreeCircuit(serverPart.circuit, thermometer(binsOf(client.bins, record), client.bins.edges, offsets, inputs));
    const cls = predictionOf(client, scores);
    return { label: client.labels![cls], probability: probabilitiesOf(client, scores)![cls] };
  };

  await page.goto(server.url);
  await page.waitForSelector('body[data-ready="true"], body[data-ready="error"]', { timeout: 120_000 });
  t.equal(await page.getAttribute('body', 'data-ready'), 'true', `the page starts (status: ${await page.textContent('#status')})`);
  t.ok(
    page.workers().some((w) => w.url().endsWith('/seal-worker.js')),
    "SEAL runs in the page's Web Worker: seconds of key generation do not freeze the page",
  );
  t.match(
    await page.textContent('#model-info'),
    /tree ensemble.*single-record form, ring degree 16384/,
    'the page says it serves a tree ensemble and which form',
  );

  const predict = async (which: string) => {
    await page.click('#predict');
    await page.waitForFunction(
      (w) => {
        const r = document.querySelector<HTMLElement>('#result')!;
        return (r.dataset.state === 'done' || r.dataset.state === 'error') && document.body.dataset.which === w;
      },
      which,
      { timeout: 300_000 },
    );
  };
  // The page marks nothing per prediction, so the test tags each one before it starts.
  const tag = (w: string) => page.evaluate((v) => (document.body.dataset.which = v), w);

  const stageMs = async () =>
    Object.fromEntries(
      await page.$$eval('#stages tr[data-stage]', (rows) =>
        rows.map((r) => [(r as HTMLElement).dataset.stage!, Number((r.children[2] as HTMLElement).dataset.ms ?? NaN)] as [string, number]),
      ),
    ) as Record<string, number>;

  const check = async (record: number[], name: string) => {
    const want = expected(record);
    t.equal(await page.getAttribute('#result', 'data-state'), 'done', `${name}: the page shows a prediction (status: ${await page.textContent('#status')})`);
    t.equal((await page.textContent('#result-label'))?.trim(), want.label, `${name}: class "${want.label}", the circuit's in plaintext`);
    // The flood moves a score by its stated precision (2^-12 of the score bound: the forest's
    // scores are vote fractions, at most 1); the probability is the score itself.
    const prob = Number(await page.getAttribute('#result', 'data-probability'));
    t.ok(Math.abs(prob - want.probability) < 1e-2, `${name}: probability ${prob} within 1e-2 of the circuit's ${want.probability}`);
  };

  // First prediction: the prefilled sample, with the keys made in the page.
  await tag('first');
  await predict('first');
  await check(shown(samples[0].values), 'first record');
  const first = await stageMs();
  for (const s of ['load', 'keygen', 'encrypt', 'keys', 'evaluate', 'decrypt', 'total'])
    t.ok(Number.isFinite(first[s]) && first[s] >= 0, `stage ${s} is timed: ${first[s]?.toFixed(1)} ms`);
  t.ok(first.keygen > 0 && first.keys > 0, 'the single-record keys were made in the page and uploaded');
  t.match(
    await page.textContent('#stages tr[data-stage="evaluate"]'),
    /server: evaluation [0-9.]+ m?s on 2 threads, [0-9.]+ m?s wall/,
    "the server's time is shown per thread and as wall time (the record's gather is cut across two workers)",
  );
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'browser-trees.png'), fullPage: true });

  // A record typed into the form: keys are neither made nor uploaded again.
  const typed = shown(samples[7].values);
  for (let j = 0; j < typed.length; j++) await page.fill(`input[name="f${j}"]`, String(typed[j]));
  await tag('typed');
  await predict('typed');
  await check(typed, 'typed record');
  const second = await stageMs();
  t.equal(second.keygen, 0, 'no keys made for the second prediction');

  // What left the page: wire-format objects only, to its own origin only.
  const { keys: keysBytes, queries } = await checkSent(t, sent, {
    origin: new URL(server.url).origin,
    at: '',
    s3: demo,
    queries: 2,
    values: [...shown(samples[0].values), ...typed],
  });
  const keysMsg = decodeWire<{ params: string; galois_steps: number[]; public_key?: boolean }>('keys', keysBytes, 'keys');
  t.same(keysMsg.header.galois_steps, client.single!.galois_steps, "the keys are the single-record form's, for the rotations it needs");
  t.equal(keysMsg.header.public_key, true, 'with the public key the server re-randomizes results with (no secret key)');
  for (const body of queries) {
    const q = decodeWire<{ model_id: string; records: number }>('query', new Uint8Array(body), 'query');
    t.same([q.header.model_id, q.header.records], [client.model_id, 1], 'a query body is one record for this model');
  }
  t.same(errors, [], 'no errors in the page');
  t.comment(`stage times (ms), first prediction: ${JSON.stringify(first)}`);
  t.comment(`stage times (ms), second prediction: ${JSON.stringify(second)}`);
}
