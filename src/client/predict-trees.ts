// Node: `sealed predict` for a tree ensemble (docs/trees.md) through S3: the keys uploaded under
// their SHA-256 (ensureKeysUploaded), the query put whole, /invocations named the objects and the
// query's hash, the result fetched and decrypted only if it answers this query.
import { SealedError } from '../errors.ts';
import { ciphertextBytesBound } from '../fhe/params.ts';
import type { TreeClient, TreePredictions } from '../model/trees/query.ts';
import { formatS3Uri } from '../storage/s3.ts';
import { invokeWithKeys } from './invoke.ts';
import { ensureKeysUploaded } from './keys-upload.ts';
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

/** `keys`: the client's evaluation keys (client.keys()), made once and reused across calls. */
export async function predictTrees(
  client: TreeClient,
  keys: Uint8Array,
  rows: ArrayLike<number>[],
  t: S3Route,
): Promise<TreePredictions & { stats: TreePredictStats }> {
  if (rows.length === 0) throw new SealedError('bad-data', 'no records to predict', 'pass at least one record');
  const p = client.part;
  const t0 = performance.now();
  const publicKeys = { evaluationKeys: keys, evaluationKeysId: sha256(keys) };
  const { loc: keysLoc, uploaded } = await ensureKeysUploaded(t, publicKeys);
  const t1 = performance.now();
  const query = client.encryptQuery(rows);
  const querySha = sha256(query);
  const t2 = performance.now();
  const loc = requestLocations(t);
  await t.store.put(loc.query, query, 'encrypted query');
  const t3 = performance.now();
  const request = {
    encrypted_query_uri: formatS3Uri(loc.query),
    evaluation_keys_uri: formatS3Uri(keysLoc),
    output_uri: formatS3Uri(loc.result),
    query_sha256: querySha,
  };
  const { server, keysUploaded } = await invokeWithKeys(t, request, publicKeys);
  const t4 = performance.now();
  const batches = Math.ceil(rows.length / p.records_per_batch);
  const { bytes } = await t.store.get(loc.result, batches * p.outputs * ciphertextBytesBound(p.params, 2) + 65536, 'encrypted result');
  const t5 = performance.now();
  // Refused unless the result names this query's hash: a result written over ours is never decrypted.
  const out = client.decryptResult(bytes, query);
  const t6 = performance.now();
  const ms = (v: number) => Math.round(v * 100) / 100;
  return {
    ...out,
    stats: {
      records: rows.length,
      query_bytes: query.length,
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
