// Application Auto Scaling for an endpoint's variant: target tracking on invocations per instance
// (real-time) or on the queue's backlog per instance (async, which may scale to zero and back).
import {
  PutScalingPolicyCommand,
  RegisterScalableTargetCommand,
  type PutScalingPolicyCommandInput,
  type RegisterScalableTargetCommandInput,
} from '@aws-sdk/client-application-auto-scaling';
import { PutMetricAlarmCommand, type PutMetricAlarmCommandInput } from '@aws-sdk/client-cloudwatch';
import { SealedError } from '../errors.ts';
import { DEFAULTS, send, type Clients } from './aws.ts';

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
    throw new SealedError(
      'bad-request',
      `autoscaling min ${o.min} / max ${o.max} is not valid for a ${o.async ? 'asynchronous' : 'real-time'} endpoint`,
      `give whole numbers with ${o.async ? '0' : '1'} <= --min <= --max and --max >= 1 (only asynchronous endpoints scale to zero)`,
    );
  }
  if (!(o.target > 0))
    throw new SealedError(
      'bad-request',
      `autoscaling target ${o.target} must be a positive number`,
      'give --target, e.g. 70 invocations per instance per minute (real-time) or 5 queued requests per instance (async)',
    );
  const id = {
    ServiceNamespace: 'sagemaker' as const,
    ResourceId: resourceId(o.endpointName, o.variant),
    ScalableDimension: 'sagemaker:variant:DesiredInstanceCount' as const,
  };
  const dimensions = [{ Name: 'EndpointName', Value: o.endpointName }];
  const tracking: PutScalingPolicyCommandInput = {
    ...id,
    PolicyName: `${o.endpointName}-${o.async ? 'backlog-per-instance' : 'invocations-per-instance'}`,
    PolicyType: 'TargetTrackingScaling',
    TargetTrackingScalingPolicyConfiguration: {
      TargetValue: o.target,
      ...(o.async
        ? {
            CustomizedMetricSpecification: {
              MetricName: 'ApproximateBacklogSizePerInstance',
              Namespace: 'AWS/SageMaker',
              Dimensions: dimensions,
              Statistic: 'Average',
            },
          }
        : { PredefinedMetricSpecification: { PredefinedMetricType: 'SageMakerVariantInvocationsPerInstance' } }),
      ScaleInCooldown: 300,
      ScaleOutCooldown: 60,
    },
  };
  const r: ScalingRequests = { target: { ...id, MinCapacity: o.min, MaxCapacity: o.max }, tracking };
  if (o.async && o.min === 0) {
    // Without it a scaled-to-zero endpoint waits until the backlog exceeds the tracking target.
    r.fromZero = {
      policy: {
        ...id,
        PolicyName: `${o.endpointName}-scale-from-zero`,
        PolicyType: 'StepScaling',
        StepScalingPolicyConfiguration: {
          AdjustmentType: 'ChangeInCapacity',
          MetricAggregationType: 'Average',
          Cooldown: 300,
          StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }],
        },
      },
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
    if (!p.PolicyARN)
      throw new SealedError('internal', `PutScalingPolicy returned no PolicyARN for ${r.fromZero.policy.PolicyName}`, 'run deploy again with --update');
    const alarm = r.fromZero.alarm(p.PolicyARN);
    await send(`put alarm ${alarm.AlarmName}`, () => c.cloudwatch.send(new PutMetricAlarmCommand(alarm)), hint);
  }
}
