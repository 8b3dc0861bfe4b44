// Where a client finds a model's client part: a bundle directory, a directory holding only the
// client part, or model.tar.gz as SageMaker training writes it (a local file or an s3:// URI).
// From an archive only the client part (and the manifest that checks it) is extracted: the
// server part is neither needed nor written to the client's disk.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extract } from 'tar';
import { SealedError } from '../errors.ts';
import { readClientPart } from '../model/bundle.ts';
import type { ClientPart } from '../model/client-part.ts';
import { readTreeClientPart } from '../model/trees/bundle.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { ObjectStore, parseS3Uri } from '../storage/s3.ts';

/** A model's client part, whichever kind of model: a network's (or linear model's) or a tree ensemble's. */
export type AnyClientPart = { kind: 'network'; modelId: string; client: ClientPart } | { kind: 'trees'; part: TreeClientPart };

export async function loadClientPart(source: string, s3?: { endpoint?: string }): Promise<{ modelId: string; client: ClientPart }> {
  return withClientFiles(source, s3, (dir) => readClientPartChecked(dir, source));
}

/**
 * As loadClientPart, for a network or a tree ensemble: the manifest says which (a tree bundle's
 * lists server/trees.json), so an archive is fetched and extracted once for either.
 */
export async function loadAnyClientPart(source: string, s3?: { endpoint?: string }): Promise<AnyClientPart> {
  return withClientFiles(source, s3, async (dir) => {
    const part = await readTreeClientPart(dir);
    if (part) return { kind: 'trees', part };
    return { kind: 'network', ...(await readClientPartChecked(dir, source)) };
  });
}

/** `read` on the bundle directory `source`, or on the client files of the archive `source` (a file or s3://). */
async function withClientFiles<T>(source: string, s3: { endpoint?: string } | undefined, read: (dir: string) => Promise<T>): Promise<T> {
  if (!/\.tar\.gz$|\.tgz$/.test(source)) return read(source);
  const dir = await mkdtemp(join(tmpdir(), 'sealed-model-'));
  try {
    let archive = source;
    if (source.startsWith('s3://')) {
      const store = new ObjectStore({ endpoint: s3?.endpoint });
      try {
        const { bytes } = await store.get(parseS3Uri(source, 'model'), 4 * 2 ** 30, 'model archive');
        archive = join(dir, 'model.tar.gz');
        await writeFile(archive, bytes);
      } finally {
        store.close();
      }
    }
    const out = join(dir, 'model');
    await mkdir(out);
    // Both kinds keep their client part in client/model.json; the server part stays in the archive.
    const wanted = new Set(['sealed.json', 'client/model.json']);
    try {
      await extract({ file: archive, cwd: out, filter: (p) => wanted.has(p.replace(/^\.\//, '')) });
    } catch {
      throw new SealedError(
        'bad-bundle',
        `${source} is not a readable .tar.gz archive`,
        'give the model.tar.gz that SageMaker training wrote, or a bundle directory',
      );
    }
    return await read(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function readClientPartChecked(dir: string, source: string) {
  try {
    return await readClientPart(dir);
  } catch (e) {
    if (e instanceof SealedError && e.code === 'bad-bundle' && /has no/.test(e.message)) {
      throw new SealedError('bad-bundle', `${source} holds no sealed client part (client/model.json)`, 'give the model.tar.gz written by `sealed train`');
    }
    throw e;
  }
}
