// Hostile request makers for `npm run load -- --hostile`: every kind of request a public
// endpoint must refuse with a 4xx (or drop), never a 5xx, a hang or a dead worker:
//
//   garbage_body      non-JSON, wrong content types, wrong JSON shapes, broken HTTP on a raw socket
//   oversized_body    bodies over the server's 64 KiB limit (with a length, and chunked)
//   hostile_uri       lone surrogates, NUL and control characters, 1,025-byte keys, bad and other
//                     buckets, '.'/'..' segments, not-s3 URIs, in each of the three fields
//   mutated_object    real queries and keys with seeded damage (test/helpers/mutate.ts), uploaded
//   many_sections     consistent wire frames declaring up to 2^32-1 sections, holding few or none
//   poison_run        bursts of queries of thousands of garbage sections (SEAL exceptions in workers)
//   slow_body         raw sockets that trickle or stall their headers or body
//   oversized_object  an evaluation-keys object over the server's 128 MiB limit
//
// Builders of bytes are pure (test/light/load-hostile.test.ts checks them); the kinds at the end
// upload their fixtures once and send through any Target.
import { connect } from 'node:net';
import { randomUUID } from 'node:crypto';
import { paramsKey } from '../src/fhe/params.ts';
import type { ClientPart } from '../src/model/client-part.ts';
import { seededRandom } from '../src/train/augment.ts';
import { formatS3Uri } from '../src/storage/s3.ts';
import { encodeWire, type WireKind } from '../src/wire/format.ts';
import { mutator } from '../test/helpers/mutate.ts';
import type { Outcome, RawRequest, Target } from './load-targets.ts';
import { keysKey, sha256 } from './load-valid.ts';

type Rand = () => number;
const randomBytes = (rand: Rand, n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));

// ---------------------------------------------------------------------------------------------
// Bodies

/** Valid-looking request fields, one of which a maker replaces. */
export interface GoodUris {
  query: string;
  keys: string;
  output: string;
}

export interface Variant<T> {
  variant: string;
  value: T;
}

/** Bodies the JSON schema or the parser must refuse (400/404/405/415), over HTTP or SageMaker. */
export function garbageBodies(good: GoodUris): Variant<RawRequest>[] {
  const json = 'application/json';
  const ok = { encrypted_query_uri: good.query, evaluation_keys_uri: good.keys, output_uri: good.output };
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  return [
    { variant: 'not-json', value: { body: 'hello, server', contentType: json } },
    { variant: 'truncated-json', value: { body: JSON.stringify(ok).slice(0, 40), contentType: json } },
    { variant: 'empty', value: { body: '', contentType: json } },
    { variant: 'null', value: { body: 'null', contentType: json } },
    { variant: 'array', value: { body: '[]', contentType: json } },
    { variant: 'number', value: { body: '12345', contentType: json } },
    { variant: 'string', value: { body: '"s3://x/y"', contentType: json } },
    { variant: 'extra-field', value: { body: JSON.stringify({ ...ok, extra: 1 }), contentType: json } },
    {
      variant: 'wrong-types',
      value: { body: JSON.stringify({ encrypted_query_uri: 123, evaluation_keys_uri: ['s3://a/b'], output_uri: { uri: good.output } }), contentType: json },
    },
    { variant: 'missing-fields', value: { body: JSON.stringify({ output_uri: good.output }), contentType: json } },
    {
      variant: 'proto-pollution',
      value: { body: `{"__proto__":{"polluted":1},"encrypted_query_uri":"${good.query}","output_uri":"${good.output}"}`, contentType: json },
    },
    {
      variant: 'constructor-prototype',
      value: { body: `{"constructor":{"prototype":{"polluted":1}},"encrypted_query_uri":"${good.query}","output_uri":"${good.output}"}`, contentType: json },
    },
    {
      variant: 'duplicate-keys',
      value: { body: `{"encrypted_query_uri":"${good.query}","encrypted_query_uri":7,"output_uri":"${good.output}"}`, contentType: json },
    },
    { variant: 'deep-nesting', value: { body: deep(20_000), contentType: json } },
    { variant: 'deep-object', value: { body: '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000), contentType: json } },
    {
      variant: 'invalid-utf8',
      value: {
        body: Uint8Array.from([
          ...new TextEncoder().encode('{"encrypted_query_uri":"s3://b/'),
          0xff,
          0xfe,
          0xc0,
          ...new TextEncoder().encode('","output_uri":"s3://b/o"}'),
        ]),
        contentType: json,
      },
    },
    { variant: 'utf16-charset', value: { body: JSON.stringify(ok), contentType: 'application/json; charset=utf-16' } },
    { variant: 'text-plain', value: { body: JSON.stringify(ok), contentType: 'text/plain' } },
    { variant: 'form-urlencoded', value: { body: 'encrypted_query_uri=s3%3A%2F%2Fa%2Fb', contentType: 'application/x-www-form-urlencoded' } },
    {
      variant: 'multipart',
      value: { body: '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n', contentType: 'multipart/form-data; boundary=x' },
    },
    { variant: 'octet-stream', value: { body: randomBytes(seededRandom(7), 512), contentType: 'application/octet-stream' } },
    { variant: 'no-content-type', value: { body: JSON.stringify(ok) } },
    { variant: 'bogus-content-type', value: { body: JSON.stringify(ok), contentType: 'application/json;;;==;charset' } },
    { variant: 'wildcard-content-type', value: { body: JSON.stringify(ok), contentType: '*/*' } },
    // Other methods and paths: direct HTTP only (the Runtime API has one operation).
    { variant: 'get-invocations', value: { body: '', method: 'GET', path: '/invocations' } },
    { variant: 'put-invocations', value: { body: JSON.stringify(ok), contentType: json, method: 'PUT', path: '/invocations' } },
    { variant: 'post-ping', value: { body: JSON.stringify(ok), contentType: json, path: '/ping' } },
    { variant: 'unknown-path', value: { body: JSON.stringify(ok), contentType: json, path: '/invocations/../../etc/passwd' } },
    { variant: 'encoded-path', value: { body: JSON.stringify(ok), contentType: json, path: '/%69nvocations%00' } },
  ];
}

/** Bodies over the 64 KiB limit (413), valid JSON but for their size. */
export function oversizedBodies(good: GoodUris): Variant<RawRequest>[] {
  const padded = (bytes: number) => {
    const base = JSON.stringify({ encrypted_query_uri: good.query, evaluation_keys_uri: good.keys, output_uri: good.output, pad: '' });
    return base.slice(0, -2) + 'x'.repeat(Math.max(0, bytes - base.length)) + '"}';
  };
  return [
    { variant: '64KiB+1', value: { body: padded(64 * 1024 + 1), contentType: 'application/json' } },
    { variant: '1MiB', value: { body: padded(1024 * 1024), contentType: 'application/json' } },
    { variant: '8MiB', value: { body: padded(8 * 1024 * 1024), contentType: 'application/json' } },
    { variant: '1MiB-chunked', value: { body: padded(1024 * 1024), contentType: 'application/json', chunked: true } },
  ];
}

// ---------------------------------------------------------------------------------------------
// URIs

/** `unit` repeated to exactly `bytes` bytes of UTF-8 (the end padded with 'a'). */
export function fill(unit: string, bytes: number): string {
  let s = '';
  for (const ch of unit.repeat(Math.ceil(bytes / Math.max(1, Buffer.byteLength(unit))) + 1)) {
    if (Buffer.byteLength(s + ch) > bytes) break;
    s += ch;
  }
  return s + 'a'.repeat(bytes - Buffer.byteLength(s));
}

/**
 * URIs that must be refused (400 bad-uri, 403, 404), never passed on to a 5xx; `prefix`: where the
 * tool's objects are (the server's allow-lists). `nonce` makes the
 * keys that are legal (a '#', a '?', U+202E...) new on each call: a result written there as
 * output_uri must not be what a later request reads as its query or keys.
 */
export function hostileUris(bucket: string, prefix: string, otherBucket: string, nonce: string): Variant<string>[] {
  // Under the prefix the server may read and write: refused for what the key is, not where.
  const k = (key: string) => `s3://${bucket}/${prefix}${key}`;
  const list: [string, string][] = [
    ['lone-surrogate', k('q/\ud800')],
    ['lone-low-surrogate', k('\udc00x')],
    ['nul', k('a\u0000b')],
    ['control-01', k('a\u0001b')],
    ['newline', k('a\nb')],
    ['carriage-return', k('a\r\nX-Injected: 1')],
    ['del', k('a\u007fb')],
    ['c1-control', k('a\u0085b')],
    ['noncharacter', k('a\ufffeb')],
    ['bidi-override', k(`a\u202eb-${nonce}`)],
    ['key-1025-bytes', k(fill('abcd/', 1025 - Buffer.byteLength(prefix)))],
    // About half as many UTF-16 units as bytes: the limit is in bytes.
    ['key-1025-bytes-utf8', k(fill('é'.repeat(99) + '/', 1025 - Buffer.byteLength(prefix)))],
    ['segment-201-bytes', k('a'.repeat(201))],
    ['uri-2049-chars', k(fill('ab/', 2049 - `s3://${bucket}/${prefix}`.length))],
    ['dotdot', k('a/../b')],
    ['dotdot-lead', k('../../etc/passwd')],
    ['dot-segment', k('./x')],
    ['dotdot-only', k('..')],
    ['dotdot-trailing', k('a/..')],
    ['percent-dotdot', k(`a/%2e%2e/b-${nonce}`)],
    ['s3rver-infix', k('x._S3rver_object')],
    ['query-string', k(`a-${nonce}?versionId=1&x-id=GetObject`)],
    ['fragment', k(`a-${nonce}#frag`)],
    ['empty-key', k('')],
    ['not-s3-scheme', 'http://127.0.0.1:1/x'],
    ['one-slash', 's3:/b/k'],
    ['no-bucket', 's3:///k'],
    ['no-key', `s3://${bucket}`],
    ['empty', ''],
    ['bucket-upper', 's3://UPPER/k'],
    ['bucket-short', 's3://ab/k'],
    ['bucket-long', `s3://${'a'.repeat(64)}/k`],
    ['bucket-leading-dash', 's3://-abc/k'],
    ['bucket-dots', 's3://a..b/k'],
    ['bucket-ip', 's3://192.168.0.1/k'],
    ['bucket-xn', 's3://xn--abc/k'],
    ['bucket-underscore', 's3://a_b/k'],
    ['bucket-nul', 's3://b\u0000c/k'],
    ['bucket-surrogate', 's3://b\ud800c/k'],
    ['bucket-missing', 's3://no-such-bucket-sealed-load/k'],
    ['other-bucket-missing-key', `s3://${otherBucket}/missing/${nonce}`],
    ['own-bucket-missing-key', k(`missing/${nonce}`)],
    ['outside-prefix', `s3://${bucket}/elsewhere/${nonce}`],
    ['prefix-lookalike', `s3://${bucket}/${prefix.replace(/\/$/, '')}x/${nonce}`],
    ['dotdot-out-of-prefix', k(`../elsewhere/${nonce}`)],
  ];
  return list.map(([variant, value]) => ({ variant, value }));
}

// ---------------------------------------------------------------------------------------------
// Wire frames

/** A wire frame whose section count field says `declared`, whatever it holds. */
export function wireFrame(kind: WireKind, header: object, sections: Uint8Array[], declared = sections.length): Uint8Array {
  const b = encodeWire(kind, header, sections);
  const view = new DataView(b.buffer);
  view.setUint32(12 + view.getUint32(8, true), declared, true);
  return b;
}

export interface ModelShape {
  modelId: string;
  part: ClientPart;
}

/** Consistent query headers (records = records per ciphertext x count) declaring huge counts. */
export function manySectionObjects(m: ModelShape, rand: Rand): Variant<{ kind: WireKind; bytes: Uint8Array }>[] {
  const rpc = m.part.input.recordsPerCiphertext;
  const params = paramsKey(m.part.params);
  const q = (count: number, records = rpc * count) => ({ model_id: m.modelId, params, records });
  const g = (n: number, len: number) => Array.from({ length: n }, () => randomBytes(rand, len));
  const out: Variant<{ kind: WireKind; bytes: Uint8Array }>[] = [
    { variant: '20M-empty', value: { kind: 'query', bytes: wireFrame('query', q(20_000_000), [], 20_000_000) } },
    { variant: '20M-16B', value: { kind: 'query', bytes: wireFrame('query', q(20_000_000), g(3, 16), 20_000_000) } },
    { variant: 'u32max-empty', value: { kind: 'query', bytes: wireFrame('query', q(0xffffffff), [], 0xffffffff) } },
    { variant: '100k-64B-truncated', value: { kind: 'query', bytes: wireFrame('query', q(100_000), g(8, 64), 100_000) } },
    { variant: '100k+1-empty', value: { kind: 'query', bytes: wireFrame('query', q(100_001), [], 100_001) } },
    { variant: '20M-records-1', value: { kind: 'query', bytes: wireFrame('query', q(20_000_000, 1), [], 20_000_000) } },
    { variant: '0-sections-0-records', value: { kind: 'query', bytes: wireFrame('query', q(0, 0), []) } },
    { variant: '20M-records-1e300', value: { kind: 'query', bytes: wireFrame('query', q(20_000_000, 1e300), [], 20_000_000) } },
    {
      variant: 'keys-20M-empty',
      value: { kind: 'keys', bytes: wireFrame('keys', { params, galois_steps: m.part.galois_steps, relin: m.part.relin }, [], 20_000_000) },
    },
  ];
  const b = m.part.batch;
  if (b) {
    const count = 20_000_000;
    const inputs = Math.max(1, m.part.features.length);
    const header = {
      model_id: m.modelId,
      params: paramsKey(b.params),
      records: Math.floor(count / inputs) * b.records_per_batch,
      layout: 'batch',
      rerand_key: true,
    };
    out.push({ variant: 'batch-20M-16B', value: { kind: 'query', bytes: wireFrame('query', header, g(3, 16), count) } });
  }
  return out;
}

/**
 * Queries of many garbage sections, consistent headers: each section that passes the stream's
 * length checks goes to a worker, where SEAL must throw (and be caught), not crash or leak.
 * `real`: one real query section (a SEAL ciphertext, zstd), to borrow its 16-byte SEAL header.
 */
export function poisonObjects(m: ModelShape, real: Uint8Array, rand: Rand, n = 2000): Variant<Uint8Array>[] {
  const rpc = m.part.input.recordsPerCiphertext;
  const q = (count: number) => ({ model_id: m.modelId, params: paramsKey(m.part.params), records: rpc * count });
  const frame = (sections: Uint8Array[]) => wireFrame('query', q(sections.length), sections);
  const g = (count: number, len: number) => Array.from({ length: count }, () => randomBytes(rand, len));
  // SEAL's header (16 bytes: magic 0xA15E, sizes, version, compression, then the u64 object
  // size at offset 8) kept, the rest garbage: SEAL reads it and fails inside decompression.
  const sealHeaded = (len: number, honestSize: boolean) => {
    const s = randomBytes(rand, len);
    s.set(real.subarray(0, 16));
    if (honestSize) new DataView(s.buffer).setBigUint64(8, BigInt(len), true);
    return s;
  };
  const corrupted = () => {
    const s = new Uint8Array(real);
    s.set(randomBytes(rand, s.length - 64), 64);
    return s;
  };
  return [
    { variant: `${n}x16B`, value: frame(g(n, 16)) },
    { variant: `${n}x64B`, value: frame(g(n, 64)) },
    { variant: `${n}x256B-seal-header`, value: frame(Array.from({ length: n }, () => sealHeaded(256, true))) },
    { variant: `${n}x256B-seal-header-size-lie`, value: frame(Array.from({ length: n }, () => sealHeaded(256, false))) },
    { variant: '8x-real-corrupted', value: frame(Array.from({ length: 8 }, corrupted)) },
    { variant: `3-real-then-${n}x64B`, value: frame([real, real, real, ...g(n, 64)]) },
  ];
}

// ---------------------------------------------------------------------------------------------
// Raw sockets: broken HTTP and slow bodies

export interface RawPlan {
  /** Sent at once on connect. */
  first: string;
  /** Then one character of this every `everyMs` (absent: nothing more, a stall). */
  drip?: { text: string; everyMs: number };
}

/**
 * Sends `plan` on a raw socket to `url` and waits for the server's answer (its status line and
 * body) or its close, at most `capMs`. null: stopped by `signal` before anything happened.
 */
export function rawExchange(url: string, plan: RawPlan, capMs: number, signal?: AbortSignal): Promise<Outcome | null> {
  const u = new URL(url);
  const t0 = performance.now();
  return new Promise((resolve) => {
    const sock = connect({ host: u.hostname, port: Number(u.port) });
    let got = '';
    let done = false;
    let drip: NodeJS.Timeout | undefined;
    const finish = (o: Omit<Outcome, 'ms'> | null) => {
      if (done) return;
      done = true;
      clearInterval(drip);
      clearTimeout(cap);
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      resolve(o && { ...o, ms: performance.now() - t0 });
    };
    const answered = () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(got);
      if (!m) return null;
      const body = got.split('\r\n\r\n').slice(1).join('\r\n\r\n');
      let error: string | undefined;
      let message: string | undefined;
      try {
        const j = JSON.parse(body) as { error?: string; message?: string };
        error = j.error;
        message = j.message;
      } catch {
        message = body.slice(0, 200) || undefined;
      }
      const status = Number(m[1]);
      return { status, error, message, admission: status === 503 && /retry-after/i.test(got) };
    };
    const cap = setTimeout(() => finish({ status: 'timeout', message: `no answer or close within ${capMs} ms` }), capMs);
    const onAbort = () => finish(answered() ?? null);
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.setNoDelay(true);
    sock.on('connect', () => {
      sock.write(plan.first);
      if (plan.drip) {
        let i = 0;
        const text = plan.drip.text;
        drip = setInterval(() => {
          if (i < text.length && sock.writable) sock.write(text[i++]);
        }, plan.drip.everyMs);
      }
    });
    sock.on('data', (d) => {
      got += d.toString('latin1');
      const head = got.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(got.slice(0, head))?.[1] ?? 0);
      if (got.length - head - 4 >= len) finish(answered());
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(answered() ?? { status: 'reset', error: e.code ?? e.name, message: e.message }));
    sock.on('close', () => finish(answered() ?? { status: 'closed', message: 'the server closed the connection without an answer' }));
  });
}

/** Broken HTTP on a raw socket: Node's parser must answer 400/413/431 (or close), never 5xx. */
export function brokenHttp(host: string, body: string): Variant<RawPlan>[] {
  const post = (headers: string, b = body) => ({ first: `POST /invocations HTTP/1.1\r\nHost: ${host}\r\n${headers}\r\n${b}` });
  return [
    { variant: 'not-http', value: { first: 'HELLO SERVER\r\n\r\n' } },
    { variant: 'negative-content-length', value: post('Content-Type: application/json\r\nContent-Length: -5\r\n') },
    { variant: 'two-content-lengths', value: post(`Content-Type: application/json\r\nContent-Length: ${body.length}\r\nContent-Length: 3\r\n`) },
    { variant: 'cl-and-chunked', value: post(`Content-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n`) },
    { variant: 'bad-chunk-size', value: post('Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n', 'zz\r\nabc\r\n0\r\n\r\n') },
    { variant: 'header-32KiB', value: post(`X-Big: ${'a'.repeat(32 * 1024)}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n`) },
    { variant: 'nul-in-path', value: { first: `POST /invo\u0000cations HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\n\r\n` } },
    { variant: 'http-0.9', value: { first: 'GET /ping\r\n\r\n' } },
  ];
}

/** Sockets that send headers and then trickle or stall: the server must time them out (408 or close). */
export function slowPlans(host: string, body: string): Variant<RawPlan>[] {
  const head = (len: number) => `POST /invocations HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: ${len}\r\n\r\n`;
  return [
    { variant: 'trickle-body', value: { first: head(body.length), drip: { text: body, everyMs: 1000 } } },
    { variant: 'stall-body', value: { first: head(body.length) + body.slice(0, Math.floor(body.length / 2)) } },
    {
      variant: 'slow-headers',
      value: { first: `POST /invocations HTTP/1.1\r\nHost: ${host}\r\n`, drip: { text: `X-Slow: ${'a'.repeat(200)}`, everyMs: 1000 } },
    },
    { variant: 'stall-headers', value: { first: 'POST /invocations HTTP/1.1\r\n' } },
    { variant: 'declared-10GB', value: { first: head(10_000_000_000), drip: { text: body, everyMs: 1000 } } },
  ];
}

// ---------------------------------------------------------------------------------------------
// The kinds

export type Record_ = (o: Outcome, variant: string) => void;

export interface HostileKind {
  name: string;
  /** Loops of this kind running at once. */
  concurrency: number;
  /** Pause after each iteration: keeps the hostile rate bounded on a small machine. */
  pauseMs: number;
  /** One iteration: one request, or a burst; each answer is recorded. */
  run(i: number, record: Record_, signal: AbortSignal): Promise<void>;
}

export interface HostileContext extends ModelShape {
  target: Target;
  good: GoodUris;
  /** A real query and real evaluation keys, for mutation. */
  query: Uint8Array;
  keys: Uint8Array;
  /** One real query section (a SEAL ciphertext). */
  section: Uint8Array;
  seed: number;
  timeoutMs: number;
  /** Size of the oversized evaluation-keys object in MiB (0: not made). */
  oversizedMb: number;
  /** Raw-socket kinds: how long to wait for the server to drop a slow socket. */
  slowCapMs: number;
}

const pick = <T>(list: T[], i: number) => list[i % list.length];

/** The kinds, with their fixtures uploaded. Kinds a target cannot carry are left out. */
export async function hostileKinds(c: HostileContext): Promise<{ kinds: HostileKind[]; skipped: Record<string, string> }> {
  const { target } = c;
  const rand = seededRandom(c.seed);
  const put = async (name: string, bytes: Uint8Array) => {
    const loc = { bucket: target.bucket, key: `${target.prefix}hostile/${name}` };
    await target.store.put(loc, bytes, name);
    return formatS3Uri(loc);
  };
  // Keys are named by their SHA-256 (servers with allow-lists take no other name), so a damaged
  // keys object reaches the server's checks instead of being refused for its name.
  const putKeys = async (bytes: Uint8Array) => {
    const loc = { bucket: target.bucket, key: keysKey(target.prefix, bytes) };
    await target.store.put(loc, bytes, 'keys');
    return { uri: formatS3Uri(loc), loc };
  };
  const body = (o: { query?: string; keys?: string; output?: string }) =>
    JSON.stringify({ encrypted_query_uri: o.query ?? c.good.query, evaluation_keys_uri: o.keys ?? c.good.keys, output_uri: o.output ?? c.good.output });
  const send = (b: string) => target.send({ body: b, contentType: 'application/json' }, c.timeoutMs);
  const direct = target.kind !== 'sagemaker-runtime';
  const skipped: Record<string, string> = {};
  const kinds: HostileKind[] = [];

  const garbage = garbageBodies(c.good).filter((v) => direct || (!v.value.method && !v.value.path));
  const broken = target.url ? brokenHttp(new URL(target.url).host, body({})) : [];
  kinds.push({
    name: 'garbage_body',
    concurrency: 1,
    pauseMs: 20,
    async run(i, record, signal) {
      const n = garbage.length + broken.length;
      const j = i % n;
      if (j < garbage.length) return record(await target.send(garbage[j].value, c.timeoutMs), garbage[j].variant);
      const b = broken[j - garbage.length];
      const o = await rawExchange(target.url!, b.value, 15_000, signal);
      if (o) record(o, `raw:${b.variant}`);
    },
  });

  const big = oversizedBodies(c.good).filter((v) => direct || !v.value.chunked);
  kinds.push({
    name: 'oversized_body',
    concurrency: 1,
    pauseMs: 250,
    async run(i, record) {
      const v = pick(big, i);
      record(await target.send(v.value, c.timeoutMs), v.variant);
    },
  });

  // Another bucket than the requests': made when the S3 is local (never on AWS).
  const otherBucket = 'sealed-load-other';
  if (target.store.endpoint) await target.store.ensureBucket(otherBucket).catch(() => undefined);
  const variants = hostileUris(target.bucket, target.prefix, otherBucket, '').length;
  const fields = ['query', 'keys', 'output'] as const;
  kinds.push({
    name: 'hostile_uri',
    concurrency: 1,
    pauseMs: 20,
    async run(i, record) {
      const uris = hostileUris(target.bucket, target.prefix, otherBucket, randomUUID());
      const v = uris[i % variants];
      const field = fields[Math.floor(i / variants) % 3];
      record(await send(body({ [field]: v.value })), `${field}:${v.variant}`);
    },
  });

  const { mutate } = mutator(c.seed);
  // Real keys under another keys object's hash: the name no longer commits to the content.
  const otherKeys = mutate(c.keys);
  const misnamed = { bucket: target.bucket, key: keysKey(target.prefix, otherKeys) };
  await target.store.put(misnamed, c.keys, 'keys');
  const goodQuerySha = sha256(c.query);
  const queryUri = await put('query', c.query);
  kinds.push({
    name: 'mutated_object',
    concurrency: 1,
    pauseMs: 50,
    async run(i, record) {
      switch (i % 4) {
        case 0:
          return record(await send(body({ query: await put('mutated-query', mutate(c.query)) })), 'query');
        case 1: {
          const k = await putKeys(mutate(c.keys));
          record(await send(body({ keys: k.uri })), 'keys');
          // Each damaged keys object has a name of its own: do not let them pile up.
          return void target.remove(k.loc);
        }
        case 2:
          return record(await send(body({ keys: formatS3Uri(misnamed) })), 'keys-under-wrong-sha256');
        default: {
          // A query_sha256 that is not the query's: the server must publish no result.
          const wrong = goodQuerySha.replace(/^./, (ch) => (ch === '0' ? '1' : '0'));
          return record(await send(JSON.stringify({ ...JSON.parse(body({ query: queryUri })), query_sha256: wrong })), 'query-sha256-mismatch');
        }
      }
    },
  });

  const many = await Promise.all(
    manySectionObjects(c, rand).map(async (v) => ({
      ...v,
      uri: v.value.kind === 'keys' ? (await putKeys(v.value.bytes)).uri : await put(`many-${v.variant}`, v.value.bytes),
    })),
  );
  kinds.push({
    name: 'many_sections',
    concurrency: 1,
    pauseMs: 100,
    async run(i, record) {
      const v = pick(many, i);
      record(await send(body(v.value.kind === 'keys' ? { keys: v.uri } : { query: v.uri })), v.variant);
    },
  });

  const poison = await Promise.all(poisonObjects(c, c.section, rand).map(async (v) => ({ ...v, uri: await put(`poison-${v.variant}`, v.value) })));
  kinds.push({
    name: 'poison_run',
    concurrency: 1,
    pauseMs: 2000,
    // A run: 20 poison queries, two at a time, back to back (workers hit exception after exception).
    async run(i, record, signal) {
      for (let k = 0; k < 20 && !signal.aborted; k += 2) {
        await Promise.all(
          [0, 1].map(async (d) => {
            const v = pick(poison, i * 20 + k + d);
            record(await send(body({ query: v.uri })), v.variant);
          }),
        );
      }
    },
  });

  if (target.url) {
    const plans = slowPlans(new URL(target.url).host, body({}));
    kinds.push({
      name: 'slow_body',
      concurrency: 4,
      pauseMs: 100,
      async run(i, record, signal) {
        const v = pick(plans, i);
        const o = await rawExchange(target.url!, v.value, c.slowCapMs, signal);
        if (o) record(o, v.variant);
      },
    });
  } else skipped.slow_body = 'no direct URL of the container (--url): the Runtime API carries whole bodies only';

  if (c.oversizedMb > 0) {
    // A keys frame prefix, then padding: a server that read it would have to parse it.
    const size = c.oversizedMb * 1024 * 1024 + 1;
    const bytes = new Uint8Array(size);
    bytes.set(wireFrame('keys', { params: paramsKey(c.part.params), galois_steps: c.part.galois_steps, relin: c.part.relin }, [], 1));
    const { uri } = await putKeys(bytes);
    kinds.push({
      name: 'oversized_object',
      concurrency: 1,
      pauseMs: 1000,
      async run(_i, record) {
        record(await send(body({ keys: uri })), `keys-${c.oversizedMb}MiB+1`);
      },
    });
  } else skipped.oversized_object = '--oversized-mb 0';
  skipped.oversized_query = 'the query limit is 1 GiB: too much disk and time for a load run';
  return { kinds, skipped };
}
