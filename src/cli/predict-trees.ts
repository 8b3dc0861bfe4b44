// `sealed predict` for a tree-ensemble bundle (docs/trees.md): TreeClient encrypts the records
// (thermometer bits, a record per slot), predictTrees sends them through S3, the predictions are
// printed as for any model. A fresh secret key per run (the keys are not saved yet): the
// evaluation keys (~5 MB) are uploaded once per run, under their SHA-256.
import { writeFile } from 'node:fs/promises';
import { SealedError } from '../errors.ts';
import { openRoute } from '../client/open-route.ts';
import { predictTrees } from '../client/predict-trees.ts';
import type { TreeClientPart } from '../model/trees/compile.ts';
import { TreeClient } from '../model/trees/query.ts';
import { formatPredictions, readRecords } from './records.ts';

export interface TreePredictOpts {
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
  const client = await TreeClient.open(part);
  try {
    const open = await openRoute({ endpoint: o.endpoint, sagemaker, s3Endpoint: o.s3Endpoint, bucket: o.bucket, prefix: o.prefix });
    try {
      const t0 = performance.now();
      const r = await predictTrees(client, client.keys(), rows, open.route);
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
        layout: 'batch',
        transport: 's3',
        records: rows.length,
        requests: 1,
        query_bytes: r.stats.query_bytes,
        result_bytes: r.stats.result_bytes,
        keys_bytes: r.stats.keys_bytes,
        keys_uploaded: r.stats.keys_uploaded,
        ms_total,
        accuracy: correct === undefined ? undefined : correct / rows.length,
      };
      if (o.json) console.log(JSON.stringify(summary));
      else
        console.error(
          `${rows.length} records predicted encrypted by a tree ensemble in ${(ms_total / 1000).toFixed(2)} s (through S3, query ${r.stats.query_bytes} bytes, keys ${r.stats.keys_bytes} bytes${r.stats.keys_uploaded ? ' uploaded' : ' already uploaded'})${o.output ? ` -> ${o.output}` : ''}`,
        );
    } finally {
      await open.close();
    }
  } finally {
    client.close();
  }
}
