// Node: `sealed predict` for a tree ensemble (docs/trees.md) through S3: the keys uploaded under
// their SHA-256 (ensureKeysUploaded), the query put (a batch query streamed as it is encrypted,
// a single record's put whole), /invocations named the objects and the query's hash, the result
// fetched and decrypted only if it answers this query. The key set is
// kept as the other models' are (key-files.ts): one secret key per model, its evaluation keys
// uploaded once under their hash; a model's single-record form (one record, its own parameters)
// has its own set beside it, in single/.
import { join } from 'node:path';
import { SealedError } from '../errors.ts';
import { ciphertextBytesBound } from '../fhe/params.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { TreeClient, type TreePredictions } from '../model/trees/query.ts';
import { SingleTreeClient } from '../model/trees/single-query.ts';
import { formatS3Uri, type S3Location } from '../storage/s3.ts';
import type { QueryHeader } from '../wire/format.ts';
import { invokeWithKeys } from './invoke.ts';
import { openKeySet, saveKeys } from './key-files.ts';
import { ensureKeysUploaded } from './keys-upload.ts';
import { passphraseSource, type PassphraseSource } from './passphrase.ts';
import { putQueryStream, toAsync } from './query-upload.ts';
import { keysId, type Keys } from './session.ts';
import { requestLocations, sha256, type S3Route } from './route.ts';

export interface TreePredictStats {
  records: number;
  query_bytes: number;
  keys_bytes: number;
  keys_uploaded: boolean;
  result_bytes: number;
  ms: { keys: number; encrypt: number; upload: number; invoke: number; download: number; decrypt: number; total: number };
  server: unknown;
}

/** A fresh key set for a tree model (or its single-record form): its client's secret key and evaluation keys. */
export function treeKeySet(client: TreeClient | SingleTreeClient): Keys {
  const evaluationKeys = client.keys();
  return { secretKey: client.exportSecretKey(), evaluationKeys, evaluationKeysId: keysId(evaluationKeys) };
}

/**
 * The single-record form's client opened with its key set in `dir`/single (its own parameters,
 * so its own secret key); when there is none, a new one is made and saved there, as openTreeClient.
 */
export async function openSingleTreeClient(
  part: TreeClientPart,
  dir: string,
  pass: PassphraseSource,
): Promise<{ client: SingleTreeClient; keys: Keys; created: boolean }> {
  const keys = await readKeys(singleKeysDir(dir), part.model_id, pass);
  if (keys) return { client: await SingleTreeClient.open(part, keys.secretKey), keys, created: false };
  const client = await SingleTreeClient.open(part);
  try {
    const keys = treeKeySet(client);
    await saveSingleKeys(dir, part, keys, await pass.given());
    return { client, keys, created: true };
  } catch (e) {
    client.close();
    throw e;
  }
}

/** Saves the single-record form's key set beside the batch set in `dir` (in single/). */
export function saveSingleKeys(dir: string, part: TreeClientPart, keys: Keys, passphrase?: string) {
  if (!part.single) throw new SealedError('bad-request', `tree model ${part.model_id} has no single-record form`);
  return saveKeys(singleKeysDir(dir), { modelId: part.model_id, part: { params: part.single.params } }, keys, passphrase);
}

/**
 * The SDK's `keysDir` for a tree model: the key sets `sealed keygen` and `sealed predict` keep in
 * `dir` (the batch circuit's) and in single/ (the single-record form's); each undefined when absent.
 */
export async function readTreeKeySets(
  part: TreeClientPart,
  dir: string,
  pass: PassphraseSource = passphraseSource(),
): Promise<{ batch?: Keys; single?: Keys }> {
  return {
    batch: await readKeys(dir, part.model_id, pass),
    single: part.single ? await readKeys(singleKeysDir(dir), part.model_id, pass) : undefined,
  };
}

/** The key set saved in `dir` for the model, as Keys; undefined when there is none. */
async function readKeys(dir: string, modelId: string, pass: PassphraseSource): Promise<Keys | undefined> {
  const set = await openKeySet(dir, modelId, pass);
  return set && { secretKey: set.secretKey, evaluationKeys: set.evaluationKeys, evaluationKeysId: set.info.evaluation_keys_id };
}

/** Saves a tree model's batch key set in `dir` (and its single-record set, when it has one, in single/). */
export async function saveTreeKeys(part: TreeClientPart, dir: string, keys: Keys, pass: PassphraseSource = passphraseSource()): Promise<void> {
  const passphrase = await pass.given();
  await saveKeys(dir, { modelId: part.model_id, part }, keys, passphrase);
  if (keys.singleRecord) await saveSingleKeys(dir, part, keys.singleRecord, passphrase);
}

/** Where the single-record form's key set lives, beside the batch set in `dir`. */
export const singleKeysDir = (dir: string) => join(dir, 'single');

/**
 * A tree model's client opened with the key set in `dir`; when there is none, a new one is made
 * and saved there, encrypted if `pass` gives a passphrase without asking (as loadOrCreateKeys).
 */
export async function openTreeClient(part: TreeClientPart, dir: string, pass: PassphraseSource): Promise<{ client: TreeClient; keys: Keys; created: boolean }> {
  const keys = await readKeys(dir, part.model_id, pass);
  if (keys) return { client: await TreeClient.open(part, keys.secretKey), keys, created: false };
  const client = await TreeClient.open(part);
  try {
    const keys = treeKeySet(client);
    await saveKeys(dir, { modelId: part.model_id, part }, keys, await pass.given());
    return { client, keys, created: true };
  } catch (e) {
    client.close();
    throw e;
  }
}

/**
 * `keys`: the client's evaluation keys (client.keys()), made once and reused across calls.
 * `encryptBatch`: encrypts a batch's thermometer bits elsewhere (the CLI's encryption pool, on
 * every core: TreeClient.encryptQueryWith); without it the query is encrypted on this thread.
 */
export async function predictTrees(
  client: TreeClient,
  keys: Uint8Array,
  rows: ArrayLike<number>[],
  t: S3Route,
  encryptBatch?: (rows: Uint8Array[]) => Promise<Uint8Array[]>,
): Promise<TreePredictions & { stats: TreePredictStats }> {
  if (rows.length === 0) throw new SealedError('bad-data', 'no records to predict', 'pass at least one record');
  const p = client.part;
  const batches = Math.ceil(rows.length / p.records_per_batch);
  // Records are checked here, before the keys' upload; each batch's ciphertexts go into the upload
  // as they are made.
  let q: { header: QueryHeader; count: number; sections: AsyncIterable<Uint8Array> };
  if (encryptBatch) q = client.encryptQuerySectionsWith(rows, encryptBatch);
  else {
    const here = client.encryptQuerySections(rows);
    q = { ...here, sections: toAsync(here.sections) };
  }
  return roundTrip(
    keys,
    rows.length,
    t,
    (loc) => putQueryStream(t, loc, q.header, q.count, q.sections),
    (bytes, querySha) => client.decryptResult(bytes, querySha),
    batches * p.outputs * ciphertextBytesBound(p.params, 2),
  );
}

/** One record through the model's single-record form (layout slots): a query of 29 MB, not a batch's hundreds. */
export async function predictTreeRecord(
  client: SingleTreeClient,
  keys: Uint8Array,
  record: ArrayLike<number>,
  t: S3Route,
): Promise<TreePredictions & { stats: TreePredictStats }> {
  const bound = ciphertextBytesBound(client.part.single!.params, 2);
  return roundTrip(
    keys,
    1,
    t,
    async (loc) => {
      const s = performance.now();
      const query = client.encryptRecord(record);
      const encryptMs = performance.now() - s;
      await t.store.put(loc, query, 'encrypted query');
      return { bytes: query.length, sha256: sha256(query), encryptMs };
    },
    (bytes, querySha) => client.decryptResult(bytes, querySha),
    bound,
  );
}

/**
 * The keys uploaded once, the query made and put (`putQuery`: its size, SHA-256 and, when it can be
 * told apart from the upload, the encryption's time), /invocations,
 * the result fetched and decrypted only if it answers this query.
 */
async function roundTrip(
  keys: Uint8Array,
  records: number,
  t: S3Route,
  putQuery: (loc: S3Location) => Promise<{ bytes: number; sha256: string; encryptMs?: number }>,
  decrypt: (bytes: Uint8Array, querySha: string) => TreePredictions,
  resultBound: number,
): Promise<TreePredictions & { stats: TreePredictStats }> {
  const t0 = performance.now();
  const publicKeys = { evaluationKeys: keys, evaluationKeysId: sha256(keys) };
  const { loc: keysLoc, uploaded } = await ensureKeysUploaded(t, publicKeys);
  const t1 = performance.now();
  const loc = requestLocations(t);
  const { bytes: queryBytes, sha256: querySha, encryptMs } = await putQuery(loc.query);
  const t3 = performance.now();
  // A batch query is streamed: its encryption and upload overlap, and both count as encrypt.
  const t2 = encryptMs === undefined ? t3 : t1 + encryptMs;
  const request = {
    encrypted_query_uri: formatS3Uri(loc.query),
    evaluation_keys_uri: formatS3Uri(keysLoc),
    output_uri: formatS3Uri(loc.result),
    query_sha256: querySha,
  };
  const { server, keysUploaded } = await invokeWithKeys(t, request, publicKeys);
  const t4 = performance.now();
  const { bytes } = await t.store.get(loc.result, resultBound + 65536, 'encrypted result');
  const t5 = performance.now();
  // Refused unless the result names this query's hash: a result written over ours is never decrypted.
  const out = decrypt(bytes, querySha);
  const t6 = performance.now();
  const ms = (v: number) => Math.round(v * 100) / 100;
  return {
    ...out,
    stats: {
      records,
      query_bytes: queryBytes,
      keys_bytes: keys.length,
      keys_uploaded: uploaded || keysUploaded,
      result_bytes: bytes.length,
      ms: {
        keys: ms(t1 - t0),
        encrypt: ms(t2 - t1),
        upload: ms(t3 - t2),
        invoke: ms(t4 - t3),
        download: ms(t5 - t4),
        decrypt: ms(t6 - t5),
        total: ms(t6 - t0),
      },
      server,
    },
  };
}
