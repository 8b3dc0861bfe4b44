// The web demo's page script (bundled by scripts/build-web.ts into out/web/app.js). It uses the
// SDK (src/client/index.ts) as any program would: keys are made here, the record is encrypted
// here, only wire-format objects (evaluation keys, encrypted query) are sent, and the encrypted
// result is decrypted here. The secret key stays in this page's memory.
import {
  createClient,
  isTreeClientPart,
  proxyTransport,
  sha256Hex,
  type Evaluation,
  type EvaluationKeys,
  type Prediction,
  type SealedClient,
  type Transport,
} from '../client/index.ts';
import { $, base, buildStages, el, fmtBytes, fmtMs, setStage, status } from './page.ts';

interface Sample {
  name: string;
  values: number[];
  label?: string;
}

type StageId = 'load' | 'keygen' | 'encrypt' | 'keys' | 'evaluate' | 'decrypt' | 'total';
const STAGES: { id: StageId; name: string; where: string }[] = [
  { id: 'load', name: 'Load SEAL and the model', where: 'this page' },
  { id: 'keygen', name: 'Key generation', where: 'this page' },
  { id: 'encrypt', name: 'Encryption', where: 'this page' },
  { id: 'keys', name: 'Upload of the keys (once)', where: 'network' },
  { id: 'evaluate', name: 'Upload, evaluation, download', where: 'server' },
  { id: 'decrypt', name: 'Decryption', where: 'this page' },
  { id: 'total', name: 'Total (this prediction)', where: '' },
];

const paint = () => new Promise<void>((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

function buildForm(features: string[]): HTMLInputElement[] {
  const fields = $('#fields');
  const rows = Math.ceil(features.length / 3);
  fields.style.gridTemplateRows = `repeat(${rows}, auto)`;
  return features.map((f, j) => {
    const input = el('input', { type: 'number', step: 'any', required: true, name: `f${j}`, title: f, dataset: { feature: f } });
    input.setAttribute('aria-label', f);
    fields.append(el('label', { className: 'field' }, el('span', { title: f }, f.replaceAll('_', ' ')), input));
    return input;
  });
}

function showResult(p: Prediction, labels: string[] | undefined): void {
  const probs = p.probabilities;
  const cls = labels ? labels.indexOf(String(p.label)) : -1;
  const result = $('#result');
  $('#result-label').textContent = String(p.label);
  const prob = probs && cls >= 0 ? probs[cls] : undefined;
  $('#result-prob').textContent =
    prob === undefined ? `score ${p.scores.map((s) => s.toFixed(6)).join(', ')}` : `probability ${prob.toFixed(6)} (${(prob * 100).toFixed(2)}%)`;
  result.dataset.label = String(p.label);
  if (prob !== undefined) result.dataset.probability = String(prob);
  const bars = $('#result-bars');
  bars.replaceChildren();
  if (probs && labels) {
    labels.forEach((l, i) => {
      const fill = el('div', { className: 'fill' });
      fill.style.width = `${(probs[i] * 100).toFixed(2)}%`;
      bars.append(
        el(
          'div',
          { className: 'bar' },
          el('span', {}, l),
          el('div', { className: 'track' }, fill),
          el('span', { className: 'pct' }, `${(probs[i] * 100).toFixed(1)}%`),
        ),
      );
    });
  }
  result.dataset.state = 'done';
}

/** Wraps the SDK's transport to list what left the page. */
function recordingTransport(inner: Transport, sent: (line: string) => void): Transport {
  return {
    async evaluate(query: Uint8Array, keys: EvaluationKeys): Promise<Evaluation> {
      const ev = await inner.evaluate(query, keys);
      if (ev.keysUploaded)
        sent(`<b>PUT</b> <code>/api/keys/${keys.id.slice(0, 12)}…</code>: evaluation keys, ${fmtBytes(keys.bytes.length)} (public; wire format, kind 2)`);
      sent(`<b>POST</b> <code>/api/predict</code>: the encrypted record, ${fmtBytes(query.length)} (wire format, kind 1)`);
      return ev;
    },
  };
}

async function main(): Promise<void> {
  buildStages(STAGES);
  const t0 = performance.now();
  const sentList = $('#sent');
  let sentAny = false;
  const sent = (html: string) => {
    if (!sentAny) sentList.replaceChildren();
    sentAny = true;
    const li = el('li');
    li.innerHTML = html; // built from numbers and hex ids only
    sentList.append(li);
  };
  const transport = recordingTransport(proxyTransport(base), sent);
  const client: SealedClient = await createClient({ model: new URL('model/client.json', base), wasmUrl: new URL('seal_throws.wasm', base).href, transport });
  const wasm = performance.getEntriesByType('resource').find((e) => e.name.endsWith('.wasm')) as PerformanceResourceTiming | undefined;
  setStage('load', performance.now() - t0, wasm?.decodedBodySize ? `SEAL ${fmtBytes(wasm.decodedBodySize)}` : '', 'WebAssembly, compiled here');
  const m = client.model;
  if (isTreeClientPart(m)) throw new Error('this page shows networks and linear models; predict with tree ensembles through the SDK or `sealed predict`');
  $('#model-info').textContent =
    `model ${client.modelId} · CKKS, ring degree ${m.params.polyModulusDegree}, modulus ${m.params.coeffModulusBits.join('+')} bits, 128-bit security · ${m.features.length} features · up to ${m.input.recordsPerCiphertext} records per ciphertext`;

  const inputs = buildForm(client.features);
  const samples: Sample[] = await fetch(new URL('api/samples', base))
    .then((r) => (r.ok ? (r.json() as Promise<Sample[]>) : []))
    .catch(() => []);
  samples.push({ name: 'average of the training records', values: m.preprocess.mean });
  // The draw-a-digit page, when the server has an MNIST model for it.
  void fetch(new URL('api/demos', base))
    .then(async (r) => ($('#demos').hidden = !(r.ok && ((await r.json()) as { digit?: boolean }).digit)))
    .catch(() => undefined);
  const select = $<HTMLSelectElement>('#sample');
  samples.forEach((s, i) => select.append(el('option', { value: String(i), textContent: s.name })));
  const fill = (s: Sample) => inputs.forEach((input, j) => (input.value = String(+s.values[j].toPrecision(6))));
  const edited = el('option', { value: 'edited', textContent: '(edited)', hidden: true });
  select.append(edited);
  select.addEventListener('change', () => {
    if (select.value !== 'edited') fill(samples[Number(select.value)]);
  });
  inputs.forEach((input) => input.addEventListener('input', () => (select.value = 'edited')));
  fill(samples[0]);

  const button = $<HTMLButtonElement>('#predict');
  button.disabled = false;
  status(`Ready. Keys are made in this page on the first prediction.`);
  document.body.dataset.ready = 'true';

  $<HTMLFormElement>('#record').addEventListener('submit', (ev) => {
    ev.preventDefault();
    void (async () => {
      button.disabled = true;
      const result = $('#result');
      result.dataset.state = 'running';
      try {
        const row = inputs.map((input) => Number(input.value));
        const bad = row.findIndex((v, j) => inputs[j].value.trim() === '' || !Number.isFinite(v));
        if (bad >= 0) throw new Error(`"${client.features[bad]}" is not a number`);
        const tStart = performance.now();
        let keygen = 0;
        if (!client.keys) {
          status('Generating keys in this page…');
          await paint();
          const k0 = performance.now();
          const keys = client.generateKeys();
          keygen = performance.now() - k0;
          setStage(
            'keygen',
            keygen,
            `evaluation keys ${fmtBytes(keys.evaluationKeys.length)}`,
            `secret key ${fmtBytes(keys.secretKey.length)}: stays in this page`,
          );
        } else setStage('keygen', 0, 'keys already made');
        status('Encrypting the record…');
        await paint();
        const e0 = performance.now();
        const query = client.encrypt([row]);
        const encrypt = performance.now() - e0;
        setStage('encrypt', encrypt, `query ${fmtBytes(query.length)}`);
        status('Sending the ciphertext; the server evaluates it encrypted…');
        await paint();
        const keys = client.keys!;
        const ev = await transport.evaluate(query, { id: keys.evaluationKeysId, bytes: keys.evaluationKeys });
        setStage('keys', ev.ms.keys_upload ?? 0, ev.keysUploaded ? fmtBytes(keys.evaluationKeys.length) : 'already uploaded');
        const server = ev.server as { timings_ms?: { evaluate?: number; total?: number } } | undefined;
        const serverNote =
          server?.timings_ms?.evaluate !== undefined ? `server: evaluation ${fmtMs(server.timings_ms.evaluate)} of ${fmtMs(server.timings_ms.total ?? 0)}` : '';
        setStage('evaluate', ev.ms.round_trip, `result ${fmtBytes(ev.result.length)}`, serverNote);
        status('Decrypting in this page…');
        await paint();
        const d0 = performance.now();
        // Only a result that names this query's SHA-256 is decrypted (the proxy could swap it).
        const [prediction] = client.decrypt(ev.result, { querySha256: sha256Hex(query) });
        const decrypt = performance.now() - d0;
        setStage('decrypt', decrypt);
        setStage(
          'total',
          performance.now() - tStart,
          `sent ${fmtBytes(query.length + (ev.keysUploaded ? keys.evaluationKeys.length : 0))}`,
          `received ${fmtBytes(ev.result.length)}`,
        );
        showResult(prediction, client.labels);
        status('Done: decrypted in this page.');
      } catch (e) {
        result.dataset.state = 'error';
        const err = e as { message?: string; hint?: string };
        status(`${err.message ?? String(e)}${err.hint ? ` (${err.hint})` : ''}`, true);
      } finally {
        button.disabled = false;
      }
    })();
  });
}

main().catch((e: unknown) => {
  const err = e as { message?: string; hint?: string };
  status(`Could not start: ${err.message ?? String(e)}${err.hint ? ` (${err.hint})` : ''}`, true);
  document.body.dataset.ready = 'error';
});
