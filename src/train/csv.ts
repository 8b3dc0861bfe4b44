// CSV tables, with or without a header row. Cells are kept as numbers; a column holding text
// (a class name, a typo) also keeps its cells as written, so that the caller decides: a target
// may be text, a feature may not.
import { SealedError } from '../errors.ts';

export interface Table {
  /** Names from the header row, or x0, x1, … by position when there is none. */
  columns: string[];
  hasHeader: boolean;
  /** One number per column; NaN where the cell is not a number (see `text`). */
  rows: number[][];
  /** Columns with a cell that is not a number: all their cells as written, and where the first such cell is. */
  text: Map<string, { cells: string[]; where: string }>;
  source: string;
}

const isNumber = (c: string) => c !== '' && Number.isFinite(Number(c));

export function parseCsv(text: string, source: string): Table {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new SealedError('bad-data', `${source} is empty`, 'give a CSV file with one record per line');
  const split = (l: string) => l.split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
  const first = split(lines[0]);
  // A header has a name where the next line has a number, or is all names. A first line whose
  // only text sits in a text column (a class name) is a record.
  const second = lines.length > 1 ? split(lines[1]) : undefined;
  const hasHeader =
    first.some((c) => !isNumber(c)) && (!second || first.every((c) => !isNumber(c)) || first.some((c, j) => !isNumber(c) && isNumber(second[j] ?? '')));
  const columns = hasHeader ? first : first.map((_, i) => `x${i}`);
  const start = hasHeader ? 1 : 0;
  if (lines.length === start) throw new SealedError('bad-data', `${source} has a header row but no records`, 'add one record per line below the header');
  const rows: number[][] = [];
  const textAt = new Map<number, number>(); // column -> first line with text
  for (let i = start; i < lines.length; i++) {
    const cells = split(lines[i]);
    if (cells.length !== columns.length) {
      throw new SealedError(
        'bad-data',
        `${source} line ${i + 1} has ${cells.length} values, expected ${columns.length}`,
        'every line needs the same columns as the first',
      );
    }
    rows.push(
      cells.map((c, j) => {
        if (isNumber(c)) return Number(c);
        if (!textAt.has(j)) textAt.set(j, i + 1);
        return NaN;
      }),
    );
  }
  const texts = new Map<string, { cells: string[]; where: string }>();
  for (const [j, line] of textAt) texts.set(columns[j], { cells: lines.slice(start).map((l) => split(l)[j]), where: `${source} line ${line}` });
  return { columns, hasHeader, rows, text: texts, source };
}

/** Refuses a column that holds text, naming the first such cell. */
export function requireNumeric(t: Table, names: string[]): void {
  const bad = names.find((n) => t.text.has(n));
  if (bad !== undefined) {
    const { cells, where } = t.text.get(bad)!;
    const cell = cells.find((c) => !isNumber(c));
    throw new SealedError(
      'bad-data',
      `${where}, column "${bad}" is not a number${cell === '' ? ' (empty)' : ''}`,
      'features must be numeric; encode categories as numbers first',
    );
  }
}

/**
 * The columns `names`, in that order, matched by name. Refused when some are missing, naming
 * them: a column taken by position instead would silently feed one feature in place of another.
 */
export function selectColumns(t: Table, names: string[], reference: string): Table {
  if (names.every((n) => /^x\d+$/.test(n)) && (t.hasHeader || t.columns.length !== names.length)) {
    // The reference has no header row: nothing to match by but position.
    throw new SealedError(
      'bad-data',
      t.hasHeader
        ? `${t.source} has a header row, ${reference} has none`
        : `${t.source} has ${t.columns.length} columns, ${reference} has ${names.length} (neither has a header row)`,
      'give both a header row naming the columns (they are then matched by name), or give the same columns in the same order in both',
    );
  }
  const missing = names.filter((n) => !t.columns.includes(n));
  if (missing.length > 0) {
    const list = (a: string[]) => a.slice(0, 8).join(', ') + (a.length > 8 ? ` and ${a.length - 8} more` : '');
    const why = !t.hasHeader && names.some((n) => !/^x\d+$/.test(n)) ? ' (it has no header row)' : '';
    throw new SealedError(
      'bad-data',
      `${t.source} lacks the column${missing.length > 1 ? 's' : ''} ${list(missing)} of ${reference}${why}`,
      `give it every column of ${reference}, named in its header row (any order; extra columns are ignored): ${list(names)}`,
    );
  }
  const idx = names.map((n) => t.columns.indexOf(n));
  const text = new Map([...t.text].filter(([n]) => names.includes(n)));
  return { ...t, columns: names, rows: t.rows.map((r) => idx.map((i) => r[i])), text };
}

/** Tables with the same columns (see selectColumns) one after the other. */
export function concatTables(tables: Table[]): Table {
  const [head] = tables;
  const text = new Map<string, { cells: string[]; where: string }>();
  for (const name of head.columns) {
    const withText = tables.filter((t) => t.text.has(name));
    if (withText.length === 0) continue;
    const cells = tables.flatMap((t) => t.text.get(name)?.cells ?? t.rows.map((r) => String(r[t.columns.indexOf(name)])));
    text.set(name, { cells, where: withText[0].text.get(name)!.where });
  }
  return { ...head, rows: tables.flatMap((t) => t.rows), text };
}

/**
 * Splits off the target column (by name or index; default: the last column). Features must be
 * numbers; the target may be text (`yText`, with `y` NaN), class names to map to indices.
 */
export function splitTarget(t: Table, target?: string): { features: string[]; x: number[][]; y: number[]; yText?: string[]; target: string } {
  let idx = t.columns.length - 1;
  if (target !== undefined && target !== '') {
    idx = /^\d+$/.test(target) ? Number(target) : t.columns.indexOf(target);
    if (idx < 0 || idx >= t.columns.length)
      throw new SealedError(
        'bad-data',
        `target column "${target}" is not among ${t.columns.join(', ')}`,
        'set the hyperparameter `target` to a column name or index',
      );
  }
  const features = t.columns.filter((_, i) => i !== idx);
  requireNumeric(t, features);
  return {
    features,
    x: t.rows.map((r) => r.filter((_, i) => i !== idx)),
    y: t.rows.map((r) => r[idx]),
    yText: t.text.get(t.columns[idx])?.cells,
    target: t.columns[idx],
  };
}
