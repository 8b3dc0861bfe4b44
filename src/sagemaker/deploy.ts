// Deployment on Amazon SageMaker with the AWS SDK: a training job, then model + endpoint config +
// endpoint (real-time or asynchronous) and Application Auto Scaling for its variant, and the way
// back (deleteAll). Each request is built by a pure function (`*Request`) so that `--dry-run` and
// the unit tests see exactly what would be sent; the senders only add the SDK call, waiting and
// errors that say what to do next. Nothing here has run against AWS (none is reachable where it
// was written): the request shapes follow the API references and are checked by test/deploy.test.ts.
import {
  CreateEndpointCommand,
  CreateEndpointConfigCommand,
  CreateModelCommand,
  CreateTrainingJobCommand,
  DeleteEndpointCommand,
  DeleteEndpointConfigCommand,
  DeleteModelCommand,
  DescribeEndpointCommand,
  DescribeEndpointConfigCommand,
  DescribeTrainingJobCommand,
  SageMakerClient,
  UpdateEndpointCommand,
  type CreateEndpointConfigCommandInput,
  type CreateModelCommandInput,
  type CreateTrainingJobCommandInput,
  type ProductionVariantInstanceType,
  type TrainingInstanceType,
} from '@aws-sdk/client-sagemaker';
import { ApplicationAutoScalingClient, DeregisterScalableTargetCommand, PutScalingPolicyCommand, RegisterScalableTargetCommand, type PutScalingPolicyCommandInput, type RegisterScalableTargetCommandInput } from '@aws-sdk/client-application-auto-scaling';
import { CloudWatchClient, DeleteAlarmsCommand, PutMetricAlarmCommand, type PutMetricAlarmCommandInput } from '@aws-sdk/client-cloudwatch';
import { SealedError } from '../errors.ts';

export const DEFAULTS = {
  trainingInstanceType: 'ml.m5.xlarge', // general purpose, 4 vCPU, 16 GiB: training is plaintext TensorFlow.js
  endpointInstanceType: 'ml.c6i.xlarge', // compute optimised, 4 vCPU: one SEAL worker thread per vCPU
  variant: 'AllTraffic',
  maxRuntimeSeconds: 3600,
  volumeSizeGb: 10,
  /** Async: requests SageMaker hands one instance at once; the server's own queue is 4 x workers. */
  maxConcurrentInvocationsPerInstance: 4,
  realtime: { min: 1, max: 4, target: 70 }, // InvocationsPerInstance (per minute): AWS's example value
  async: { min: 0, max: 4, target: 5 }, // ApproximateBacklogSizePerInstance: AWS's example value
} as const;

/** Log lines of `sealed train` are `[metric] name=value`; these are the names it writes. */
export const METRIC_NAMES = ['train_loss', 'train_accuracy', 'test_accuracy', 'train_rmse', 'test_rmse', 'train_seconds'] as const;
export const metricDefinitions = () => METRIC_NAMES.map((Name) => ({ Name, Regex: `\\[metric\\] ${Name}=([-+0-9.eE]+)` }));

export interface Clients {
  sagemaker: SageMakerClient;
  autoscaling: ApplicationAutoScalingClient;
  cloudwatch: CloudWatchClient;
}

export function awsClients(region: string, credentials?: { accessKeyId: string; secretAccessKey: string }): Clients {
  const cfg = credentials ? { region, credentials } : { region };
  return { sagemaker: new SageMakerClient(cfg), autoscaling: new ApplicationAutoScalingClient(cfg), cloudwatch: new CloudWatchClient(cfg) };
}

/** A request as it leaves the SDK client: service, operation (command name without "Command") and input. */
export interface SentRequest {
  service: keyof Clients;
  command: string;
  input: Record<string, unknown>;
}
export type Responder = (r: SentRequest) => unknown;
// The one overload of middlewareStack.add used here (the union of all the clients' stacks is not callable).
type InitializeStack = { add(mw: (next: unknown, context: { commandName?: string }) => (args: { input: unknown }) => Promise<unknown>, o: { step: 'initialize'; name: string }): void };

/**
 * Answers every command of these clients with `respond` instead of sending it: a middleware at the
 * start of each client's stack, so the command goes through the real `client.send`. Used by
 * `--dry-run` (and usable by tests); throw from `respond` to simulate a service error.
 */
export function intercept(c: Clients, respond: Responder): Clients {
  for (const service of Object.keys(c) as (keyof Clients)[]) {
    (c[service].middlewareStack as unknown as InitializeStack).add(
      (_next, context) => async (args) => {
        const command = String(context.commandName ?? '').replace(/Command$/, '');
        const output = await respond({ service, command, input: args.input as Record<string, unknown> });
        return { output: { $metadata: {}, ...(output as object) }, response: {} } as never;
      },
      { step: 'initialize', name: 'sealedIntercept' },
    );
  }
  return c;
}

/** Turns an SDK error into a SealedError that says what to do next. */
export function awsError(e: unknown, doing: string, hint?: string): SealedError {
  if (e instanceof SealedError) return e;
  const err = e as { name?: string; message?: string; code?: string };
  const name = err.name ?? 'Error';
  const message = err.message ?? String(e);
  if (name === 'CredentialsProviderError' || /credential/i.test(message)) {
    return new SealedError('bad-request', `cannot ${doing}: no AWS credentials (${message})`, 'configure credentials (AWS_PROFILE, or `aws configure`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or use --dry-run to see the requests', { cause: e });
  }
  if (name === 'AccessDeniedException' || name === 'AccessDenied' || /not authorized/i.test(message)) {
    return new SealedError('forbidden', `cannot ${doing}: access denied (${message})`, 'attach the model owner policy to your identity: `npm run deploy -- policies --account ID ...` prints it (deploy/iam/owner.json is an example)', { cause: e });
  }
  if (name === 'ResourceLimitExceeded') {
    return new SealedError('bad-request', `cannot ${doing}: ${message}`, 'request a SageMaker quota increase for that instance type (Service Quotas), or choose another with --instance-type', { cause: e });
  }
  if (err.code === 'ENOTFOUND' || err.code === 'ECONNREFUSED' || err.code === 'ETIMEDOUT' || name === 'TimeoutError') {
    return new SealedError('storage', `cannot ${doing}: AWS is unreachable (${err.code ?? name})`, 'check the network and --region; then retry', { cause: e });
  }
  return new SealedError('bad-request', `cannot ${doing}: ${name}: ${message}`, hint ?? 'check the names, ARNs and --region in the message; --dry-run prints the request', { cause: e });
}

const isNotFound = (e: unknown) => /could not find|does not exist|not found/i.test((e as Error)?.message ?? '') || (e as { name?: string })?.name === 'ObjectNotFoundException';

async function send<T>(doing: string, f: () => Promise<T>, hint?: string): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw awsError(e, doing, hint);
  }
}

export interface Waiting {
  sleep?: (ms: number) => Promise<void>;
  /** First and largest pause between Describe calls. */
  pollMs?: { first: number; max: number };
  timeoutMs?: number;
  onStatus?: (status: string) => void;
}
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `describe` with doubling pauses until `done` says it is finished (or throws). */
async function poll<T>(describe: () => Promise<T>, state: (d: T) => string, done: (d: T) => boolean, w: Waiting, what: string, hint: string): Promise<T> {
  const { first, max } = w.pollMs ?? { first: 5_000, max: 60_000 };
  const deadline = Date.now() + (w.timeoutMs ?? 3 * 3600_000);
  let last = '';
  for (let wait = first; ; wait = Math.min(wait * 2, max)) {
    const d = await describe();
    const s = state(d);
    if (s !== last) w.onStatus?.(s);
    last = s;
    if (done(d)) return d;
    if (Date.now() + wait > deadline) throw new SealedError('deadline', `${what} is still ${s} after ${Math.round((w.timeoutMs ?? 0) / 1000)} s`, hint);
    await (w.sleep ?? sleep)(wait);
  }
}

// ---------------------------------------------------------------- training

export interface TrainingOptions {
  jobName: string;
  image: string;
  roleArn: string;
  train: string;
  test?: string;
  outputPath: string;
  hyperparameters?: Record<string, string | number | boolean>;
  instanceType?: string;
  instanceCount?: number;
  volumeSizeGb?: number;
  maxRuntimeSeconds?: number;
  kmsKeyId?: string;
}

const channel = (ChannelName: string, S3Uri: string) => ({ ChannelName, ContentType: 'text/csv', InputMode: 'File' as const, DataSource: { S3DataSource: { S3DataType: 'S3Prefix' as const, S3Uri, S3DataDistributionType: 'FullyReplicated' as const } } });

export function trainingJobRequest(o: TrainingOptions): CreateTrainingJobCommandInput {
  return {
    TrainingJobName: o.jobName,
    RoleArn: o.roleArn,
    AlgorithmSpecification: { TrainingImage: o.image, TrainingInputMode: 'File', MetricDefinitions: metricDefinitions() },
    // SageMaker passes every hyperparameter as a string (hyperparameters.json).
    HyperParameters: Object.fromEntries(Object.entries(o.hyperparameters ?? {}).map(([k, v]) => [k, String(v)])),
    InputDataConfig: [channel('train', o.train), ...(o.test ? [channel('test', o.test)] : [])],
    OutputDataConfig: { S3OutputPath: o.outputPath, ...(o.kmsKeyId ? { KmsKeyId: o.kmsKeyId } : {}) },
    ResourceConfig: { InstanceType: (o.instanceType ?? DEFAULTS.trainingInstanceType) as TrainingInstanceType, InstanceCount: o.instanceCount ?? 1, VolumeSizeInGB: o.volumeSizeGb ?? DEFAULTS.volumeSizeGb },
    StoppingCondition: { MaxRuntimeInSeconds: o.maxRuntimeSeconds ?? DEFAULTS.maxRuntimeSeconds },
  };
}

export async function launchTrainingJob(c: Clients, o: TrainingOptions): Promise<string> {
  const r = await send(`start training job ${o.jobName}`, () => c.sagemaker.send(new CreateTrainingJobCommand(trainingJobRequest(o))), 'check --image (an ECR image URI), --role (the training role ARN) and the S3 URIs');
  return r.TrainingJobArn ?? o.jobName;
}

/** Waits for the job; returns the S3 URI of its model.tar.gz. A failed job's reason is the container's /opt/ml/output/failure. */
export async function waitForTrainingJob(c: Clients, jobName: string, w: Waiting = {}): Promise<string> {
  const d = await poll(
    () => send(`describe training job ${jobName}`, () => c.sagemaker.send(new DescribeTrainingJobCommand({ TrainingJobName: jobName }))),
    (d) => `${d.TrainingJobStatus}${d.SecondaryStatus ? ` (${d.SecondaryStatus})` : ''}`,
    (d) => d.TrainingJobStatus !== 'InProgress' && d.TrainingJobStatus !== 'Stopping',
    w,
    `training job ${jobName}`,
    'it keeps running: look again later with the AWS console or `aws sagemaker describe-training-job`',
  );
  if (d.TrainingJobStatus !== 'Completed' || !d.ModelArtifacts?.S3ModelArtifacts) {
    throw new SealedError('bad-data', `training job ${jobName} ended ${d.TrainingJobStatus}: ${d.FailureReason ?? 'no reason given'}`, `read its log in CloudWatch Logs (/aws/sagemaker/TrainingJobs, stream ${jobName}/...), fix the data or hyperparameters, and train again`);
  }
  return d.ModelArtifacts.S3ModelArtifacts;
}

// ---------------------------------------------------------------- model, endpoint config, endpoint

export interface ModelOptions {
  name: string;
  image: string;
  modelDataUrl: string;
  roleArn: string;
  environment?: Record<string, string>;
}

export function modelRequest(o: ModelOptions): CreateModelCommandInput {
  return { ModelName: o.name, ExecutionRoleArn: o.roleArn, PrimaryContainer: { Image: o.image, ModelDataUrl: o.modelDataUrl, Environment: o.environment ?? {} } };
}

/** The server's allow-lists (read by `sealed serve`) and S3 on AWS, from the deployment's prefixes. */
/** The endpoint container's environment: AWS S3, and where callers may point it (allow-lists, tenant root). */
export function containerEnvironment(o: { region: string; access: Record<string, string> }): Record<string, string> {
  return { SEALED_S3: 'aws', AWS_REGION: o.region, ...o.access };
}

export async function createModel(c: Clients, o: ModelOptions): Promise<void> {
  await send(`create model ${o.name}`, () => c.sagemaker.send(new CreateModelCommand(modelRequest(o))), 'check --image, --model-data (the training job\'s model.tar.gz) and --role (the endpoint role ARN)');
}

export interface EndpointConfigOptions {
  name: string;
  modelName: string;
  variant?: string;
  instanceType?: string;
  instanceCount?: number;
  async?: { outputPath: string; failurePath: string; maxConcurrentInvocationsPerInstance?: number; kmsKeyId?: string };
}

export function endpointConfigRequest(o: EndpointConfigOptions): CreateEndpointConfigCommandInput {
  const a = o.async;
  return {
    EndpointConfigName: o.name,
    ProductionVariants: [{ VariantName: o.variant ?? DEFAULTS.variant, ModelName: o.modelName, InstanceType: (o.instanceType ?? DEFAULTS.endpointInstanceType) as ProductionVariantInstanceType, InitialInstanceCount: o.instanceCount ?? 1 }],
    ...(a && {
      AsyncInferenceConfig: {
        ClientConfig: { MaxConcurrentInvocationsPerInstance: a.maxConcurrentInvocationsPerInstance ?? DEFAULTS.maxConcurrentInvocationsPerInstance },
        OutputConfig: { S3OutputPath: a.outputPath, S3FailurePath: a.failurePath, ...(a.kmsKeyId ? { KmsKeyId: a.kmsKeyId } : {}) },
      },
    }),
  };
}

export async function createEndpointConfig(c: Clients, o: EndpointConfigOptions): Promise<void> {
  await send(`create endpoint config ${o.name}`, () => c.sagemaker.send(new CreateEndpointConfigCommand(endpointConfigRequest(o))), 'check --instance-type (an ml.* type SageMaker hosts in this region) and the S3 paths');
}

export async function createEndpoint(c: Clients, name: string, configName: string): Promise<void> {
  try {
    await c.sagemaker.send(new CreateEndpointCommand({ EndpointName: name, EndpointConfigName: configName }));
  } catch (e) {
    if (/already exist/i.test((e as Error).message ?? '')) {
      throw new SealedError('bad-request', `endpoint ${name} already exists`, `to replace its model or configuration run deploy again with --update (UpdateEndpoint), or delete it first: npm run deploy -- delete --name ${name}`);
    }
    throw awsError(e, `create endpoint ${name}`);
  }
}

export async function updateEndpoint(c: Clients, name: string, configName: string): Promise<void> {
  await send(`update endpoint ${name}`, () => c.sagemaker.send(new UpdateEndpointCommand({ EndpointName: name, EndpointConfigName: configName })), `the endpoint must exist and be InService; without an endpoint, deploy without --update`);
}

/** The endpoint's status, or undefined when there is no such endpoint. */
export async function endpointStatus(c: Clients, name: string): Promise<{ status: string; configName?: string; failure?: string } | undefined> {
  try {
    const d = await c.sagemaker.send(new DescribeEndpointCommand({ EndpointName: name }));
    return { status: d.EndpointStatus ?? 'Unknown', configName: d.EndpointConfigName, failure: d.FailureReason };
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw awsError(e, `describe endpoint ${name}`);
  }
}

export async function waitForEndpoint(c: Clients, name: string, w: Waiting = {}): Promise<void> {
  const d = await poll(
    async () => (await endpointStatus(c, name)) ?? { status: 'missing' },
    (d) => d.status,
    (d) => !['Creating', 'Updating', 'SystemUpdating', 'RollingBack'].includes(d.status),
    { timeoutMs: 3600_000, ...w },
    `endpoint ${name}`,
    'it may still become InService: look again later (aws sagemaker describe-endpoint)',
  );
  if (d.status !== 'InService') {
    throw new SealedError('bad-request', `endpoint ${name} is ${d.status}${'failure' in d && d.failure ? `: ${d.failure}` : ''}`, `read the container log in CloudWatch Logs (/aws/sagemaker/Endpoints/${name}); fix the image, model or role; then npm run deploy -- delete --name ${name} and deploy again`);
  }
}

// ---------------------------------------------------------------- autoscaling

export interface ScalingOptions {
  endpointName: string;
  variant?: string;
  async: boolean;
  min: number;
  max: number;
  /** Invocations per instance per minute (real-time) or backlog per instance (async). */
  target: number;
}

export const resourceId = (endpointName: string, variant: string = DEFAULTS.variant) => `endpoint/${endpointName}/variant/${variant}`;
export const scaleFromZeroAlarmName = (endpointName: string) => `${endpointName}-has-backlog-without-capacity`;

export interface ScalingRequests {
  target: RegisterScalableTargetCommandInput;
  tracking: PutScalingPolicyCommandInput;
  /** Async only: scale from zero as AWS documents it, a step policy triggered by an alarm. */
  fromZero?: { policy: PutScalingPolicyCommandInput; alarm: (policyArn: string) => PutMetricAlarmCommandInput };
}

export function scalingRequests(o: ScalingOptions): ScalingRequests {
  if (!Number.isInteger(o.min) || !Number.isInteger(o.max) || o.min < (o.async ? 0 : 1) || o.max < Math.max(o.min, 1)) {
    throw new SealedError('bad-request', `autoscaling min ${o.min} / max ${o.max} is not valid for a ${o.async ? 'asynchronous' : 'real-time'} endpoint`, `give whole numbers with ${o.async ? '0' : '1'} <= --min <= --max and --max >= 1 (only asynchronous endpoints scale to zero)`);
  }
  if (!(o.target > 0)) throw new SealedError('bad-request', `autoscaling target ${o.target} must be a positive number`, 'give --target, e.g. 70 invocations per instance per minute (real-time) or 5 queued requests per instance (async)');
  const id = { ServiceNamespace: 'sagemaker' as const, ResourceId: resourceId(o.endpointName, o.variant), ScalableDimension: 'sagemaker:variant:DesiredInstanceCount' as const };
  const dimensions = [{ Name: 'EndpointName', Value: o.endpointName }];
  const tracking: PutScalingPolicyCommandInput = {
    ...id,
    PolicyName: `${o.endpointName}-${o.async ? 'backlog-per-instance' : 'invocations-per-instance'}`,
    PolicyType: 'TargetTrackingScaling',
    TargetTrackingScalingPolicyConfiguration: {
      TargetValue: o.target,
      ...(o.async
        ? { CustomizedMetricSpecification: { MetricName: 'ApproximateBacklogSizePerInstance', Namespace: 'AWS/SageMaker', Dimensions: dimensions, Statistic: 'Average' } }
        : { PredefinedMetricSpecification: { PredefinedMetricType: 'SageMakerVariantInvocationsPerInstance' } }),
      ScaleInCooldown: 300,
      ScaleOutCooldown: 60,
    },
  };
  const r: ScalingRequests = { target: { ...id, MinCapacity: o.min, MaxCapacity: o.max }, tracking };
  if (o.async && o.min === 0) {
    // Without it a scaled-to-zero endpoint waits until the backlog exceeds the tracking target.
    r.fromZero = {
      policy: { ...id, PolicyName: `${o.endpointName}-scale-from-zero`, PolicyType: 'StepScaling', StepScalingPolicyConfiguration: { AdjustmentType: 'ChangeInCapacity', MetricAggregationType: 'Average', Cooldown: 300, StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }] } },
      alarm: (policyArn) => ({
        AlarmName: scaleFromZeroAlarmName(o.endpointName),
        MetricName: 'HasBacklogWithoutCapacity',
        Namespace: 'AWS/SageMaker',
        Statistic: 'Average',
        Dimensions: dimensions,
        Period: 60,
        EvaluationPeriods: 2,
        DatapointsToAlarm: 2,
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'missing',
        AlarmActions: [policyArn],
      }),
    };
  }
  return r;
}

export async function registerAutoScaling(c: Clients, o: ScalingOptions): Promise<void> {
  const r = scalingRequests(o);
  const hint = 'the endpoint must be InService; your identity needs the AutoScaling statements of the owner policy (npm run deploy -- policies)';
  await send(`register ${r.target.ResourceId} for autoscaling`, () => c.autoscaling.send(new RegisterScalableTargetCommand(r.target)), hint);
  await send(`put scaling policy ${r.tracking.PolicyName}`, () => c.autoscaling.send(new PutScalingPolicyCommand(r.tracking)), hint);
  if (r.fromZero) {
    const p = await send(`put scaling policy ${r.fromZero.policy.PolicyName}`, () => c.autoscaling.send(new PutScalingPolicyCommand(r.fromZero!.policy)), hint);
    if (!p.PolicyARN) throw new SealedError('internal', `PutScalingPolicy returned no PolicyARN for ${r.fromZero.policy.PolicyName}`, 'run deploy again with --update');
    const alarm = r.fromZero.alarm(p.PolicyARN);
    await send(`put alarm ${alarm.AlarmName}`, () => c.cloudwatch.send(new PutMetricAlarmCommand(alarm)), hint);
  }
}

// ---------------------------------------------------------------- the whole deployment

export interface DeployOptions {
  endpointName: string;
  /** Suffix of this version's model and config names (a UTC timestamp by default). */
  stamp?: string;
  update?: boolean;
  model: Omit<ModelOptions, 'name'>;
  config: Omit<EndpointConfigOptions, 'name' | 'modelName'>;
  /** undefined: no autoscaling. */
  scaling?: Omit<ScalingOptions, 'endpointName' | 'variant' | 'async'>;
  wait?: Waiting;
  log?: (line: string) => void;
}

export const timestamp = (d = new Date()) => d.toISOString().replace(/[-:T]/g, '').slice(0, 14);

/** Model, endpoint config, CreateEndpoint (or UpdateEndpoint), wait until InService, autoscaling. */
export async function deployEndpoint(c: Clients, o: DeployOptions): Promise<{ modelName: string; configName: string }> {
  const log = o.log ?? (() => {});
  const name = o.endpointName;
  // Checked first so that a refused deployment leaves no orphaned model or config behind.
  const scaling = o.scaling && { ...o.scaling, endpointName: name, variant: o.config.variant, async: !!o.config.async };
  if (scaling) scalingRequests(scaling);
  const existing = await endpointStatus(c, name);
  if (existing && !o.update) throw new SealedError('bad-request', `endpoint ${name} already exists (${existing.status})`, `to deploy a new model or configuration to it add --update (UpdateEndpoint), or delete it first: npm run deploy -- delete --name ${name}`);
  if (!existing && o.update) throw new SealedError('not-found', `endpoint ${name} does not exist, so it cannot be updated`, 'deploy without --update to create it (and check --region)');
  const stamp = o.stamp ?? timestamp();
  const modelName = `${name}-${stamp}`;
  const configName = `${name}-${stamp}`;
  await createModel(c, { ...o.model, name: modelName });
  log(`created model ${modelName}`);
  await createEndpointConfig(c, { ...o.config, name: configName, modelName });
  log(`created endpoint config ${configName}`);
  if (existing) await updateEndpoint(c, name, configName);
  else await createEndpoint(c, name, configName);
  log(`${existing ? 'updating' : 'creating'} endpoint ${name}; waiting until it is InService (several minutes)`);
  await waitForEndpoint(c, name, { onStatus: (s) => log(`endpoint ${name}: ${s}`), ...o.wait });
  if (scaling) {
    await registerAutoScaling(c, scaling);
    log(`autoscaling: ${scaling.min}-${scaling.max} instances, target ${scaling.target}`);
  }
  return { modelName, configName };
}

/** Autoscaling, endpoint, its config and models, in that order; what is already gone is skipped. */
export async function deleteAll(c: Clients, o: { endpointName: string; variant?: string; log?: (line: string) => void }): Promise<string[]> {
  const log = o.log ?? (() => {});
  const name = o.endpointName;
  const deleted: string[] = [];
  const tolerant = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
      deleted.push(what);
      log(`deleted ${what}`);
    } catch (e) {
      if (!isNotFound(e)) throw awsError(e, `delete ${what}`, 'fix the cause and run delete again: it skips what is already gone');
    }
  };
  const id = { ServiceNamespace: 'sagemaker' as const, ResourceId: resourceId(name, o.variant), ScalableDimension: 'sagemaker:variant:DesiredInstanceCount' as const };
  // Deregistering also deletes the target's scaling policies; the alarm of the step policy is ours.
  await tolerant(`scalable target ${id.ResourceId}`, () => c.autoscaling.send(new DeregisterScalableTargetCommand(id)));
  await tolerant(`alarm ${scaleFromZeroAlarmName(name)}`, () => c.cloudwatch.send(new DeleteAlarmsCommand({ AlarmNames: [scaleFromZeroAlarmName(name)] })));
  const ep = await endpointStatus(c, name);
  if (!ep) {
    if (!deleted.length) throw new SealedError('not-found', `there is no endpoint ${name} to delete`, 'check --name and --region (aws sagemaker list-endpoints)');
    return deleted;
  }
  let models: string[] = [];
  if (ep.configName) {
    const cfg = await send(`describe endpoint config ${ep.configName}`, () => c.sagemaker.send(new DescribeEndpointConfigCommand({ EndpointConfigName: ep.configName }))).catch(() => undefined);
    models = (cfg?.ProductionVariants ?? []).map((v) => v.ModelName).filter((m): m is string => !!m);
  }
  await tolerant(`endpoint ${name}`, () => c.sagemaker.send(new DeleteEndpointCommand({ EndpointName: name })));
  if (ep.configName) await tolerant(`endpoint config ${ep.configName}`, () => c.sagemaker.send(new DeleteEndpointConfigCommand({ EndpointConfigName: ep.configName })));
  for (const m of models) await tolerant(`model ${m}`, () => c.sagemaker.send(new DeleteModelCommand({ ModelName: m })));
  return deleted;
}
