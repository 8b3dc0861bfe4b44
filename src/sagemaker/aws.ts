// What every SageMaker control-plane module shares: the three SDK clients, the deployment's
// defaults, and one way to turn an SDK error into a SealedError that says what to do next.
// Nothing here has run against AWS (none is reachable where it was written): the request shapes
// follow the API references and are checked by test/light/deploy.test.ts at the SDK boundary.
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { ApplicationAutoScalingClient } from '@aws-sdk/client-application-auto-scaling';
import { CloudWatchClient } from '@aws-sdk/client-cloudwatch';
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

export interface Clients {
  sagemaker: SageMakerClient;
  autoscaling: ApplicationAutoScalingClient;
  cloudwatch: CloudWatchClient;
}

export function awsClients(region: string, credentials?: { accessKeyId: string; secretAccessKey: string }): Clients {
  const cfg = credentials ? { region, credentials } : { region };
  return { sagemaker: new SageMakerClient(cfg), autoscaling: new ApplicationAutoScalingClient(cfg), cloudwatch: new CloudWatchClient(cfg) };
}

/** Turns an SDK error into a SealedError that says what to do next. */
export function awsError(e: unknown, doing: string, hint?: string): SealedError {
  if (e instanceof SealedError) return e;
  const err = e as { name?: string; message?: string; code?: string };
  const name = err.name ?? 'Error';
  const message = err.message ?? String(e);
  if (name === 'CredentialsProviderError' || /credential/i.test(message)) {
    return new SealedError(
      'bad-request',
      `cannot ${doing}: no AWS credentials (${message})`,
      'configure credentials (AWS_PROFILE, or `aws configure`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or use --dry-run to see the requests',
      { cause: e },
    );
  }
  if (name === 'AccessDeniedException' || name === 'AccessDenied' || /not authorized/i.test(message)) {
    return new SealedError(
      'forbidden',
      `cannot ${doing}: access denied (${message})`,
      'attach the model owner policy to your identity: `npm run deploy -- policies --account ID ...` prints it (deploy/iam/owner.json is an example)',
      { cause: e },
    );
  }
  if (name === 'ResourceLimitExceeded') {
    return new SealedError(
      'bad-request',
      `cannot ${doing}: ${message}`,
      'request a SageMaker quota increase for that instance type (Service Quotas), or choose another with --instance-type',
      { cause: e },
    );
  }
  if (err.code === 'ENOTFOUND' || err.code === 'ECONNREFUSED' || err.code === 'ETIMEDOUT' || name === 'TimeoutError') {
    return new SealedError('storage', `cannot ${doing}: AWS is unreachable (${err.code ?? name})`, 'check the network and --region; then retry', { cause: e });
  }
  return new SealedError(
    'bad-request',
    `cannot ${doing}: ${name}: ${message}`,
    hint ?? 'check the names, ARNs and --region in the message; --dry-run prints the request',
    { cause: e },
  );
}

export const isNotFound = (e: unknown) =>
  /could not find|does not exist|not found/i.test((e as Error)?.message ?? '') || (e as { name?: string })?.name === 'ObjectNotFoundException';

export async function send<T>(doing: string, f: () => Promise<T>, hint?: string): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw awsError(e, doing, hint);
  }
}

export const timestamp = (d = new Date()) => d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
