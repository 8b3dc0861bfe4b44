// npm run deploy -- <train|deploy|transform|delete|policies> [options]: the model owner's way to SageMaker.
// --dry-run prints each request as one JSON line ({service, command, input}) instead of sending it.
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { fail } from '../src/cli/main.ts';
import { SealedError } from '../src/errors.ts';
import {
  awsClients,
  containerEnvironment,
  createModel,
  DEFAULTS,
  deleteAll,
  deployEndpoint,
  dryRunClients,
  launchTrainingJob,
  timestamp,
  waitForTrainingJob,
  type Clients,
} from '../src/sagemaker/deploy.ts';
import { listPrefix } from '../src/sagemaker/s3-list.ts';
import { DEFAULT_TRANSFORM_INSTANCE, startTransformJob, TRANSFORM_LIMITS, waitForTransformJob } from '../src/sagemaker/transform-job.ts';
import { ObjectStore, parseS3Uri } from '../src/storage/s3.ts';
import { layout, policies, roleArn, serverEnvironment, type DeploymentNames } from '../src/sagemaker/iam.ts';

interface Common {
  region?: string;
  account?: string;
  name: string;
  bucket?: string;
  prefix: string;
  role?: string;
  kmsKey?: string;
  dryRun?: boolean;
}

const NAME_RE = /^[a-z0-9](-?[a-z0-9])*$/;

function names(o: Common, need: ('account' | 'bucket')[] = []): DeploymentNames {
  const region = o.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION;
  if (!region) throw new SealedError('bad-request', 'no AWS region', 'pass --region, or set AWS_REGION');
  // SageMaker writes resource names into ARNs in lower case: IAM policies only match lower-case names.
  if (!NAME_RE.test(o.name) || o.name.length > 40)
    throw new SealedError('bad-request', `--name ${o.name} is not usable`, 'use at most 40 lower-case letters, digits and single hyphens, e.g. --name sealed');
  for (const k of need)
    if (!o[k])
      throw new SealedError(
        'bad-request',
        `--${k} is required here`,
        k === 'account'
          ? 'pass --account (your 12-digit AWS account id: aws sts get-caller-identity), or give full ARNs with --role'
          : 'pass --bucket (the S3 bucket of the deployment)',
      );
  return { region, account: o.account ?? '', bucket: o.bucket ?? '', prefix: o.prefix, name: o.name, kmsKeyArn: o.kmsKey };
}

/** Simulated answers for --dry-run: a fresh deployment (no endpoint yet) unless `existing`. */
function dryRun(region: string, existing: boolean): Clients {
  console.error('dry run: nothing is sent; Describe* answers are simulated');
  return dryRunClients(() => awsClients(region, { accessKeyId: 'DRY-RUN', secretAccessKey: 'DRY-RUN' }), existing);
}

function role(o: Common, n: DeploymentNames, which: 'training' | 'endpoint'): string {
  if (o.role) return o.role;
  names(o, ['account']); // the default role ARN needs the account id
  return roleArn(n, which);
}
const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new SealedError('bad-request', `${v} is not a whole number`, 'give a whole number');
  return n;
};

function common(c: Command): Command {
  return c
    .option('--region <region>', 'AWS region (default: AWS_REGION)')
    .option('--account <id>', 'AWS account id (for role ARNs and policies)')
    .option('--name <name>', 'endpoint name; also the stem of model, config, job, role and alarm names', 'sealed')
    .option('--bucket <bucket>', 'S3 bucket of the deployment')
    .option('--prefix <prefix>', 'S3 key prefix (the --prefix of sealed predict)', 'sealed/')
    .option('--kms-key <arn>', 'KMS key for SageMaker-written S3 objects (training output, async output)')
    .option('--dry-run', 'print the requests as JSON lines instead of sending them');
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command('deploy').description('deploy sealed on Amazon SageMaker (see docs/deploy.md)').showHelpAfterError();

  common(program.command('train').description('start a SageMaker training job (sealed-training image) and wait for its model.tar.gz'))
    .requiredOption('--image <uri>', 'training image in ECR, e.g. 111122223333.dkr.ecr.us-east-1.amazonaws.com/sealed-training:latest')
    .option('--role <arn>', 'training role ARN (default: arn:aws:iam::ACCOUNT:role/NAME-training)')
    .option('--train <s3uri>', 'train channel (default: s3://BUCKET/PREFIXdata/train/)')
    .option('--test <s3uri>', 'test channel (optional)')
    .option('--set <key=value...>', 'hyperparameters, e.g. --set task=binary target=diagnosis')
    .option('--instance-type <type>', 'training instance type', DEFAULTS.trainingInstanceType)
    .addOption(new Option('--instance-count <n>', 'instances').default(1).argParser(int))
    .addOption(new Option('--max-runtime <seconds>', 'stop the job after this long').default(DEFAULTS.maxRuntimeSeconds).argParser(int))
    .option('--no-wait', 'return after CreateTrainingJob')
    .action(
      async (
        o: Common & {
          image: string;
          train?: string;
          test?: string;
          set?: string[];
          instanceType: string;
          instanceCount: number;
          maxRuntime: number;
          wait: boolean;
        },
      ) => {
        const n = names(o, ['bucket']);
        const L = layout(n);
        const hyperparameters = Object.fromEntries(
          (o.set ?? []).map((kv) => {
            const i = kv.indexOf('=');
            if (i < 1) throw new SealedError('bad-request', `--set ${kv} is not key=value`, 'write hyperparameters as key=value, e.g. --set epochs=300');
            return [kv.slice(0, i), kv.slice(i + 1)];
          }),
        );
        const jobName = `${n.name}-train-${timestamp()}`;
        const c = o.dryRun ? dryRun(n.region, false) : awsClients(n.region);
        await launchTrainingJob(c, {
          jobName,
          image: o.image,
          roleArn: role(o, n, 'training'),
          train: o.train ?? L.uri(`${L.data}train/`),
          test: o.test,
          outputPath: L.uri(L.models),
          hyperparameters,
          instanceType: o.instanceType,
          instanceCount: o.instanceCount,
          maxRuntimeSeconds: o.maxRuntime,
          kmsKeyId: o.kmsKey,
        });
        if (o.dryRun) return;
        console.error(`started training job ${jobName}`);
        if (!o.wait) return;
        const modelData = await waitForTrainingJob(c, jobName, {
          onStatus: (s) => console.error(`training job ${jobName}: ${s}`),
          timeoutMs: (o.maxRuntime + 3600) * 1000,
        });
        console.log(modelData);
        console.error(`next: npm run deploy -- deploy --name ${n.name} --bucket ${n.bucket} --model-data ${modelData} --image <inference image URI> ...`);
      },
    );

  common(program.command('deploy').description('create (or --update) the model, endpoint config and endpoint, and register autoscaling'))
    .requiredOption('--image <uri>', 'inference image in ECR (sealed-inference)')
    .requiredOption('--model-data <s3uri>', "the training job's model.tar.gz")
    .option('--role <arn>', 'endpoint execution role ARN (default: arn:aws:iam::ACCOUNT:role/NAME-endpoint)')
    .option('--async', 'asynchronous endpoint (AsyncInferenceConfig; can scale to zero)')
    .option('--update', 'the endpoint exists: deploy a new model/config to it (UpdateEndpoint)')
    .option('--instance-type <type>', 'endpoint instance type', DEFAULTS.endpointInstanceType)
    .addOption(new Option('--instance-count <n>', 'initial instances (default 1; with --update the current count is kept unless this is given)').argParser(int))
    .addOption(
      new Option('--max-concurrent <n>', 'async: MaxConcurrentInvocationsPerInstance').default(DEFAULTS.maxConcurrentInvocationsPerInstance).argParser(int),
    )
    .addOption(new Option('--min <n>', `autoscaling minimum (default ${DEFAULTS.realtime.min}; async ${DEFAULTS.async.min})`).argParser(int))
    .addOption(new Option('--max <n>', `autoscaling maximum (default ${DEFAULTS.realtime.max})`).argParser(int))
    .addOption(
      new Option(
        '--target <x>',
        `target: invocations per instance per minute (default ${DEFAULTS.realtime.target}); async: backlog per instance (default ${DEFAULTS.async.target})`,
      ).argParser(Number),
    )
    .option('--success-topic <arn>', 'async: SNS topic notified when a request succeeds (e.g. arn:aws:sns:REGION:ACCOUNT:NAME-async-success)')
    .option('--error-topic <arn>', 'async: SNS topic notified when a request fails')
    .option('--no-autoscaling', 'do not register Application Auto Scaling')
    .action(
      async (
        o: Common & {
          image: string;
          modelData: string;
          async?: boolean;
          update?: boolean;
          instanceType: string;
          instanceCount?: number;
          maxConcurrent: number;
          min?: number;
          max?: number;
          target?: number;
          autoscaling: boolean;
          successTopic?: string;
          errorTopic?: string;
        },
      ) => {
        const n = names(o, ['bucket']);
        const L = layout(n);
        if (!o.async && (o.successTopic || o.errorTopic))
          throw new SealedError('bad-request', '--success-topic and --error-topic are for asynchronous endpoints', 'add --async, or leave the topics out');
        const d = o.async ? DEFAULTS.async : DEFAULTS.realtime;
        // Clients write under tenants/<tenant>/ (their IAM policies confine them there); the server
        // reads and writes only there, and one request stays within one tenant.
        const environment = containerEnvironment({ region: n.region, access: serverEnvironment(n) });
        const c = o.dryRun ? dryRun(n.region, !!o.update) : awsClients(n.region);
        await deployEndpoint(c, {
          endpointName: n.name,
          update: o.update,
          model: { image: o.image, modelDataUrl: o.modelData, roleArn: role(o, n, 'endpoint'), environment },
          config: {
            instanceType: o.instanceType,
            instanceCount: o.instanceCount,
            async: o.async
              ? {
                  outputPath: L.uri(L.asyncOut.slice(0, -1)),
                  failurePath: L.uri(L.asyncFailed.slice(0, -1)),
                  maxConcurrentInvocationsPerInstance: o.maxConcurrent,
                  kmsKeyId: o.kmsKey,
                  notifications: { successTopic: o.successTopic, errorTopic: o.errorTopic },
                }
              : undefined,
          },
          scaling: o.autoscaling ? { min: o.min ?? d.min, max: o.max ?? d.max, target: o.target ?? d.target } : undefined,
          wait: o.dryRun ? { sleep: async () => {} } : undefined,
          log: o.dryRun ? undefined : (l) => console.error(l),
        });
        if (!o.dryRun)
          console.error(
            `ready: sealed predict --model <client part> --input records.csv --sagemaker-endpoint ${n.name}${o.async ? ' --async' : ''} --bucket ${n.bucket} --prefix ${n.prefix}`,
          );
      },
    );

  common(program.command('transform').description('start a Batch Transform job over an S3 prefix of encrypted queries and wait for its .out objects'))
    .requiredOption('--input <s3prefix>', 'S3 prefix of the query objects (one wire query each), e.g. s3://BUCKET/PREFIXtenants/acme/transform-in/job/')
    .requiredOption('--output <s3prefix>', 'S3 prefix for the <object>.out results, e.g. s3://BUCKET/PREFIXtenants/acme/transform-out/job/')
    .option('--model-name <name>', "an existing SageMaker model (e.g. the endpoint's NAME-STAMP); or give --image and --model-data to create one")
    .option('--image <uri>', 'inference image in ECR (with --model-data: creates the model NAME-transform-STAMP)')
    .option('--model-data <s3uri>', "the training job's model.tar.gz")
    .option('--role <arn>', 'execution role of a created model (default: arn:aws:iam::ACCOUNT:role/NAME-endpoint)')
    .option('--job-name <name>', 'transform job name (default NAME-transform-STAMP)')
    .option('--instance-type <type>', 'instance type', DEFAULT_TRANSFORM_INSTANCE)
    .addOption(new Option('--instance-count <n>', 'instances the objects are split across').default(1).argParser(int))
    .addOption(new Option('--max-concurrent <n>', "MaxConcurrentTransforms per instance (default: the container's GET /execution-parameters)").argParser(int))
    .addOption(new Option('--max-payload-mb <n>', "MaxPayloadInMB, at most 100 (default: the container's)").argParser(int))
    .addOption(new Option('--strategy <s>', "BatchStrategy (default: the container's)").choices(['SingleRecord', 'MultiRecord']))
    .addOption(
      new Option('--timeout <seconds>', 'InvocationsTimeoutInSeconds per object (1-3600)').default(TRANSFORM_LIMITS.timeoutSeconds.default).argParser(int),
    )
    .addOption(new Option('--retries <n>', 'InvocationsMaxRetries (0-3)').default(TRANSFORM_LIMITS.retries.default).argParser(int))
    .option('--no-wait', 'return after CreateTransformJob')
    .action(
      async (
        o: Common & {
          input: string;
          output: string;
          modelName?: string;
          image?: string;
          modelData?: string;
          jobName?: string;
          instanceType: string;
          instanceCount: number;
          maxConcurrent?: number;
          maxPayloadMb?: number;
          strategy?: 'SingleRecord' | 'MultiRecord';
          timeout: number;
          retries: number;
          wait: boolean;
        },
      ) => {
        const n = names(o);
        const c = o.dryRun ? dryRun(n.region, false) : awsClients(n.region);
        const stamp = timestamp();
        let modelName = o.modelName;
        if (!modelName) {
          if (!o.image || !o.modelData)
            throw new SealedError(
              'bad-request',
              'no model for the transform job',
              'give --model-name (an existing model), or --image and --model-data to create one',
            );
          modelName = `${n.name}-transform-${stamp}`;
          const environment = containerEnvironment({ region: n.region, access: serverEnvironment(n) });
          await createModel(c, { name: modelName, image: o.image, modelDataUrl: o.modelData, roleArn: role(o, n, 'endpoint'), environment });
        }
        const jobName = o.jobName ?? `${n.name}-transform-${stamp}`;
        await startTransformJob(c, {
          jobName,
          modelName,
          input: o.input,
          output: o.output,
          instanceType: o.instanceType,
          instanceCount: o.instanceCount,
          maxConcurrentTransforms: o.maxConcurrent,
          maxPayloadInMB: o.maxPayloadMb,
          batchStrategy: o.strategy,
          invocationsTimeoutSeconds: o.timeout,
          invocationsMaxRetries: o.retries,
          kmsKeyId: o.kmsKey,
        });
        if (o.dryRun) return;
        console.error(`started transform job ${jobName}`);
        if (!o.wait) return;
        const store = new ObjectStore({ region: n.region });
        const inPrefix = parseS3Uri(o.input.endsWith('/') ? `${o.input}x` : `${o.input}/x`, '--input');
        const outPrefix = parseS3Uri(o.output.endsWith('/') ? `${o.output}x` : `${o.output}/x`, '--output');
        const total = (await listPrefix(store, { ...inPrefix, key: inPrefix.key.slice(0, -1) }).catch(() => [])).length;
        await waitForTransformJob(c, jobName, {
          timeoutMs: 48 * 3600_000,
          // Best effort: the owner may not be allowed to list a tenant's output.
          progress: async () => ({
            done: (await listPrefix(store, { ...outPrefix, key: outPrefix.key.slice(0, -1) }, { suffix: '.out' }).catch(() => [])).length,
            total,
          }),
          onProgress: (p) => console.error(`transform job ${jobName}: ${p.status}, ${p.done}/${p.total || '?'} objects`),
        });
        store.close();
        console.log(o.output);
      },
    );

  common(program.command('delete').description('deregister autoscaling, delete the endpoint, its config and model'))
    .option('--variant <name>', 'production variant', DEFAULTS.variant)
    .action(async (o: Common & { variant: string }) => {
      const n = names(o);
      const c = o.dryRun ? dryRun(n.region, true) : awsClients(n.region);
      await deleteAll(c, { endpointName: n.name, variant: o.variant, log: o.dryRun ? undefined : (l) => console.error(l) });
    });

  common(program.command('policies').description('print the IAM policies for these names (or write them with --out)'))
    .option('--out <dir>', 'write one JSON file per policy into this directory')
    .action(async (o: Common & { out?: string }) => {
      const docs = policies(names(o, ['account', 'bucket']));
      if (!o.out) return console.log(JSON.stringify(docs, null, 2));
      await mkdir(o.out, { recursive: true });
      for (const [k, v] of Object.entries(docs)) await writeFile(join(o.out, `${k}.json`), JSON.stringify(v, null, 2) + '\n');
      console.error(`wrote ${Object.keys(docs).length} policies to ${o.out}`);
    });

  await program.parseAsync(argv);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv).catch(fail);
