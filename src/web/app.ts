// The web demo's page script (bundled by scripts/build-web.ts into out/web/app.js). The SDK runs
// in the page's Web Worker (seal-worker.ts) as in any program: keys are made there, the record is
// encrypted there, only wire-format objects (evaluation keys, encrypted query) are sent, and the
// encrypted result is decrypted there. The secret key never leaves the worker, and the page stays
// responsive while a tree model's single-record keys take seconds to make.
import type { Prediction } from '../client/index.ts';
import { $, base, buildStages, el, fmtBytes, fmtMs, setStage, status } from './page.ts';
import { isTreeModel, SealWorker } from './seal-worker-client.ts';

interface Sample {
  name: string;
  values: number[];
  label?: string;
}

type StageId = 'load' | 'keygen' | 'encrypt' | 'keys' | 'evaluate' | 'decrypt' | 'total';
const STAGES: { id: StageId; name: string; where: string }[] = [
  { id: 'load', name: 'Load SEAL and the model', where: 'worker' },
  { id: 'keygen', name: 'Key generation', where: 'worker' },
  { id: 'encrypt', name: 'Encryption', where: 'worker' },
  { id: 'keys', name: 'Upload of the keys (once)', where: 'network' },
  { id: 'evaluate', name: 'Upload, evaluation, download', where: 'server' },
  { id: 'decrypt', name: 'Decryption', where: 'worker' },
  { id: 'total', name: 'Total (this prediction)', where: '' },
];

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
  const worker = new SealWorker(new URL('seal-worker.js', base));
  const init = await worker.call('init', {
    modelUrl: new URL('model/client.json', base).href,
    wasmUrl: new URL('seal_throws.wasm', base).href,
    proxy: base.href,
  });
  setStage('load', performance.now() - t0, init.value.wasmBytes ? `SEAL ${fmtBytes(init.value.wasmBytes)}` : '', 'WebAssembly, compiled in the worker');
  const m = init.value.model;
  const modelId = init.value.modelId;
  const ring = (p: { polyModulusDegree: number; coeffModulusBits: number[] }) =>
    `ring degree ${p.polyModulusDegree}, modulus ${p.coeffModulusBits.join('+')} bits`;
  $('#model-info').textContent = isTreeModel(m)
    ? `model ${modelId} · tree ensemble, CKKS, 128-bit security · ${m.features.length} features, each quantized to bins here before encryption · ${
        m.single ? `one record: single-record form, ${ring(m.single.params)}` : `batch circuit, ${ring(m.params)}`
      }`
    : `model ${modelId} · CKKS, ${ring(m.params)}, 128-bit security · ${m.features.length} features · up to ${m.input.recordsPerCiphertext} records per ciphertext`;

  const inputs = buildForm(m.features);
  const samples: Sample[] = await fetch(new URL('api/samples', base))
    .then((r) => (r.ok ? (r.json() as Promise<Sample[]>) : []))
    .catch(() => []);
  if (!isTreeModel(m)) samples.push({ name: 'average of the training records', values: m.preprocess.mean });
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
  if (samples.length > 0) fill(samples[0]);

  const button = $<HTMLButtonElement>('#predict');
  let predicted = false;
  button.disabled = false;
  status(`Ready. Keys are made in this page (its worker) on the first prediction.`);
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
        if (bad >= 0) throw new Error(`"${m.features[bad]}" is not a number`);
        status(
          predicted
            ? 'Encrypting, sending and decrypting in the worker…'
            : `Making keys${isTreeModel(m) && m.single ? ' (the single-record form: seconds)' : ''}, encrypting, sending and decrypting in the worker…`,
        );
        // The SDK in the worker decrypts only a result that names this query's SHA-256 (the proxy could swap it).
        const { prediction, stats, evaluationKeysId, secretKeyBytes } = (await worker.call('predict', { record: row })).value;
        predicted = true;
        if (stats.ms.keygen > 0)
          setStage('keygen', stats.ms.keygen, `evaluation keys ${fmtBytes(stats.keys_bytes)}`, `secret key ${fmtBytes(secretKeyBytes)}: stays in this page`);
        else setStage('keygen', 0, 'keys already made');
        setStage('encrypt', stats.ms.encrypt, `query ${fmtBytes(stats.query_bytes)}`);
        setStage('keys', stats.transport_ms.keys_upload ?? 0, stats.keys_uploaded ? fmtBytes(stats.keys_bytes) : 'already uploaded');
        const server = stats.server as { threads?: number; timings_ms?: { evaluate?: number; pool_wall?: number; total?: number } } | undefined;
        // A tree query is cut across worker threads: their evaluation times add up to more than the wall time.
        const tm = server?.timings_ms;
        const threads = server?.threads ?? 1;
        const serverNote =
          tm?.evaluate !== undefined
            ? `server: evaluation ${fmtMs(tm.evaluate)}${threads > 1 ? ` on ${threads} threads, ${fmtMs(tm.pool_wall ?? 0)} wall` : ''}, of ${fmtMs(tm.total ?? 0)}`
            : '';
        setStage('evaluate', stats.transport_ms.round_trip ?? stats.ms.evaluate, `result ${fmtBytes(stats.result_bytes)}`, serverNote);
        setStage('decrypt', stats.ms.decrypt);
        setStage(
          'total',
          stats.ms.total,
          `sent ${fmtBytes(stats.query_bytes + (stats.keys_uploaded ? stats.keys_bytes : 0))}`,
          `received ${fmtBytes(stats.result_bytes)}`,
        );
        if (stats.keys_uploaded)
          sent(
            `<b>PUT</b> <code>/api/keys/${evaluationKeysId.slice(0, 12)}…</code>: evaluation keys, ${fmtBytes(stats.keys_bytes)} (public; wire format, kind 2)`,
          );
        sent(`<b>POST</b> <code>/api/predict</code>: the encrypted record, ${fmtBytes(stats.query_bytes)} (wire format, kind 1)`);
        showResult(prediction, m.labels);
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
