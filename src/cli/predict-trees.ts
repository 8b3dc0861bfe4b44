// `sealed predict` for a tree-ensemble bundle (docs/trees.md): TreeClient encrypts the records
// (thermometer bits, a record per slot), predictTrees sends them through S3, the predictions are
// printed as for any model. The key set lives where the other models' do (~/.sealed/keys/<model
// id>, or --keys; made on first use or by `sealed keygen`, a passphrase honoured as there), so
// the evaluation keys (~5 MB) are uploaded once, under their SHA-256, not on every run. One record
// goes through the model's single-record form when it has one (its own key set, in single/).
import { writeFile } from 'node:fs/promises';
import { SealedError } from '../errors.ts';
import { defaultKeysDir, hasKeys, saveKeys } from '../client/key-files.ts';
import { openRoute } from '../client/open-route.ts';
import { SCRYPT_V2 } from '../client/passphrase.ts';
import { cliPassphrase, type PassphraseOpts } from './passphrase-options.ts';
import { EncryptPool } from '../client/encrypt-pool.ts';
import { openSingleTreeClient, openTreeClient, predictTreeRecord, predictTrees, saveSingleKeys, singleKeysDir, treeKeySet } from '../client/predict-trees.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { TreeClient } from '../model/trees/query.ts';
import { SingleTreeClient } from '../model/trees/single-query.ts';
import { formatPredictions, readRecords } from './records.ts';

/**
 * `sealed keygen` for a tree bundle: the same files and messages as for the other models. A
 * bundle with a single-record form gets that form's key set too (its own parameters, in single/),
 * so the first one-record `sealed predict` need not make it.
 */
export async function keygenTreesCommand(part: TreeClientPart, o: { keys?: string; force?: boolean; encrypt?: boolean } & PassphraseOpts): Promise<void> {
  const dir = o.keys ?? defaultKeysDir(part.model_id);
  const batchKept = !o.force && (await hasKeys(dir, part.model_id));
  const singleKept = !part.single || (!o.force && (await hasKeys(singleKeysDir(dir), part.model_id)));
  if (batchKept && singleKept) {
    console.log(`a key set for model ${part.model_id} already exists in ${dir} (use --force to replace it)`);
    return;
  }
  const pass = cliPassphrase(o);
  const passphrase = (await pass.given()) ?? (o.encrypt ? await pass.choose() : undefined);
  const at = passphrase
    ? `encrypted with the passphrase (scrypt N=2^${SCRYPT_V2.log2N} + AES-256-GCM)`
    : 'not encrypted (--encrypt or full-disk encryption protects it at rest)';
  const t0 = performance.now();
  if (!batchKept) {
    const client = await TreeClient.open(part);
    try {
      const keys = treeKeySet(client);
      const info = await saveKeys(dir, { modelId: part.model_id, part }, keys, passphrase);
      console.log(`keys for tree model ${part.model_id} in ${dir} (${((performance.now() - t0) / 1000).toFixed(2)} s)`);
      console.log(`  secret.key       ${keys.secretKey.length} bytes, mode 0600: never leaves this machine; ${at}`);
      console.log(`  evaluation.keys  ${info.evaluation_keys_bytes} bytes: uploaded once, used by the server`);
    } finally {
      client.close();
    }
  }
  if (!singleKept) {
    const t1 = performance.now();
    const client = await SingleTreeClient.open(part);
    try {
      const keys = treeKeySet(client);
      const info = await saveSingleKeys(dir, part, keys, passphrase);
      console.log(`keys for one record (the single-record form) in ${singleKeysDir(dir)} (${((performance.now() - t1) / 1000).toFixed(2)} s)`);
      console.log(`  single/secret.key       ${keys.secretKey.length} bytes, mode 0600: never leaves this machine; ${at}`);
      console.log(`  single/evaluation.keys  ${info.evaluation_keys_bytes} bytes: uploaded once, used for one-record queries`);
    } finally {
      client.close();
    }
  }
}

export interface TreePredictOpts extends PassphraseOpts {
  keys?: string;
  input: string;
  output?: string;
  format: 'csv' | 'json';
  endpoint: string;
  bucket?: string;
  prefix: string;
  s3Endpoint?: string;
  sagemakerEndpoint?: string;
  sagemakerUrl?: string;
  async?: boolean;
  asyncTimeout: number;
  transport: string;
  json?: boolean;
}

export async function predictTreesCommand(part: TreeClientPart, o: TreePredictOpts): Promise<void> {
  if (o.transport === 'body')
    throw new SealedError(
      'bad-request',
      'tree-ensemble queries go through S3 (a batch of them is hundreds of MB, over any request body limit)',
      'use --transport s3 or auto',
    );
  const { rows, labels } = await readRecords(o.input, part);
  const sagemaker = o.sagemakerEndpoint
    ? { endpointName: o.sagemakerEndpoint, url: o.sagemakerUrl, async: o.async, timeoutMs: o.asyncTimeout * 1000 }
    : undefined;
  // One record goes through the single-record form when the model has one (docs/trees.md).
  const one = rows.length === 1 && part.single !== undefined;
  const dir = o.keys ?? defaultKeysDir(part.model_id);
  const { client, keys, created } = one ? await openSingleTreeClient(part, dir, cliPassphrase(o)) : await openTreeClient(part, dir, cliPassphrase(o));
  try {
    const open = await openRoute({ endpoint: o.endpoint, sagemaker, s3Endpoint: o.s3Endpoint, bucket: o.bucket, prefix: o.prefix });
    // A batch is hundreds of ciphertexts, each encrypted on its own: on every core.
    const pool = new EncryptPool();
    const opts = { params: part.params, secretKey: keys.secretKey, scaleBits: part.input_scale_bits, slots: part.records_per_batch, form: 'compact' as const };
    const encryptBatch = (bits: Uint8Array[]) => pool.encryptAll(bits, part.inputs, opts);
    try {
      const t0 = performance.now();
      const r =
        client instanceof SingleTreeClient
          ? await predictTreeRecord(client, keys.evaluationKeys, rows[0], open.route)
          : await predictTrees(client, keys.evaluationKeys, rows, open.route, encryptBatch);
      const name = (c: number) => (part.task === 'regression' ? c : (part.labels?.[c] ?? c));
      const predictions = r.predictions.map((c, i) => ({ label: name(c), scores: r.scores[i], probabilities: r.probabilities?.[i] }));
      const text = formatPredictions(predictions, o.format);
      if (o.output) await writeFile(o.output, text);
      else if (!o.json) process.stdout.write(text);
      const correct =
        labels && part.task !== 'regression'
          ? predictions.filter((p, i) => String(p.label) === String(typeof labels[i] === 'number' ? (part.labels?.[labels[i]] ?? labels[i]) : labels[i])).length
          : undefined;
      const ms_total = Math.round(performance.now() - t0);
      const summary = {
        model_id: part.model_id,
        model: 'trees',
        keys_created: created,
        layout: one ? 'slots' : 'batch',
        transport: 's3',
        records: rows.length,
        requests: 1,
        query_bytes: r.stats.query_bytes,
        result_bytes: r.stats.result_bytes,
        keys_bytes: r.stats.keys_bytes,
        keys_uploaded: r.stats.keys_uploaded,
        // What the server said: its evaluation time, and how many threads shared the query.
        server_evaluate_ms: (r.stats.server as { timings_ms?: { evaluate?: number } } | undefined)?.timings_ms?.evaluate,
        server_threads: (r.stats.server as { threads?: number } | undefined)?.threads,
        ms_total,
        accuracy: correct === undefined ? undefined : correct / rows.length,
      };
      if (o.json) console.log(JSON.stringify(summary));
      else
        console.error(
          `${rows.length} records predicted encrypted by a tree ensemble in ${(ms_total / 1000).toFixed(2)} s (through S3, query ${r.stats.query_bytes} bytes, keys ${r.stats.keys_bytes} bytes${r.stats.keys_uploaded ? ' uploaded' : ' already uploaded'})${o.output ? ` -> ${o.output}` : ''}`,
        );
    } finally {
      await pool.close();
      await open.close();
    }
  } finally {
    client.close();
  }
}
