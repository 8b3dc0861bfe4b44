// Key sets on disk: <dir>/secret.key (mode 0600, never uploaded), <dir>/evaluation.keys (wire
// format, uploaded once) and <dir>/keyset.json (which model, which parameters, content id).
// The directory is made with mode 0700. Secret key files are in the clear unless a passphrase
// encrypts them (passphrase.ts); deleting a key set unlinks the files and nothing more, since
// overwriting in place does not reach old blocks on SSDs or copy-on-write file systems.
import { chmod, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { paramsKey, type CkksParams } from '../fhe/params.ts';
import { isProtected, passphraseSource, protect, unprotect, type PassphraseSource } from './passphrase.ts';
import { keysId, type ClientSession, type Keys } from './session.ts';

export interface KeySetInfo {
  model_id: string;
  params: string;
  evaluation_keys_id: string;
  evaluation_keys_bytes: number;
  created: string;
}

/** Whose key set: a ClientSession, or a tree model's `{ modelId, part }` (its client part). */
export interface KeyOwner {
  modelId: string;
  part: { params: CkksParams };
}

export function defaultKeysDir(modelId: string): string {
  return join(keysRoot(), modelId);
}

/** `passphrase`: the secret keys are stored encrypted (scrypt + AES-256-GCM), see passphrase.ts. */
export async function saveKeys(dir: string, session: KeyOwner, keys: Keys, passphrase?: string): Promise<KeySetInfo> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Both files at once: each has its own salt, and scrypt runs on the thread pool.
  const [secret, batch] = await Promise.all([
    passphrase ? protect(keys.secretKey, passphrase) : keys.secretKey,
    keys.batchSecretKey && passphrase ? protect(keys.batchSecretKey, passphrase) : keys.batchSecretKey,
  ]);
  await writeSecret(join(dir, 'secret.key'), secret);
  if (batch) await writeSecret(join(dir, 'batch-secret.key'), batch);
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

async function writeSecret(path: string, bytes: Uint8Array): Promise<void> {
  await writeFile(path, bytes, { mode: 0o600 });
  await chmod(path, 0o600); // also when the file already existed with other bits
}

/** Whether `dir` holds a key set for this model, without opening (or asking to unlock) its secret key. */
export async function hasKeys(dir: string, modelId: string): Promise<boolean> {
  const info = await readFile(join(dir, 'keyset.json'), 'utf8').then(
    (t) => JSON.parse(t) as KeySetInfo,
    () => undefined,
  );
  return (
    info?.model_id === modelId &&
    (await stat(join(dir, 'secret.key')).then(
      () => true,
      () => false,
    ))
  );
}

/**
 * A stored secret key in the clear. An encrypted file asks `pass` for the passphrase; one in the
 * old format (v1, scrypt N = 2^15) is rewritten in the current one, best effort: the key
 * opened, so a failed rewrite (read-only directory) must not stop the caller.
 */
async function openSecret(path: string, stored: Uint8Array, pass: PassphraseSource, where: string): Promise<{ key: Uint8Array; passphrase?: string }> {
  if (!isProtected(stored)) return { key: stored };
  const passphrase = await pass.unlock(where);
  const { secretKey, version } = await unprotect(stored, passphrase, path);
  if (version < 2) {
    const tmp = `${path}.upgrade-${process.pid}`;
    await writeSecret(tmp, await protect(secretKey, passphrase))
      .then(() => rename(tmp, path)) // atomic: the file is always one whole version
      .catch(() => rm(tmp, { force: true }));
  }
  return { key: secretKey, passphrase };
}

/**
 * The secret key (opened) and evaluation keys of the key set in `dir` for `modelId`; undefined if
 * the directory holds none. Shared by loadKeys and the tree models' client, which has no ClientSession.
 */
export async function openKeySet(
  dir: string,
  modelId: string,
  pass: PassphraseSource = passphraseSource(),
): Promise<{ info: KeySetInfo; secretKey: Uint8Array; passphrase?: string; evaluationKeys: Uint8Array } | undefined> {
  let info: KeySetInfo;
  try {
    info = JSON.parse(await readFile(join(dir, 'keyset.json'), 'utf8')) as KeySetInfo;
  } catch {
    return undefined;
  }
  if (info.model_id !== modelId) {
    throw new SealedError(
      'bad-keys',
      `the keys in ${dir} are for model ${info.model_id}, not ${modelId}`,
      'use another --keys directory, or run `sealed keygen` for this model',
    );
  }
  const secretPath = join(dir, 'secret.key');
  const { key: secretKey, passphrase } = await openSecret(secretPath, new Uint8Array(await readFile(secretPath)), pass, dir);
  const evaluationKeys = new Uint8Array(await readFile(join(dir, 'evaluation.keys')));
  if (keysId(evaluationKeys) !== info.evaluation_keys_id)
    throw new SealedError('bad-keys', `${dir}/evaluation.keys does not match keyset.json`, 'run `sealed keygen` again');
  return { info, secretKey, passphrase, evaluationKeys };
}

/**
 * Loads a key set for this session's model; undefined if the directory holds none. `pass`: where
 * the passphrase of an encrypted secret key comes from (default: SEALED_PASSPHRASE only, no prompt).
 */
export async function loadKeys(dir: string, session: ClientSession, pass: PassphraseSource = passphraseSource()): Promise<Keys | undefined> {
  const set = await openKeySet(dir, session.modelId, pass);
  if (!set) return undefined;
  const { info, secretKey, passphrase, evaluationKeys } = set;
  session.useSecretKey(secretKey);
  let batchSecretKey: Uint8Array | undefined;
  if (session.part.batch) {
    const batchPath = join(dir, 'batch-secret.key');
    const batchStored = await readFile(batchPath).then(
      (b) => new Uint8Array(b),
      () => undefined,
    );
    if (batchStored) {
      batchSecretKey = (await openSecret(batchPath, batchStored, pass, dir)).key;
      session.useBatchSecretKey(batchSecretKey);
    } else {
      // A key set made before the model had batch mode: add its key, protected as secret.key is.
      batchSecretKey = session.generateBatchKey()!;
      await writeSecret(batchPath, passphrase ? await protect(batchSecretKey, passphrase) : batchSecretKey);
    }
  }
  return { secretKey, evaluationKeys, evaluationKeysId: info.evaluation_keys_id, batchSecretKey };
}

/** As loadKeys; else makes a key set, encrypted if `pass` gives a passphrase without asking. */
export async function loadOrCreateKeys(
  dir: string,
  session: ClientSession,
  pass: PassphraseSource = passphraseSource(),
): Promise<{ keys: Keys; created: boolean }> {
  const existing = await loadKeys(dir, session, pass);
  if (existing) return { keys: existing, created: false };
  const keys = session.generateKeys();
  await saveKeys(dir, session, keys, await pass.given());
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

/**
 * Deletes a key set by unlinking its files. Not a secure erase: the bytes may stay on the disk
 * (SSD wear levelling, copy-on-write file systems, snapshots, backups), which is why a passphrase
 * or full-disk encryption is what protects a secret key at rest.
 */
export async function deleteKeySet(dir: string): Promise<void> {
  if (
    !(await stat(join(dir, 'secret.key')).then(
      () => true,
      () => false,
    ))
  )
    throw new SealedError('bad-request', `no key set in ${dir}`, 'see `sealed keys list`');
  await rm(dir, { recursive: true, force: true });
}
