import { writeFile } from 'node:fs/promises';
import { Presets, SingleBar } from 'cli-progress';
import { SealedError } from '../errors.ts';
import { defaultKeysDir, deleteKeySet, hasKeys, listKeySets, loadOrCreateKeys, saveKeys } from '../client/key-files.ts';
import { SCRYPT_V2 } from '../client/passphrase.ts';
import { cliPassphrase, type PassphraseOpts } from './passphrase-options.ts';
import { predictBatches } from '../client/predict.ts';
import { ClientSession } from '../client/session.ts';
import { loadAnyClientPart, type AnyClientPart } from '../client/model-source.ts';
import { openRoute } from '../client/open-route.ts';
import type { TransportMode } from '../client/transport.ts';
import { resolveS3 } from '../storage/resolve.ts';
import { ObjectStore, parseS3Uri } from '../storage/s3.ts';
import type { Prediction } from '../model/postprocess.ts';
import { formatPredictions, readRecords } from './records.ts';

/** The model's client part (bundle directory, model.tar.gz or s3:// archive), network or tree ensemble. */
async function loadModel(model: string, s3Endpoint?: string): Promise<AnyClientPart> {
  const endpoint = model.startsWith('s3://') ? (await resolveS3({ endpoint: s3Endpoint })).endpoint : undefined;
  return loadAnyClientPart(model, { endpoint });
}

export async function keysListCommand(o: { json?: boolean }): Promise<void> {
  const sets = await listKeySets();
  if (o.json) return console.log(JSON.stringify(sets));
  if (!sets.length) return console.log('no key sets (make one with `sealed keygen --model DIR`)');
  for (const k of sets) console.log(`${k.model_id}  ${k.params}  evaluation keys ${k.evaluation_keys_bytes} bytes  created ${k.created}  ${k.dir}`);
}

export async function keysDeleteCommand(modelId: string): Promise<void> {
  const set = (await listKeySets()).find((k) => k.model_id === modelId || k.dir.endsWith(modelId));
  if (!set) throw new SealedError('bad-request', `no key set for model ${modelId.replace(/[^0-9a-f]/g, '?').slice(0, 32)}`, 'see `sealed keys list`');
  await deleteKeySet(set.dir);
  console.log(`deleted the key set of model ${set.model_id} (${set.dir})`);
}

export async function keygenCommand(o: { model: string; keys?: string; force?: boolean; encrypt?: boolean } & PassphraseOpts): Promise<void> {
  // A tree-ensemble bundle keeps its key set in the same files (predict-trees.ts).
  const m = await loadModel(o.model);
  if (m.kind === 'trees') return (await import('./predict-trees.ts')).keygenTreesCommand(m.part, o);
  const session = await ClientSession.open(m.modelId, m.client);
  try {
    const dir = o.keys ?? defaultKeysDir(session.modelId);
    // Checked without opening the secret key, so an encrypted key set does not ask for its passphrase here.
    if (!o.force && (await hasKeys(dir, session.modelId))) {
      console.log(`a key set for model ${session.modelId} already exists in ${dir} (use --force to replace it)`);
      return;
    }
    // A passphrase given by flag or environment means encrypt; --encrypt alone asks for one.
    const pass = cliPassphrase(o);
    const passphrase = (await pass.given()) ?? (o.encrypt ? await pass.choose() : undefined);
    const t0 = performance.now();
    const keys = session.generateKeys();
    const info = await saveKeys(dir, session, keys, passphrase);
    console.log(`keys for model ${session.modelId} in ${dir} (${((performance.now() - t0) / 1000).toFixed(2)} s)`);
    const at = passphrase
      ? `encrypted with the passphrase (scrypt N=2^${SCRYPT_V2.log2N} + AES-256-GCM)`
      : 'not encrypted (--encrypt or full-disk encryption protects it at rest)';
    console.log(`  secret.key       ${keys.secretKey.length} bytes, mode 0600: never leaves this machine; ${at}`);
    console.log(`  evaluation.keys  ${info.evaluation_keys_bytes} bytes: uploaded once, used by the server`);
    if (keys.batchSecretKey)
      console.log(
        `  batch-secret.key ${keys.batchSecretKey.length} bytes, mode 0600${passphrase ? ', encrypted' : ''}: batch mode's secret key (batch mode needs no evaluation keys)`,
      );
  } finally {
    session.close();
  }
}

interface PredictOpts extends PassphraseOpts {
  layout: 'auto' | 'single' | 'batch';
  sagemakerEndpoint?: string;
  async?: boolean;
  sagemakerUrl?: string;
  asyncTimeout: number;
  notificationQueue?: string;
  model: string;
  input: string;
  output?: string;
  format: 'csv' | 'json';
  endpoint: string;
  keys?: string;
  bucket?: string;
  prefix: string;
  s3Endpoint?: string;
  transport: TransportMode;
  bodyLimit?: number;
  json?: boolean;
  /** Batch Transform (predict-transform.ts): s3://bucket/prefix/ and the job's settings. */
  transform?: string;
  modelName?: string;
  jobName?: string;
  instanceCount?: number;
  instanceType?: string;
  maxPayloadMb?: number;
  sagemakerApiUrl?: string;
  region?: string;
  state?: string;
}

export async function predictCommand(o: PredictOpts): Promise<void> {
  if (o.bodyLimit !== undefined && !(Number.isSafeInteger(o.bodyLimit) && o.bodyLimit > 0))
    throw new SealedError(
      'bad-request',
      '--body-limit must be a whole number of bytes above 0',
      "e.g. --body-limit 6291456 (6 MB, SageMaker real-time's limit)",
    );
  if (o.notificationQueue && !o.async)
    throw new SealedError('bad-request', '--notification-queue needs --async', 'notifications come from async endpoints: add --async, or drop the queue');
  if (o.async && !o.sagemakerEndpoint)
    throw new SealedError('bad-request', '--async needs --sagemaker-endpoint', 'name the SageMaker endpoint, or drop --async for direct HTTP');
  // A tree ensemble (its manifest lists server/trees.json) has its own client.
  const m = await loadModel(o.model, o.s3Endpoint);
  if (m.kind === 'trees') return (await import('./predict-trees.ts')).predictTreesCommand(m.part, o);
  const session = await ClientSession.open(m.modelId, m.client);
  const { rows, labels } = await readRecords(o.input, session.part);
  const { keys, created } = await loadOrCreateKeys(o.keys ?? defaultKeysDir(session.modelId), session, cliPassphrase(o));
  if (o.transform) {
    const s3 = await resolveS3({ endpoint: o.s3Endpoint });
    const store = new ObjectStore({ endpoint: s3.endpoint });
    try {
      if (s3.mode !== 'aws') await store.ensureBucket(parseS3Uri(o.transform, '--transform').bucket);
      const t0 = performance.now();
      const { predictions, summary } = await (await import('./predict-transform.ts')).predictTransform(session, rows, store, { ...o, transform: o.transform });
      const ms_total = Math.round(performance.now() - t0);
      return await report(
        session,
        { ...summary, layout: 'batch', records: rows.length, ms_total },
        predictions,
        labels,
        o,
        () =>
          `Batch Transform job ${summary.transform_job}: ${summary.parts} parts (${summary.transport}), ${summary.parts_decrypted} decrypted now, ${summary.parts_from_state} from ${summary.state}`,
        created,
      );
    } finally {
      store.close();
      await s3.local?.close();
      session.close();
    }
  }
  const sagemaker = o.sagemakerEndpoint
    ? { endpointName: o.sagemakerEndpoint, url: o.sagemakerUrl, async: o.async, timeoutMs: o.asyncTimeout * 1000, notificationQueue: o.notificationQueue }
    : undefined;
  const open = await openRoute({ endpoint: o.endpoint, sagemaker, s3Endpoint: o.s3Endpoint, bucket: o.bucket, prefix: o.prefix }).catch((e: unknown) => {
    session.close();
    throw e;
  });
  try {
    const t0 = performance.now();
    // A progress bar on stderr for long batches, only for a person at a terminal.
    const bar =
      process.stdout.isTTY && !o.json && rows.length > session.part.input.recordsPerCiphertext * 16
        ? new SingleBar({ format: 'encrypted predictions [{bar}] {value}/{total} records | {eta}s left', stream: process.stderr }, Presets.shades_classic)
        : undefined;
    bar?.start(rows.length, 0);
    const layout = o.layout === 'auto' ? session.layoutFor(rows.length) : o.layout;
    if (layout === 'batch' && !session.part.batch) throw new SealedError('bad-request', 'this model has no batch mode', 'use --layout single (or auto)');
    // Batch mode makes hundreds of ciphertexts per batch: encrypt them on every core.
    const encryptPool = layout === 'batch' ? new (await import('../client/encrypt-pool.ts')).EncryptPool() : undefined;
    const r = await predictBatches(session, keys, rows, open.route, {
      onProgress: (done) => bar?.update(done),
      layout,
      encryptPool,
      transport: o.transport,
      bodyLimit: o.bodyLimit,
    }).finally(() => encryptPool?.close());
    bar?.stop();
    const sum = (k: 'query_bytes' | 'result_bytes' | 'keys_bytes') => r.stats.reduce((a, s) => a + s[k], 0);
    const via = [...new Set(r.stats.map((x) => x.transport))].join('+');
    const stats = {
      layout,
      transport: via,
      records: rows.length,
      requests: r.stats.length,
      query_bytes: sum('query_bytes'),
      result_bytes: sum('result_bytes'),
      keys_bytes: layout === 'batch' ? 0 : keys.evaluationKeys.length,
      keys_uploaded: r.stats.some((s) => s.keys_uploaded),
      ms_total: Math.round(performance.now() - t0),
    };
    await report(
      session,
      stats,
      r.predictions,
      labels,
      o,
      () => {
        const how = via === 'body' ? 'as request bodies' : via === 's3' ? 'through S3' : `(${via})`;
        const keyText = layout === 'batch' ? 'no evaluation keys' : `keys ${stats.keys_bytes} bytes${stats.keys_uploaded ? ' uploaded' : ' already uploaded'}`;
        return `${layout} layout, ${stats.requests} requests ${how}, queries ${stats.query_bytes} bytes, ${keyText}`;
      },
      created,
    );
  } finally {
    await open.close();
    session.close();
  }
}

/** Writes the predictions (--output or stdout) and the run's summary (stderr, or one JSON line). */
async function report(
  session: ClientSession,
  stats: { records: number; ms_total: number } & Record<string, unknown>,
  predictions: Prediction[],
  labels: (number | string)[] | undefined,
  o: Pick<PredictOpts, 'output' | 'format' | 'json'>,
  how: () => string,
  created: boolean,
): Promise<void> {
  const text = formatPredictions(predictions, o.format);
  if (o.output) await writeFile(o.output, text);
  else if (!o.json) process.stdout.write(text);
  // True labels are class numbers (named by the model's labels) or, in a CSV, the class names.
  const truth = (l: number | string) => String(typeof l === 'number' ? (session.part.labels?.[l] ?? l) : l);
  const correct = labels ? predictions.filter((p, i) => String(p.label) === truth(labels[i])).length : undefined;
  const summary = { model_id: session.modelId, keys_created: created, ...stats, accuracy: correct === undefined ? undefined : correct / stats.records };
  if (o.json) console.log(JSON.stringify(summary));
  else console.error(`${stats.records} records predicted encrypted in ${(stats.ms_total / 1000).toFixed(2)} s (${how()})${o.output ? ` -> ${o.output}` : ''}`);
}
