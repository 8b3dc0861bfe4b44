// The SDK step by step: keys kept on disk (as `sealed keygen` does), records given by feature
// name, encryption, evaluation and decryption as separate calls, sizes and times.
//
//   npx sealed serve --model out/model --allow-any &
//   node examples/step-by-step.ts [model dir] [server URL] [records CSV]
import { readFile } from 'node:fs/promises';
import { createClient, s3Transport } from '../src/client/index.ts';

const [model = 'out/model', endpoint = 'http://127.0.0.1:8080', csv = 'data/breast_cancer/breast_cancer.csv'] = process.argv.slice(2);

// Five records as objects keyed by feature name (the CSV's header); extra columns are ignored.
const [header, ...lines] = (await readFile(csv, 'utf8')).trim().split('\n');
const names = header.split(',');
const records = lines.slice(0, 5).map((l) => Object.fromEntries(l.split(',').map((v, j) => [names[j], Number(v)])));

// Queries, keys and results go through S3 to the server's /invocations (the SageMaker path).
const transport = s3Transport({ endpoint });
// keysDir: true -> ~/.sealed/keys/<model id>: made once (secret key mode 0600), reused later.
const client = await createClient({ model, transport, keysDir: true });
console.log(`model ${client.modelId}: ${client.features.length} features, classes ${client.labels?.join(' / ')}`);

const keys = client.keys!; // the secret key stays here; only keys.evaluationKeys is uploaded
const query = client.encrypt(records); // wire format: nothing in it is readable without the secret key
const evaluation = await transport.evaluate(query, { id: keys.evaluationKeysId, bytes: keys.evaluationKeys });
const predictions = client.decrypt(evaluation.result);

predictions.forEach((p, i) =>
  console.log(
    `record ${i + 1}: ${p.label} (${(Math.max(...p.probabilities!) * 100).toFixed(1)}%), recorded diagnosis ${records[i].diagnosis === 0 ? 'malignant' : 'benign'}`,
  ),
);
console.log(
  `query ${query.length} B, result ${evaluation.result.length} B, evaluation keys ${keys.evaluationKeys.length} B (${evaluation.keysUploaded ? 'uploaded now' : 'already uploaded'}); transport ms ${JSON.stringify(evaluation.ms)}`,
);

// The same in one call, with the time of each stage:
const { stats } = await client.predictWithStats(records);
console.log(`predictWithStats ms: ${JSON.stringify(stats.ms)}`);

await client.close();
await transport.close?.();
