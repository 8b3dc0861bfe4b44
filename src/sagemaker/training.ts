// The training job: CreateTrainingJob from the deployment's names, and the wait for its
// model.tar.gz. Each request is built by a pure function so --dry-run and tests see it exactly.
import { CreateTrainingJobCommand, DescribeTrainingJobCommand, type CreateTrainingJobCommandInput, type TrainingInstanceType } from '@aws-sdk/client-sagemaker';
import { SealedError } from '../errors.ts';
import { DEFAULTS, send, type Clients } from './aws.ts';
import { poll, type Waiting } from './wait.ts';

/** Log lines of `sealed train` are `[metric] name=value`; these are the names it writes. */
export const METRIC_NAMES = ['train_loss', 'train_accuracy', 'test_accuracy', 'train_rmse', 'test_rmse', 'train_seconds'] as const;
export const metricDefinitions = () => METRIC_NAMES.map((Name) => ({ Name, Regex: `\\[metric\\] ${Name}=([-+0-9.eE]+)` }));

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

const channel = (ChannelName: string, S3Uri: string) => ({
  ChannelName,
  ContentType: 'text/csv',
  InputMode: 'File' as const,
  DataSource: { S3DataSource: { S3DataType: 'S3Prefix' as const, S3Uri, S3DataDistributionType: 'FullyReplicated' as const } },
});

export function trainingJobRequest(o: TrainingOptions): CreateTrainingJobCommandInput {
  return {
    TrainingJobName: o.jobName,
    RoleArn: o.roleArn,
    AlgorithmSpecification: { TrainingImage: o.image, TrainingInputMode: 'File', MetricDefinitions: metricDefinitions() },
    // SageMaker passes every hyperparameter as a string (hyperparameters.json).
    HyperParameters: Object.fromEntries(Object.entries(o.hyperparameters ?? {}).map(([k, v]) => [k, String(v)])),
    InputDataConfig: [channel('train', o.train), ...(o.test ? [channel('test', o.test)] : [])],
    OutputDataConfig: { S3OutputPath: o.outputPath, ...(o.kmsKeyId ? { KmsKeyId: o.kmsKeyId } : {}) },
    ResourceConfig: {
      InstanceType: (o.instanceType ?? DEFAULTS.trainingInstanceType) as TrainingInstanceType,
      InstanceCount: o.instanceCount ?? 1,
      VolumeSizeInGB: o.volumeSizeGb ?? DEFAULTS.volumeSizeGb,
    },
    StoppingCondition: { MaxRuntimeInSeconds: o.maxRuntimeSeconds ?? DEFAULTS.maxRuntimeSeconds },
  };
}

export async function launchTrainingJob(c: Clients, o: TrainingOptions): Promise<string> {
  const r = await send(
    `start training job ${o.jobName}`,
    () => c.sagemaker.send(new CreateTrainingJobCommand(trainingJobRequest(o))),
    'check --image (an ECR image URI), --role (the training role ARN) and the S3 URIs',
  );
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
    throw new SealedError(
      'bad-data',
      `training job ${jobName} ended ${d.TrainingJobStatus}: ${d.FailureReason ?? 'no reason given'}`,
      `read its log in CloudWatch Logs (/aws/sagemaker/TrainingJobs, stream ${jobName}/...), fix the data or hyperparameters, and train again`,
    );
  }
  return d.ModelArtifacts.S3ModelArtifacts;
}
