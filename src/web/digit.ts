// The draw-a-digit page's script (bundled by scripts/build-web.ts into out/web/digit.js). The
// person draws on a canvas; the drawing becomes a 28x28 MNIST image here (digit-image.ts); a Web
// Worker (seal-worker.ts) holding SEAL, the secret key and the SDK client makes the keys,
// encrypts, sends the public evaluation keys (once) and the encrypted image to the sealed web
// server (src/web/server.ts, under /digit/: it has the inference server evaluate the network on
// the ciphertext) and decrypts the answer. This thread only draws, so the page never freezes.
import type { Prediction } from '../client/index.ts';
import type { ClientPart } from '../model/client-part.ts';
import { mnistFromInk, MNIST_SIDE, type DigitImage } from './digit-image.ts';
import { isTreeModel, SealWorker } from './seal-worker-client.ts';
import { $, base, buildStages, el, fmtBytes, fmtMs, setStage, status } from './page.ts';

type StageId = 'load' | 'image' | 'keygen' | 'encrypt' | 'keys' | 'evaluate' | 'decrypt' | 'total';
const STAGES: { id: StageId; name: string; where: string }[] = [
  { id: 'load', name: 'Load SEAL and the model', where: 'worker' },
  { id: 'image', name: 'Drawing to 28x28 image', where: 'this page' },
  { id: 'keygen', name: 'Key generation', where: 'worker' },
  { id: 'encrypt', name: 'Encryption', where: 'worker' },
  { id: 'keys', name: 'Upload of the keys (once)', where: 'network' },
  { id: 'evaluate', name: 'Upload, evaluation, download', where: 'server' },
  { id: 'decrypt', name: 'Decryption', where: 'worker' },
  { id: 'total', name: 'Total (this digit)', where: '' },
];

/** Pen width, as a fraction of the pad's side: strokes about 2 pixels wide once fitted in 20x20. */
const PEN = 0.08;

/** The drawing pad: strokes in CSS pixels, the backing store at the device's pixel ratio. */
class Pad {
  readonly canvas: HTMLCanvasElement;
  private readonly ctx: CanvasRenderingContext2D;
  /** Side in CSS pixels: the coordinates of the strokes. */
  private readonly side: number;
  private last: { x: number; y: number } | undefined;
  strokes = 0;
  onStroke: () => void = () => {};

  constructor(canvas: HTMLCanvasElement) {
    this.canvas = canvas;
    const side = (this.side = canvas.width);
    const dpr = Math.max(1, Math.min(3, window.devicePixelRatio || 1));
    canvas.style.width = canvas.style.height = `${side}px`;
    canvas.width = canvas.height = Math.round(side * dpr);
    this.ctx = canvas.getContext('2d', { willReadFrequently: true })!;
    this.ctx.scale(dpr, dpr);
    this.ctx.lineCap = 'round';
    this.ctx.lineJoin = 'round';
    this.ctx.lineWidth = PEN * side;
    this.ctx.strokeStyle = '#1d2330';
    this.ctx.fillStyle = '#1d2330';
    canvas.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      this.last = this.at(e);
      this.dot(this.last);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!this.last) return;
      for (const ev of e.getCoalescedEvents?.() ?? [e]) {
        const p = this.at(ev);
        this.ctx.beginPath();
        this.ctx.moveTo(this.last.x, this.last.y);
        this.ctx.lineTo(p.x, p.y);
        this.ctx.stroke();
        this.last = p;
      }
    });
    const end = () => {
      if (!this.last) return;
      this.last = undefined;
      this.strokes++;
      this.onStroke();
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
  }

  private at(e: PointerEvent): { x: number; y: number } {
    const r = this.canvas.getBoundingClientRect();
    return { x: ((e.clientX - r.left) / r.width) * this.side, y: ((e.clientY - r.top) / r.height) * this.side };
  }

  private dot(p: { x: number; y: number }): void {
    this.ctx.beginPath();
    this.ctx.arc(p.x, p.y, this.ctx.lineWidth / 2, 0, 2 * Math.PI);
    this.ctx.fill();
  }

  clear(): void {
    this.ctx.save();
    this.ctx.setTransform(1, 0, 0, 1, 0, 0);
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.ctx.restore();
    this.strokes = 0;
  }

  /** The ink (alpha channel, 0..1), at the backing store's resolution. */
  ink(): { ink: Float32Array; width: number; height: number } {
    const { width, height } = this.canvas;
    const data = this.ctx.getImageData(0, 0, width, height).data;
    const ink = new Float32Array(width * height);
    for (let i = 0; i < ink.length; i++) ink[i] = data[4 * i + 3] / 255;
    return { ink, width, height };
  }
}

function showImage(canvas: HTMLCanvasElement, img: DigitImage | undefined): void {
  const ctx = canvas.getContext('2d')!;
  const data = ctx.createImageData(MNIST_SIDE, MNIST_SIDE);
  for (let i = 0; i < MNIST_SIDE * MNIST_SIDE; i++) {
    const v = img?.pixels[i] ?? 0;
    data.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(data, 0, 0);
  if (img) canvas.dataset.pixels = img.pixels.join(',');
  else delete canvas.dataset.pixels;
}

function showResult(p: Prediction, labels: string[]): void {
  const probs = p.probabilities ?? [];
  const cls = labels.indexOf(String(p.label));
  const result = $('#result');
  $('#result-label').textContent = String(p.label);
  const prob = probs[cls];
  $('#result-prob').textContent = prob === undefined ? '' : `probability ${prob.toFixed(6)} (${(prob * 100).toFixed(2)}%)`;
  result.dataset.label = String(p.label);
  result.dataset.probability = String(prob);
  result.dataset.probabilities = probs.join(',');
  const bars = $('#result-bars');
  bars.replaceChildren();
  labels.forEach((l, i) => {
    const fill = el('div', { className: 'fill' });
    fill.style.height = `${Math.max(0, Math.min(100, probs[i] * 100)).toFixed(2)}%`;
    bars.append(
      el(
        'div',
        { className: i === cls ? 'col top' : 'col', title: `${l}: ${(probs[i] * 100).toFixed(2)}%` },
        el('div', { className: 'track' }, fill),
        el('span', {}, l),
      ),
    );
  });
  result.dataset.state = 'done';
}

/** The longest task on the page's main thread since the last reset (Chromium's Long Tasks API). */
function longTasks(): { reset(): void; longest(): number | undefined } {
  let longest = 0;
  let supported = false;
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) longest = Math.max(longest, e.duration);
    }).observe({ type: 'longtask', buffered: false });
    supported = true;
  } catch {
    supported = false;
  }
  return { reset: () => (longest = 0), longest: () => (supported ? longest : undefined) };
}

async function main(): Promise<void> {
  buildStages(STAGES);
  const tasks = longTasks();
  const t0 = performance.now();
  const worker = new SealWorker(new URL('../seal-worker.js', base));
  const pad = new Pad($<HTMLCanvasElement>('#pad'));
  const preview = $<HTMLCanvasElement>('#mnist');
  const button = $<HTMLButtonElement>('#predict');
  let image: DigitImage | undefined;
  const redraw = () => {
    const t = performance.now();
    const { ink, width, height } = pad.ink();
    image = mnistFromInk(ink, width, height);
    showImage(preview, image);
    return performance.now() - t;
  };
  pad.onStroke = () => void redraw();
  $<HTMLButtonElement>('#clear').addEventListener('click', () => {
    pad.clear();
    redraw();
    $('#result').dataset.state = 'idle';
    $('#result-label').textContent = '–';
    $('#result-prob').textContent = '';
    $('#result-bars').replaceChildren();
  });

  const sentList = $('#sent');
  let sentAny = false;
  const sent = (html: string) => {
    if (!sentAny) sentList.replaceChildren();
    sentAny = true;
    const li = el('li');
    li.innerHTML = html; // built from numbers and hex ids only
    sentList.append(li);
  };

  const init = await worker.call('init', {
    modelUrl: new URL('model/client.json', base).href,
    wasmUrl: new URL('../seal_throws.wasm', base).href,
    proxy: base.href,
  });
  const served = init.value.model;
  if (isTreeModel(served)) throw new Error('this page needs an MNIST network, and the server serves a tree ensemble');
  const model: ClientPart = served;
  const labels = model.labels ?? Array.from({ length: model.output.count }, (_, i) => String(i));
  if (model.features.length !== MNIST_SIDE * MNIST_SIDE || !model.image)
    throw new Error(`this page needs a 28x28 image model; the server's model takes ${model.features.length} features`);
  setStage('load', performance.now() - t0, init.value.wasmBytes ? `SEAL ${fmtBytes(init.value.wasmBytes)}` : '', 'WebAssembly, compiled in the worker');
  $('#model-info').textContent =
    `model ${init.value.modelId} · CKKS, ring degree ${model.params.polyModulusDegree}, modulus ${model.params.coeffModulusBits.join('+')} bits, 128-bit security · ${model.galois_steps.length} rotation keys · the client part deskews the image before encrypting it${model.image.deskew ? '' : ' (off for this model)'}`;

  let keysBytes = 0;
  let busy = false;
  button.disabled = false;
  status('Ready: draw a digit, then press "Encrypt and classify".');
  document.body.dataset.ready = 'true';

  const classify = async () => {
    if (busy) return;
    busy = true;
    button.disabled = true;
    const result = $('#result');
    result.dataset.state = 'running';
    tasks.reset();
    try {
      const tStart = performance.now();
      const imageMs = redraw();
      if (!image) throw new Error('draw a digit first');
      setStage('image', imageMs, `${image.pixels.length} pixels`, `drawing ${image.box.width}x${image.box.height} px, scaled x${image.box.scale.toFixed(3)}`);
      if (!keysBytes) {
        status('Generating keys in the worker…');
        const k = await worker.call('keygen', {});
        keysBytes = k.value.evaluationKeysBytes;
        setStage('keygen', k.ms, `evaluation keys ${fmtBytes(keysBytes)}`, `secret key ${fmtBytes(k.value.secretKeyBytes)}: stays in the worker`);
      } else setStage('keygen', 0, 'keys already made');
      status('Encrypting in the worker; the server classifies the ciphertext; decrypting in the worker…');
      const { value } = await worker.call('predict', { record: image.pixels });
      const st = value.stats;
      setStage('encrypt', st.ms.encrypt, `query ${fmtBytes(st.query_bytes)}`);
      if (st.keys_uploaded)
        sent(
          `<b>PUT</b> <code>digit/api/keys/${value.evaluationKeysId.slice(0, 12)}…</code>: evaluation keys, ${fmtBytes(st.keys_bytes)} (public; wire format, kind 2)`,
        );
      sent(`<b>POST</b> <code>digit/api/predict</code>: the encrypted image, ${fmtBytes(st.query_bytes)} (wire format, kind 1)`);
      setStage('keys', st.transport_ms.keys_upload ?? 0, st.keys_uploaded ? fmtBytes(st.keys_bytes) : 'already uploaded');
      const server = st.server as { timings_ms?: { evaluate?: number; total?: number } } | undefined;
      const serverNote =
        server?.timings_ms?.evaluate !== undefined ? `server: evaluation ${fmtMs(server.timings_ms.evaluate)} of ${fmtMs(server.timings_ms.total ?? 0)}` : '';
      setStage('evaluate', st.transport_ms.round_trip, `result ${fmtBytes(st.result_bytes)}`, serverNote);
      setStage('decrypt', st.ms.decrypt);
      const longest = tasks.longest();
      const longNote = longest === undefined ? '' : `this page's longest task: ${longest > 0 ? fmtMs(longest) : 'none over 50 ms'}`;
      if (longest !== undefined) document.body.dataset.longestTaskMs = String(longest);
      setStage(
        'total',
        performance.now() - tStart,
        `sent ${fmtBytes(st.query_bytes + (st.keys_uploaded ? st.keys_bytes : 0))}`,
        `received ${fmtBytes(st.result_bytes)}${longNote ? ` · ${longNote}` : ''}`,
      );
      showResult(value.prediction, labels);
      status('Done: decrypted in this page (its worker). Clear and draw another digit.');
    } catch (e) {
      result.dataset.state = 'error';
      const err = e as { message?: string; hint?: string };
      status(`${err.message ?? String(e)}${err.hint ? ` (${err.hint})` : ''}`, true);
    } finally {
      busy = false;
      button.disabled = false;
    }
  };
  button.addEventListener('click', () => void classify());
}

main().catch((e: unknown) => {
  const err = e as { message?: string; hint?: string };
  status(`Could not start: ${err.message ?? String(e)}${err.hint ? ` (${err.hint})` : ''}`, true);
  document.body.dataset.ready = 'error';
});
