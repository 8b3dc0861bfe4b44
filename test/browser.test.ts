// The web demo end to end in headless Chromium (Debian's `chromium` with playwright-core): the
// page makes keys, encrypts a breast-cancer record typed into its form, sends it through the
// web server to the real inference server (real S3-compatible server, real workers), decrypts,
// and shows the same class and probability as the Node client. Every request body the page
// sends must be a wire-format object: no plaintext, no secret key. Screenshot:
// out/test-artifacts/browser-demo.png. Skips (only) when Chromium is not installed, and fails
// instead when SEALED_REQUIRE_BROWSER=1 (CI), so a missing install step cannot hide.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Test } from 'tap';
import { ARTIFACTS, browserSuite, openBrowser, checkSent } from './helpers/browser.ts';

browserSuite('the web demo in headless Chromium: keys, encryption and decryption in the page', run);

async function run(t: Test): Promise<void> {
  const { buildWeb } = await import('../scripts/build-web.ts');
  const { startWebServer } = await import('../src/web/server.ts');
  const { predict } = await import('../src/client/predict.ts');
  const { ClientSession } = await import('../src/client/session.ts');
  const { readClientPart } = await import('../src/model/bundle.ts');
  const { decodeWire } = await import('../src/wire/format.ts');
  const { startStack, trainBreastCancer } = await import('./helpers/fixture.ts');

  const trained = await trainBreastCancer();
  const stack = await startStack(trained.modelDir, trained.dir);
  const web = await buildWeb({ outDir: join(trained.dir, 'web') });
  const labels = ['malignant', 'benign'];
  const samples = trained.test.x
    .slice(0, 5)
    .map((values, i) => ({ name: `held-out record ${i + 1} (${labels[trained.test.y[i]]})`, values, label: labels[trained.test.y[i]] }));
  const server = await startWebServer({
    modelDir: trained.modelDir,
    endpoint: stack.server.url,
    store: stack.store,
    bucket: stack.bucket,
    assetsDir: web.outDir,
    samples,
  });
  const { modelId, client } = await readClientPart(trained.modelDir);
  const browser = await openBrowser({ width: 1400, height: 1000 });
  const { page, sent, errors } = browser;
  t.teardown(async () => {
    await browser.close();
    await server.close();
    await stack.close();
    await trained.cleanup();
  });

  t.ok(
    web.inputs.every((i) => !i.startsWith('node:') && !i.includes('@aws-sdk')),
    `the browser bundle holds no Node-only module (${web.inputs.length} inputs)`,
  );
  t.notOk(
    web.inputs.some((i) => /src\/(storage|server)\/|client\/predict\.ts/.test(i)),
    'nor the S3, server or Node predict code',
  );
  const seal = (inputs: string[]) => inputs.some((i) => i.includes('node_modules/node-seal/'));
  t.ok(
    seal(web.bundles['seal-worker.js']) && !seal(web.bundles['app.js']),
    'SEAL is in the Web Worker bundle, not the page bundle: it never runs on the main thread',
  );

  // The Node client's answers (the path of `sealed predict`). The record typed into the form is
  // the held-out record the model is least sure about, so the probability is far from 0 and 1.
  const session = await ClientSession.open(modelId, client);
  const keys = session.generateKeys();
  const transport = { store: stack.store, bucket: stack.bucket, endpoint: stack.server.url };
  const all = await predict(session, keys, trained.test.x, transport);
  const margin = all.predictions.map((p) => Math.abs(p.probabilities![1] - 0.5));
  const record = trained.test.x[margin.indexOf(Math.min(...margin))];
  const sample2 = samples[2].values.map((v) => +v.toPrecision(6)); // as the page fills the form
  const node = await predict(session, keys, [record, sample2], transport);
  session.close();
  const nodeLabel = String(node.predictions[0].label);
  const nodeProb = node.predictions[0].probabilities![labels.indexOf(nodeLabel)];
  const node2Label = String(node.predictions[1].label);
  const node2Prob = node.predictions[1].probabilities![labels.indexOf(node2Label)];

  await page.goto(server.url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 120_000 });
  t.equal(await page.inputValue('input[name="f0"]'), String(+samples[0].values[0].toPrecision(6)), 'the form is prefilled from the first sample record');

  for (let j = 0; j < record.length; j++) await page.fill(`input[name="f${j}"]`, String(record[j]));
  await page.click('#predict');
  await page.waitForSelector('#result[data-state="done"], #result[data-state="error"]', { timeout: 180_000 });
  const status = await page.textContent('#status');
  t.equal(await page.getAttribute('#result', 'data-state'), 'done', `the page shows a prediction (status: ${status})`);

  const shownLabel = (await page.textContent('#result-label'))?.trim();
  const shownProb = Number(await page.getAttribute('#result', 'data-probability'));
  const shownText = (await page.textContent('#result-prob')) ?? '';
  t.equal(shownLabel, nodeLabel, `the page shows class "${shownLabel}", as the Node client`);
  t.ok(
    Math.abs(shownProb - nodeProb) < 1e-4,
    `probability in the page ${shownProb} equals the Node client's ${nodeProb} within 1e-4 (|d| = ${Math.abs(shownProb - nodeProb).toExponential(2)})`,
  );
  t.ok(Math.abs(Number(/probability ([0-9.]+)/.exec(shownText)?.[1]) - nodeProb) < 1e-4, `and the text on the page says so: "${shownText}"`);

  const stageMs = async () =>
    Object.fromEntries(
      await page.$$eval('#stages tr[data-stage]', (rows) =>
        rows.map((r) => [(r as HTMLElement).dataset.stage!, Number((r.children[2] as HTMLElement).dataset.ms ?? NaN)] as [string, number]),
      ),
    ) as Record<string, number>;
  const first = await stageMs();
  for (const s of ['load', 'keygen', 'encrypt', 'keys', 'evaluate', 'decrypt', 'total'])
    t.ok(Number.isFinite(first[s]) && first[s] >= 0, `stage ${s} is timed: ${first[s]?.toFixed(1)} ms`);
  t.ok(first.keygen > 0, 'keys were made in the page');
  const sizes = await page.$$eval('#stages tr[data-stage]', (rows) => rows.map((r) => `${(r as HTMLElement).dataset.stage}: ${r.children[3].textContent}`));
  t.ok(
    sizes.some((s) => /^encrypt: query [0-9,]+ B$/.test(s)),
    'the query size is shown',
  );
  t.ok(
    sizes.some((s) => /^evaluate: result [0-9,]+ B/.test(s)),
    'the result size is shown',
  );

  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'browser-demo.png'), fullPage: true });

  // A second prediction, from a sample picked in the list: keys are not made or uploaded again.
  await page.selectOption('#sample', '2');
  await page.click('#predict');
  await page.waitForFunction(
    () => {
      const r = document.querySelector<HTMLElement>('#result')!;
      return r.dataset.state === 'done' && document.querySelector<HTMLElement>('#stages tr[data-stage="keygen"] td.num')!.dataset.ms === '0';
    },
    undefined,
    { timeout: 120_000 },
  );
  const second = await stageMs();
  t.equal((await page.textContent('#result-label'))?.trim(), node2Label, `second prediction (sample 3): class "${node2Label}", as the Node client`);
  const prob2 = Number(await page.getAttribute('#result', 'data-probability'));
  t.ok(Math.abs(prob2 - node2Prob) < 1e-4, `and probability ${prob2} equals the Node client's ${node2Prob} within 1e-4`);

  // What left the page: wire-format objects only, to its own origin only.
  const { keys: keysBytes, queries } = await checkSent(t, sent, {
    origin: new URL(server.url).origin,
    at: '',
    s3: stack,
    queries: 2,
    values: [...record, ...sample2],
  });
  const keysMsg = decodeWire<{ params: string; galois_steps: number[]; relin: boolean; public_key?: boolean }>('keys', keysBytes, 'keys');
  t.equal(keysMsg.header.public_key, true, 'the keys carry the public key the server re-randomizes results with');
  t.equal(
    keysMsg.sections.length,
    1 + (keysMsg.header.relin ? 1 : 0) + 1,
    'the keys body holds the evaluation keys only (Galois keys, relin keys if needed, the public key): no secret key',
  );
  t.same(keysMsg.header.galois_steps, client.galois_steps, 'for the rotations this model needs');
  for (const body of queries) {
    const q = decodeWire<{ model_id: string; records: number }>('query', new Uint8Array(body), 'query');
    t.same([q.header.model_id, q.header.records, q.sections.length], [modelId, 1, 1], 'a query body is one ciphertext of one record for this model');
  }
  t.same(errors, [], 'no errors in the page');

  const report = { first, second, sizes, bundle: web.files, label: shownLabel, probability: shownProb, node_probability: nodeProb };
  await writeFile(join(ARTIFACTS, 'browser-demo.json'), JSON.stringify(report, null, 1) + '\n');
  t.comment(`stage times (ms), first prediction: ${JSON.stringify(first)}`);
  t.comment(`stage times (ms), second prediction: ${JSON.stringify(second)}`);
}
