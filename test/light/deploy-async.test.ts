// Async endpoints in the deployment (issue #17): success and error notifications on SNS topics,
// and scaling on the queue (ApproximateBacklogSizePerInstance) down to zero instances and back
// from zero (HasBacklogWithoutCapacity), checked at the SDK boundary and in the IAM grants.
import t from 'tap';
import { deployEndpoint, endpointConfigRequest } from '../../src/sagemaker/deploy.ts';
import { EXAMPLE_NAMES, policies } from '../../src/sagemaker/iam.ts';
import { deployRefusal, deployRequests, dryRun, freshAccount as recordedAccount, noWait } from '../helpers/aws-recording.ts';

/** A fresh deployment whose scaling policies have short ARNs, to read in the alarms. */
const freshAccount = () => recordedAccount((name) => `arn:policy/${name}`);

const model = { image: 'img:1', modelDataUrl: 's3://b-1/sealed/models/m.tar.gz', roleArn: 'arn:aws:iam::111122223333:role/sealed-endpoint' };
const success = 'arn:aws:sns:us-east-1:111122223333:sealed-async-success';
const error = 'arn:aws:sns:us-east-1:111122223333:sealed-async-error';

t.test('async endpoint config: success and error topics, never the response in the message', async (t) => {
  const { clients, calls } = freshAccount();
  await deployEndpoint(clients, {
    endpointName: 'sealed',
    stamp: 's',
    model,
    config: {
      async: {
        outputPath: 's3://b-1/sealed/async-out',
        failurePath: 's3://b-1/sealed/async-failed',
        notifications: { successTopic: success, errorTopic: error },
      },
    },
    scaling: { min: 0, max: 3, target: 5 },
    wait: noWait,
  });
  const cfg = calls.find((c) => c.command === 'CreateEndpointConfig')!.input as { AsyncInferenceConfig: { OutputConfig: Record<string, unknown> } };
  t.same(cfg.AsyncInferenceConfig.OutputConfig, {
    S3OutputPath: 's3://b-1/sealed/async-out',
    S3FailurePath: 's3://b-1/sealed/async-failed',
    NotificationConfig: { SuccessTopic: success, ErrorTopic: error },
  });
  t.same(
    endpointConfigRequest({ name: 'c', modelName: 'm', async: { outputPath: 's3://b/o', failurePath: 's3://b/f', notifications: { errorTopic: error } } })
      .AsyncInferenceConfig?.OutputConfig?.NotificationConfig,
    { ErrorTopic: error },
    'one topic alone',
  );
  t.throws(
    () =>
      endpointConfigRequest({
        name: 'c',
        modelName: 'm',
        async: { outputPath: 's3://b/o', failurePath: 's3://b/f', notifications: { successTopic: 'sealed-async-success' } },
      }),
    { message: /--success-topic sealed-async-success is not an SNS topic ARN/ },
  );
});

t.test('async scaling: on the backlog per instance, down to zero, and back from zero by the HasBacklogWithoutCapacity alarm', async (t) => {
  const { clients, calls } = freshAccount();
  await deployEndpoint(clients, {
    endpointName: 'sealed',
    stamp: 's',
    model,
    config: { async: { outputPath: 's3://b-1/o', failurePath: 's3://b-1/f' } },
    scaling: { min: 0, max: 3, target: 5 },
    wait: noWait,
  });
  const scaling = calls.filter((c) => c.service !== 'sagemaker');
  t.same(
    scaling.map((c) => c.command),
    ['RegisterScalableTarget', 'PutScalingPolicy', 'PutScalingPolicy', 'PutMetricAlarm'],
  );
  t.equal(scaling[0].input.MinCapacity, 0, 'scale in to zero');
  t.match(scaling[1].input, {
    PolicyType: 'TargetTrackingScaling',
    TargetTrackingScalingPolicyConfiguration: {
      CustomizedMetricSpecification: { MetricName: 'ApproximateBacklogSizePerInstance', Namespace: 'AWS/SageMaker' },
    },
  });
  t.match(scaling[2].input, {
    PolicyType: 'StepScaling',
    StepScalingPolicyConfiguration: { StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }] },
  });
  t.match(scaling[3].input, { MetricName: 'HasBacklogWithoutCapacity', AlarmActions: ['arn:policy/sealed-scale-from-zero'] });
});

t.test('IAM: the endpoint role may publish to the deployment topics only', async (t) => {
  const st = policies(EXAMPLE_NAMES)['endpoint-role'].Statement.find((s) => s.Sid === 'PublishAsyncNotifications');
  t.same(st, { Sid: 'PublishAsyncNotifications', Effect: 'Allow', Action: 'sns:Publish', Resource: 'arn:aws:sns:us-east-1:111122223333:sealed-*' });
});

t.test('CLI: --success-topic/--error-topic go into the config; refused without --async', async (t) => {
  const base = dryRun('deploy', 'us-east-1');
  const cfg = (await deployRequests([...base, '--async', '--success-topic', success, '--error-topic', error])).find(
    (c) => c.command === 'CreateEndpointConfig',
  )!;
  t.match(cfg.input, { AsyncInferenceConfig: { OutputConfig: { NotificationConfig: { SuccessTopic: success, ErrorTopic: error } } } });
  const bad = await deployRefusal([...base, '--success-topic', success]);
  t.match(bad.stderr, /are for asynchronous endpoints[\s\S]*what to do: add --async/);
});
