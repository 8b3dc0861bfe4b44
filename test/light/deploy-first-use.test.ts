// Issue #17, "correct on first real use": what the deployment would have got wrong on AWS, read
// against SageMaker's, Application Auto Scaling's and IAM's documentation. Each test drives the
// real SDK clients cut at the first middleware step (test/helpers/aws-recording.ts) or checks the
// generated IAM documents the way IAM evaluates them.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { deployEndpoint } from '../../src/sagemaker/deploy.ts';
import { EXAMPLE_NAMES, policies, type PolicyDocument } from '../../src/sagemaker/iam.ts';
import { freshAccount, noWait, recording } from '../helpers/aws-recording.ts';

const model = { image: 'img:1', modelDataUrl: 's3://b-1/sealed/models/m/output/model.tar.gz', roleArn: 'arn:aws:iam::111122223333:role/sealed-endpoint' };

/** An endpoint running `sealed-old`; UpdateEndpoint moves it to the new config unless `rollback`. */
function existingEndpoint(rollback?: string) {
  let running = 'sealed-old';
  let updating = false;
  return recording((c) => {
    if (c.command === 'UpdateEndpoint') {
      updating = true;
      if (!rollback) running = String(c.input.EndpointConfigName);
      return {};
    }
    if (c.command === 'DescribeEndpoint') {
      if (updating) {
        updating = false;
        return { EndpointStatus: 'Updating', EndpointConfigName: 'sealed-old' };
      }
      return { EndpointStatus: 'InService', EndpointConfigName: running, ...(rollback ? { FailureReason: rollback } : {}) };
    }
    return {};
  });
}

// ---------------------------------------------------------------- IAM, evaluated as IAM does

/** IAM's wildcard match of an ARN against a Resource pattern (`*` any run, `?` one character). */
const arnMatches = (pattern: string, arn: string) =>
  new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  ).test(arn);
const list = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
/** Whether an Allow statement (ignoring conditions) grants `action` on `arn`, and no Deny without conditions refuses it. */
function allows(doc: PolicyDocument, action: string, arn: string): boolean {
  const hits = (effect: 'Allow' | 'Deny') =>
    doc.Statement.some(
      (s) =>
        s.Effect === effect &&
        (effect === 'Allow' || !s.Condition) &&
        list(s.Action).some((a) => arnMatches(a, action)) &&
        list(s.Resource).some((r) => arnMatches(r, arn)),
    );
  return hits('Allow') && !hits('Deny');
}

t.test('owner policy: the alarms target tracking creates (and deletes on deregistration) are allowed', async (t) => {
  const owner = policies(EXAMPLE_NAMES).owner;
  const alarm = (name: string) => `arn:aws:cloudwatch:us-east-1:111122223333:alarm:${name}`;
  // Application Auto Scaling names them TargetTracking-<ResourceId>-AlarmHigh|AlarmLow-<uuid>.
  for (const suffix of ['AlarmHigh', 'AlarmLow']) {
    const a = alarm(`TargetTracking-endpoint/sealed/variant/AllTraffic-${suffix}-6a3f1b2c-0d4e-4f5a-8b9c-0123456789ab`);
    for (const action of ['cloudwatch:PutMetricAlarm', 'cloudwatch:DeleteAlarms', 'cloudwatch:DescribeAlarms'])
      t.ok(allows(owner, action, a), `${action} on the ${suffix} alarm of target tracking`);
  }
  t.ok(allows(owner, 'cloudwatch:PutMetricAlarm', alarm('sealed-has-backlog-without-capacity')), 'and on the scale-from-zero alarm');
  t.notOk(
    allows(owner, 'cloudwatch:PutMetricAlarm', alarm('TargetTracking-endpoint/other/variant/AllTraffic-AlarmHigh-x')),
    "not on another endpoint's alarms",
  );
  t.notOk(allows(owner, 'cloudwatch:PutMetricAlarm', alarm('TargetTracking-table/sealed-AlarmHigh-x')), 'nor on alarms of other scalable resources');
});

t.test('endpoint role may abort the multipart uploads it starts; the trust policy names the account and its SageMaker resources', async (t) => {
  const d = policies(EXAMPLE_NAMES);
  const results = 'arn:aws:s3:::example-sealed-bucket/sealed/tenants/acme/results/r.result';
  t.ok(allows(d['endpoint-role'], 's3:AbortMultipartUpload', results), 'endpoint role: AbortMultipartUpload on results');
  t.ok(allows(d['endpoint-role'], 's3:PutObject', results), 'and PutObject, as before');
  t.notOk(allows(d['endpoint-role'], 's3:AbortMultipartUpload', 'arn:aws:s3:::example-sealed-bucket/sealed/data/x'), 'but not outside what it writes');
  const trust = d['sagemaker-trust'].Statement;
  t.equal(trust.length, 1);
  t.same(
    trust[0].Condition,
    { StringEquals: { 'aws:SourceAccount': '111122223333' }, ArnLike: { 'aws:SourceArn': 'arn:aws:sagemaker:us-east-1:111122223333:*' } },
    'confused-deputy guard',
  );
});

// ---------------------------------------------------------------- UpdateEndpoint

t.test('--update keeps the instance count autoscaling reached (RetainAllVariantProperties)', async (t) => {
  const keep = existingEndpoint();
  await deployEndpoint(keep.clients, { endpointName: 'sealed', stamp: 'v2', update: true, model, config: {}, wait: noWait });
  const update = keep.calls.find((c) => c.command === 'UpdateEndpoint')!;
  t.equal(update.input.RetainAllVariantProperties, true, 'retains the variant properties');
  t.equal(update.input.ExcludeRetainedVariantProperties, undefined, 'including DesiredInstanceCount');
  const reset = existingEndpoint();
  await deployEndpoint(reset.clients, { endpointName: 'sealed', stamp: 'v2', update: true, model, config: { instanceCount: 3 }, wait: noWait });
  t.same(
    reset.calls.find((c) => c.command === 'UpdateEndpoint')!.input,
    {
      EndpointName: 'sealed',
      EndpointConfigName: 'sealed-v2',
      RetainAllVariantProperties: true,
      ExcludeRetainedVariantProperties: [{ VariantPropertyType: 'DesiredInstanceCount' }],
    },
    'an explicit --instance-count takes the new config count',
  );
});

t.test('--update that SageMaker rolled back is a failure naming the reason, not InService', async (t) => {
  const ok = existingEndpoint();
  await deployEndpoint(ok.clients, { endpointName: 'sealed', stamp: 'v2', update: true, model, config: {}, wait: noWait });
  t.same(ok.calls.filter((c) => c.command === 'DescribeEndpoint').length, 3, 'waited through Updating');
  const rolled = existingEndpoint('The primary container for production variant AllTraffic did not pass the ping health check.');
  await t.rejects(deployEndpoint(rolled.clients, { endpointName: 'sealed', stamp: 'v2', update: true, model, config: {}, wait: noWait }), {
    message:
      /update of endpoint sealed failed and was rolled back: it still runs config sealed-old, not sealed-v2: The primary container .* did not pass the ping health check/,
    hint: /old model.*CloudWatch Logs/,
  });
});

// ---------------------------------------------------------------- deadline from the endpoint type

t.test('the server deadline follows the endpoint type (SEALED_DEADLINE_MS, which sealed serve reads)', async (t) => {
  const env = async (config: Parameters<typeof deployEndpoint>[1]['config'], environment?: Record<string, string>) => {
    const r = freshAccount();
    await deployEndpoint(r.clients, { endpointName: 'sealed', stamp: 's', model: { ...model, environment }, config, wait: noWait });
    return (r.calls.find((c) => c.command === 'CreateModel')!.input.PrimaryContainer as { Environment: Record<string, string> }).Environment;
  };
  const asyncCfg = { async: { outputPath: 's3://b-1/sealed/async-out', failurePath: 's3://b-1/sealed/async-failed' } };
  t.equal((await env(asyncCfg)).SEALED_DEADLINE_MS, '3590000', 'async: InvokeEndpointAsync allows up to 3,600 s');
  t.equal((await env({})).SEALED_DEADLINE_MS, '55000', 'real-time: SageMaker waits 60 s');
  t.equal((await env(asyncCfg, { SEALED_DEADLINE_MS: '600000' })).SEALED_DEADLINE_MS, '600000', "the owner's own value wins");
  // The name is the one the server reads: renaming one side without the other fails here.
  t.match(
    readFileSync(new URL('../../src/cli/serve.ts', import.meta.url), 'utf8'),
    /envNumber\('SEALED_DEADLINE_MS'\)/,
    'sealed serve reads SEALED_DEADLINE_MS',
  );
});
