// Tree bundles: the usual manifest (bundle.ts: format, version, model id, SHA-256 of every file)
// over client/model.json (TreeClientPart) and server/trees.json (TreeServerPart). A reader tells
// a tree bundle by its manifest listing server/trees.json (isTreeBundle).
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealedError } from '../../errors.ts';
import { checkParams } from '../../fhe/params.ts';
import type { TreeCircuit } from '../../fhe/tree-circuit.ts';
import type { FactorNode } from '../../fhe/tree-factored.ts';
import { BUNDLE_FORMAT, BUNDLE_VERSION, readManifest, type Manifest } from '../bundle.ts';
import { MAX_PATH } from './circuit.ts';
import { checkTreeClientPart } from './client-part.ts';
import type { TreeClientPart, TreeServerPart } from './compile.ts';
import { singleLayout, singleOutputs } from './single.ts';

export const TREE_SERVER_FILE = 'server/trees.json';
const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

export function isTreeBundle(m: Manifest): boolean {
  return m.files[TREE_SERVER_FILE] !== undefined;
}

export async function writeTreeBundle(dir: string, client: TreeClientPart, server: TreeServerPart, metrics?: Manifest['metrics']): Promise<Manifest> {
  if (client.model_id !== server.model_id) throw new SealedError('internal', 'tree bundle: the client and server parts are of different models');
  await mkdir(join(dir, 'client'), { recursive: true });
  await mkdir(join(dir, 'server'), { recursive: true });
  const files: Record<string, string> = { 'client/model.json': JSON.stringify(client, null, 1) + '\n', [TREE_SERVER_FILE]: JSON.stringify(server) + '\n' };
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  const manifest: Manifest = {
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    model_id: client.model_id,
    created: new Date().toISOString(),
    files: Object.fromEntries(Object.entries(files).map(([k, v]) => [k, sha256(v)])),
    metrics,
  };
  await writeFile(join(dir, 'sealed.json'), JSON.stringify(manifest, null, 1) + '\n');
  return manifest;
}

async function readPart(dir: string, name: string, m: Manifest): Promise<unknown> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(dir, name));
  } catch {
    throw new SealedError('bad-bundle', `the model bundle in ${dir} has no ${name}`, 'point at the directory `sealed compile` wrote');
  }
  if (m.files[name] !== sha256(bytes))
    throw new SealedError(
      'bad-bundle',
      `${name} in ${dir} does not match its hash in sealed.json: the bundle is corrupted or was edited`,
      'copy the bundle again',
    );
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new SealedError('bad-bundle', `${name} in ${dir} is not valid JSON`, 'copy the bundle again');
  }
}

/**
 * The client part of a tree bundle, hash-checked against the manifest, parameters checked
 * (128-bit); undefined when `dir` holds no tree bundle. The client needs nothing else.
 */
export async function readTreeClientPart(dir: string): Promise<TreeClientPart | undefined> {
  const m = await readManifest(dir);
  if (!m || !isTreeBundle(m)) return undefined;
  const client = checkTreeClientPart(await readPart(dir, 'client/model.json', m), dir);
  if (client.model_id !== m.model_id)
    throw new SealedError('bad-bundle', `the client part in ${dir} is not the manifest's tree model`, 'copy the bundle again');
  return client;
}

/** Both parts of a tree bundle, hash-checked against the manifest, parameters checked (128-bit). */
export async function readTreeBundle(dir: string): Promise<{ client: TreeClientPart; server: TreeServerPart }> {
  const m = await readManifest(dir);
  if (!m || !isTreeBundle(m)) throw new SealedError('bad-bundle', `${dir} does not hold a tree-ensemble bundle`, 'compile the model with `sealed compile`');
  const client = (await readPart(dir, 'client/model.json', m)) as TreeClientPart;
  const server = (await readPart(dir, TREE_SERVER_FILE, m)) as TreeServerPart;
  if (client.model !== 'trees' || server.model !== 'trees' || client.model_id !== m.model_id || server.model_id !== m.model_id)
    throw new SealedError('bad-bundle', `the parts in ${dir} are not one tree model`, 'copy the bundle again');
  checkParams(client.params);
  checkParams(server.circuit.params);
  if (server.single !== undefined) {
    singleLayout(server.single, TREE_SERVER_FILE);
    if (JSON.stringify(client.single?.params) !== JSON.stringify(server.single.params))
      throw new SealedError('bad-bundle', `the parts in ${dir} disagree on the single-record form's parameters`, 'copy the bundle again');
    // The client reads output k in result k / stretch, slot k mod stretch: the form must make them there.
    if (singleOutputs(server.single) !== client.outputs)
      throw new SealedError(
        'bad-bundle',
        `${TREE_SERVER_FILE}: the single-record form makes ${singleOutputs(server.single)} outputs, the model has ${client.outputs}`,
        'compile the model again',
      );
    const [made, read] = [server.single.stretch ?? 1, client.single?.stretch ?? 1];
    if (made !== read)
      throw new SealedError(
        'bad-bundle',
        `the parts in ${dir} disagree on the single-record form's stretch: the server part puts each position in ${made} slot(s), the client part in ${read}`,
        'copy the bundle again',
      );
  }
  const c = server.circuit;
  if (c.privacy === 'flood' && !(typeof c.noiseL2Bits === 'number' && Number.isFinite(c.noiseL2Bits)))
    throw new SealedError('bad-bundle', `${TREE_SERVER_FILE}: privacy "flood" needs noiseL2Bits`);
  if (c.relinearize !== undefined && c.relinearize !== 'leaf')
    throw new SealedError('bad-bundle', `${TREE_SERVER_FILE}: relinearize is ${JSON.stringify(c.relinearize)}, not "leaf" or absent`);
  if (c.factored !== undefined) checkFactored(c);
  for (const g of c.groups) {
    for (const l of [...g.top, ...g.leaves.flatMap((x) => x.bottom)]) {
      if (!Number.isInteger(l) || l === 0 || Math.abs(l) > c.inputs)
        throw new SealedError('bad-bundle', `${TREE_SERVER_FILE}: a literal refers to input ${l}, the circuit reads ${c.inputs}`);
    }
    for (const leaf of g.leaves)
      if (leaf.values.length !== c.outputs || leaf.values.some((v) => !Number.isFinite(v)))
        throw new SealedError('bad-bundle', `${TREE_SERVER_FILE}: a leaf's values do not match the outputs`);
  }
  return { client, server };
}

/** The factored form's trie: factors on inputs the circuit reads, values per output, at most MAX_PATH deep. */
function checkFactored(c: TreeCircuit): void {
  const bad = (why: string) => new SealedError('bad-bundle', `${TREE_SERVER_FILE}: ${why}`, 'compile the model again');
  if (c.groups.length) throw bad('a circuit has both forms');
  const isInput = (i: unknown) => Number.isInteger(i) && (i as number) >= -1 && (i as number) < c.inputs;
  const visit = (n: FactorNode, depth: number) => {
    if (depth > MAX_PATH) throw bad(`a path has more than ${MAX_PATH} factors`);
    if (depth > 0) {
      const f = n.factor;
      if (!Array.isArray(f) || f.length !== 2 || !f.every(isInput) || (f[0] < 0 && f[1] < 0))
        throw bad(`a factor is ${JSON.stringify(f)}, not [lo, hi] inputs below ${c.inputs}`);
    } else if (n.factor !== undefined) throw bad('the root has a factor');
    if (n.values !== undefined && (!Array.isArray(n.values) || n.values.length !== c.outputs || !n.values.every(Number.isFinite)))
      throw bad("a leaf's values do not match the outputs");
    if (n.children !== undefined) {
      if (!Array.isArray(n.children)) throw bad('children is not a list');
      n.children.forEach((x) => visit(x, depth + 1));
    }
  };
  visit(c.factored!, 0);
}
