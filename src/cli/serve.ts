import { SealedError } from '../errors.ts';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { accessPolicy, parseAllowAny, startServer } from '../server/serve.ts';
import { resolveS3 } from '../storage/resolve.ts';

interface ServeOpts {
  model: string;
  port: number;
  host: string;
  workers?: number;
  s3Endpoint?: string;
  maxInFlight?: number;
  maxBatchInFlight?: number;
  deadlineMs?: number;
  allowRead?: string;
  allowWrite?: string;
  allowAny?: boolean;
  tenantPrefix?: string;
  memoryBudgetMb?: number;
  /** Largest query in a request body, MB (default 6, SageMaker real-time; Batch Transform up to 100). */
  maxPayloadMb?: number;
}

const list = (v: string | undefined) =>
  v
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : undefined;

export async function serveCommand(o: ServeOpts): Promise<void> {
  // Handlers first, so a SIGTERM during start-up is not lost. Before the server listens nothing
  // is in flight, so a signal then just exits.
  const running: { server?: Awaited<ReturnType<typeof startServer>>; s3?: Awaited<ReturnType<typeof resolveS3>> } = {};
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const { server, s3 } = running;
    if (!server) {
      console.error(JSON.stringify({ level: 30, signal, msg: 'stopping during start-up' }));
      process.exit(0);
    }
    server.app.log.info({ signal }, 'stopping: no new requests, finishing those in flight');
    // SageMaker sends SIGKILL 30 s after SIGTERM. In-flight work gets 20 s; what is still running
    // then is stopped and answered 503 (the caller retries elsewhere), so the exit is clean.
    const abortTimer = setTimeout(() => {
      server.app.log.warn({ in_flight: server.app.sealed.inFlight }, 'in-flight requests did not finish within 20 s; stopping them');
      server.app.sealed.abortAll();
    }, 20_000);
    abortTimer.unref();
    const timer = setTimeout(() => {
      server.app.log.error('the server did not stop within 25 s; exiting');
      process.exit(1);
    }, 25_000);
    timer.unref();
    await server.close();
    await s3?.local?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  const budgetMb = o.memoryBudgetMb ?? envNumber('SEALED_MEMORY_BUDGET_MB');
  const payloadMb = o.maxPayloadMb ?? envNumber('SEALED_MAX_PAYLOAD_MB');
  const access = {
    allowRead: list(o.allowRead ?? process.env.SEALED_ALLOW_READ),
    allowWrite: list(o.allowWrite ?? process.env.SEALED_ALLOW_WRITE),
    allowAny: o.allowAny || parseAllowAny(process.env.SEALED_ALLOW_ANY),
    tenantRoot: o.tenantPrefix ?? (process.env.SEALED_TENANT_ROOT || undefined),
  };
  accessPolicy(access); // refused (exit 2) before an embedded S3 is started or AWS is asked anything
  const s3 = (running.s3 = await resolveS3({ endpoint: o.s3Endpoint }));
  const server = (running.server = await startServer({
    modelDir: o.model,
    port: o.port,
    host: o.host,
    workers: o.workers,
    s3Endpoint: s3.endpoint,
    logger: { level: process.env.LOG_LEVEL ?? 'info' },
    // Environment fallbacks: SageMaker starts the container as `serve` with no flags.
    maxInFlight: o.maxInFlight ?? envNumber('SEALED_MAX_IN_FLIGHT'),
    maxBatchInFlight: o.maxBatchInFlight ?? envNumber('SEALED_MAX_BATCH_IN_FLIGHT'),
    deadlineMs: o.deadlineMs ?? envNumber('SEALED_DEADLINE_MS'),
    ...access,
    memoryBudget: budgetMb === undefined ? undefined : budgetMb * 1024 * 1024,
    maxPayloadBytes: payloadMb === undefined ? undefined : payloadMb * 1024 * 1024,
    // Body-form requests (direct payloads, Batch Transform) that name no keys use these.
    defaultKeysUri: process.env.SEALED_EVALUATION_KEYS_URI || undefined,
  }));
  const m = server.memory;
  const mb = (n: number) => Math.round(n / 1024 / 1024);
  server.app.log.info(
    {
      url: server.url,
      workers: server.pool.size,
      s3: s3.mode,
      s3_endpoint: s3.endpoint,
      access: { allow_any: access.allowAny, read: access.allowRead, write: access.allowWrite, tenant_root: access.tenantRoot },
      memory_mb: {
        container: mb(m.memory),
        budget: mb(m.budget),
        main: mb(m.main),
        shared_by_workers: mb(m.shared),
        per_worker: mb(m.perWorker),
        key_cache: mb(m.keyCache),
        requests: mb(m.requests),
      },
    },
    'sealed server ready',
  );
}

export async function s3Command(o: { port: number; dir?: string }): Promise<void> {
  // Loaded here, not with `sealed serve` (which starts no S3 server of its own).
  const { startLocalS3 } = await import('../storage/local-s3.ts');
  const s3 = await startLocalS3({ directory: o.dir ?? join(process.env.SEALED_HOME ?? join(homedir(), '.sealed'), 's3'), port: o.port });
  console.log(`local S3-compatible server at ${s3.endpoint} (any credentials; path-style)`);
  process.on('SIGINT', () => void s3.close().then(() => process.exit(0)));
  process.on('SIGTERM', () => void s3.close().then(() => process.exit(0)));
}

interface EmulatorOpts {
  container: string;
  outputPath: string;
  failurePath: string;
  port: number;
  s3Endpoint?: string;
  instances?: string;
  apiPort: number;
}

/** `sealed sagemaker-emulator`: SageMaker Runtime (real-time and async) in front of a container. */
export async function emulatorCommand(o: EmulatorOpts): Promise<void> {
  const { startRuntimeEmulator } = await import('../sagemaker/runtime-emulator.ts');
  const { startTransformControlPlane } = await import('../sagemaker/transform-control-plane.ts');
  const { LOCAL_BUCKET } = await import('../storage/resolve.ts');
  const { ObjectStore, parseS3Uri } = await import('../storage/s3.ts');
  const s3 = await resolveS3({ endpoint: o.s3Endpoint });
  const store = new ObjectStore({ endpoint: s3.endpoint });
  if (s3.mode !== 'aws') for (const uri of [o.outputPath, o.failurePath]) await store.ensureBucket(parseS3Uri(uri, 'path').bucket);
  const emu = await startRuntimeEmulator({ containerUrl: o.container, store, outputPath: o.outputPath, failurePath: o.failurePath, port: o.port });
  const instances = (o.instances ?? o.container)
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  const plane = await startTransformControlPlane({ store, instances, port: o.apiPort });
  console.log(`SageMaker Runtime emulator at ${emu.url} -> ${o.container} (async output ${o.outputPath}, failures ${o.failurePath})`);
  console.log(`  sealed predict --sagemaker-endpoint local --sagemaker-url ${emu.url} [--async] ...`);
  console.log(`SageMaker API (Batch Transform) at ${plane.url} -> ${instances.length} instance(s): ${instances.join(', ')}`);
  console.log(
    `  sealed predict --transform s3://${LOCAL_BUCKET}/transform/ --model-name local --sagemaker-api-url ${plane.url} [--instance-count ${instances.length}] ...`,
  );
  const stop = () => void Promise.all([emu.close(), plane.close()]).then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

function envNumber(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1)
    throw new SealedError('bad-request', `${name}=${v.slice(0, 20)} is not a positive integer`, `set ${name} to a whole number, or unset it for the default`);
  return n;
}
