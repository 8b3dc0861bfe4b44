// Least-privilege IAM policy documents for a sealed deployment, generated from the deployment's
// names so that `npm run deploy -- policies` prints them for the user's bucket, prefix, account,
// region and endpoint. deploy/iam/*.json are these documents for the example values below.
//
// Every S3 grant is limited to one prefix of the deployment's layout; every policy that touches
// S3 also denies plain-HTTP requests and PutObject without a server-side-encryption header.
//
// Clients are tenants: each client identity (IAM user or role) carries the principal tag
// `sealed-tenant` (one path segment), and its policy grants S3 only under
// PREFIX/tenants/${aws:PrincipalTag/sealed-tenant}/ (its queries, keys, results, async inputs),
// with explicit denies for an identity without the tag or with a '/' in it. The endpoint role
// (the server) reads queries and keys and writes results across tenants; the server itself
// refuses a request whose query, keys and output are not under one tenant (SEALED_TENANT_ROOT,
// see serverEnvironment).
/* eslint-disable max-lines -- Over 300 lines on purpose: the policies are data, written out in full
   so that a reviewer reads each grant as AWS will evaluate it. */

export interface DeploymentNames {
  account: string;
  region: string;
  bucket: string;
  /** Key prefix of everything sealed stores, e.g. 'sealed/' (the `--prefix` of `sealed predict`). */
  prefix: string;
  /** Endpoint name; also the stem of model, endpoint-config, training-job, role and alarm names. */
  name: string;
  /** ECR repositories the roles may pull from. */
  trainingRepository?: string;
  inferenceRepository?: string;
  /** A customer-managed KMS key for S3 (SSE-KMS); the roles get Encrypt/Decrypt/GenerateDataKey on it. */
  kmsKeyArn?: string;
}

export const EXAMPLE_NAMES: DeploymentNames = {
  account: '111122223333',
  region: 'us-east-1',
  bucket: 'example-sealed-bucket',
  prefix: 'sealed/',
  name: 'sealed',
};

/** The principal tag naming a client's tenant. */
export const TENANT_TAG = 'sealed-tenant';
const TENANT_VAR = `\${aws:PrincipalTag/${TENANT_TAG}}`;

/**
 * Where each kind of object lives under the prefix. predict.ts writes queries/, keys/ and
 * async-in/ itself, under its own --prefix: for a tenant, tenantPrefix(n, tenant).
 */
export function layout(n: Pick<DeploymentNames, 'bucket' | 'prefix'>) {
  const p = n.prefix === '' || n.prefix.endsWith('/') ? n.prefix : `${n.prefix}/`;
  const at = (k: string) => `${p}${k}/`;
  return {
    data: at('data'), // training channels: data/train/, data/test/
    models: at('models'), // training output: models/<job>/output/model.tar.gz
    // One client (no tenants): queries/, keys/, results/ directly under the prefix.
    queries: at('queries'),
    keys: at('keys'),
    results: at('results'),
    // Tenants: tenants/<tenant>/{queries,keys,results,async-in}/ (the client's --prefix is tenants/<tenant>/).
    tenants: at('tenants'),
    asyncIn: at('async-in'),
    // Batch Transform, per tenant: tenants/<tenant>/transform-in/<job>/ and transform-out/<job>/.
    transformIn: 'transform-in',
    transformOut: 'transform-out',
    asyncOut: at('async-out'),
    asyncFailed: at('async-failed'),
    uri: (key: string) => `s3://${n.bucket}/${key}`,
  };
}

/** A tenant's prefix: what its clients pass as `sealed predict --prefix`. */
export function tenantPrefix(n: Pick<DeploymentNames, 'bucket' | 'prefix'>, tenant: string): string {
  if (!/^[A-Za-z0-9_.+=@-]{1,64}$/.test(tenant) || tenant === '.' || tenant === '..')
    throw new Error(`tenant name ${JSON.stringify(tenant.slice(0, 80))} is not 1-64 letters, digits or _.+=@-`);
  return `${layout(n).tenants}${tenant}/`;
}

/**
 * The endpoint's environment for a tenant deployment: the server reads and writes only under
 * tenants/, and one request stays within one tenant (SEALED_TENANT_ROOT). The endpoint role's
 * IAM policy narrows this further to queries/, keys/ and async-in/ (read) and results/ (write).
 */
export function serverEnvironment(
  n: Pick<DeploymentNames, 'bucket' | 'prefix'>,
): Record<'SEALED_ALLOW_READ' | 'SEALED_ALLOW_WRITE' | 'SEALED_TENANT_ROOT', string> {
  const L = layout(n);
  const root = L.uri(L.tenants);
  return { SEALED_ALLOW_READ: root, SEALED_ALLOW_WRITE: root, SEALED_TENANT_ROOT: root };
}

export const partition = (region: string) => (region.startsWith('cn-') ? 'aws-cn' : region.startsWith('us-gov-') ? 'aws-us-gov' : 'aws');
export const roleArn = (n: DeploymentNames, role: 'training' | 'endpoint') => `arn:${partition(n.region)}:iam::${n.account}:role/${n.name}-${role}`;
export const endpointArn = (n: DeploymentNames) => `arn:${partition(n.region)}:sagemaker:${n.region}:${n.account}:endpoint/${n.name}`;

type Statement = {
  Sid: string;
  Effect: 'Allow' | 'Deny';
  Principal?: { Service: string };
  Action: string | string[];
  Resource?: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
};
export interface PolicyDocument {
  Version: '2012-10-17';
  Statement: Statement[];
}

export function policies(
  n: DeploymentNames,
): Record<'owner' | 'training-role' | 'endpoint-role' | 'client' | 'client-transform' | 'sagemaker-trust', PolicyDocument> {
  const part = partition(n.region);
  const L = layout(n);
  const bucket = `arn:${part}:s3:::${n.bucket}`;
  const objects = (...prefixes: string[]) => prefixes.map((p) => `${bucket}/${p}*`);
  // HeadObject on a missing key answers 403 instead of 404 without ListBucket; the client polls
  // async outputs and checks whether its keys are uploaded with HeadObject, so it needs it.
  const list = (sid: string, ...prefixes: string[]): Statement => ({
    Sid: sid,
    Effect: 'Allow',
    Action: 's3:ListBucket',
    Resource: bucket,
    Condition: { StringLike: { 's3:prefix': prefixes.map((p) => `${p}*`) } },
  });
  const get = (sid: string, ...prefixes: string[]): Statement => ({ Sid: sid, Effect: 'Allow', Action: 's3:GetObject', Resource: objects(...prefixes) });
  // Large objects go up in parts (ObjectStore.putStream); a failed upload aborts its parts, which
  // without AbortMultipartUpload stay stored (and billed) until a lifecycle rule removes them.
  const put = (sid: string, ...prefixes: string[]): Statement => ({
    Sid: sid,
    Effect: 'Allow',
    Action: ['s3:PutObject', 's3:AbortMultipartUpload'],
    Resource: objects(...prefixes),
  });
  const guards: Statement[] = [
    {
      Sid: 'DenyInsecureTransport',
      Effect: 'Deny',
      Action: 's3:*',
      Resource: [bucket, `${bucket}/*`],
      Condition: { Bool: { 'aws:SecureTransport': 'false' } },
    },
    // StringNotEquals is also true when the header is absent, so this denies unencrypted puts too.
    // aws:kms is what SageMaker uses for training output when no KMS key is given (OutputDataConfig).
    {
      Sid: 'DenyPutWithoutServerSideEncryption',
      Effect: 'Deny',
      Action: 's3:PutObject',
      Resource: `${bucket}/*`,
      Condition: { StringNotEquals: { 's3:x-amz-server-side-encryption': ['AES256', 'aws:kms'] } },
    },
  ];
  const kms: Statement[] = n.kmsKeyArn
    ? [{ Sid: 'UseTheS3Key', Effect: 'Allow', Action: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'], Resource: n.kmsKeyArn }]
    : [];
  const repo = (r: string) => `arn:${part}:ecr:${n.region}:${n.account}:repository/${r}`;
  const ecr = (r: string): Statement[] => [
    { Sid: 'EcrToken', Effect: 'Allow', Action: 'ecr:GetAuthorizationToken', Resource: '*' }, // has no resource-level form
    { Sid: 'EcrPull', Effect: 'Allow', Action: ['ecr:BatchCheckLayerAvailability', 'ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer'], Resource: repo(r) },
  ];
  const logs = (group: string): Statement => ({
    Sid: 'Logs',
    Effect: 'Allow',
    Action: ['logs:CreateLogGroup', 'logs:CreateLogStream', 'logs:DescribeLogStreams', 'logs:PutLogEvents'],
    Resource: `arn:${part}:logs:${n.region}:${n.account}:log-group:${group}:*`,
  });
  const metrics: Statement = {
    Sid: 'Metrics',
    Effect: 'Allow',
    Action: 'cloudwatch:PutMetricData',
    Resource: '*',
    Condition: { StringLike: { 'cloudwatch:namespace': '/aws/sagemaker/*' } },
  };
  const sm = (type: string, name: string) => `arn:${part}:sagemaker:${n.region}:${n.account}:${type}/${name}`;
  const doc = (...s: Statement[]): PolicyDocument => ({ Version: '2012-10-17', Statement: s });
  // Every tenant's <kind>/ (the endpoint role), and the calling client's own (its policy).
  const anyTenant = (kind: string) => `${L.tenants}*/${kind}/`;
  const own = (kind: string) => `${L.tenants}${TENANT_VAR}/${kind}/`;

  return {
    owner: doc(
      {
        Sid: 'TrainingJobs',
        Effect: 'Allow',
        Action: ['sagemaker:CreateTrainingJob', 'sagemaker:DescribeTrainingJob', 'sagemaker:StopTrainingJob'],
        Resource: sm('training-job', `${n.name}-train-*`),
      },
      {
        Sid: 'Endpoint',
        Effect: 'Allow',
        // One statement: CreateEndpoint and UpdateEndpoint are authorised on the endpoint and its config.
        Action: [
          'sagemaker:CreateModel',
          'sagemaker:DescribeModel',
          'sagemaker:DeleteModel',
          'sagemaker:CreateEndpointConfig',
          'sagemaker:DescribeEndpointConfig',
          'sagemaker:DeleteEndpointConfig',
          'sagemaker:CreateEndpoint',
          'sagemaker:UpdateEndpoint',
          'sagemaker:DescribeEndpoint',
          'sagemaker:DeleteEndpoint',
          'sagemaker:UpdateEndpointWeightsAndCapacities',
        ],
        Resource: [sm('model', `${n.name}-*`), sm('endpoint-config', `${n.name}-*`), sm('endpoint', n.name)],
      },
      {
        Sid: 'TransformJobs',
        Effect: 'Allow',
        Action: ['sagemaker:CreateTransformJob', 'sagemaker:DescribeTransformJob', 'sagemaker:StopTransformJob'],
        Resource: [sm('transform-job', `${n.name}-*`), sm('model', `${n.name}-*`)],
      },
      {
        Sid: 'PassRoles',
        Effect: 'Allow',
        Action: 'iam:PassRole',
        Resource: [roleArn(n, 'training'), roleArn(n, 'endpoint')],
        Condition: { StringEquals: { 'iam:PassedToService': 'sagemaker.amazonaws.com' } },
      },
      // Application Auto Scaling's SageMaker permissions as AWS documents them (Resource "*").
      {
        Sid: 'AutoScaling',
        Effect: 'Allow',
        Action: [
          'application-autoscaling:DeleteScalingPolicy',
          'application-autoscaling:DeregisterScalableTarget',
          'application-autoscaling:DescribeScalableTargets',
          'application-autoscaling:DescribeScalingPolicies',
          'application-autoscaling:PutScalingPolicy',
          'application-autoscaling:RegisterScalableTarget',
        ],
        Resource: '*',
      },
      {
        Sid: 'AutoScalingRole',
        Effect: 'Allow',
        Action: 'iam:CreateServiceLinkedRole',
        Resource: `arn:${part}:iam::${n.account}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint`,
        Condition: { StringLike: { 'iam:AWSServiceName': 'sagemaker.application-autoscaling.amazonaws.com' } },
      },
      // Application Auto Scaling creates and deletes a target tracking policy's alarms with the
      // caller's permissions, naming them TargetTracking-<ResourceId>-AlarmHigh|AlarmLow-<uuid>
      // (ResourceId endpoint/NAME/variant/VARIANT); the scale-from-zero alarm is NAME-... (ours).
      {
        Sid: 'ScalingAlarms',
        Effect: 'Allow',
        Action: ['cloudwatch:DeleteAlarms', 'cloudwatch:DescribeAlarms', 'cloudwatch:PutMetricAlarm'],
        Resource: [
          `arn:${part}:cloudwatch:${n.region}:${n.account}:alarm:${n.name}-*`,
          `arn:${part}:cloudwatch:${n.region}:${n.account}:alarm:TargetTracking-endpoint/${n.name}/variant/*`,
        ],
      },
      list('ListData', L.data, L.models),
      get('ReadDataAndModels', L.data, L.models),
      put('WriteDataAndModels', L.data, L.models),
      ...kms,
      ...guards,
    ),
    'training-role': doc(
      list('ListData', L.data),
      get('ReadData', L.data),
      put('WriteModels', L.models),
      ...ecr(n.trainingRepository ?? 'sealed-training'),
      logs('/aws/sagemaker/TrainingJobs'),
      metrics,
      ...kms,
      ...guards,
    ),
    'endpoint-role': doc(
      list('ListInputs', anyTenant('queries'), anyTenant('keys')),
      // SageMaker reads async requests from async-in/ and writes async-out/ and async-failed/ with this role.
      get('ReadModelQueriesKeys', L.models, anyTenant('queries'), anyTenant('keys'), anyTenant('async-in')),
      put('WriteResults', anyTenant('results'), L.asyncOut, L.asyncFailed),
      // Batch Transform reads and writes with the model's role: it lists the input prefix,
      // reads each object and writes <object>.out; tenant by tenant as the client laid them out.
      list('ListTransformInput', anyTenant(L.transformIn)),
      get('ReadTransformInput', anyTenant(L.transformIn)),
      put('WriteTransformOutput', anyTenant(L.transformOut)),
      ...ecr(n.inferenceRepository ?? 'sealed-inference'),
      logs(`/aws/sagemaker/Endpoints/${n.name}`),
      // Async endpoints post success and error notifications to the deployment's SNS topics.
      { Sid: 'PublishAsyncNotifications', Effect: 'Allow', Action: 'sns:Publish', Resource: `arn:${part}:sns:${n.region}:${n.account}:${n.name}-*` },
      // Transform jobs log under their own group.
      { ...logs('/aws/sagemaker/TransformJobs'), Sid: 'TransformLogs' },
      metrics,
      ...kms,
      ...guards,
    ),
    // A client reads and writes only under its own tenant's prefix. SageMaker's async output and
    // failure paths are per endpoint, not per tenant: readable (not writable) by every client;
    // they hold the server's JSON answer (locations, timings), never ciphertexts.
    client: doc(
      list('ListOwnObjects', own('keys'), own('results'), L.asyncOut, L.asyncFailed),
      put('WriteQueriesKeys', own('queries'), own('keys'), own('async-in')),
      get('ReadKeysResults', own('keys'), own('results'), L.asyncOut, L.asyncFailed),
      { Sid: 'Invoke', Effect: 'Allow', Action: ['sagemaker:InvokeEndpoint', 'sagemaker:InvokeEndpointAsync'], Resource: endpointArn(n) },
      // Batch Transform: its own inputs and outputs, and following the jobs (starting them is
      // client-transform's, an opt-in).
      list('ListOwnTransformObjects', own(L.transformIn), own(L.transformOut)),
      put('WriteTransformInput', own(L.transformIn)),
      get('ReadTransformOutput', own(L.transformOut)),
      { Sid: 'FollowTransformJobs', Effect: 'Allow', Action: 'sagemaker:DescribeTransformJob', Resource: sm('transform-job', `${n.name}-*`) },
      // Without the tag the variable resolves to nothing and the grants above match no object;
      // these say so outright, and keep a tag holding '/' from reaching into another tenant.
      {
        Sid: 'DenyWithoutTenantTag',
        Effect: 'Deny',
        Action: 's3:*',
        Resource: [bucket, `${bucket}/*`],
        Condition: { Null: { [`aws:PrincipalTag/${TENANT_TAG}`]: 'true' } },
      },
      {
        Sid: 'DenyTenantTagWithSlash',
        Effect: 'Deny',
        Action: 's3:*',
        Resource: [bucket, `${bucket}/*`],
        Condition: { StringLike: { [`aws:PrincipalTag/${TENANT_TAG}`]: '*/*' } },
      },
      ...kms,
      ...guards,
    ),
    // For clients that start their own transform jobs (sealed predict --transform without a job
    // the owner started), attached next to `client`. A job runs with the model's role, which
    // reads every tenant's transform-in/: a job a tenant points at another's inputs yields
    // results encrypted under the other's key (useless to it), and results name the SHA-256 of
    // the query they answer, so the other tenant's client refuses results not made from its own.
    'client-transform': doc({
      Sid: 'StartTransformJobs',
      Effect: 'Allow',
      Action: ['sagemaker:CreateTransformJob', 'sagemaker:StopTransformJob'],
      Resource: [sm('transform-job', `${n.name}-*`), sm('model', `${n.name}-*`)],
    }),
    // Trust policy of both roles: only SageMaker may assume them, and only for this account's
    // jobs and endpoints in this region (the confused-deputy guard AWS recommends for services).
    'sagemaker-trust': {
      Version: '2012-10-17',
      Statement: [
        {
          Sid: 'SageMakerAssumesRole',
          Effect: 'Allow',
          Principal: { Service: 'sagemaker.amazonaws.com' },
          Action: 'sts:AssumeRole',
          Condition: { StringEquals: { 'aws:SourceAccount': n.account }, ArnLike: { 'aws:SourceArn': `arn:${part}:sagemaker:${n.region}:${n.account}:*` } },
        },
      ],
    },
  };
}
