// The `sealed` command: one CLI for the three roles (model owner, server, client).
/* eslint-disable max-lines -- Over 300 lines on purpose: one declaration per command and option,
   the whole command surface in one place, so that `sealed --help`, the README and the code can be
   read against each other. */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { isSealedError, SealedError } from '../errors.ts';

// Commands load their modules when run: `serve` never loads TensorFlow, so the inference image
// can leave it out.
const lazy =
  <M, K extends keyof M>(load: () => Promise<M>, name: K) =>
  async (...args: unknown[]) =>
    ((await load())[name] as (...a: unknown[]) => Promise<void>)(...args);
const trainCommand = lazy(() => import('./train.ts'), 'trainCommand');
const compileCommand = lazy(() => import('./compile.ts'), 'compileCommand');
const serveCommand = lazy(() => import('./serve.ts'), 'serveCommand');
const s3Command = lazy(() => import('./serve.ts'), 's3Command');
const emulatorCommand = lazy(() => import('./serve.ts'), 'emulatorCommand');
const keygenCommand = lazy(() => import('./client.ts'), 'keygenCommand');
const predictCommand = lazy(() => import('./client.ts'), 'predictCommand');
const compileTreesAlias = lazy(() => import('./compile-trees.ts'), 'compileTreesAlias');
const demoCommand = lazy(() => import('./demo.ts'), 'demoCommand');
const demoWebCommand = lazy(() => import('./demo-web.ts'), 'demoWebCommand');
const keysListCommand = lazy(() => import('./client.ts'), 'keysListCommand');
const keysDeleteCommand = lazy(() => import('./client.ts'), 'keysDeleteCommand');

/** Exit codes: 0 ok, 1 failure, 2 bad usage or input, 3 server or storage unreachable. */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('sealed')
    .description('End-to-end encrypted ML inference (CKKS) on Amazon SageMaker and locally')
    .showHelpAfterError()
    .configureOutput({ outputError: (s, write) => write(s) });

  program
    .command('train')
    .description('model owner: train on plaintext data and write a model bundle (SageMaker training contract)')
    .option(
      '--train <dir>',
      'training data (channel "train"): CSV files (numeric features; a header row names the columns; the target may be numbers or class names) or an MNIST-style IDX pair (…images-idx3-ubyte[.gz] and …labels-idx1-ubyte[.gz])',
      '/opt/ml/input/data/train',
    )
    .option(
      '--test <dir>',
      'test data (channel "test"), the same kind as --train; CSV columns are matched by name; default: a "test" directory beside --train, if present',
    )
    .option('--hyperparameters <file>', 'SageMaker hyperparameters.json', '/opt/ml/input/config/hyperparameters.json')
    .option('--set <key=value...>', 'hyperparameters on the command line (override the file)')
    .option('--model <dir>', 'where to write the bundle', '/opt/ml/model')
    .option('--output <dir>', 'extra reports and the failure file', '/opt/ml/output')
    .action(trainCommand);

  program
    .command('compile')
    .description(
      'model owner: compile an ONNX model (PyTorch, Keras via tf2onnx, scikit-learn via skl2onnx) into the bundle `sealed train` writes, with a compile report (docs/bring-your-own-model.md); or, with --trees, a tree ensemble (XGBoost, scikit-learn forests via ONNX-ML) into a tree bundle (docs/trees.md)',
    )
    .option(
      '--onnx <file>',
      'the model: an .onnx file (opset 13 or later, weights inside the file); one holding a TreeEnsembleClassifier/Regressor is compiled as --trees',
    )
    .option('--trees <file>', 'the model, a tree ensemble: XGBoost model.json (Booster.save_model) or model.onnx (TreeEnsembleClassifier/Regressor)')
    .requiredOption(
      '--calibration <data>',
      'records the model sees in use (CSV, .npy, IDX images with their labels file beside them): activations are fitted on them and the report measures accuracy on them. Trees: a CSV with a header naming the features; the quantization bins are their quantiles',
    )
    .requiredOption('--model <dir>', 'where to write the bundle')
    .option('--target <column>', 'CSV: the label column, left out of the features (default: a column named label, target, y, class or diagnosis)')
    .addOption(
      new Option(
        '--bits <n>',
        'trees: quantization bits (default: the smallest from 3 to 8 that agrees with the model on 99.5% of the calibration records)',
      ).argParser(Number),
    )
    .addOption(
      new Option(
        '--input-scale <k>',
        'the client divides every feature by k before encryption (e.g. 255 when the model takes pixels in [0, 1] and the records hold 0..255)',
      ).argParser(Number),
    )
    .addOption(new Option('--limit <n>', 'calibration records used (default 1000)').argParser(Number))
    .option(
      '--no-refit',
      "keep the model's weights exactly: by default a linear layer after an approximated activation (ReLU, sigmoid, ...) is re-fitted on the calibration records to reproduce the original layer's outputs, then the whole approximated network is fine-tuned to the original model's outputs (the report shows the errors before and after)",
    )
    .addOption(
      new Option(
        '--verify <n>',
        'also encrypt n calibration records end to end (client encryption, server engine and flood, client decryption) and report their accuracy',
      ).argParser(Number),
    )
    .addOption(
      new Option(
        '--input-copies <n>',
        "send up to n ciphertexts per query: the input and copies of it rotated by the client, which take the first layer's rotations off the server (lower latency, a query up to n times larger)",
      ).argParser(Number),
    )
    .option(
      '--no-single-record',
      "trees: leave out the single-record form (one record then runs as a one-record batch): saves its keys (126-243 MB for the fixtures) and each server worker's memory for it (0.3-0.9 GB)",
    )
    .option('--report <file>', 'also write the compile report (JSON) here; it is always stored in the bundle as server/compile-report.json')
    .option('--json', 'print the report as one JSON line (progress goes to stderr)')
    .action(compileCommand);

  program
    .command('compile-trees')
    .description('deprecated: use `sealed compile --trees` (the same options; this one keeps every calibration column unless --target names one)')
    .requiredOption('--trees <file>', 'the trained model: XGBoost model.json (Booster.save_model) or model.onnx (TreeEnsembleClassifier/Regressor)')
    .requiredOption(
      '--calibration <csv>',
      'typical input records (e.g. the training data), a header naming the features: the quantization bins are their quantiles',
    )
    .requiredOption('--model <dir>', 'where to write the bundle')
    .option('--target <column>', 'a column of the calibration CSV to leave out (the label)')
    .addOption(
      new Option(
        '--bits <n>',
        'quantization bits (default: the smallest from 3 to 8 that agrees with the model on 99.5% of the calibration records)',
      ).argParser(Number),
    )
    .action(compileTreesAlias);

  program
    .command('serve')
    .description('server: serve /ping and /invocations for a model bundle (SageMaker hosting contract)')
    .option('--model <dir>', 'model bundle directory', '/opt/ml/model')
    .addOption(new Option('--port <n>', 'port').default(Number(process.env.SAGEMAKER_BIND_TO_PORT ?? 8080)).argParser(Number))
    .option('--host <addr>', 'address to bind', '0.0.0.0')
    .addOption(new Option('--workers <n>', 'evaluation worker threads (default: CPUs)').argParser(Number))
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (default: AWS if configured, else the embedded local S3)')
    .addOption(
      new Option('--max-in-flight <n>', 'requests admitted at once; more get 503 + Retry-After (default: 4 x workers; env SEALED_MAX_IN_FLIGHT)').argParser(
        Number,
      ),
    )
    .addOption(
      new Option(
        '--max-batch-in-flight <n>',
        'batch-mode requests evaluated at once (each holds two batches in memory); more get 503 (default: 2; env SEALED_MAX_BATCH_IN_FLIGHT)',
      ).argParser(Number),
    )
    .addOption(
      new Option(
        '--deadline-ms <n>',
        'per-request deadline (default 55000, under SageMaker real-time 60 s; env SEALED_DEADLINE_MS; raise it for large batch jobs on async endpoints)',
      ).argParser(Number),
    )
    .option(
      '--allow-read <uris>',
      'comma-separated s3://bucket/prefix/ the server may read: queries and keys (env SEALED_ALLOW_READ); whole path segments. Required, with --allow-write, unless --tenant-prefix or --allow-any',
    )
    .option('--allow-write <uris>', 'comma-separated s3://bucket/prefix/ the server may write: results (env SEALED_ALLOW_WRITE)')
    .option(
      '--tenant-prefix <uri>',
      's3://bucket/prefix/ whose next segment names a tenant: query, keys and output of a request must share one tenant (env SEALED_TENANT_ROOT); alone, also the allow-lists',
    )
    .option('--allow-any', 'let callers name any S3 location (env SEALED_ALLOW_ANY=1): one trusted user only (tests, demo, local stack)')
    .addOption(
      new Option(
        '--memory-budget-mb <n>',
        "memory the server may use in all (env SEALED_MEMORY_BUDGET_MB; default: the container's memory (cgroup limit, else total) less max(25%, 1 GiB), i.e. 6 GiB of an 8 GiB instance). " +
          'Split: 256 MiB main thread; per worker 192 MiB + a key cache of budget/24 (at most 256 MiB); key cache budget/12 (at most 512 MiB); the rest for requests, each admitted by the bytes it will hold (503 + Retry-After when they are in use). The split is logged at start-up',
      ).argParser(Number),
    )
    .option(
      '--max-payload-mb <n>',
      'largest encrypted query taken as a request body (Content-Type: application/octet-stream), in MB (env SEALED_MAX_PAYLOAD_MB; default 6, SageMaker real-time; Batch Transform sends up to 100); refused at start when 4x this does not fit the request memory',
      Number,
    )
    .action(serveCommand);

  program
    .command('keygen')
    .description(
      'client: make a key set for a model (the secret key stays on this machine, mode 0600; encrypted with a passphrase when one is given or --encrypt)',
    )
    .requiredOption('--model <source>', 'model: bundle or client part directory, or model.tar.gz (local or s3://)')
    .option('--keys <dir>', 'where to store the keys (default: ~/.sealed/keys/<model id>)')
    .option('--force', 'replace an existing key set')
    .option('--encrypt', 'encrypt the secret key with a passphrase (scrypt + AES-256-GCM); asked twice on the terminal unless given as below')
    .addOption(
      new Option(
        '--passphrase-fd <n>',
        'read the passphrase from this open file descriptor (to end or first newline), e.g. 3 with `3<file`; implies encryption',
      )
        .argParser(Number)
        .conflicts('passphraseFile'),
    )
    .option('--passphrase-file <path>', 'read the passphrase from this file (first line); implies encryption')
    .addHelpText(
      'after',
      '\nPassphrase: --passphrase-fd or --passphrase-file, else SEALED_PASSPHRASE (visible to processes of the same user; prefer the others), else with --encrypt asked on the terminal without echo. Without any, the secret key is stored in the clear: protect it with full-disk encryption. `sealed predict` takes the same options and asks on a terminal when the key is encrypted.',
    )
    .action(keygenCommand);

  const keys = program.command('keys').description('client: manage local key sets (~/.sealed/keys, or $SEALED_HOME/keys)');
  keys.command('list').description('list key sets').option('--json', 'as JSON').action(keysListCommand);
  keys
    .command('delete <model-id>')
    .description('delete the key set of a model (unlinks its files; not a secure erase, see the README)')
    .action(keysDeleteCommand);

  program
    .command('predict')
    .description('client: encrypt records, have the server evaluate them, decrypt the predictions')
    .requiredOption('--model <source>', 'model: bundle or client part directory, or model.tar.gz (local or s3://)')
    .requiredOption('--input <file>', 'records: CSV with a header naming the features, JSON lines (.jsonl), NPY (.npy) or IDX images (…-idx3-ubyte[.gz])')
    .option('--output <file>', 'write predictions here (default: stdout)')
    .addOption(new Option('--format <fmt>', 'output format').choices(['csv', 'json']).default('csv'))
    .option('--endpoint <url>', 'inference server, direct HTTP', 'http://127.0.0.1:8080')
    .option('--sagemaker-endpoint <name>', 'invoke this SageMaker endpoint (InvokeEndpoint) instead of --endpoint')
    .option('--async', 'with --sagemaker-endpoint: InvokeEndpointAsync, polling the output with back-off')
    .option('--sagemaker-url <url>', 'SageMaker Runtime URL override, e.g. the local emulator (env SEALED_SAGEMAKER_URL)')
    .addOption(new Option('--async-timeout <seconds>', 'give up on an async invocation after this long').default(900).argParser(Number))
    .option(
      '--notification-queue <url>',
      "with --async: an SQS queue subscribed to the endpoint's SNS success and error topics, long-polled for this request's notification instead of polling S3",
    )
    .option('--keys <dir>', 'key set directory (made if missing)')
    .addOption(
      new Option(
        '--passphrase-fd <n>',
        'passphrase of an encrypted secret key from this open file descriptor (to end or first newline); default: SEALED_PASSPHRASE, else asked on a terminal',
      )
        .argParser(Number)
        .conflicts('passphraseFile'),
    )
    .option('--passphrase-file <path>', 'passphrase of an encrypted secret key from this file (first line)')
    .option('--bucket <name>', 'S3 bucket for queries, keys and results (default: the local bucket)')
    .option('--prefix <p>', 'S3 key prefix', 'sealed/')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (default: AWS if configured, else the embedded local S3)')
    .addOption(
      new Option(
        '--layout <layout>',
        "single: records packed per ciphertext (evaluation keys); batch: record per slot, feature per ciphertext (no keys); auto: the cheaper for this many records (the model's measured crossover)",
      )
        .choices(['auto', 'single', 'batch'])
        .default('auto'),
    )
    .addOption(
      new Option(
        '--transport <how>',
        'body: the query as the request body, the result as the answer (up to --body-limit; keys still in S3); s3: query and result as S3 objects (any size, async endpoints); auto: body when it fits, else s3',
      )
        .choices(['auto', 'body', 's3'])
        .default('auto'),
    )
    .addOption(new Option('--body-limit <bytes>', "largest query sent as a request body (default 6291456: SageMaker real-time's 6 MB)").argParser(Number))
    .option('--json', 'print a JSON summary (for machines) instead of text')
    .option(
      '--transform <s3-prefix>',
      'score the input with a SageMaker Batch Transform job: batch-mode parts under s3://bucket/prefix/transform-in/<job>/, results from transform-out/<job>/ (resumable: rerun the same command)',
    )
    .option('--model-name <name>', '--transform: the SageMaker model to start the job with (made by npm run deploy); without it an existing job is followed')
    .option('--job-name <name>', '--transform: the job name (default: derived from the model and the input, so a rerun follows the same job)')
    .addOption(new Option('--instance-count <n>', '--transform: instances of the job').default(1).argParser(Number))
    .option('--instance-type <type>', '--transform: instance type (default ml.c6i.xlarge)')
    .addOption(new Option('--max-payload-mb <n>', "--transform: the job's MaxPayloadInMB (1-100, default 100); body parts are cut to fit it").argParser(Number))
    .option('--sagemaker-api-url <url>', '--transform: SageMaker API URL override, e.g. the local emulator (env SEALED_SAGEMAKER_API_URL)')
    .option('--region <region>', '--transform: AWS region (default AWS_REGION)')
    .option('--state <dir>', '--transform: where decrypted parts are kept for a rerun (default ~/.sealed/transform/<job>, mode 0700)')
    .action(predictCommand);

  program
    .command('demo')
    .description('train, serve and predict encrypted on the breast-cancer data, all locally (--web: in a browser page)')
    .addOption(new Option('--workers <n>', 'evaluation worker threads').argParser(Number))
    .option('--web', 'serve the web demo: keys, encryption and decryption happen in the browser')
    .addOption(new Option('--port <n>', 'with --web: port of the page').default(8000).argParser(Number))
    .option('--host <addr>', 'with --web: address of the page', '127.0.0.1')
    .option('--trees', 'with --web: a random forest instead of the logistic regression (the page makes ~126 MB of keys for it)')
    .action((o: { web?: boolean; trees?: boolean; workers?: number; port: number; host: string }) => {
      if (o.trees && !o.web) throw new SealedError('bad-request', '--trees is an option of the web demo', 'run `sealed demo --web --trees`');
      return o.web ? demoWebCommand(o) : demoCommand(o);
    });

  program
    .command('s3')
    .description('run the embedded local S3-compatible server in the foreground (path-style; any access key id and secret work)')
    .addOption(
      new Option(
        '--port <n>',
        'port (serve, predict and the SDK look for it on 4568 only; on another port give them --s3-endpoint http://127.0.0.1:PORT or SEALED_S3_ENDPOINT)',
      )
        .default(4568)
        .argParser(Number),
    )
    .option('--dir <dir>', 'where objects are stored (default: ~/.sealed/s3)')
    // The bucket is LOCAL_BUCKET of src/storage/resolve.ts, spelled out: main.ts loads a command's modules only when it runs.
    .addHelpText(
      'after',
      '\nDefault bucket: sealed-local, the one `sealed predict` and the SDK use without --bucket\n(they create it on first use). Credentials: any access key id and secret, e.g.\nAWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local.',
    )
    .action(async (o: { port: number; dir?: string }) => {
      await s3Command(o);
      const { LOCAL_BUCKET } = await import('../storage/resolve.ts');
      console.log(`  default bucket: ${LOCAL_BUCKET} (used by \`sealed predict\` and the SDK without --bucket; they create it on first use)`);
    });

  program
    .command('sagemaker-emulator')
    .description('local SageMaker: Runtime (InvokeEndpoint, InvokeEndpointAsync) in front of a running server, and Batch Transform jobs over one or more')
    .option('--container <url>', 'the inference server', 'http://127.0.0.1:8080')
    .option('--output-path <uri>', 'async output path (S3OutputPath)', 's3://sealed-local/async/out')
    .option('--failure-path <uri>', 'async failure path (S3FailurePath)', 's3://sealed-local/async/failed')
    .addOption(new Option('--port <n>', 'port').default(8081).argParser(Number))
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (default: AWS if configured, else the embedded local S3)')
    .option('--instances <urls>', 'Batch Transform: comma-separated inference servers standing in for the instances (default: --container)')
    .addOption(
      new Option('--api-port <n>', 'port of the SageMaker API (CreateTransformJob, DescribeTransformJob, StopTransformJob)').default(8082).argParser(Number),
    )
    .action(emulatorCommand);

  await program.parseAsync(argv);
}

export function fail(e: unknown): never {
  if (isSealedError(e)) {
    const se = e as SealedError;
    console.error(`error: ${se.message}`);
    if (se.hint) console.error(`  what to do: ${se.hint}`);
    process.exit(se.code === 'storage' ? 3 : se.status < 500 ? 2 : 1);
  }
  console.error(`error: ${(e as Error)?.message ?? String(e)}`);
  process.exit(1);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv).catch(fail);
}
