// The SageMaker deployment, checked by its requests: real SDK clients whose middleware stack is
// cut at its first step (nothing leaves the machine; no AWS is reachable here), so each test sees
// the command name and input exactly as client.send received them, in order (test/helpers/aws-recording.ts).
import { readFileSync } from 'node:fs';
import t from 'tap';
import { SageMakerServiceException } from '@aws-sdk/client-sagemaker';
import { deleteAll, deployEndpoint, launchTrainingJob, metricDefinitions, waitForTrainingJob } from '../../src/sagemaker/deploy.ts';
import { EXAMPLE_NAMES, policies, serverEnvironment, tenantPrefix, type PolicyDocument } from '../../src/sagemaker/iam.ts';
import { deployRefusal, deployRequests, dryRun, freshAccount, noWait, notFound, recording } from '../helpers/aws-recording.ts';

const model = {
  image: '111122223333.dkr.ecr.us-east-1.amazonaws.com/sealed-inference:1',
  modelDataUrl: 's3://b-1/sealed/models/sealed-train-1/output/model.tar.gz',
  roleArn: 'arn:aws:iam::111122223333:role/sealed-endpoint',
  environment: { SEALED_ALLOW_READ: 's3://b-1/sealed/queries/,s3://b-1/sealed/keys/', SEALED_ALLOW_WRITE: 's3://b-1/sealed/results/' },
};

t.test('training job request: channels, string hyperparameters, metric definitions, output, limits', async (t) => {
  const { clients, calls } = recording((c) =>
    c.command === 'DescribeTrainingJob'
      ? {
          TrainingJobStatus: calls.length < 3 ? 'InProgress' : 'Completed',
          ModelArtifacts: { S3ModelArtifacts: 's3://b-1/sealed/models/sealed-train-1/output/model.tar.gz' },
        }
      : { TrainingJobArn: 'arn:job' },
  );
  await launchTrainingJob(clients, {
    jobName: 'sealed-train-1',
    image: 'img:1',
    roleArn: 'arn:aws:iam::111122223333:role/sealed-training',
    train: 's3://b-1/sealed/data/train/',
    test: 's3://b-1/sealed/data/test/',
    outputPath: 's3://b-1/sealed/models/',
    hyperparameters: { task: 'binary', epochs: 300, learning_rate: 0.02 },
  });
  const ch = (name: string, uri: string) => ({
    ChannelName: name,
    ContentType: 'text/csv',
    InputMode: 'File',
    DataSource: { S3DataSource: { S3DataType: 'S3Prefix', S3Uri: uri, S3DataDistributionType: 'FullyReplicated' } },
  });
  t.same(calls[0], {
    service: 'sagemaker',
    command: 'CreateTrainingJob',
    input: {
      TrainingJobName: 'sealed-train-1',
      RoleArn: 'arn:aws:iam::111122223333:role/sealed-training',
      AlgorithmSpecification: { TrainingImage: 'img:1', TrainingInputMode: 'File', MetricDefinitions: metricDefinitions() },
      HyperParameters: { task: 'binary', epochs: '300', learning_rate: '0.02' },
      InputDataConfig: [ch('train', 's3://b-1/sealed/data/train/'), ch('test', 's3://b-1/sealed/data/test/')],
      OutputDataConfig: { S3OutputPath: 's3://b-1/sealed/models/' },
      ResourceConfig: { InstanceType: 'ml.m5.xlarge', InstanceCount: 1, VolumeSizeInGB: 10 },
      StoppingCondition: { MaxRuntimeInSeconds: 3600 },
    },
  });
  t.equal(await waitForTrainingJob(clients, 'sealed-train-1', noWait), 's3://b-1/sealed/models/sealed-train-1/output/model.tar.gz');
  t.same(
    calls.slice(1).map((c) => c.command),
    ['DescribeTrainingJob', 'DescribeTrainingJob'],
    'polls until Completed',
  );
});

t.test('metric definitions match the log lines sealed train writes', async (t) => {
  const defs = metricDefinitions();
  const acc = defs.find((d) => d.Name === 'test_accuracy')!;
  t.same(new RegExp(acc.Regex).exec('INFO [metric] test_accuracy=0.9649')?.[1], '0.9649');
  t.equal(new RegExp(acc.Regex).exec('[metric] test_accuracy_simulated=0.5'), null, 'does not catch the simulated variant');
  t.same(new RegExp(defs.find((d) => d.Name === 'train_loss')!.Regex).exec('[metric] train_loss=1.5e-3')?.[1], '1.5e-3');
});

t.test('a failed training job says why and where to look', async (t) => {
  const { clients } = recording(() => ({ TrainingJobStatus: 'Failed', FailureReason: 'AlgorithmError: column 3 is not a number' }));
  await t.rejects(waitForTrainingJob(clients, 'sealed-train-2', noWait), {
    message: /ended Failed: AlgorithmError: column 3 is not a number/,
    hint: /CloudWatch Logs/,
  });
});

t.test('real-time deployment: order of calls, names, variant, autoscaling on invocations per instance', async (t) => {
  const { clients, calls } = freshAccount();
  const r = await deployEndpoint(clients, {
    endpointName: 'sealed',
    stamp: '20260101000000',
    model,
    config: {},
    scaling: { min: 1, max: 4, target: 70 },
    wait: noWait,
  });
  t.same(r, { modelName: 'sealed-20260101000000', configName: 'sealed-20260101000000' });
  t.same(
    calls.map((c) => `${c.service}:${c.command}`),
    [
      'sagemaker:DescribeEndpoint',
      'sagemaker:CreateModel',
      'sagemaker:CreateEndpointConfig',
      'sagemaker:CreateEndpoint',
      'sagemaker:DescribeEndpoint',
      'autoscaling:RegisterScalableTarget',
      'autoscaling:PutScalingPolicy',
    ],
  );
  t.same(calls[1].input, {
    ModelName: 'sealed-20260101000000',
    ExecutionRoleArn: model.roleArn,
    PrimaryContainer: { Image: model.image, ModelDataUrl: model.modelDataUrl, Environment: { ...model.environment, SEALED_DEADLINE_MS: '55000' } },
  });
  t.same(calls[2].input, {
    EndpointConfigName: 'sealed-20260101000000',
    ProductionVariants: [{ VariantName: 'AllTraffic', ModelName: 'sealed-20260101000000', InstanceType: 'ml.c6i.xlarge', InitialInstanceCount: 1 }],
  });
  t.same(calls[3].input, { EndpointName: 'sealed', EndpointConfigName: 'sealed-20260101000000' });
  const id = { ServiceNamespace: 'sagemaker', ResourceId: 'endpoint/sealed/variant/AllTraffic', ScalableDimension: 'sagemaker:variant:DesiredInstanceCount' };
  t.same(calls[5].input, { ...id, MinCapacity: 1, MaxCapacity: 4 });
  t.same(calls[6].input, {
    ...id,
    PolicyName: 'sealed-invocations-per-instance',
    PolicyType: 'TargetTrackingScaling',
    TargetTrackingScalingPolicyConfiguration: {
      TargetValue: 70,
      PredefinedMetricSpecification: { PredefinedMetricType: 'SageMakerVariantInvocationsPerInstance' },
      ScaleInCooldown: 300,
      ScaleOutCooldown: 60,
    },
  });
});

t.test('async deployment: AsyncInferenceConfig, backlog tracking, scale from zero by step policy and alarm', async (t) => {
  const { clients, calls } = freshAccount();
  await deployEndpoint(clients, {
    endpointName: 'sealed',
    stamp: 's',
    model,
    config: {
      instanceType: 'ml.m5.xlarge',
      async: { outputPath: 's3://b-1/sealed/async-out', failurePath: 's3://b-1/sealed/async-failed', maxConcurrentInvocationsPerInstance: 2 },
    },
    scaling: { min: 0, max: 3, target: 5 },
    wait: noWait,
  });
  t.same(calls.find((c) => c.command === 'CreateEndpointConfig')!.input, {
    EndpointConfigName: 'sealed-s',
    ProductionVariants: [{ VariantName: 'AllTraffic', ModelName: 'sealed-s', InstanceType: 'ml.m5.xlarge', InitialInstanceCount: 1 }],
    AsyncInferenceConfig: {
      ClientConfig: { MaxConcurrentInvocationsPerInstance: 2 },
      OutputConfig: { S3OutputPath: 's3://b-1/sealed/async-out', S3FailurePath: 's3://b-1/sealed/async-failed' },
    },
  });
  const scaling = calls.slice(5);
  t.same(
    scaling.map((c) => c.command),
    ['RegisterScalableTarget', 'PutScalingPolicy', 'PutScalingPolicy', 'PutMetricAlarm'],
  );
  t.match(scaling[0].input, { ResourceId: 'endpoint/sealed/variant/AllTraffic', MinCapacity: 0, MaxCapacity: 3 });
  const dims = [{ Name: 'EndpointName', Value: 'sealed' }];
  t.same(scaling[1].input.TargetTrackingScalingPolicyConfiguration, {
    TargetValue: 5,
    CustomizedMetricSpecification: { MetricName: 'ApproximateBacklogSizePerInstance', Namespace: 'AWS/SageMaker', Dimensions: dims, Statistic: 'Average' },
    ScaleInCooldown: 300,
    ScaleOutCooldown: 60,
  });
  t.match(scaling[2].input, {
    PolicyName: 'sealed-scale-from-zero',
    PolicyType: 'StepScaling',
    StepScalingPolicyConfiguration: {
      AdjustmentType: 'ChangeInCapacity',
      MetricAggregationType: 'Average',
      Cooldown: 300,
      StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }],
    },
  });
  t.same(scaling[3].input, {
    AlarmName: 'sealed-has-backlog-without-capacity',
    MetricName: 'HasBacklogWithoutCapacity',
    Namespace: 'AWS/SageMaker',
    Statistic: 'Average',
    Dimensions: dims,
    Period: 60,
    EvaluationPeriods: 2,
    DatapointsToAlarm: 2,
    Threshold: 1,
    ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    TreatMissingData: 'missing',
    AlarmActions: ['arn:aws:autoscaling:us-east-1:111122223333:scalingPolicy:x:resource/sagemaker/sealed-scale-from-zero'],
  });
});

t.test('an existing endpoint: refused before anything is created, with advice to use --update', async (t) => {
  const { clients, calls } = recording(() => ({ EndpointStatus: 'InService', EndpointConfigName: 'sealed-old' }));
  await t.rejects(deployEndpoint(clients, { endpointName: 'sealed', model, config: {}, wait: noWait }), {
    message: 'endpoint sealed already exists (InService)',
    hint: /--update/,
  });
  t.same(
    calls.map((c) => c.command),
    ['DescribeEndpoint'],
  );
  // With --update: a new model and config, then UpdateEndpoint instead of CreateEndpoint.
  let running = 'sealed-old';
  const u = recording((c) => {
    if (c.command === 'UpdateEndpoint') running = String(c.input.EndpointConfigName);
    return { EndpointStatus: 'InService', EndpointConfigName: running };
  });
  await deployEndpoint(u.clients, { endpointName: 'sealed', stamp: 'new', update: true, model, config: {}, wait: noWait });
  t.same(
    u.calls.map((c) => c.command),
    ['DescribeEndpoint', 'CreateModel', 'CreateEndpointConfig', 'UpdateEndpoint', 'DescribeEndpoint'],
  );
  // RetainAllVariantProperties: the instance count autoscaling reached is kept (issue #17).
  t.same(u.calls[3].input, { EndpointName: 'sealed', EndpointConfigName: 'sealed-new', RetainAllVariantProperties: true });
});

t.test('CreateEndpoint racing another deployment: the service error becomes the same advice', async (t) => {
  const { clients } = recording((c) => {
    if (c.command === 'DescribeEndpoint') throw notFound('endpoint "sealed"');
    if (c.command === 'CreateEndpoint')
      throw new SageMakerServiceException({
        name: 'ValidationException',
        $fault: 'client',
        $metadata: {},
        message: 'Cannot create already existing endpoint "arn:aws:sagemaker:us-east-1:111122223333:endpoint/sealed".',
      });
    return {};
  });
  await t.rejects(deployEndpoint(clients, { endpointName: 'sealed', model, config: {}, wait: noWait }), {
    message: 'endpoint sealed already exists',
    hint: /--update/,
  });
});

t.test('errors say what to do next', async (t) => {
  const denied = recording(() => {
    throw new SageMakerServiceException({
      name: 'AccessDeniedException',
      $fault: 'client',
      $metadata: {},
      message: 'User is not authorized to perform: sagemaker:CreateTrainingJob',
    });
  });
  await t.rejects(launchTrainingJob(denied.clients, { jobName: 'j', image: 'i', roleArn: 'r', train: 's3://b-1/x/', outputPath: 's3://b-1/y/' }), {
    code: 'forbidden',
    hint: /npm run deploy -- policies/,
  });
  const none = recording((c) => {
    if (c.command === 'DescribeEndpoint') throw notFound('endpoint "sealed"');
    return {};
  });
  await t.rejects(deployEndpoint(none.clients, { endpointName: 'sealed', update: true, model, config: {}, wait: noWait }), {
    code: 'not-found',
    hint: /without --update/,
  });
  await t.rejects(deployEndpoint(none.clients, { endpointName: 'sealed', model, config: {}, scaling: { min: 0, max: 2, target: 70 }, wait: noWait }), {
    message: /not valid for a real-time endpoint/,
    hint: /only asynchronous endpoints scale to zero/,
  });
  let first = true;
  const f = recording((c) => {
    if (c.command === 'DescribeEndpoint' && first) {
      first = false;
      throw notFound('endpoint');
    }
    return c.command === 'DescribeEndpoint' ? { EndpointStatus: 'Failed', FailureReason: 'The primary container did not pass the ping health check.' } : {};
  });
  await t.rejects(deployEndpoint(f.clients, { endpointName: 'sealed', model, config: {}, wait: noWait }), {
    message: /is Failed: The primary container did not pass the ping health check/,
    hint: /CloudWatch Logs/,
  });
});

t.test('deleteAll: autoscaling first, then endpoint, config, models; a missing endpoint is a clear error', async (t) => {
  const { clients, calls } = recording((c) =>
    c.command === 'DescribeEndpoint'
      ? { EndpointStatus: 'InService', EndpointConfigName: 'sealed-s' }
      : c.command === 'DescribeEndpointConfig'
        ? { ProductionVariants: [{ ModelName: 'sealed-s' }] }
        : {},
  );
  const deleted = await deleteAll(clients, { endpointName: 'sealed' });
  t.same(
    calls.map((c) => `${c.command} ${JSON.stringify(c.input)}`),
    [
      'DeregisterScalableTarget {"ServiceNamespace":"sagemaker","ResourceId":"endpoint/sealed/variant/AllTraffic","ScalableDimension":"sagemaker:variant:DesiredInstanceCount"}',
      'DeleteAlarms {"AlarmNames":["sealed-has-backlog-without-capacity"]}',
      'DescribeEndpoint {"EndpointName":"sealed"}',
      'DescribeEndpointConfig {"EndpointConfigName":"sealed-s"}',
      'DeleteEndpoint {"EndpointName":"sealed"}',
      'DeleteEndpointConfig {"EndpointConfigName":"sealed-s"}',
      'DeleteModel {"ModelName":"sealed-s"}',
    ],
  );
  t.equal(deleted.length, 5);
  const gone = recording((c) => {
    if (c.command === 'DeregisterScalableTarget') throw Object.assign(new Error('No scalable target registered'), { name: 'ObjectNotFoundException' });
    if (c.command === 'DeleteAlarms') throw Object.assign(new Error('alarm not found'), { name: 'ResourceNotFound' });
    if (c.command === 'DescribeEndpoint') throw notFound('endpoint "sealed"');
    return {};
  });
  await t.rejects(deleteAll(gone.clients, { endpointName: 'sealed' }), { code: 'not-found', hint: /--name and --region/ });
});

// ---------------------------------------------------------------- IAM

const docs = policies({ ...EXAMPLE_NAMES, bucket: 'b-1', prefix: 'team/sealed/' });
const statements = (d: PolicyDocument) => d.Statement;
const asList = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

t.test('IAM: every S3 grant is under the deployment prefix; TLS-only and SSE required on each S3 policy', async (t) => {
  for (const name of ['owner', 'training-role', 'endpoint-role', 'client'] as const) {
    const s = statements(docs[name]);
    for (const st of s.filter((x) => x.Effect === 'Allow' && asList(x.Action).some((a) => a.startsWith('s3:')))) {
      t.notOk(asList(st.Action).includes('s3:*'), `${name}/${st.Sid}: no wildcard action`);
      for (const r of asList(st.Resource)) {
        if (r === 'arn:aws:s3:::b-1') {
          t.equal(st.Action, 's3:ListBucket', `${name}/${st.Sid}: only ListBucket on the bucket`);
          for (const p of asList(st.Condition!.StringLike['s3:prefix']))
            t.ok(p.startsWith('team/sealed/') && p.endsWith('/*'), `${name}/${st.Sid}: list ${p} under the prefix`);
        } else
          t.match(
            r,
            /^arn:aws:s3:::b-1\/team\/sealed\/([a-z-]+|tenants\/(\*|\$\{aws:PrincipalTag\/sealed-tenant\})\/[a-z-]+)\/\*$/,
            `${name}/${st.Sid}: ${r} under the prefix`,
          );
      }
    }
    t.same(
      s.find((x) => x.Sid === 'DenyInsecureTransport'),
      {
        Sid: 'DenyInsecureTransport',
        Effect: 'Deny',
        Action: 's3:*',
        Resource: ['arn:aws:s3:::b-1', 'arn:aws:s3:::b-1/*'],
        Condition: { Bool: { 'aws:SecureTransport': 'false' } },
      },
      `${name}: TLS only`,
    );
    t.same(
      s.find((x) => x.Sid === 'DenyPutWithoutServerSideEncryption')?.Condition,
      { StringNotEquals: { 's3:x-amz-server-side-encryption': ['AES256', 'aws:kms'] } },
      `${name}: SSE required`,
    );
  }
});

t.test('IAM: each role gets what its job needs and nothing of the others', async (t) => {
  const actions = (name: keyof typeof docs, sid: string) => asList(statements(docs[name]).find((s) => s.Sid === sid)?.Resource);
  t.same(actions('client', 'Invoke'), ['arn:aws:sagemaker:us-east-1:111122223333:endpoint/sealed']);
  t.same(statements(docs.client).find((s) => s.Sid === 'Invoke')?.Action, ['sagemaker:InvokeEndpoint', 'sagemaker:InvokeEndpointAsync']);
  t.same(
    actions('endpoint-role', 'WriteResults'),
    ['arn:aws:s3:::b-1/team/sealed/tenants/*/results/*', 'arn:aws:s3:::b-1/team/sealed/async-out/*', 'arn:aws:s3:::b-1/team/sealed/async-failed/*'],
    'the server writes results of every tenant',
  );
  t.same(
    actions('endpoint-role', 'ReadModelQueriesKeys'),
    [
      'arn:aws:s3:::b-1/team/sealed/models/*',
      'arn:aws:s3:::b-1/team/sealed/tenants/*/queries/*',
      'arn:aws:s3:::b-1/team/sealed/tenants/*/keys/*',
      'arn:aws:s3:::b-1/team/sealed/tenants/*/async-in/*',
    ],
    'and reads their queries and keys',
  );
  t.same(actions('endpoint-role', 'EcrPull'), ['arn:aws:ecr:us-east-1:111122223333:repository/sealed-inference']);
  t.same(actions('endpoint-role', 'Logs'), ['arn:aws:logs:us-east-1:111122223333:log-group:/aws/sagemaker/Endpoints/sealed:*']);
  t.same(actions('training-role', 'ReadData'), ['arn:aws:s3:::b-1/team/sealed/data/*']);
  t.same(actions('training-role', 'WriteModels'), ['arn:aws:s3:::b-1/team/sealed/models/*']);
  t.same(
    statements(docs.owner).find((s) => s.Sid === 'PassRoles'),
    {
      Sid: 'PassRoles',
      Effect: 'Allow',
      Action: 'iam:PassRole',
      Resource: ['arn:aws:iam::111122223333:role/sealed-training', 'arn:aws:iam::111122223333:role/sealed-endpoint'],
      Condition: { StringEquals: { 'iam:PassedToService': 'sagemaker.amazonaws.com' } },
    },
  );
  t.same(actions('owner', 'TrainingJobs'), ['arn:aws:sagemaker:us-east-1:111122223333:training-job/sealed-train-*']);
  t.notOk(JSON.stringify(docs.client).includes('sagemaker:Create'), 'the client creates nothing');
  t.notOk(JSON.stringify(docs['endpoint-role']).includes('/data/'), 'the endpoint never reads training data');
  t.notOk(JSON.stringify(docs.client).includes('/models/'), 'the client never reads the model weights');
});

t.test('IAM: a client reads and writes only under its own tenant prefix, named by its principal tag', async (t) => {
  const client = statements(docs.client);
  const find = (sid: string) => client.find((s) => s.Sid === sid);
  const own = 'team/sealed/tenants/${aws:PrincipalTag/sealed-tenant}/';
  t.same(
    asList(find('WriteQueriesKeys')?.Resource),
    [`arn:aws:s3:::b-1/${own}queries/*`, `arn:aws:s3:::b-1/${own}keys/*`, `arn:aws:s3:::b-1/${own}async-in/*`],
    'writes: its own queries, keys, async inputs',
  );
  t.same(
    asList(find('ReadKeysResults')?.Resource),
    [
      `arn:aws:s3:::b-1/${own}keys/*`,
      `arn:aws:s3:::b-1/${own}results/*`,
      'arn:aws:s3:::b-1/team/sealed/async-out/*',
      'arn:aws:s3:::b-1/team/sealed/async-failed/*',
    ],
    'reads: its own keys and results (and the endpoint-wide async answers)',
  );
  t.same(asList(find('ListOwnObjects')?.Condition?.StringLike['s3:prefix']), [
    `${own}keys/*`,
    `${own}results/*`,
    'team/sealed/async-out/*',
    'team/sealed/async-failed/*',
  ]);
  // Every grant of an object that is not the endpoint-wide async output names the tenant variable:
  // nothing of another tenant, nor the flat queries/, keys/, results/ of a single-client layout.
  for (const st of client.filter((s) => s.Effect === 'Allow' && asList(s.Action).some((a) => a.startsWith('s3:')))) {
    for (const r of [...asList(st.Resource).filter((x) => x.includes('/')), ...asList(st.Condition?.StringLike?.['s3:prefix'])]) {
      t.ok(r.includes(own) || /\/async-(out|failed)\/\*$/.test(r), `${st.Sid}: ${r} is the tenant's own (or async output)`);
      t.notOk(/tenants\/\*/.test(r), `${st.Sid}: ${r} has no wildcard tenant`);
    }
  }
  t.notOk(JSON.stringify(client).includes('s3:DeleteObject'), 'deletes nothing');
  t.same(
    find('DenyWithoutTenantTag'),
    {
      Sid: 'DenyWithoutTenantTag',
      Effect: 'Deny',
      Action: 's3:*',
      Resource: ['arn:aws:s3:::b-1', 'arn:aws:s3:::b-1/*'],
      Condition: { Null: { 'aws:PrincipalTag/sealed-tenant': 'true' } },
    },
    'no tag: no S3 at all',
  );
  t.same(
    find('DenyTenantTagWithSlash')?.Condition,
    { StringLike: { 'aws:PrincipalTag/sealed-tenant': '*/*' } },
    "a tag with '/' cannot reach into another tenant's prefix",
  );
  // The server's side of the same layout: the tenant root is its allow-list and tenant rule.
  t.same(serverEnvironment({ bucket: 'b-1', prefix: 'team/sealed/' }), {
    SEALED_ALLOW_READ: 's3://b-1/team/sealed/tenants/',
    SEALED_ALLOW_WRITE: 's3://b-1/team/sealed/tenants/',
    SEALED_TENANT_ROOT: 's3://b-1/team/sealed/tenants/',
  });
  t.equal(tenantPrefix({ bucket: 'b-1', prefix: 'team/sealed/' }, 'acme'), 'team/sealed/tenants/acme/', 'the --prefix of tenant acme');
  t.throws(() => tenantPrefix({ bucket: 'b-1', prefix: 'team/sealed/' }, 'a/b'), /is not 1-64 letters/);
});

t.test('IAM: deploy/iam/*.json are the generator output for the example values', async (t) => {
  for (const [name, doc] of Object.entries(policies(EXAMPLE_NAMES))) {
    t.same(JSON.parse(readFileSync(new URL(`../../deploy/iam/${name}.json`, import.meta.url), 'utf8')), doc, `deploy/iam/${name}.json`);
  }
});

t.test('CLI: --dry-run prints the requests as JSON lines; usage errors say what to do', async (t) => {
  const lines = await deployRequests([...dryRun('deploy', 'eu-west-1'), '--async', '--max', '2']);
  t.same(
    lines.map((l) => l.command),
    [
      'DescribeEndpoint',
      'CreateModel',
      'CreateEndpointConfig',
      'CreateEndpoint',
      'DescribeEndpoint',
      'RegisterScalableTarget',
      'PutScalingPolicy',
      'PutScalingPolicy',
      'PutMetricAlarm',
    ],
  );
  t.same(
    (lines[1].input.PrimaryContainer as { Environment: unknown }).Environment,
    {
      SEALED_DEADLINE_MS: '3590000',
      SEALED_S3: 'aws',
      AWS_REGION: 'eu-west-1',
      SEALED_ALLOW_READ: 's3://b-1/sealed/tenants/',
      SEALED_ALLOW_WRITE: 's3://b-1/sealed/tenants/',
      SEALED_TENANT_ROOT: 's3://b-1/sealed/tenants/',
    },
    'the container reads and writes under the tenant root, one tenant per request',
  );
  t.equal(lines[1].input.ExecutionRoleArn, 'arn:aws:iam::111122223333:role/sealed-endpoint');
  t.match(lines[2].input, {
    AsyncInferenceConfig: { OutputConfig: { S3OutputPath: 's3://b-1/sealed/async-out', S3FailurePath: 's3://b-1/sealed/async-failed' } },
  });
  t.match(lines[5].input, { MinCapacity: 0, MaxCapacity: 2 });
  const bad = await deployRefusal(['deploy', '--dry-run', '--bucket', 'b-1', '--image', 'i', '--model-data', 's3://b-1/m']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /no AWS region[\s\S]*what to do: pass --region/);
  const name = await deployRefusal(['delete', '--dry-run', '--region', 'us-east-1', '--name', 'My_Endpoint']);
  t.match(name.stderr, /what to do: use at most 40 lower-case letters/);
});
