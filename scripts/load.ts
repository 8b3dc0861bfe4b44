// Load tests of POST /invocations, bounded in time, against what is deployed. Last line: one
// JSON object.
//
// Steady (default): autocannon at a multiple of the admitted capacity for --seconds after a
// warm-up; requests, statuses, throughput, latency, and the server's RSS growth.
//
// Hostile (--hostile): a steady stream of valid requests, each result downloaded, decrypted and
// checked against the plaintext model, mixed with every kind of hostile request
// (scripts/load-hostile.ts) for --seconds, then valid requests only for --after seconds. /ping
// is polled every 100 ms throughout; the server's RSS sampled every 500 ms against the memory
// budget it was started with. It passes (exit 0) with no 5xx other than admission control
// (503 + Retry-After), no wrong result, every valid request after the hostile phase answered
// and right, and the RSS peak within the budget.
//
// Targets (scripts/load-targets.ts), named in the JSON as "target":
//   (default)                          local-process: trains the breast-cancer model (or uses
//                                      --model), starts an embedded S3 and `sealed serve` on 127.0.0.1
//   --url URL --s3-endpoint URL --bucket NAME --model DIR
//                                      url: a server it did not start (e.g. a container)
//   --sagemaker-endpoint NAME [--sagemaker-url URL] [--async] [--container-url URL] --bucket NAME --model DIR
//                                      sagemaker-runtime: through the SageMaker Runtime API
//
//   npm run load -- [--seconds 120] [--warmup 20] [--overload 2] [--workers N]
//   npm run load -- --hostile [--seconds 180] [--warmup 10] [--after 10] [--memory-budget-mb 2048]
//                    [--valid-concurrency 2] [--kinds a,b] [--variants] [--oversized-mb 128] [--prefix load/]
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { BREAST_CANCER_CSV, splitCsv } from '../src/cli/demo.ts';
import { ClientSession } from '../src/client/session.ts';
import { readClientPart, readServerPart, type ServerPart } from '../src/model/bundle.ts';
import { formatS3Uri } from '../src/storage/s3.ts';
import { parseHyperparameters, train } from '../src/train/train.ts';
import { decodeWire } from '../src/wire/format.ts';
import { hostileKinds, type HostileKind } from './load-hostile.ts';
import { connectSageMaker, connectUrl, startLocalProcess, startPinger, type Outcome, type Target } from './load-targets.ts';
import { invocationBody, keysKey, prepareValid, runValid, syntheticRows, type Verdict } from './load-valid.ts';

const { values } = parseArgs({
  options: {
    hostile: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    after: { type: 'string', default: '10' },
    overload: { type: 'string', default: '2' },
    workers: { type: 'string' },
    connections: { type: 'string' },
    'memory-budget-mb': { type: 'string' },
    model: { type: 'string' },
    url: { type: 'string' },
    's3-endpoint': { type: 'string' },
    bucket: { type: 'string', default: 'load' },
    // Every object the tool writes is under this key prefix (a server's allow-lists name it).
    prefix: { type: 'string', default: 'load/' },
    'sagemaker-endpoint': { type: 'string' },
    'sagemaker-url': { type: 'string' },
    'container-url': { type: 'string' },
    async: { type: 'boolean', default: false },
    'valid-concurrency': { type: 'string', default: '2' },
    'oversized-mb': { type: 'string', default: '128' },
    'timeout-ms': { type: 'string' },
    seed: { type: 'string', default: '20261201' },
    // Only these hostile kinds (comma-separated names, as in requests_by_kind): to bisect a finding.
    kinds: { type: 'string' },
    // Adds requests_by_variant (kind:variant -> status -> count) to the report.
    variants: { type: 'boolean', default: false },
  },
});
const hostile = values.hostile;
const seconds = Number(values.seconds ?? (hostile ? 180 : 120));
const warmup = Number(values.warmup ?? (hostile ? 10 : 20));
const after = hostile ? Number(values.after) : 0;
const workers = Number(values.workers ?? availableParallelism());
const seed = Number(values.seed);
// SageMaker real-time answers within 60 s; async requests wait in a queue and S3 as well.
const timeoutMs = Number(values['timeout-ms'] ?? (values.async ? 180_000 : 70_000));
// A small instance's budget for the hostile run, so that the RSS check means something here.
const budgetMb = values['memory-budget-mb'] !== undefined ? Number(values['memory-budget-mb']) : hostile ? 2048 : undefined;
for (const [name, v] of Object.entries({ seconds, warmup, after, workers, seed, timeoutMs }))
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} must be a number`);
const err = (s: string) => process.stderr.write(s + '\n');
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((r) => {
    if (signal?.aborted) return r();
    const t = setTimeout(r, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
  });
const mb = (bytes: number) => +(bytes / 2 ** 20).toFixed(1);

// A failure exits through process.exit, so that 'exit' runs and the processes this tool started
// are killed (load-targets.ts). Registered first: TensorFlow's WASM backend (loaded to train)
// adds an uncaughtException handler that rethrows, and Node then exits (code 7) without 'exit'.
let workDir: string | undefined;
const die = (e: unknown) => {
  err(`load: ${(e as Error)?.stack ?? String(e)}`);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  process.exit(1);
};
process.on('uncaughtException', die);
process.on('unhandledRejection', die);

// Bounded whatever happens: past this the run gives up, says so, and exits (the server it
// started is killed on exit, see load-targets.ts).
const watchdogS = warmup + seconds + after + 300;
const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ load: hostile ? 'hostile' : 'invocations', aborted: `watchdog: the run did not finish within ${watchdogS} s` }));
  process.exit(2);
}, watchdogS * 1000);

// ---------------------------------------------------------------------------------------------
// The model, the client's keys, the target

const work = (workDir = await mkdtemp(join(tmpdir(), 'sealed-load-')));
let modelDir = values.model;
const target_ = values.url ? 'url' : values['sagemaker-endpoint'] ? 'sagemaker-runtime' : 'local-process';
if (!modelDir) {
  if (target_ !== 'local-process') throw new Error('--model DIR (the bundle the target serves) is needed with --url and --sagemaker-endpoint');
  err('training the breast-cancer model');
  const { trainDir } = await splitCsv(BREAST_CANCER_CSV, join(work, 'data'));
  modelDir = join(work, 'model');
  await train({ trainDir, modelDir }, parseHyperparameters({ task: 'binary', target: 'diagnosis', epochs: '100' }), () => {});
}
const { modelId, client: part } = await readClientPart(modelDir);
// The server part, when the bundle has it, gives the plaintext scores to check results against.
const serverPart: ServerPart | undefined = await readServerPart(modelDir).catch(() => undefined);
const session = await ClientSession.open(modelId, part);
const keys = session.generateKeys();

const bucket = values.bucket!;
const prefix = values.prefix!.replace(/^\/+/, '').replace(/\/*$/, '/');
let target: Target;
if (target_ === 'url') target = await connectUrl({ url: values.url!, s3Endpoint: values['s3-endpoint'], bucket, prefix });
else if (target_ === 'sagemaker-runtime')
  target = await connectSageMaker({
    endpointName: values['sagemaker-endpoint']!,
    runtimeUrl: values['sagemaker-url'],
    async: values.async!,
    s3Endpoint: values['s3-endpoint'],
    bucket,
    prefix,
    containerUrl: values['container-url'],
  });
else
  target = await startLocalProcess({
    modelDir,
    workDir: work,
    workers,
    maxInFlight: workers * 4,
    memoryBudgetMb: budgetMb,
    bucket,
    prefix,
    logLevel: hostile ? 'info' : 'warn',
  });
if (target.url) {
  // A target serving another model would refuse every valid request (409): say so at once.
  const ping = (await (await fetch(`${target.url}/ping`, { signal: AbortSignal.timeout(10_000) })).json()) as { model_id?: string };
  if (ping.model_id !== modelId) throw new Error(`the target serves model ${ping.model_id}, --model is ${modelId}`);
}

async function finish(report: Record<string, unknown>, exitCode: number): Promise<never> {
  await target.close();
  session.close();
  await rm(work, { recursive: true, force: true });
  clearTimeout(watchdog);
  console.log(JSON.stringify(report));
  process.exit(exitCode);
}

const rssOf = async () => (target.server ? (await target.server.rss()).rss : 0);

// ---------------------------------------------------------------------------------------------
// Steady

if (!hostile) {
  const records = 114;
  const queryLoc = { bucket, key: `${target.prefix}steady/q` };
  const keysLoc = { bucket, key: keysKey(target.prefix, keys.evaluationKeys) };
  await target.store.put(keysLoc, keys.evaluationKeys, 'keys');
  await target.store.put(queryLoc, session.encrypt(syntheticRows(part, records, seed)), 'query');
  const body = invocationBody(formatS3Uri(queryLoc), formatS3Uri(keysLoc), `s3://${bucket}/${target.prefix}out/steady`);
  // The admitted capacity is known only for the server this tool starts.
  const maxInFlight = target.server ? workers * 4 : undefined;
  const connections = Number(values.connections ?? (maxInFlight ? Math.ceil(maxInFlight * Number(values.overload)) : 16));
  const statuses: Record<string, number> = {};
  const count = (s: string | number) => (statuses[s] = (statuses[s] ?? 0) + 1);
  type Result = { total: number; errors: number; latency: { p50: number; p99: number; max: number } };
  // autocannon where the server is reachable over HTTP; through the Runtime API (signed SDK
  // calls), a closed loop of `connections` callers.
  const load = async (duration: number, counting: boolean): Promise<Result> => {
    if (target.url) {
      const setupClient = counting
        ? (((c: { on(ev: 'response', fn: (status: number) => void): void }) => c.on('response', (s) => count(s))) as autocannon.Options['setupClient'])
        : undefined;
      const r = await autocannon({
        url: `${target.url}/invocations`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        connections,
        duration,
        timeout: 60,
        setupClient,
      } as autocannon.Options);
      return { total: r.requests.total, errors: r.errors + r.timeouts, latency: r.latency };
    }
    const lat: number[] = [];
    let errors = 0;
    const end = performance.now() + duration * 1000;
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (performance.now() < end) {
          const o = await target.send({ body, contentType: 'application/json' }, timeoutMs);
          lat.push(o.ms);
          if (typeof o.status !== 'number') errors++;
          else if (counting) count(o.status);
        }
      }),
    );
    return { total: lat.length, errors, latency: { p50: percentile(lat, 50), p99: percentile(lat, 99), max: percentile(lat, 100) } };
  };
  // Warm-up under the same load, not measured: workers load the keys, WASM heaps and SEAL's
  // memory pools grow to their working size, V8 settles. Growth is measured after it.
  err(`warm-up: ${warmup} s`);
  await load(warmup, false);
  const rssStart = await rssOf();
  let rssPeak = rssStart;
  const series: number[] = [];
  const sampler = target.server
    ? setInterval(
        () =>
          void rssOf().then((v) => {
            rssPeak = Math.max(rssPeak, v);
            series.push(Math.round(mb(v)));
          }),
        5000,
      )
    : undefined;
  err(`load: ${connections} connections${maxInFlight ? ` (${values.overload}x the ${maxInFlight} admitted)` : ''} for ${seconds} s against ${target.kind}`);
  const result = await load(seconds, true);
  clearInterval(sampler);
  if (target.server) err(`server RSS every 5 s (MB): ${series.join(' ')}`);
  const rssEnd = await rssOf();
  const ok = statuses['200'] ?? 0;
  const errors = Object.fromEntries(Object.entries(statuses).filter(([s]) => s !== '200'));
  const rss = target.server
    ? { rss_start_mb: mb(rssStart), rss_peak_mb: mb(rssPeak), rss_end_mb: mb(rssEnd), rss_growth_pct: +((100 * (rssEnd - rssStart)) / rssStart).toFixed(1) }
    : { rss_start_mb: null, rss_peak_mb: null, rss_end_mb: null, rss_growth_pct: null };
  await finish(
    {
      load: 'invocations',
      target: target.kind,
      target_info: target.info,
      seconds,
      workers: target.server ? workers : null,
      connections,
      max_in_flight: maxInFlight ?? null,
      records_per_request: records,
      requests: result.total,
      ok,
      errors_by_status: errors,
      errors_other: result.errors,
      failures_other_than_503:
        Object.entries(errors)
          .filter(([s]) => s !== '503')
          .reduce((a, [, n]) => a + n, 0) + result.errors,
      throughput_ok_per_s: +(ok / seconds).toFixed(1),
      latency_ms_p50: result.latency.p50,
      latency_ms_p99: result.latency.p99,
      latency_ms_max: result.latency.max,
      ...rss,
      warmup_s: warmup,
    },
    0,
  );
}

// ---------------------------------------------------------------------------------------------
// Hostile

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return +s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)].toFixed(1);
}

/** Answers by kind and status; 5xx other than admission control, with their messages. */
class Tally {
  readonly byKind: Record<string, Record<string, number>> = {};
  readonly byVariant: Record<string, Record<string, number>> = {};
  /** The first answer's error and message for each kind, variant and status (--variants). */
  readonly messages = new Map<string, string>();
  errors5xx = 0;
  admission503 = 0;
  clientTimeouts = 0;
  readonly errorsByKind: Record<string, Record<string, number>> = {};
  readonly samples = new Map<string, { kind: string; variant: string; status: string; error?: string; message?: string; count: number }>();

  record(kind: string, o: Outcome, variant: string): void {
    const s = String(o.status);
    const k = (this.byKind[kind] ??= {});
    k[s] = (k[s] ?? 0) + 1;
    const kv = (this.byVariant[`${kind}:${variant}`] ??= {});
    kv[s] = (kv[s] ?? 0) + 1;
    if (kv[s] === 1 && this.messages.size < 2000) this.messages.set(`${kind}:${variant}:${s}`, `${o.error ?? ''} ${o.message?.slice(0, 160) ?? ''}`.trim());
    const server5xx = typeof o.status === 'number' && o.status >= 500 && !(o.status === 503 && o.admission);
    if (o.status === 503 && o.admission) this.admission503++;
    if (server5xx) {
      this.errors5xx++;
      const e = (this.errorsByKind[kind] ??= {});
      e[s] = (e[s] ?? 0) + 1;
    }
    if (o.status === 'timeout') this.clientTimeouts++;
    if (server5xx || o.status === 'timeout' || o.status === 'reset') this.sample(kind, variant, s, o.error, o.message);
  }

  sample(kind: string, variant: string, status: string, error?: string, message?: string): void {
    // Messages that name a request (ids) would make every sample distinct: drop the ids.
    const key = `${kind}|${variant}|${status}|${error}|${message?.replace(/[0-9a-f-]{36}/g, 'ID').slice(0, 120)}`;
    const e = this.samples.get(key);
    if (e) e.count++;
    else if (this.samples.size < 100) this.samples.set(key, { kind, variant, status, error, message: message?.slice(0, 300), count: 1 });
  }
}

type Phase = 'warmup' | 'hostile' | 'after';
const tally = new Tally();
const verdicts: Record<Phase, Record<Verdict, number>> = {
  warmup: { ok: 0, wrong: 0, failed: 0, admission: 0 },
  hostile: { ok: 0, wrong: 0, failed: 0, admission: 0 },
  after: { ok: 0, wrong: 0, failed: 0, admission: 0 },
};
let worstValid = 0;
const wrongSamples: string[] = [];
let phase: Phase = 'warmup';

err(`preparing valid queries (checked against ${serverPart ? 'the plaintext model' : 'a reference decryption'}) and hostile fixtures`);
const valid = await prepareValid({ target, session, part, server: serverPart, evaluationKeys: keys.evaluationKeys, sizes: [1, 40, 114], seed, timeoutMs });
const mutQuery = session.encrypt(syntheticRows(part, 40, seed + 99));
const made = await hostileKinds({
  target,
  modelId,
  part,
  good: { query: valid.queries[1].uri, keys: valid.keysUri, output: `s3://${bucket}/${target.prefix}out/hostile` },
  query: mutQuery,
  keys: keys.evaluationKeys,
  section: decodeWire('query', mutQuery, 'query').sections[0],
  seed,
  timeoutMs,
  oversizedMb: Number(values['oversized-mb']),
  slowCapMs: 45_000,
});
const only = values.kinds?.split(',').map((s) => s.trim());
const kinds = only ? made.kinds.filter((k) => only.includes(k.name)) : made.kinds;
const skipped: Record<string, string> = { ...made.skipped };
for (const k of made.kinds) if (!kinds.includes(k)) skipped[k.name] = 'not in --kinds';

// Throughout: /ping every 100 ms, RSS every 500 ms.
const pinger = target.url ? startPinger(target.url) : undefined;
let rssPeak = 0;
const rssSeries: number[] = [];
let samples = 0;
const sampler = target.server
  ? setInterval(
      () =>
        void rssOf()
          .then((v) => {
            rssPeak = Math.max(rssPeak, v);
            if (samples++ % 10 === 0) rssSeries.push(Math.round(mb(v)));
          })
          .catch(() => undefined),
      500,
    )
  : undefined;

// Valid requests: a closed loop per caller, each answer decrypted and checked.
const validStop = new AbortController();
const validConcurrency = Number(values['valid-concurrency']);
const validLoops = Array.from({ length: validConcurrency }, async (_, id) => {
  for (let n = id; !validStop.signal.aborted && n < 1_000_000; n += validConcurrency) {
    const at = phase;
    const kind = at === 'hostile' ? 'valid' : `valid_${at}`;
    const q = valid.queries[n % valid.queries.length];
    const r = await runValid(target, session, valid, q, timeoutMs);
    tally.record(kind, r.outcome, q.name);
    verdicts[at][r.verdict]++;
    if (r.worst !== undefined && Number.isFinite(r.worst)) worstValid = Math.max(worstValid, r.worst);
    if (r.verdict === 'wrong' && wrongSamples.length < 10) wrongSamples.push(`${at} ${q.name}: ${r.detail}`);
    // Every failed valid request is a sample (record() already took 5xx, resets and timeouts).
    if (r.verdict === 'failed' && typeof r.outcome.status === 'number' && r.outcome.status < 500)
      tally.sample(kind, q.name, String(r.outcome.status), r.outcome.error, r.outcome.message);
    // Admission control asks for a retry after Retry-After (1 s); other failures back off a little.
    if (r.verdict === 'admission') await sleep(1000, validStop.signal);
    else if (r.verdict === 'failed') await sleep(200, validStop.signal);
  }
});

err(`warm-up: ${warmup} s of valid requests only`);
await sleep(warmup * 1000);
const rssStart = await rssOf();
rssPeak = Math.max(rssPeak, rssStart);
phase = 'hostile';
err(`hostile: ${seconds} s, ${validConcurrency} valid callers and ${kinds.map((k) => `${k.name} x${k.concurrency}`).join(', ')}`);
const hostileStop = new AbortController();
const iterations: Record<string, number> = {};
const toolErrors: string[] = [];
const kindLoop = async (k: HostileKind, slot: number) => {
  for (let i = slot; !hostileStop.signal.aborted && i < 1_000_000; i += k.concurrency) {
    iterations[k.name] = (iterations[k.name] ?? 0) + 1;
    try {
      await k.run(i, (o, variant) => tally.record(k.name, o, variant), hostileStop.signal);
    } catch (e) {
      // A failure of the tool itself (e.g. an S3 upload of a fixture): reported, not counted as the server's.
      if (toolErrors.length < 20) toolErrors.push(`${k.name}: ${(e as Error).message.slice(0, 200)}`);
    }
    await sleep(k.pauseMs, hostileStop.signal);
  }
};
const hostileLoops = kinds.flatMap((k) => Array.from({ length: k.concurrency }, (_, slot) => kindLoop(k, slot)));
await sleep(seconds * 1000);
hostileStop.abort();
err('hostile phase over: waiting for hostile requests in flight');
await Promise.all(hostileLoops);
phase = 'after';
err(`after: ${after} s of valid requests only`);
await sleep(after * 1000);
validStop.abort();
await Promise.all(validLoops);
const ping = (await pinger?.stop()) ?? { ms: [], statuses: {}, workersReplaced: undefined };
const pingMs = ping.ms;
const pingWorkersReplaced = ping.workersReplaced;
clearInterval(sampler);

const rssNow = target.server ? await target.server.rss().catch(() => ({ rss: 0, hwm: 0 })) : undefined;
if (rssNow) rssPeak = Math.max(rssPeak, rssNow.hwm);
const memory = target.server?.log.memory;
const rssBudgetMb = memory?.budget ?? target.server?.budgetMb ?? null;
if (target.server) err(`server RSS every 5 s (MB): ${rssSeries.join(' ')}`);
const log = target.server?.log;
const workersReplaced = pingWorkersReplaced ?? log?.workersReplaced ?? null;
const v = verdicts;
const reasons: string[] = [];
if (tally.errors5xx > 0) reasons.push(`${tally.errors5xx} server errors (5xx other than 503 + Retry-After)`);
if (v.warmup.wrong + v.hostile.wrong + v.after.wrong > 0) reasons.push('wrong results');
if (v.after.ok === 0) reasons.push('no valid request succeeded after the hostile phase');
if (v.after.failed + v.after.admission > 0) reasons.push(`${v.after.failed + v.after.admission} valid requests failed after the hostile phase`);
if (rssBudgetMb !== null && target.server && mb(rssPeak) > rssBudgetMb) reasons.push(`RSS peak ${mb(rssPeak)} MB over the budget of ${rssBudgetMb} MB`);
if (target.server?.exited()) reasons.push('the server process exited');
const total = Object.values(tally.byKind).reduce((a, k) => a + Object.values(k).reduce((x, y) => x + y, 0), 0);
await finish(
  {
    load: 'hostile',
    target: target.kind,
    target_info: target.info,
    seconds,
    warmup_s: warmup,
    after_s: after,
    workers: target.server ? workers : null,
    valid_concurrency: validConcurrency,
    requests_total: total,
    requests_by_kind: tally.byKind,
    ...(values.variants ? { requests_by_variant: tally.byVariant, first_message_by_variant: Object.fromEntries(tally.messages) } : {}),
    hostile_iterations: iterations,
    server_errors_5xx: tally.errors5xx,
    server_errors_by_kind: tally.errorsByKind,
    admission_503: tally.admission503,
    client_timeouts: tally.clientTimeouts,
    // The 25 most frequent (a broken server repeats one failure many ways).
    error_samples: [...tally.samples.values()].sort((a, b) => b.count - a.count).slice(0, 25),
    valid_check: valid.check,
    valid_ok: v.hostile.ok,
    valid_wrong: v.warmup.wrong + v.hostile.wrong + v.after.wrong,
    valid_failed: v.hostile.failed,
    valid_503: v.hostile.admission,
    valid_worst_abs_diff: +worstValid.toExponential(2),
    valid_wrong_samples: wrongSamples,
    valid_warmup_ok: v.warmup.ok,
    valid_after_ok: v.after.ok,
    valid_after_failed: v.after.failed + v.after.admission,
    ping_count: pingMs.length,
    ping_p50_ms: target.url ? percentile(pingMs, 50) : null,
    ping_p99_ms: target.url ? percentile(pingMs, 99) : null,
    ping_max_ms: target.url ? +Math.max(0, ...pingMs).toFixed(1) : null,
    ping_non_200: Object.fromEntries(Object.entries(ping.statuses).filter(([s]) => s !== '200')),
    rss_start_mb: target.server ? mb(rssStart) : null,
    rss_peak_mb: target.server ? mb(rssPeak) : null,
    rss_end_mb: rssNow ? mb(rssNow.rss) : null,
    rss_budget_mb: target.server ? rssBudgetMb : null,
    memory_mb: memory ?? null,
    workers_replaced: target.server || pingWorkersReplaced !== undefined ? workersReplaced : null,
    workers_replaced_source:
      pingWorkersReplaced !== undefined
        ? 'ping'
        : log?.workersReplacedField !== undefined
          ? 'log field'
          : log?.workersReplacedLines
            ? 'log lines'
            : target.server
              ? 'none: the server reported no worker replacement (no log line or field); null is not 0'
              : 'not observable for this target',
    server_log_errors: log ? Object.fromEntries([...log.errors].slice(0, 20)) : null,
    server_exited: target.server ? target.server.exited() : null,
    skipped,
    tool_errors: toolErrors,
    pass: reasons.length === 0,
    fail_reasons: reasons,
  },
  reasons.length === 0 ? 0 : 1,
);
