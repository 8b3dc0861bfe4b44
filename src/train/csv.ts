// CSV tables of numbers, with or without a header row.
import { SealedError } from '../errors.ts';

export interface Table {
  columns: string[];
  rows: number[][];
}

export function parseCsv(text: string, source: string): Table {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new SealedError('bad-data', `${source} is empty`, 'give a CSV file with one record per line');
  const split = (l: string) => l.split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
  const first = split(lines[0]);
  const hasHeader = first.some((c) => c === '' || Number.isNaN(Number(c)));
  const columns = hasHeader ? first : first.map((_, i) => `x${i}`);
  const rows: number[][] = [];
  for (let i = hasHeader ? 1 : 0; i < lines.length; i++) {
    const cells = split(lines[i]);
    if (cells.length !== columns.length) {
      throw new SealedError('bad-data', `${source} line ${i + 1} has ${cells.length} values, expected ${columns.length}`, 'every line needs the same columns as the first');
    }
    const row = cells.map(Number);
    const bad = row.findIndex((v, j) => cells[j] === '' || !Number.isFinite(v));
    if (bad >= 0) throw new SealedError('bad-data', `${source} line ${i + 1}, column "${columns[bad]}" is not a number`, 'features must be numeric; encode categories as numbers first');
    rows.push(row);
  }
  return { columns, rows };
}

/** Splits off the target column (by name or index; default: the last column). */
export function splitTarget(t: Table, target?: string): { features: string[]; x: number[][]; y: number[]; target: string } {
  let idx = t.columns.length - 1;
  if (target !== undefined && target !== '') {
    idx = /^\d+$/.test(target) ? Number(target) : t.columns.indexOf(target);
    if (idx < 0 || idx >= t.columns.length) throw new SealedError('bad-data', `target column "${target}" is not among ${t.columns.join(', ')}`, 'set the hyperparameter `target` to a column name or index');
  }
  return {
    features: t.columns.filter((_, i) => i !== idx),
    x: t.rows.map((r) => r.filter((_, i) => i !== idx)),
    y: t.rows.map((r) => r[idx]),
    target: t.columns[idx],
  };
}
