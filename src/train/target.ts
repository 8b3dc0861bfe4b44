// The target column as the numbers to fit. Class names written as text become indices into the
// label set, which the client part keeps so that `predict` prints the names.
import { SealedError } from '../errors.ts';
import type { Task } from '../model/client-part.ts';

export interface TargetColumn {
  y: number[];
  yText?: string[];
  target: string;
}

export interface Target {
  y: number[];
  task: Task;
  labels?: string[];
}

const inferTask = (y: number[]): Task => {
  const ints = y.every((v) => Number.isInteger(v));
  const distinct = new Set(y).size;
  if (ints && distinct === 2 && y.every((v) => v === 0 || v === 1)) return 'binary';
  if (ints && distinct <= 50 && y.every((v) => v >= 0)) return 'multiclass';
  return 'regression';
};

function noneEmpty(s: TargetColumn, source: string): void {
  const i = s.yText?.indexOf('') ?? -1;
  if (i >= 0)
    throw new SealedError('bad-data', `${source}: record ${i + 1} has no value in the target column "${s.target}"`, 'fill it in or remove the record');
}

function indices(s: TargetColumn & { yText: string[] }, labels: string[], source: string, hint: string): number[] {
  const at = new Map(labels.map((l, i) => [l, i]));
  return s.yText.map((c, i) => {
    const k = at.get(c);
    if (k === undefined)
      throw new SealedError(
        'bad-data',
        `${source}: record ${i + 1} has class "${c}" in column "${s.target}", which is not among the labels ${labels.join(', ')}`,
        hint,
      );
    return k;
  });
}

/**
 * The training target: numbers as they are (with `labels` naming the classes 0, 1, …), or class
 * names, indexed in the order of `labels` when given, else sorted.
 */
export function trainingTarget(s: TargetColumn, hp: { task?: Task; labels?: string[] }, source: string): Target {
  if (!s.yText) {
    const task = hp.task ?? inferTask(s.y);
    const n = hp.labels?.length ?? 0;
    const bad = hp.labels && task !== 'regression' ? s.y.findIndex((v) => !Number.isInteger(v) || v < 0 || v >= n) : -1;
    if (bad >= 0) {
      throw new SealedError(
        'bad-data',
        `${source}: record ${bad + 1} has class ${s.y[bad]} in column "${s.target}", but labels names ${n} classes (0 to ${n - 1})`,
        'give one label per class number, in order, or write the class names themselves in the target column',
      );
    }
    return { y: s.y, task, labels: hp.labels };
  }
  noneEmpty(s, source);
  const example = s.yText.find((c) => !Number.isFinite(Number(c)));
  if (hp.task === 'regression')
    throw new SealedError(
      'bad-data',
      `the target column "${s.target}" holds text ("${example}"), and regression needs numbers`,
      'drop task=regression to train a classifier on the class names, or give the target as numbers',
    );
  const labels = hp.labels ?? [...new Set(s.yText)].sort();
  const y = indices(
    s as TargetColumn & { yText: string[] },
    labels,
    source,
    hp.labels ? 'add the class to the hyperparameter labels (--set labels=…), or fix the record' : 'fix the record',
  );
  const task = hp.task ?? (labels.length === 2 ? 'binary' : 'multiclass');
  if (labels.length < 2)
    throw new SealedError(
      'bad-data',
      `the target column "${s.target}" holds a single class (${labels[0]})`,
      'training a classifier needs records of at least two classes',
    );
  if (task === 'binary' && labels.length !== 2)
    throw new SealedError(
      'bad-data',
      `task=binary, but the target column "${s.target}" has ${labels.length} classes (${labels.slice(0, 5).join(', ')}${labels.length > 5 ? ', …' : ''})`,
      'use task=multiclass, or keep two classes',
    );
  return { y, task, labels };
}

/** The test target, written like the training one: class names must be among the trained labels. */
export function testTarget(s: TargetColumn, trained: { task: Task; labels?: string[] }, source: string): number[] {
  if (!s.yText) return s.y;
  noneEmpty(s, source);
  if (trained.task === 'regression' || !trained.labels) {
    throw new SealedError(
      'bad-data',
      `${source}: the target column "${s.target}" holds text ("${s.yText.find((c) => !Number.isFinite(Number(c)))}"), but the training target held numbers`,
      'write the test target the way the training target is written',
    );
  }
  return indices(
    s as TargetColumn & { yText: string[] },
    trained.labels,
    source,
    'the test data may only hold classes of the training data; remove the record or add the class to the training data',
  );
}
