// Reading records for prediction and writing predictions.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { imageRows, parseIdx } from '../train/idx.ts';
import { parseNpy } from '../train/npy.ts';
import { SealedError } from '../errors.ts';
import type { ClientPart } from '../model/client-part.ts';

/** What reading records needs of a model: its features (and target column). Tree models' client parts have these too. */
export type RecordShape = Pick<ClientPart, 'features' | 'target'>;
import type { Prediction } from '../model/postprocess.ts';
import { parseCsv, requireNumeric } from '../train/csv.ts';

/** Rows to predict, and the true labels when the file has them: numbers, or class names. */
export interface Records {
  rows: ArrayLike<number>[];
  labels?: (number | string)[];
}

/**
 * Rows of the model's features from a CSV file. Columns are matched by name when the file has
 * a header (extra columns, such as the label, are ignored); otherwise taken in order.
 */
export async function readRecords(file: string, part: RecordShape): Promise<Records> {
  const r = await readAny(file, part);
  if (r.rows.length === 0) throw new SealedError('bad-data', `${file} holds no records`, 'give a file with at least one record to predict');
  return r;
}

async function readAny(file: string, part: RecordShape): Promise<Records> {
  let text: string;
  try {
    text = /(ubyte(\.gz)?|\.npy)$/.test(file) ? '' : await readFile(file, 'utf8');
    if (!existsSync(file)) throw new Error('missing');
  } catch {
    throw new SealedError('bad-data', `cannot read ${file}`, 'give an existing CSV file with --input');
  }
  if (/ubyte(\.gz)?$/.test(file)) return readIdxRecords(file, part);
  if (/\.npy$/.test(file)) return readNpyRecords(file, part);
  if (/\.(jsonl|ndjson)$/.test(file)) return { rows: parseJsonLines(text, file, part) };
  const t = parseCsv(text, file);
  const named = part.features.every((f) => t.columns.includes(f));
  if (named) {
    requireNumeric(t, part.features);
    const idx = part.features.map((f) => t.columns.indexOf(f));
    const ti = part.target ? t.columns.indexOf(part.target) : -1;
    const labels = ti < 0 ? undefined : (t.text.get(part.target!)?.cells ?? t.rows.map((r) => r[ti]));
    return { rows: t.rows.map((r) => idx.map((i) => r[i])), labels };
  }
  if (t.columns.length === part.features.length && t.columns.every((c) => /^x\d+$/.test(c))) {
    requireNumeric(t, t.columns);
    return { rows: t.rows };
  }
  const missing = part.features.filter((f) => !t.columns.includes(f));
  throw new SealedError(
    'bad-data',
    `${file} lacks the model's feature columns ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}`,
    `the header must name the ${part.features.length} features the model was trained on`,
  );
}

export function formatPredictions(p: Prediction[], format: 'csv' | 'json'): string {
  if (format === 'json') return p.map((x, i) => JSON.stringify({ record: i + 1, ...x })).join('\n') + '\n';
  const probs = p[0]?.probabilities?.length ?? 0;
  const head = ['record', 'prediction', ...(probs ? Array.from({ length: probs }, (_, c) => `p${c}`) : ['score'])];
  const lines = p.map((x, i) => [i + 1, x.label, ...(x.probabilities ?? x.scores).map((v) => +v.toFixed(6))].join(','));
  return [head.join(','), ...lines].join('\n') + '\n';
}

/** MNIST-format images (pixels 0..255); labels from the matching labels-idx1 file when present. */
async function readIdxRecords(file: string, part: RecordShape): Promise<Records> {
  const idx = parseIdx(new Uint8Array(await readFile(file)), file);
  if (idx.dims.length === 1) {
    // The labels file of an MNIST pair holds no images: name the file to give instead.
    const images = file.replace('labels-idx1', 'images-idx3').replace('labels.idx1', 'images.idx3');
    const hint =
      images !== file && existsSync(images)
        ? `give the images file ${images} with --input; the labels next to it are read for the accuracy`
        : 'give the images file (…images-idx3-ubyte[.gz]) with --input; a labels file next to it is read for the accuracy';
    throw new SealedError('bad-data', `${file} is an IDX labels file (${idx.dims[0]} labels, no images)`, hint);
  }
  const rows = imageRows(idx);
  if (rows[0]?.length !== part.features.length) {
    throw new SealedError(
      'bad-data',
      `${file} holds images of ${rows[0]?.length ?? 0} pixels, the model takes ${part.features.length}`,
      'give images of the size the model was trained on',
    );
  }
  const labelsFile = file.replace('images-idx3', 'labels-idx1').replace('images.idx3', 'labels.idx1');
  const labels = labelsFile !== file && existsSync(labelsFile) ? Array.from(parseIdx(new Uint8Array(await readFile(labelsFile)), labelsFile).data) : undefined;
  return { rows, labels };
}

/** JSON lines: each line an array of the feature values, or an object keyed by feature name. */
export function parseJsonLines(text: string, file: string, part: RecordShape): number[][] {
  return text
    .split(/\r?\n/)
    .map((l, i) => [l.trim(), i + 1] as const)
    .filter(([l]) => l !== '')
    .map(([l, n]) => {
      let v: unknown;
      try {
        v = JSON.parse(l);
      } catch {
        throw new SealedError('bad-data', `${file} line ${n} is not JSON`, 'one JSON array or object per line');
      }
      const row = Array.isArray(v) ? v : part.features.map((f) => (v as Record<string, unknown>)?.[f]);
      if (row.length !== part.features.length || row.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
        throw new SealedError(
          'bad-data',
          `${file} line ${n} does not hold the ${part.features.length} numeric features the model takes`,
          `give an array of ${part.features.length} numbers or an object with keys ${part.features.slice(0, 3).join(', ')}…`,
        );
      }
      return row as number[];
    });
}

/** NPY: [records, features], or images [records, height, width] flattened row-major. */
async function readNpyRecords(file: string, part: RecordShape): Promise<{ rows: number[][] }> {
  const a = parseNpy(new Uint8Array(await readFile(file)), file);
  const per = a.shape.slice(1).reduce((x, y) => x * y, 1);
  if (a.shape.length < 2 || per !== part.features.length) {
    throw new SealedError(
      'bad-data',
      `${file} has shape (${a.shape.join(', ')}); the model takes ${part.features.length} features per record`,
      'save an array of shape (records, features) or (records, height, width)',
    );
  }
  return { rows: Array.from({ length: a.shape[0] }, (_, i) => Array.from(a.data.subarray(i * per, (i + 1) * per))) };
}
