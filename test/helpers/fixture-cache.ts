// The cache of expensive deterministic test fixtures (.cache/fixtures, or SEALED_FIXTURE_CACHE):
// each is kept under a key that hashes its recipe and every file of src/, so any code change
// builds it anew. Kept apart from fixture.ts, which loads TensorFlow for training, so that
// suites needing only a compiled bundle do not pay for that import.
import { createHash } from 'node:crypto';
import { cp, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readServerPart } from '../../src/model/bundle.ts';
import type { BatchPlan } from '../../src/fhe/batch-plan.ts';
import type { Network } from '../../src/model/network.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURE_CACHE = process.env.SEALED_FIXTURE_CACHE ?? join(ROOT, '.cache', 'fixtures');

export async function fixtureKey(name: string, hp: Record<string, string>, dataFiles: string[]): Promise<string> {
  const h = createHash('sha256').update(JSON.stringify({ name, hp }));
  const sources = (await readdir(join(ROOT, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts')).sort();
  for (const f of [...sources.map((f) => join(ROOT, 'src', f)), ...dataFiles]) h.update(f).update(await readFile(f));
  return `${name}-${h.digest('hex').slice(0, 16)}`;
}

/** Written under a temporary name and renamed, so suites running in parallel never read half a fixture. */
export async function saveFixture(cached: string, modelDir: string, result: unknown): Promise<void> {
  const tmp = `${cached}.${process.pid}.tmp`;
  await mkdir(tmp, { recursive: true });
  await cp(modelDir, join(tmp, 'model'), { recursive: true });
  await writeFile(join(tmp, 'result.json'), JSON.stringify(result));
  await rename(tmp, cached).catch(() => rm(tmp, { recursive: true, force: true }));
}

/**
 * A deterministic computation's JSON result (a fitted model's weights, say), cached under
 * `name`, `recipe` (everything the result depends on besides src/) and src/.
 */
export async function cachedJson<T>(name: string, recipe: unknown, compute: () => Promise<T>): Promise<T> {
  const digest = createHash('sha256').update(JSON.stringify(recipe)).digest('hex');
  const file = join(FIXTURE_CACHE, `${await fixtureKey(name, { recipe: digest }, [])}.json`);
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    const result = await compute();
    await mkdir(FIXTURE_CACHE, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(result));
    await rename(tmp, file);
    return result;
  }
}

/**
 * An image network's bundle with batch mode, as `compileImageModel(net, calibration)`,
 * `addBatchMode(net, built, calibration)` and `writeImageBundle` write it, in `modelDir`; returns
 * its batch plan (as the server reads it). Compiling measures SEAL's unit costs on this machine
 * (SEAL contexts, keys and timed operations: 10-20 s on two busy cores) for the crossover, so the bundle is
 * cached like the breast-cancer model, under the network, the calibration images and src/.
 */
export async function imageBundle(modelDir: string, net: Network, calibration: number[][]): Promise<BatchPlan | undefined> {
  const digest = createHash('sha256').update(JSON.stringify({ net, calibration })).digest('hex');
  const cached = join(FIXTURE_CACHE, await fixtureKey('image-bundle', { inputs: digest }, []));
  try {
    await cp(join(cached, 'model'), modelDir, { recursive: true, errorOnExist: true, force: false });
  } catch {
    await rm(modelDir, { recursive: true, force: true });
    const { addBatchMode, compileImageModel, writeImageBundle } = await import('../../src/train/image-model.ts');
    const built = compileImageModel(net, calibration);
    await writeImageBundle(modelDir, net, built, {}, await addBatchMode(net, built, calibration));
    await saveFixture(cached, modelDir, { manifest: undefined as never, metrics: {} });
  }
  return (await readServerPart(modelDir)).batch;
}
