// A tree ensemble's client part read from text a caller handed over (the SDK's object, JSON text
// or URL; bundle.ts reads it from a bundle directory, hash-checked against the manifest). Pure, so
// browsers can use it. What it checks is what the client's own code would trip over later, said
// now and plainly: the shape, 128-bit parameters, bins the thermometer code can use.
import { SealedError } from '../../errors.ts';
import { checkParams } from '../../fhe/params.ts';
import type { TreeClientPart } from './compile.ts';
import { inputOffsets } from './quantize.ts';

const POSTS = ['identity', 'sigmoid', 'softmax', 'proba'];

/** The client part `c` (parsed JSON) as a tree model's, checked; `where` names it in errors. */
export function checkTreeClientPart(c: unknown, where: string): TreeClientPart {
  const bad = (why: string) =>
    new SealedError('bad-bundle', `the tree model's client part in ${where} ${why}`, 'use the client part `sealed compile` or `sealed train` wrote');
  const p = c as TreeClientPart;
  if (typeof p !== 'object' || p === null || p.model !== 'trees') throw bad('is not a tree model');
  if (typeof p.model_id !== 'string' || !/^[0-9a-f]{32}$/.test(p.model_id)) throw bad('has no valid model_id');
  const count = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  if (!count(p.inputs) || !count(p.outputs) || !count(p.records_per_batch) || !count(p.input_scale_bits)) throw bad('lacks its sizes or scales');
  if (!Array.isArray(p.features) || !p.features.every((f) => typeof f === 'string')) throw bad('has no feature names');
  if (!POSTS.includes(p.post)) throw bad(`has an unknown post-processing ${JSON.stringify(p.post)?.slice(0, 20)}`);
  const edges = p.bins?.edges;
  if (
    !Array.isArray(edges) ||
    edges.length !== p.features.length ||
    !edges.every((e) => Array.isArray(e) && e.every((x, i) => Number.isFinite(x) && (i === 0 || x > e[i - 1]))) ||
    !Array.isArray(p.bins.missing) ||
    p.bins.missing.length !== edges.length
  )
    throw bad('has no bins per feature (increasing edges, a missing-value rule)');
  if (inputOffsets(edges).inputs !== p.inputs) throw bad('has bins that do not match its input count');
  checkParams(p.params);
  if (p.single !== undefined) {
    checkParams(p.single.params);
    if (!count(p.single.copies) || !count(p.single.period) || !Array.isArray(p.single.galois_steps) || p.inputs > p.single.period)
      throw bad('has a malformed single-record form');
  }
  return p;
}

/** Whether a client part is a tree ensemble's (a network's has no `model` field). */
export function isTreeClientPart(p: object): p is TreeClientPart {
  return (p as { model?: unknown }).model === 'trees';
}
