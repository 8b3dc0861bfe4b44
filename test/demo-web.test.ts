// `sealed demo --web --trees` (startWebDemo): it trains a random forest on the breast-cancer CSV
// and serves it behind the local S3-compatible server, the inference server and the web server.
// A client of the page's proxy (the SDK with proxyTransport, from Node here; browser-trees.test.ts
// drives the page itself in Chromium) predicts three of the page's sample records through the
// single-record form: each is the class the bundle's circuit gives in plaintext on the record's
// quantized bits.
import t from 'tap';
import { createClient, isTreeClientPart, proxyTransport } from '../src/client/index.ts';
import { startWebDemo } from '../src/cli/demo-web.ts';
import { readTreeBundle } from '../src/model/trees/bundle.ts';
import { thermometer } from '../src/model/trees/circuit.ts';
import { predictionOf } from '../src/model/trees/ensemble.ts';
import { simulateTreeCircuit } from '../src/model/trees/factored.ts';
import { binsOf, inputOffsets } from '../src/model/trees/quantize.ts';

t.test('the web demo with --trees: a random forest served to the page, predicted encrypted through its proxy', async (t) => {
  const demo = await startWebDemo({ trees: true, port: 0, quiet: true, digitModel: false, workers: 2 });
  t.teardown(() => demo.close());

  const part = (await (await fetch(new URL('/model/client.json', demo.url))).json()) as object;
  t.ok(isTreeClientPart(part), 'the page gets a tree ensemble client part');
  const { client, server } = await readTreeBundle(demo.modelDir);
  t.ok(client.single, 'with a single-record form');
  t.same(part, client, "it is the bundle's client part, which holds no thresholds or leaves");

  const samples = (await (await fetch(new URL('/api/samples', demo.url))).json()) as { name: string; values: number[]; label: string }[];
  t.equal(samples.length, 10, 'the page offers ten held-out records');
  const { offsets, inputs } = inputOffsets(client.bins.edges);
  const plaintext = (x: number[]) => {
    const bins = binsOf(client.bins, x);
    return client.labels![predictionOf(client, simulateTreeCircuit(server.circuit, thermometer(bins, client.bins.edges, offsets, inputs)))];
  };

  const sdk = await createClient({ model: new URL('/model/client.json', demo.url), transport: proxyTransport(demo.url) });
  t.teardown(() => sdk.close());
  for (const [i, s] of samples.slice(0, 3).entries()) {
    const { predictions, stats } = await sdk.predictWithStats([s.values]);
    t.equal(stats.layout, 'single', `record ${i + 1}: the single-record form`);
    t.equal(predictions[0].label, plaintext(s.values), `record ${i + 1}: "${String(predictions[0].label)}", the circuit's class in plaintext`);
    t.equal(stats.keys_uploaded, i === 0, i === 0 ? 'the keys went up through the proxy once' : 'and not again');
  }
});
