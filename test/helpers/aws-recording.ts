// The deployment's AWS control planes (SageMaker, Application Auto Scaling, CloudWatch) cannot
// be reached from a test, so the deploy tests mock them at their SDK boundary: the real clients
// of deploy.ts `awsClients`, with the middleware stack cut at its first step, so each test sees
// the command name and input exactly as client.send received them, in order, and answers them.
// Also `scripts/deploy.ts --dry-run`, run as a user would, with its requests read back.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SageMakerServiceException } from '@aws-sdk/client-sagemaker';
import { awsClients, type Clients } from '../../src/sagemaker/deploy.ts';

/** One request as the SDK client received it ('CreateEndpoint', not 'CreateEndpointCommand'). */
export type Call = { service: string; command: string; input: Record<string, unknown> };

/** Cuts one real SDK client at its first middleware step: `respond` answers (or throws), `calls` records. */
export function cut<C extends { middlewareStack: unknown }>(client: C, service: string, calls: Call[], respond: (c: Call) => unknown | Promise<unknown>): C {
  (client.middlewareStack as { add: (mw: unknown, o: unknown) => void }).add(
    (_next: unknown, context: { commandName: string }) => async (args: { input: Record<string, unknown> }) => {
      const call = { service, command: context.commandName.replace(/Command$/, ''), input: args.input };
      calls.push(call);
      return { output: { $metadata: {}, ...((await respond(call)) as object) }, response: {} };
    },
    { step: 'initialize', name: 'testRecorder' },
  );
  return client;
}

/** Real clients that send nothing; `respond` answers each command (throw to fail it). */
export function recording(respond: (c: Call) => unknown = () => ({})): { clients: Clients; calls: Call[] } {
  const calls: Call[] = [];
  const clients = awsClients('us-east-1', { accessKeyId: 'TEST', secretAccessKey: 'TEST' });
  for (const service of ['sagemaker', 'autoscaling', 'cloudwatch'] as const) cut(clients[service], service, calls, respond);
  return { clients, calls };
}

/** SageMaker's answer for a resource it does not have (a ValidationException, "Could not find"). */
export const notFound = (what: string) =>
  new SageMakerServiceException({ name: 'ValidationException', $fault: 'client', $metadata: { httpStatusCode: 400 }, message: `Could not find ${what}.` });

/** Waits that do not wait: the recorded answers decide how many polls there are. */
export const noWait = { sleep: async () => {}, pollMs: { first: 1, max: 1 } };

/**
 * A fresh deployment: DescribeEndpoint says "not found" until CreateEndpoint, then InService;
 * PutScalingPolicy answers `policyArn(PolicyName)` (default: the ARN Application Auto Scaling gives).
 */
export function freshAccount(policyArn = (name: string) => `arn:aws:autoscaling:us-east-1:111122223333:scalingPolicy:x:resource/sagemaker/${name}`): {
  clients: Clients;
  calls: Call[];
} {
  let created = false;
  return recording((c) => {
    if (c.command === 'CreateEndpoint') created = true;
    if (c.command === 'DescribeEndpoint') {
      if (!created) throw notFound('endpoint "sealed"');
      return { EndpointStatus: 'InService' };
    }
    if (c.command === 'PutScalingPolicy') return { PolicyARN: policyArn(String(c.input.PolicyName)) };
    return {};
  });
}

const deployScript = new URL('../../scripts/deploy.ts', import.meta.url).pathname;
/** No region or profile of the machine's own: every run says what it uses. */
const cliEnv = () => ({ ...process.env, AWS_REGION: '', AWS_DEFAULT_REGION: '', AWS_PROFILE: '' });

/**
 * `<command> --dry-run` with what every deployment names: the region, the account
 * 111122223333, bucket b-1, image `img` and the model s3://b-1/sealed/models/m.tar.gz.
 */
export const dryRun = (command: 'deploy' | 'transform', region: string) => [
  command,
  '--dry-run',
  '--region',
  region,
  '--account',
  '111122223333',
  '--bucket',
  'b-1',
  '--image',
  'img',
  '--model-data',
  's3://b-1/sealed/models/m.tar.gz',
];

/** `node scripts/deploy.ts ...args` that must succeed: the requests it prints (--dry-run: one JSON line each). */
export async function deployRequests(args: string[]): Promise<Call[]> {
  const { stdout } = await promisify(execFile)(process.execPath, [deployScript, ...args], { env: cliEnv() });
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Call);
}

/** `node scripts/deploy.ts ...args` that must fail: its exit code and standard error. */
export async function deployRefusal(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await promisify(execFile)(process.execPath, [deployScript, ...args], { env: cliEnv() });
  } catch (e) {
    return e as { code: number; stderr: string };
  }
  throw new Error(`scripts/deploy.ts ${args.join(' ')} succeeded; a refusal was expected`);
}
