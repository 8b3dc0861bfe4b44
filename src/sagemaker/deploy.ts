// Deployment on Amazon SageMaker with the AWS SDK: a training job (training.ts), then model +
// endpoint config + endpoint, real-time or asynchronous (endpoint.ts), and Application Auto
// Scaling for its variant (autoscaling.ts); and the way back (deleteAll). Each request is built by
// a pure function (`*Request`) so that `--dry-run` (dry-run.ts) and the unit tests see exactly
// what would be sent; the senders only add the SDK call, waiting (wait.ts) and errors that say
// what to do next (aws.ts). This module composes them and re-exports them for the callers.
import { DeleteEndpointCommand, DeleteEndpointConfigCommand, DeleteModelCommand, DescribeEndpointConfigCommand } from '@aws-sdk/client-sagemaker';
import { DeregisterScalableTargetCommand } from '@aws-sdk/client-application-auto-scaling';
import { DeleteAlarmsCommand } from '@aws-sdk/client-cloudwatch';
import { SealedError } from '../errors.ts';
import { awsError, isNotFound, send, timestamp, type Clients } from './aws.ts';
import { registerAutoScaling, resourceId, scaleFromZeroAlarmName, scalingRequests, type ScalingOptions } from './autoscaling.ts';
import {
  createEndpoint,
  createEndpointConfig,
  createModel,
  deadlineEnvironment,
  endpointStatus,
  updateEndpoint,
  waitForEndpoint,
  type EndpointConfigOptions,
  type ModelOptions,
} from './endpoint.ts';
import type { Waiting } from './wait.ts';

export * from './aws.ts';
export * from './autoscaling.ts';
export * from './dry-run.ts';
export * from './endpoint.ts';
export * from './training.ts';
export type { Waiting } from './wait.ts';

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

/** Model, endpoint config, CreateEndpoint (or UpdateEndpoint), wait until InService, autoscaling. */
export async function deployEndpoint(c: Clients, o: DeployOptions): Promise<{ modelName: string; configName: string }> {
  const log = o.log ?? (() => {});
  const name = o.endpointName;
  // Checked first so that a refused deployment leaves no orphaned model or config behind.
  const scaling = o.scaling && { ...o.scaling, endpointName: name, variant: o.config.variant, async: !!o.config.async };
  if (scaling) scalingRequests(scaling);
  const existing = await endpointStatus(c, name);
  if (existing && !o.update)
    throw new SealedError(
      'bad-request',
      `endpoint ${name} already exists (${existing.status})`,
      `to deploy a new model or configuration to it add --update (UpdateEndpoint), or delete it first: npm run deploy -- delete --name ${name}`,
    );
  if (!existing && o.update)
    throw new SealedError('not-found', `endpoint ${name} does not exist, so it cannot be updated`, 'deploy without --update to create it (and check --region)');
  const stamp = o.stamp ?? timestamp();
  const modelName = `${name}-${stamp}`;
  const configName = `${name}-${stamp}`;
  // The deadline follows the endpoint type unless the caller set one.
  await createModel(c, { ...o.model, name: modelName, environment: { ...deadlineEnvironment(!!o.config.async), ...o.model.environment } });
  log(`created model ${modelName}`);
  await createEndpointConfig(c, { ...o.config, name: configName, modelName });
  log(`created endpoint config ${configName}`);
  // An update keeps the instance count autoscaling has reached, unless the owner gave one.
  if (existing) await updateEndpoint(c, name, configName, o.config.instanceCount !== undefined);
  else await createEndpoint(c, name, configName);
  log(`${existing ? 'updating' : 'creating'} endpoint ${name}; waiting until it is InService (several minutes)`);
  await waitForEndpoint(c, name, { onStatus: (s) => log(`endpoint ${name}: ${s}`), ...o.wait }, existing ? configName : undefined);
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
  const id = {
    ServiceNamespace: 'sagemaker' as const,
    ResourceId: resourceId(name, o.variant),
    ScalableDimension: 'sagemaker:variant:DesiredInstanceCount' as const,
  };
  // Deregistering also deletes the target's scaling policies; the alarm of the step policy is ours.
  await tolerant(`scalable target ${id.ResourceId}`, () => c.autoscaling.send(new DeregisterScalableTargetCommand(id)));
  await tolerant(`alarm ${scaleFromZeroAlarmName(name)}`, () => c.cloudwatch.send(new DeleteAlarmsCommand({ AlarmNames: [scaleFromZeroAlarmName(name)] })));
  const ep = await endpointStatus(c, name);
  if (!ep) {
    if (!deleted.length)
      throw new SealedError('not-found', `there is no endpoint ${name} to delete`, 'check --name and --region (aws sagemaker list-endpoints)');
    return deleted;
  }
  let models: string[] = [];
  if (ep.configName) {
    const cfg = await send(`describe endpoint config ${ep.configName}`, () =>
      c.sagemaker.send(new DescribeEndpointConfigCommand({ EndpointConfigName: ep.configName })),
    ).catch(() => undefined);
    models = (cfg?.ProductionVariants ?? []).map((v) => v.ModelName).filter((m): m is string => !!m);
  }
  await tolerant(`endpoint ${name}`, () => c.sagemaker.send(new DeleteEndpointCommand({ EndpointName: name })));
  if (ep.configName)
    await tolerant(`endpoint config ${ep.configName}`, () => c.sagemaker.send(new DeleteEndpointConfigCommand({ EndpointConfigName: ep.configName })));
  for (const m of models) await tolerant(`model ${m}`, () => c.sagemaker.send(new DeleteModelCommand({ ModelName: m })));
  return deleted;
}
