// Model, endpoint config and endpoint (real-time or asynchronous): pure request builders, their
// senders, and the wait until the endpoint settles.
import {
  CreateEndpointCommand,
  CreateEndpointConfigCommand,
  CreateModelCommand,
  DescribeEndpointCommand,
  UpdateEndpointCommand,
  type CreateEndpointConfigCommandInput,
  type CreateModelCommandInput,
  type UpdateEndpointCommandInput,
  type ProductionVariantInstanceType,
} from '@aws-sdk/client-sagemaker';
import { SealedError } from '../errors.ts';
import { awsError, DEFAULTS, isNotFound, send, type Clients } from './aws.ts';
import { poll, type Waiting } from './wait.ts';

export interface ModelOptions {
  name: string;
  image: string;
  modelDataUrl: string;
  roleArn: string;
  environment?: Record<string, string>;
}

export function modelRequest(o: ModelOptions): CreateModelCommandInput {
  return {
    ModelName: o.name,
    ExecutionRoleArn: o.roleArn,
    PrimaryContainer: { Image: o.image, ModelDataUrl: o.modelDataUrl, Environment: o.environment ?? {} },
  };
}

/** The server's allow-lists (read by `sealed serve`) and S3 on AWS, from the deployment's prefixes. */
/** The endpoint container's environment: AWS S3, and where callers may point it (allow-lists, tenant root). */
export function containerEnvironment(o: { region: string; access: Record<string, string> }): Record<string, string> {
  return { SEALED_S3: 'aws', AWS_REGION: o.region, ...o.access };
}

/**
 * The server's deadline per request (SEALED_DEADLINE_MS, which `sealed serve` reads), from the
 * endpoint type: SageMaker gives a real-time container 60 s to answer, an asynchronous one up to
 * the request's InvocationTimeoutSeconds (at most 3,600 s). A few seconds less in each case, so
 * the server answers with its own error (written to the failure path) before SageMaker cuts it off.
 */
export const DEADLINE_MS = { realtime: 55_000, async: 3_590_000 } as const;
export const deadlineEnvironment = (async: boolean) => ({ SEALED_DEADLINE_MS: String(async ? DEADLINE_MS.async : DEADLINE_MS.realtime) });

export async function createModel(c: Clients, o: ModelOptions): Promise<void> {
  await send(
    `create model ${o.name}`,
    () => c.sagemaker.send(new CreateModelCommand(modelRequest(o))),
    "check --image, --model-data (the training job's model.tar.gz) and --role (the endpoint role ARN)",
  );
}

export interface EndpointConfigOptions {
  name: string;
  modelName: string;
  variant?: string;
  instanceType?: string;
  instanceCount?: number;
  async?: {
    outputPath: string;
    failurePath: string;
    maxConcurrentInvocationsPerInstance?: number;
    kmsKeyId?: string;
    /**
     * SNS topics SageMaker posts to when a request succeeds or fails (the message names the
     * request and its output or failure location), so a caller can wait on a notification
     * instead of polling S3. The endpoint role needs sns:Publish on them (iam.ts grants it on
     * NAME-* topics). Never the inference response itself: it is a ciphertext for the client only.
     */
    notifications?: { successTopic?: string; errorTopic?: string };
  };
}

const SNS_ARN = /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$/;

function notificationConfig(n: { successTopic?: string; errorTopic?: string } | undefined) {
  if (!n || (!n.successTopic && !n.errorTopic)) return {};
  for (const [flag, arn] of [
    ['--success-topic', n.successTopic],
    ['--error-topic', n.errorTopic],
  ] as const) {
    if (arn !== undefined && !SNS_ARN.test(arn))
      throw new SealedError(
        'bad-request',
        `${flag} ${arn.slice(0, 120)} is not an SNS topic ARN`,
        'give arn:aws:sns:REGION:ACCOUNT:TOPIC (aws sns create-topic --name NAME-async-success prints it)',
      );
  }
  // IncludeInferenceResponseIn is left out: the response stays in S3, out of the message.
  return { NotificationConfig: { ...(n.successTopic ? { SuccessTopic: n.successTopic } : {}), ...(n.errorTopic ? { ErrorTopic: n.errorTopic } : {}) } };
}

export function endpointConfigRequest(o: EndpointConfigOptions): CreateEndpointConfigCommandInput {
  const a = o.async;
  return {
    EndpointConfigName: o.name,
    ProductionVariants: [
      {
        VariantName: o.variant ?? DEFAULTS.variant,
        ModelName: o.modelName,
        InstanceType: (o.instanceType ?? DEFAULTS.endpointInstanceType) as ProductionVariantInstanceType,
        InitialInstanceCount: o.instanceCount ?? 1,
      },
    ],
    ...(a && {
      AsyncInferenceConfig: {
        ClientConfig: { MaxConcurrentInvocationsPerInstance: a.maxConcurrentInvocationsPerInstance ?? DEFAULTS.maxConcurrentInvocationsPerInstance },
        OutputConfig: {
          S3OutputPath: a.outputPath,
          S3FailurePath: a.failurePath,
          ...(a.kmsKeyId ? { KmsKeyId: a.kmsKeyId } : {}),
          ...notificationConfig(a.notifications),
        },
      },
    }),
  };
}

export async function createEndpointConfig(c: Clients, o: EndpointConfigOptions): Promise<void> {
  await send(
    `create endpoint config ${o.name}`,
    () => c.sagemaker.send(new CreateEndpointConfigCommand(endpointConfigRequest(o))),
    'check --instance-type (an ml.* type SageMaker hosts in this region) and the S3 paths',
  );
}

export async function createEndpoint(c: Clients, name: string, configName: string): Promise<void> {
  try {
    await c.sagemaker.send(new CreateEndpointCommand({ EndpointName: name, EndpointConfigName: configName }));
  } catch (e) {
    if (/already exist/i.test((e as Error).message ?? '')) {
      throw new SealedError(
        'bad-request',
        `endpoint ${name} already exists`,
        `to replace its model or configuration run deploy again with --update (UpdateEndpoint), or delete it first: npm run deploy -- delete --name ${name}`,
      );
    }
    throw awsError(e, `create endpoint ${name}`);
  }
}

/**
 * UpdateEndpoint keeping the variant's current instance count (and weight): without
 * RetainAllVariantProperties SageMaker takes InitialInstanceCount from the new config, so an
 * endpoint that autoscaling had grown to N instances would drop back to one. `resetInstanceCount`
 * (the owner asked for an instance count) takes the new config's count instead.
 */
export function updateEndpointRequest(name: string, configName: string, resetInstanceCount = false): UpdateEndpointCommandInput {
  return {
    EndpointName: name,
    EndpointConfigName: configName,
    RetainAllVariantProperties: true,
    ...(resetInstanceCount ? { ExcludeRetainedVariantProperties: [{ VariantPropertyType: 'DesiredInstanceCount' as const }] } : {}),
  };
}

export async function updateEndpoint(c: Clients, name: string, configName: string, resetInstanceCount = false): Promise<void> {
  await send(
    `update endpoint ${name}`,
    () => c.sagemaker.send(new UpdateEndpointCommand(updateEndpointRequest(name, configName, resetInstanceCount))),
    `the endpoint must exist and be InService; without an endpoint, deploy without --update`,
  );
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

/**
 * Waits until the endpoint settles. After UpdateEndpoint pass `expectConfig`, the new config's
 * name: a failed update rolls back to the old config and ends InService too, so InService alone
 * does not say the update happened.
 */
export async function waitForEndpoint(c: Clients, name: string, w: Waiting = {}, expectConfig?: string): Promise<void> {
  const d = await poll(
    async () => (await endpointStatus(c, name)) ?? { status: 'missing' },
    (d) => d.status,
    (d) => !['Creating', 'Updating', 'SystemUpdating', 'RollingBack'].includes(d.status),
    { timeoutMs: 3600_000, ...w },
    `endpoint ${name}`,
    'it may still become InService: look again later (aws sagemaker describe-endpoint)',
  );
  const failure = 'failure' in d && d.failure ? `: ${d.failure}` : '';
  const logs = `read the container log in CloudWatch Logs (/aws/sagemaker/Endpoints/${name})`;
  if (d.status !== 'InService') {
    throw new SealedError(
      'bad-request',
      `endpoint ${name} is ${d.status}${failure}`,
      `${logs}; fix the image, model or role; then npm run deploy -- delete --name ${name} and deploy again`,
    );
  }
  const running = 'configName' in d ? d.configName : undefined;
  if (expectConfig !== undefined && running !== expectConfig) {
    throw new SealedError(
      'bad-request',
      `the update of endpoint ${name} failed and was rolled back: it still runs config ${running ?? '(unknown)'}, not ${expectConfig}${failure}`,
      `the endpoint keeps serving the old model; ${logs} for the new one, fix the image, model or role, and deploy --update again`,
    );
  }
}
