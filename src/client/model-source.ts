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
import { ObjectStore, parseS3Uri } from '../storage/s3.ts';

export async function loadClientPart(source: string, s3?: { endpoint?: string }): Promise<{ modelId: string; client: ClientPart }> {
  if (!/\.tar\.gz$|\.tgz$/.test(source)) return readClientPart(source);
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
    return await readClientPartChecked(out, source);
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
