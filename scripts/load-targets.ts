// Targets of the load tests (scripts/load.ts): what a request is sent to and how its answer is
// read back as one Outcome, whatever carried it.
//
//   local-process      a `sealed serve` this tool starts on 127.0.0.1 (with an embedded S3), so
//                      its RSS is sampled and its log read (memory split, worker replacements)
//   url                a server it did not start (e.g. a container): --url, --s3-endpoint, --bucket
//   sagemaker-runtime  an endpoint behind the SageMaker Runtime API (InvokeEndpoint, or
//                      InvokeEndpointAsync with --async), AWS or the local emulator
//
// Load testers test what they deploy: the same request makers and checks run against all three.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { InvokeEndpointAsyncCommand, InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { SealedError, type ErrorCode } from '../src/errors.ts';
import { runtimeClient } from '../src/sagemaker/runtime-client.ts';
import { formatS3Uri, ObjectStore, type S3Location } from '../src/storage/s3.ts';

export type TargetKind = 'local-process' | 'url' | 'sagemaker-runtime';

/**
 * One answer. `status` is the inference server's HTTP status; through SageMaker, the container's
 * original status when SageMaker reports it (ModelError), else SageMaker's own. 'reset': the
 * connection failed without an answer; 'closed': the server closed a raw socket without an
 * answer (how a slow body may be dropped); 'timeout': no answer within the client's time limit.
 */
export interface Outcome {
  status: number | 'reset' | 'closed' | 'timeout';
  /** The server's error code ({error}) or the SDK's error name. */
  error?: string;
  message?: string;
  /** A 503 that is admission control (Retry-After, or error "overloaded"), not a failure. */
  admission?: boolean;
  json?: Record<string, unknown>;
  ms: number;
}

/** A raw request to POST /invocations (or, over direct HTTP only, another method or path). */
export interface RawRequest {
  body: Uint8Array | string;
  /** Absent: no Content-Type header at all. */
  contentType?: string;
  method?: string;
  path?: string;
  /** Direct HTTP only: send the body chunked (no Content-Length), as a stream. */
  chunked?: boolean;
}

export interface Target {
  kind: TargetKind;
  /** What the report says about the target. */
  info: Record<string, unknown>;
  store: ObjectStore;
  bucket: string;
  /** Key prefix of every object the tool writes, ending in '/' (a server's allow-lists name it). */
  prefix: string;
  /** Direct HTTP base URL of the inference server when it is reachable (ping, slow bodies). */
  url?: string;
  /** Sends one request; never throws. */
  send(req: RawRequest, timeoutMs: number): Promise<Outcome>;
  /** Best-effort removal of an object the tool wrote (results are checked, then deleted). */
  remove(loc: S3Location): Promise<void>;
  /** Only for local-process: the server's pid, log and memory split. */
  server?: LocalServer;
  close(): Promise<void>;
}

const te = new TextEncoder();
const asBytes = (b: Uint8Array | string) => (typeof b === 'string' ? te.encode(b) : b);

/** The status a server error code maps to (for async failures, which carry only the body). */
function statusOfCode(code: string): number {
  const s = new SealedError(code as ErrorCode, '').status;
  return typeof s === 'number' ? s : 500;
}

function parseErrorBody(text: string): { error?: string; message?: string; json?: Record<string, unknown> } {
  try {
    const j = JSON.parse(text) as Record<string, unknown>;
    if (j && typeof j === 'object')
      return { error: typeof j.error === 'string' ? j.error : undefined, message: typeof j.message === 'string' ? j.message : undefined, json: j };
  } catch {
    // not JSON: keep the text
  }
  return { message: text.slice(0, 300) };
}

// ---------------------------------------------------------------------------------------------
// Direct HTTP

export async function sendHttp(url: string, req: RawRequest, timeoutMs: number): Promise<Outcome> {
  const t0 = performance.now();
  const headers: Record<string, string> = {};
  if (req.contentType !== undefined) headers['content-type'] = req.contentType;
  const bytes = asBytes(req.body) as Uint8Array<ArrayBuffer>;
  // A stream has no length up front: fetch sends it chunked, so the server cannot refuse it by
  // its Content-Length and must count the bytes as they come.
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : req.chunked ? chunkedStream(bytes) : bytes;
  try {
    const res = await fetch(new URL(req.path ?? '/invocations', url), {
      method: req.method ?? 'POST',
      headers,
      // Bytes, not a string: fetch adds no Content-Type of its own to bytes.
      body,
      signal: AbortSignal.timeout(timeoutMs),
      ...(req.chunked ? { duplex: 'half' } : {}),
    } as RequestInit);
    const text = await res.text();
    const p = parseErrorBody(text);
    return {
      status: res.status,
      ...p,
      admission: res.status === 503 && (res.headers.has('retry-after') || p.error === 'overloaded'),
      ms: performance.now() - t0,
    };
  } catch (e) {
    const err = e as { name?: string; message?: string; cause?: { code?: string; message?: string } };
    if (err.name === 'TimeoutError') return { status: 'timeout', message: `no answer within ${timeoutMs} ms`, ms: performance.now() - t0 };
    return { status: 'reset', error: err.cause?.code ?? err.name, message: err.cause?.message ?? err.message, ms: performance.now() - t0 };
  }
}

function chunkedStream(bytes: Uint8Array<ArrayBuffer>): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.subarray(at, (at += 16 * 1024)));
    },
  });
}

// ---------------------------------------------------------------------------------------------
// SageMaker Runtime API

function sdkOutcome(e: unknown, t0: number, timeoutMs: number): Outcome {
  const err = e as { name?: string; message?: string; OriginalStatusCode?: number; OriginalMessage?: string; $metadata?: { httpStatusCode?: number } };
  const ms = performance.now() - t0;
  // The SDK names some socket failures (EPIPE while the body is still going out) TimeoutError
  // too: only the client's own time limit is a timeout.
  if ((err.name === 'AbortError' || err.name === 'TimeoutError') && ms >= timeoutMs * 0.95) return { status: 'timeout', message: err.message, ms };
  // SageMaker wraps a container's error answer in ModelError (424) and keeps its status and body.
  if (err.name === 'ModelError' && typeof err.OriginalStatusCode === 'number' && err.OriginalStatusCode > 0) {
    const p = parseErrorBody(err.OriginalMessage ?? '');
    return { status: err.OriginalStatusCode, ...p, admission: err.OriginalStatusCode === 503 && p.error === 'overloaded', ms };
  }
  const status = err.$metadata?.httpStatusCode;
  if (typeof status === 'number') return { status, error: err.name, message: err.message?.slice(0, 300), ms };
  return { status: 'reset', error: err.name, message: err.message?.slice(0, 300), ms };
}

async function sendRealtime(client: SageMakerRuntimeClient, endpointName: string, req: RawRequest, timeoutMs: number): Promise<Outcome> {
  const t0 = performance.now();
  try {
    const r = await client.send(
      new InvokeEndpointCommand({ EndpointName: endpointName, ContentType: req.contentType, Accept: 'application/json', Body: asBytes(req.body) }),
      { abortSignal: AbortSignal.timeout(timeoutMs) },
    );
    const p = parseErrorBody(new TextDecoder().decode(r.Body ?? new Uint8Array()));
    return { status: 200, json: p.json, ms: performance.now() - t0 };
  } catch (e) {
    return sdkOutcome(e, t0, timeoutMs);
  }
}

async function sendAsync(
  client: SageMakerRuntimeClient,
  endpointName: string,
  store: ObjectStore,
  input0: { bucket: string; prefix: string },
  req: RawRequest,
  timeoutMs: number,
): Promise<Outcome> {
  const t0 = performance.now();
  const input = { bucket: input0.bucket, key: `${input0.prefix}async-in/${randomUUID()}.json` };
  try {
    await store.put(input, asBytes(req.body), 'async request');
    const r = await client.send(
      new InvokeEndpointAsyncCommand({
        EndpointName: endpointName,
        InputLocation: formatS3Uri(input),
        ContentType: req.contentType,
        Accept: 'application/json',
      }),
      { abortSignal: AbortSignal.timeout(timeoutMs) },
    );
    const out = parseLoc(r.OutputLocation);
    const failure = parseLoc(r.FailureLocation);
    if (!out) return { status: 'reset', error: 'no-output-location', message: 'InvokeEndpointAsync returned no OutputLocation', ms: performance.now() - t0 };
    // The queue answers at once; the container's answer lands in S3 later: poll with back-off.
    for (let wait = 50; performance.now() - t0 < timeoutMs; wait = Math.min(wait * 2, 1000)) {
      if (await store.head(out)) {
        const { bytes } = await store.get(out, 1 << 20, 'async output');
        void removeObject(store, out);
        return { status: 200, json: parseErrorBody(new TextDecoder().decode(bytes)).json, ms: performance.now() - t0 };
      }
      if (failure && (await store.head(failure))) {
        const text = new TextDecoder().decode((await store.get(failure, 1 << 20, 'async failure')).bytes);
        void removeObject(store, failure);
        const p = parseErrorBody(text);
        // The emulator's own failure to reach the container (e.g. it closed the connection on an
        // oversized body while the emulator was still sending): no status from the container.
        if (p.error === 'internal' && /^async invocation \S+ failed: /.test(p.message ?? ''))
          return { status: 'reset', error: 'async-transport', message: p.message, ms: performance.now() - t0 };
        // The failure object holds the container's body only: its status follows from the code,
        // or from the emulator's "container answered N" when the body was empty.
        const answered = /container answered (\d{3})/.exec(text);
        const status = p.error ? statusOfCode(p.error) : answered ? Number(answered[1]) : 500;
        return { status, ...p, admission: status === 503 && p.error === 'overloaded', ms: performance.now() - t0 };
      }
      await new Promise((res) => setTimeout(res, wait));
    }
    return { status: 'timeout', message: `async answer not in S3 within ${timeoutMs} ms`, ms: performance.now() - t0 };
  } catch (e) {
    return sdkOutcome(e, t0, timeoutMs);
  } finally {
    void removeObject(store, input);
  }
}

function parseLoc(uri: string | undefined): S3Location | undefined {
  const m = uri ? /^s3:\/\/([^/]+)\/(.+)$/s.exec(uri) : null;
  return m ? { bucket: m[1], key: m[2] } : undefined;
}

async function removeObject(store: ObjectStore, loc: S3Location): Promise<void> {
  try {
    await store.client.send(new DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
  } catch {
    // best effort: the object only takes space
  }
}

// ---------------------------------------------------------------------------------------------
// The server's log and process (local-process only)

export interface MemorySplitMb {
  container: number;
  budget: number;
  main: number;
  per_worker: number;
  key_cache: number;
  requests: number;
}

/**
 * What the server's JSON log lines tell: the memory split from 'sealed server ready', worker
 * replacements (a line mentioning a worker replaced/retired/exited, or a workers_replaced
 * field), and error-level lines (level >= 50) by message.
 */
export class ServerLog {
  memory: MemorySplitMb | undefined;
  workersReplacedLines = 0;
  workersReplacedField: number | undefined;
  readonly errors = new Map<string, number>();
  lines = 0;

  feed(line: string): void {
    this.lines++;
    // Most lines are per-request info lines: parse only those that can matter.
    if (!/"level":[56]\d|server ready|worker|replac|retire/i.test(line)) return;
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const msg = String(j.msg ?? '');
    if (msg === 'sealed server ready' && j.memory_mb && typeof j.memory_mb === 'object') this.memory = j.memory_mb as MemorySplitMb;
    for (const f of ['workers_replaced', 'workersReplaced'])
      if (typeof j[f] === 'number') this.workersReplacedField = Math.max(this.workersReplacedField ?? 0, j[f] as number);
    if (/worker/i.test(msg) && /replac|retir|restart|exit|died|crash/i.test(msg)) this.workersReplacedLines++;
    if (typeof j.level === 'number' && j.level >= 50) {
      const err = j.err as { message?: string } | undefined;
      const key = `${msg}${err?.message ? `: ${err.message}` : ''}`.slice(0, 200);
      this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
    }
  }

  /** null when the server reported nothing about worker replacement (not the same as 0). */
  get workersReplaced(): number | null {
    if (this.workersReplacedField !== undefined) return this.workersReplacedField;
    return this.workersReplacedLines > 0 ? this.workersReplacedLines : null;
  }
}

export interface LocalServer {
  pid: number;
  log: ServerLog;
  /** The --memory-budget-mb it was started with. */
  budgetMb: number | undefined;
  /** Resident set size now, and the kernel's high-water mark, in bytes. */
  rss(): Promise<{ rss: number; hwm: number }>;
  exited(): boolean;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface LocalProcessOptions {
  /** pino level of the server; 'info' is needed for the memory split (the ready line). */
  logLevel: 'info' | 'warn';
  modelDir: string;
  workDir: string;
  workers: number;
  maxInFlight?: number;
  memoryBudgetMb?: number;
  bucket: string;
  prefix: string;
}

/** Spawns `sealed <args>` (Node, this checkout) and kills it when this process exits, however. */
function spawnSealed(args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; exitCode(): number | null | undefined; stop(): Promise<void> } {
  const child = spawn(process.execPath, ['src/cli/main.ts', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let exitCode: number | null | undefined;
  child.once('exit', (code, signal) => (exitCode = code ?? (signal ? -1 : 0)));
  const reap = () => {
    if (exitCode === undefined) child.kill('SIGKILL');
  };
  process.once('exit', reap);
  return {
    child,
    exitCode: () => exitCode,
    async stop() {
      if (exitCode === undefined) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        await new Promise((r) => child.once('exit', r));
        clearTimeout(killer);
      }
      process.removeListener('exit', reap);
    },
  };
}

/**
 * The embedded S3 in a process of its own, like the server: the load generator's event loop
 * (decryption, request making) then delays neither S3 nor the /ping figures.
 */
async function startS3Process(dir: string): Promise<{ endpoint: string; stop(): Promise<void> }> {
  const port = await freePort();
  const p = spawnSealed(['s3', '--port', String(port), '--dir', dir], {});
  const endpoint = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the embedded S3 did not start within 30 s')), 30_000);
    createInterface({ input: p.child.stdout! }).on('line', (l) => {
      const m = /local S3-compatible server at (\S+)/.exec(l);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    p.child.once('exit', () => reject(new Error('the embedded S3 exited at start')));
  });
  return { endpoint, stop: p.stop };
}

/** Starts an embedded S3 and `sealed serve` on 127.0.0.1, and waits until /ping answers. */
export async function startLocalProcess(o: LocalProcessOptions): Promise<Target> {
  const s3 = await startS3Process(join(o.workDir, 's3'));
  const store = new ObjectStore({ endpoint: s3.endpoint });
  await store.ensureBucket(o.bucket);
  const port = await freePort();
  const args = ['serve', '--model', o.modelDir, '--port', String(port), '--host', '127.0.0.1', '--workers', String(o.workers), '--s3-endpoint', s3.endpoint];
  if (o.maxInFlight !== undefined) args.push('--max-in-flight', String(o.maxInFlight));
  if (o.memoryBudgetMb !== undefined) args.push('--memory-budget-mb', String(o.memoryBudgetMb));
  // Allow-lists as a deployment has them: reads under the tool's prefix, writes under its out/.
  args.push('--allow-read', `s3://${o.bucket}/${o.prefix}`, '--allow-write', `s3://${o.bucket}/${o.prefix}out/`);
  // info: the 'sealed server ready' line (memory split) and worker events are info lines; the
  // steady test runs at warn, as it always has, so that logging 2,500 refusals a second does not
  // change what it measures.
  const proc = spawnSealed(args, { LOG_LEVEL: o.logLevel });
  const log = new ServerLog();
  createInterface({ input: proc.child.stdout! }).on('line', (l) => log.feed(l));
  const url = `http://127.0.0.1:${port}`;
  const started = Date.now();
  let firstOk: number | undefined;
  for (;;) {
    if (proc.exitCode() !== undefined) throw new Error(`sealed serve exited (${proc.exitCode()}) before answering /ping`);
    try {
      if ((await fetch(`${url}/ping`, { signal: AbortSignal.timeout(2000) })).ok) firstOk ??= Date.now();
    } catch {
      // not listening yet
    }
    // The ready line (memory split) is logged just after the server listens.
    if (firstOk !== undefined && (log.memory || o.logLevel !== 'info' || Date.now() - firstOk > 5000)) break;
    if (Date.now() - started > 120_000) {
      await proc.stop();
      throw new Error('sealed serve did not answer /ping within 120 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const pid = proc.child.pid!;
  const server: LocalServer = {
    pid,
    log,
    budgetMb: o.memoryBudgetMb,
    async rss() {
      const s = await readFile(`/proc/${pid}/status`, 'utf8');
      const kb = (f: string) => Number(new RegExp(`${f}:\\s+(\\d+)`).exec(s)?.[1] ?? 0) * 1024;
      return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
    },
    exited: () => proc.exitCode() !== undefined,
  };
  return {
    kind: 'local-process',
    info: {
      target: 'local-process',
      url,
      s3_endpoint: s3.endpoint,
      bucket: o.bucket,
      prefix: o.prefix,
      allow_read: `s3://${o.bucket}/${o.prefix}`,
      allow_write: `s3://${o.bucket}/${o.prefix}out/`,
      workers: o.workers,
      memory_budget_mb: o.memoryBudgetMb ?? null,
    },
    store,
    bucket: o.bucket,
    prefix: o.prefix,
    url,
    server,
    send: (req, timeoutMs) => sendHttp(url, req, timeoutMs),
    remove: (loc) => removeObject(store, loc),
    async close() {
      await proc.stop();
      store.close();
      await s3.stop();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Servers the tool did not start

/** A server at `url` whose S3 is at `s3Endpoint` (absent: AWS S3 from the environment). */
export async function connectUrl(o: { url: string; s3Endpoint?: string; bucket: string; prefix: string }): Promise<Target> {
  const store = new ObjectStore({ endpoint: o.s3Endpoint });
  // The embedded S3 starts empty; an AWS bucket is the operator's to make.
  if (o.s3Endpoint) await store.ensureBucket(o.bucket);
  const url = o.url.replace(/\/+$/, '');
  return {
    kind: 'url',
    info: { target: 'url', url, s3_endpoint: o.s3Endpoint ?? 'aws', bucket: o.bucket, prefix: o.prefix },
    store,
    bucket: o.bucket,
    prefix: o.prefix,
    url,
    send: (req, timeoutMs) => sendHttp(url, req, timeoutMs),
    remove: (loc) => removeObject(store, loc),
    async close() {
      store.close();
    },
  };
}

/**
 * An endpoint behind the SageMaker Runtime API. `containerUrl` (optional): the container's own
 * address when reachable (the local emulator's --container), for /ping and slow bodies, which
 * the Runtime API cannot carry.
 */
export async function connectSageMaker(o: {
  endpointName: string;
  runtimeUrl?: string;
  async: boolean;
  s3Endpoint?: string;
  bucket: string;
  prefix: string;
  containerUrl?: string;
}): Promise<Target> {
  const store = new ObjectStore({ endpoint: o.s3Endpoint });
  if (o.s3Endpoint) await store.ensureBucket(o.bucket);
  const client = runtimeClient({ endpoint: o.runtimeUrl });
  return {
    kind: 'sagemaker-runtime',
    info: {
      target: 'sagemaker-runtime',
      endpoint_name: o.endpointName,
      runtime_url: o.runtimeUrl ?? 'aws',
      mode: o.async ? 'async' : 'real-time',
      s3_endpoint: o.s3Endpoint ?? 'aws',
      bucket: o.bucket,
      prefix: o.prefix,
      container_url: o.containerUrl ?? null,
    },
    store,
    bucket: o.bucket,
    prefix: o.prefix,
    url: o.containerUrl?.replace(/\/+$/, ''),
    send: (req, timeoutMs) => (o.async ? sendAsync(client, o.endpointName, store, o, req, timeoutMs) : sendRealtime(client, o.endpointName, req, timeoutMs)),
    remove: (loc) => removeObject(store, loc),
    async close() {
      client.destroy();
      store.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// /ping, timed from a thread of its own

// Plain JS for an eval'd worker: the load generator's main thread (decryption, request making)
// must not delay the pings it times.
const PINGER = `
const { parentPort, workerData } = require('node:worker_threads');
let stop = false;
parentPort.on('message', () => (stop = true));
(async () => {
  const ms = [];
  const statuses = {};
  let replaced;
  while (!stop) {
    const t0 = performance.now();
    let s;
    try {
      const r = await fetch(workerData.url + '/ping', { signal: AbortSignal.timeout(5000) });
      s = String(r.status);
      const j = await r.json().catch(() => ({}));
      if (typeof j.workers_replaced === 'number') replaced = j.workers_replaced;
    } catch (e) {
      s = e.name === 'TimeoutError' ? 'timeout' : 'reset';
    }
    const d = performance.now() - t0;
    ms.push(d);
    statuses[s] = (statuses[s] ?? 0) + 1;
    await new Promise((r) => setTimeout(r, Math.max(0, workerData.everyMs - d)));
  }
  parentPort.postMessage({ ms, statuses, replaced });
})();
`;

export interface PingFigures {
  ms: number[];
  statuses: Record<string, number>;
  /** A workers_replaced field in /ping's answer, if the server has one. */
  workersReplaced?: number;
}

/** GET /ping every `everyMs` until stopped (each ping waits at most 5 s). */
export function startPinger(url: string, everyMs = 100): { stop(): Promise<PingFigures> } {
  const w = new Worker(PINGER, { eval: true, workerData: { url, everyMs } });
  const result = new Promise<PingFigures>((resolve, reject) => {
    w.once('message', (m: { ms: number[]; statuses: Record<string, number>; replaced?: number }) =>
      resolve({ ms: m.ms, statuses: m.statuses, workersReplaced: m.replaced }),
    );
    w.once('error', reject);
  });
  return {
    async stop() {
      w.postMessage('stop');
      const r = await result;
      await w.terminate();
      return r;
    },
  };
}
