// Smaller tree fixtures for suites whose subject is the path around the circuit (key sets, CLI,
// serving), not the model: the first trees of a committed XGBoost model, as XGBoost would save
// an ensemble of that many trees. The circuit's cost grows with the trees; its work is the same.
import { readFile, writeFile } from 'node:fs/promises';

interface XgbModel {
  learner: { gradient_booster: { model: { trees: unknown[]; tree_info: number[]; gbtree_model_param: { num_trees: string } } } };
}

/** Writes the first `trees` trees of the XGBoost JSON model at `from` to `to`. */
export async function writeFirstTrees(from: string, to: string, trees: number): Promise<void> {
  const m = JSON.parse(await readFile(from, 'utf8')) as XgbModel;
  const model = m.learner.gradient_booster.model;
  if (model.trees.length < trees) throw new Error(`${from} has ${model.trees.length} trees, fewer than ${trees}`);
  model.trees = model.trees.slice(0, trees);
  model.tree_info = model.tree_info.slice(0, trees);
  model.gbtree_model_param.num_trees = String(trees);
  await writeFile(to, JSON.stringify(m));
}
