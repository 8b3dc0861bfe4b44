// Key sets on disk: <dir>/secret.key (mode 0600, never uploaded), <dir>/evaluation.keys (wire
// format, uploaded once) and <dir>/keyset.json (which model, which parameters, content id).
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { paramsKey } from '../fhe/params.ts';
import { isProtected, protect, unprotect } from './passphrase.ts';
import { keysId, type ClientSession, type Keys } from './session.ts';

export interface KeySetInfo {
  model_id: string;
  params: string;
  evaluation_keys_id: string;
  evaluation_keys_bytes: number;
  created: string;
}

export function defaultKeysDir(modelId: string): string {
  return join(keysRoot(), modelId);
}

/** `passphrase`: the secret key is stored encrypted (scrypt + AES-256-GCM), see passphrase.ts. */
export async function saveKeys(dir: string, session: ClientSession, keys: Keys, passphrase?: string): Promise<KeySetInfo> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const secretPath = join(dir, 'secret.key');
  await writeFile(secretPath, passphrase ? protect(keys.secretKey, passphrase) : keys.secretKey, { mode: 0o600 });
  await chmod(secretPath, 0o600); // also when the file already existed with other bits
  if (keys.batchSecretKey) {
    const batchPath = join(dir, 'batch-secret.key');
    await writeFile(batchPath, passphrase ? protect(keys.batchSecretKey, passphrase) : keys.batchSecretKey, { mode: 0o600 });
    await chmod(batchPath, 0o600);
  }
  await writeFile(join(dir, 'evaluation.keys'), keys.evaluationKeys);
  const info: KeySetInfo = {
    model_id: session.modelId,
    params: paramsKey(session.part.params),
    evaluation_keys_id: keys.evaluationKeysId,
    evaluation_keys_bytes: keys.evaluationKeys.length,
    created: new Date().toISOString(),
  };
  await writeFile(join(dir, 'keyset.json'), JSON.stringify(info, null, 1) + '\n');
  return info;
}

/** Loads a key set for this session's model; undefined if the directory holds none. */
export async function loadKeys(dir: string, session: ClientSession): Promise<Keys | undefined> {
  let info: KeySetInfo;
  try {
    info = JSON.parse(await readFile(join(dir, 'keyset.json'), 'utf8')) as KeySetInfo;
  } catch {
    return undefined;
  }
  if (info.model_id !== session.modelId) {
    throw new SealedError('bad-keys', `the keys in ${dir} are for model ${info.model_id}, not ${session.modelId}`, 'use another --keys directory, or run `sealed keygen` for this model');
  }
  const stored = new Uint8Array(await readFile(join(dir, 'secret.key')));
  const secretKey = isProtected(stored) ? unprotect(stored, process.env.SEALED_PASSPHRASE, dir) : stored;
  const evaluationKeys = new Uint8Array(await readFile(join(dir, 'evaluation.keys')));
  if (keysId(evaluationKeys) !== info.evaluation_keys_id) throw new SealedError('bad-keys', `${dir}/evaluation.keys does not match keyset.json`, 'run `sealed keygen` again');
  session.useSecretKey(secretKey);
  let batchSecretKey: Uint8Array | undefined;
  if (session.part.batch) {
    const batchPath = join(dir, 'batch-secret.key');
    const batchStored = await readFile(batchPath).then((b) => new Uint8Array(b), () => undefined);
    if (batchStored) {
      batchSecretKey = isProtected(batchStored) ? unprotect(batchStored, process.env.SEALED_PASSPHRASE, dir) : batchStored;
      session.useBatchSecretKey(batchSecretKey);
    } else {
      // A key set made before the model had batch mode: add its key.
      batchSecretKey = session.generateBatchKey()!;
      await writeFile(batchPath, process.env.SEALED_PASSPHRASE ? protect(batchSecretKey, process.env.SEALED_PASSPHRASE) : batchSecretKey, { mode: 0o600 });
    }
  }
  return { secretKey, evaluationKeys, evaluationKeysId: info.evaluation_keys_id, batchSecretKey };
}

export async function loadOrCreateKeys(dir: string, session: ClientSession): Promise<{ keys: Keys; created: boolean }> {
  const existing = await loadKeys(dir, session);
  if (existing) return { keys: existing, created: false };
  const keys = session.generateKeys();
  await saveKeys(dir, session, keys, process.env.SEALED_PASSPHRASE);
  return { keys, created: true };
}

export function keysRoot(): string {
  return join(process.env.SEALED_HOME ?? join(homedir(), '.sealed'), 'keys');
}

/** The key sets under the default root (one directory per model id). */
export async function listKeySets(root = keysRoot()): Promise<(KeySetInfo & { dir: string })[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  const out: (KeySetInfo & { dir: string })[] = [];
  for (const n of names.sort()) {
    try {
      const info = JSON.parse(await readFile(join(root, n, 'keyset.json'), 'utf8')) as KeySetInfo;
      out.push({ ...info, dir: join(root, n) });
    } catch {
      // not a key set directory
    }
  }
  return out;
}

/** Deletes a key set; the secret key is overwritten before it is unlinked. */
export async function deleteKeySet(dir: string): Promise<void> {
  const secret = join(dir, 'secret.key');
  try {
    const size = (await stat(secret)).size;
    await writeFile(secret, new Uint8Array(size));
  } catch {
    throw new SealedError('bad-request', `no key set in ${dir}`, 'see `sealed keys list`');
  }
  const batchSecret = join(dir, 'batch-secret.key');
  const batchSize = await stat(batchSecret).then((s) => s.size, () => undefined);
  if (batchSize !== undefined) await writeFile(batchSecret, new Uint8Array(batchSize));
  await rm(dir, { recursive: true, force: true });
}
