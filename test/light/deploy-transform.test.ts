// Batch Transform in the deployment, checked by its requests at the SDK boundary (real clients
// cut at their first middleware step: test/helpers/aws-recording.ts) and by its IAM grants.
import t from 'tap';
import { EXAMPLE_NAMES, policies, type PolicyDocument } from '../../src/sagemaker/iam.ts';
import { startTransformJob, waitForTransformJob } from '../../src/sagemaker/transform-job.ts';
import { deployRefusal, deployRequests, dryRun, noWait, recording } from '../helpers/aws-recording.ts';

const job = {
  jobName: 'sealed-transform-1',
  modelName: 'sealed-20260101',
  input: 's3://b-1/sealed/tenants/acme/transform-in/j1/',
  output: 's3://b-1/sealed/tenants/acme/transform-out/j1/',
};

t.test('CreateTransformJob: whole objects as octet-stream, instance count, limits; what is left out is asked of the container', async (t) => {
  const { clients, calls } = recording(() => ({ TransformJobArn: 'arn:job' }));
  await startTransformJob(clients, { ...job, instanceCount: 2 });
  t.same(calls[0].input, {
    TransformJobName: 'sealed-transform-1',
    ModelName: 'sealed-20260101',
    ModelClientConfig: { InvocationsTimeoutInSeconds: 600, InvocationsMaxRetries: 3 },
    Environment: { SEALED_DEADLINE_MS: '590000' },
    TransformInput: {
      DataSource: { S3DataSource: { S3DataType: 'S3Prefix', S3Uri: job.input } },
      ContentType: 'application/octet-stream',
      SplitType: 'None',
      CompressionType: 'None',
    },
    TransformOutput: { S3OutputPath: job.output, Accept: 'application/octet-stream', AssembleWith: 'None' },
    TransformResources: { InstanceType: 'ml.c6i.xlarge', InstanceCount: 2 },
  });
  await startTransformJob(clients, {
    ...job,
    maxConcurrentTransforms: 4,
    maxPayloadInMB: 25,
    batchStrategy: 'SingleRecord',
    invocationsTimeoutSeconds: 3600,
    invocationsMaxRetries: 1,
    kmsKeyId: 'arn:key',
  });
  t.match(calls[1].input, {
    MaxConcurrentTransforms: 4,
    MaxPayloadInMB: 25,
    BatchStrategy: 'SingleRecord',
    ModelClientConfig: { InvocationsTimeoutInSeconds: 3600, InvocationsMaxRetries: 1 },
    Environment: { SEALED_DEADLINE_MS: '3590000', SEALED_MAX_PAYLOAD_MB: '25' },
    TransformOutput: { KmsKeyId: 'arn:key' },
  });
  await t.rejects(startTransformJob(clients, { ...job, maxConcurrentTransforms: 4, maxPayloadInMB: 26 }), { message: /104 MB, over SageMaker's 100 MB/ });
  await t.rejects(startTransformJob(clients, { ...job, invocationsTimeoutSeconds: 3601 }), { message: /InvocationsTimeoutInSeconds 3601/ });
  t.equal(calls.length, 2, 'refused requests are not sent');
});

t.test('waitForTransformJob: polls with progress; a failed job says why and where to look', async (t) => {
  let n = 0;
  const ok = recording(() => ({ TransformJobStatus: ++n < 3 ? 'InProgress' : 'Completed' }));
  const seen: string[] = [];
  let done = 0;
  await waitForTransformJob(ok.clients, 'j', {
    ...noWait,
    progress: async () => ({ done: ++done, total: 3 }),
    onProgress: (p) => seen.push(`${p.status} ${p.done}/${p.total}`),
  });
  t.same(seen, ['InProgress 1/3', 'InProgress 2/3', 'Completed 3/3']);
  t.same(
    ok.calls.map((c) => c.command),
    ['DescribeTransformJob', 'DescribeTransformJob', 'DescribeTransformJob'],
  );
  const bad = recording(() => ({ TransformJobStatus: 'Failed', FailureReason: 'ClientError: See job logs for more information' }));
  await t.rejects(waitForTransformJob(bad.clients, 'j', noWait), {
    message: 'transform job j ended Failed: ClientError: See job logs for more information',
    hint: /TransformJobs/,
  });
});

const list = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const grants = (d: PolicyDocument, action: string) =>
  d.Statement.filter((s) => s.Effect === 'Allow' && list(s.Action).includes(action)).flatMap((s) => list(s.Resource));

t.test('IAM for Batch Transform: the role reads inputs and writes .out per tenant; clients their own; starting jobs is opt-in', async (t) => {
  const d = policies({ ...EXAMPLE_NAMES, bucket: 'b-1' });
  const own = 'arn:aws:s3:::b-1/sealed/tenants/${aws:PrincipalTag/sealed-tenant}/';
  t.same(
    grants(d['endpoint-role'], 's3:GetObject').filter((r) => r.includes('transform')),
    ['arn:aws:s3:::b-1/sealed/tenants/*/transform-in/*'],
  );
  t.same(
    grants(d['endpoint-role'], 's3:PutObject').filter((r) => r.includes('transform')),
    ['arn:aws:s3:::b-1/sealed/tenants/*/transform-out/*'],
  );
  t.ok(
    d['endpoint-role'].Statement.some(
      (s) => s.Action === 's3:ListBucket' && list(s.Condition?.StringLike?.['s3:prefix']).includes('sealed/tenants/*/transform-in/*'),
    ),
    'and lists the input prefix (S3Prefix input)',
  );
  t.same(
    grants(d.client, 's3:PutObject').filter((r) => r.includes('transform')),
    [`${own}transform-in/*`],
  );
  t.same(
    grants(d.client, 's3:GetObject').filter((r) => r.includes('transform')),
    [`${own}transform-out/*`],
  );
  t.same(grants(d.client, 'sagemaker:DescribeTransformJob'), ['arn:aws:sagemaker:us-east-1:111122223333:transform-job/sealed-*']);
  t.same(grants(d.client, 'sagemaker:CreateTransformJob'), [], 'the client policy starts nothing');
  t.same(grants(d['client-transform'], 'sagemaker:CreateTransformJob'), [
    'arn:aws:sagemaker:us-east-1:111122223333:transform-job/sealed-*',
    'arn:aws:sagemaker:us-east-1:111122223333:model/sealed-*',
  ]);
  t.same(grants(d.owner, 'sagemaker:CreateTransformJob'), [
    'arn:aws:sagemaker:us-east-1:111122223333:transform-job/sealed-*',
    'arn:aws:sagemaker:us-east-1:111122223333:model/sealed-*',
  ]);
});

t.test('CLI: deploy transform --dry-run prints CreateModel and CreateTransformJob', async (t) => {
  const args = [...dryRun('transform', 'eu-west-1'), '--input', job.input, '--output', job.output, '--instance-count', '2', '--max-payload-mb', '20'];
  const lines = await deployRequests(args);
  t.same(
    lines.map((l) => l.command),
    ['CreateModel', 'CreateTransformJob'],
  );
  t.equal(lines[1].input.ModelName, lines[0].input.ModelName, 'the job runs the model just created');
  t.match(lines[1].input, { MaxPayloadInMB: 20, TransformResources: { InstanceCount: 2 }, TransformInput: { SplitType: 'None' } });
  const bad = await deployRefusal(['transform', '--dry-run', '--region', 'eu-west-1', '--input', job.input, '--output', job.output]);
  t.match(bad.stderr, /no model for the transform job[\s\S]*what to do: give --model-name/);
});
