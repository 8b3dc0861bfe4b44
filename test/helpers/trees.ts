// Smaller tree fixtures for suites whose subject is the path around the circuit (key sets, CLI,
// serving), not the model: the first trees of a committed XGBoost model, as XGBoost would save
// an ensemble of that many trees. The circuit's cost grows with the trees; its work is the same.
// And serveTrees: a compiled model behind a real server and a local S3.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeTreeBundle } from '../../src/model/trees/bundle.ts';
import type { CompiledTrees } from '../../src/model/trees/compile.ts';
import { startServer } from '../../src/server/serve.ts';
import { startLocalS3 } from '../../src/storage/local-s3.ts';
import { ObjectStore } from '../../src/storage/s3.ts';

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

/** A compiled tree model served as users serve it: its bundle in `dir`/model, a local S3 with a bucket, a server of two workers. */
export async function serveTrees(dir: string, m: Pick<CompiledTrees, 'client' | 'server'>) {
  const modelDir = join(dir, 'model');
  await writeTreeBundle(modelDir, m.client, m.server);
  const s3 = await startLocalS3({ directory: join(dir, 's3') });
  const bucket = 'sealed-test';
  const store = new ObjectStore({ endpoint: s3.endpoint });
  await store.ensureBucket(bucket);
  const server = await startServer({ modelDir, port: 0, host: '127.0.0.1', workers: 2, s3Endpoint: s3.endpoint, allowAny: true, deadlineMs: 600_000 });
  return {
    modelDir,
    server,
    /** What createClient needs to reach it. */
    route: { endpoint: server.url, s3Endpoint: s3.endpoint, bucket },
    close: async () => {
      await server.close();
      store.close();
      await s3.close();
    },
  };
}
