// The load tests' pure helpers (scripts/load-hostile.ts, load-valid.ts, load-targets.ts): the
// hostile objects are what their names say (consistent frames declaring huge counts, poison
// sections behind real SEAL headers, URIs of the stated byte lengths), raw sockets read answers
// and closes, and result checks and log reading count what they should. No sealed server here.
import t from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ClientPart } from '../../src/model/client-part.ts';
import { seededRandom } from '../../src/train/augment.ts';
import { decodeWire } from '../../src/wire/format.ts';
import { brokenHttp, hostileUris, manySectionObjects, oversizedBodies, poisonObjects, rawExchange, slowPlans, wireFrame } from '../../scripts/load-hostile.ts';
import { ServerLog } from '../../scripts/load-targets.ts';
import { worstDifference } from '../../scripts/load-valid.ts';

const part = {
  params: { scheme: 'ckks', polyModulusDegree: 8192, coeffModulusBits: [40, 30, 40], securityLevel: 128 },
  input: { slots: 4096, recordsPerCiphertext: 128, recordStride: 32, featureSlots: [] },
  galois_steps: [1, 2],
  relin: false,
  features: ['a', 'b'],
} as unknown as ClientPart;
const model = { modelId: 'f'.repeat(32), part };
const declared = (b: Uint8Array) => {
  const v = new DataView(b.buffer, b.byteOffset);
  return v.getUint32(12 + v.getUint32(8, true), true);
};
const headerOf = (b: Uint8Array) => {
  const v = new DataView(b.buffer, b.byteOffset);
  return JSON.parse(new TextDecoder().decode(b.subarray(12, 12 + v.getUint32(8, true)))) as { model_id: string; params: string; records: number };
};

t.test('wireFrame: the count field says what it is told, the rest is a valid frame', async (t) => {
  const b = wireFrame('query', { x: 1 }, [new Uint8Array(16)], 20_000_000);
  t.equal(declared(b), 20_000_000);
  t.same(Array.from(b.subarray(0, 6)), [...new TextEncoder().encode('SEALED')]);
  t.equal(b.length, 12 + '{"x":1}'.length + 4 + 4 + 16, 'magic, version, kind, header length, header, count, one section');
  t.same(decodeWire('query', wireFrame('query', { x: 1 }, [new Uint8Array(16)]), 'q').sections.length, 1, 'undeclared: an ordinary frame');
});

t.test('many-section queries: consistent headers declaring huge counts for this model', async (t) => {
  const objects = manySectionObjects(model, seededRandom(1));
  const by = Object.fromEntries(objects.map((o) => [o.variant, o.value]));
  t.equal(declared(by['20M-empty'].bytes), 20_000_000);
  t.equal(headerOf(by['20M-empty'].bytes).records, 128 * 20_000_000, 'records = records per ciphertext x count');
  t.equal(declared(by['u32max-empty'].bytes), 0xffffffff);
  t.equal(by['keys-20M-empty'].kind, 'keys');
  for (const o of objects.filter((o) => o.value.kind === 'query')) {
    const h = headerOf(o.value.bytes);
    t.equal(h.model_id, model.modelId, `${o.variant}: this model`);
    t.equal(h.params, 'ckks-8192-40.30.40-128', `${o.variant}: its parameters`);
  }
});

t.test('poison queries: thousands of garbage sections, headers consistent, SEAL headers borrowed', async (t) => {
  const real = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
  const objects = poisonObjects(model, real, seededRandom(2), 2000);
  for (const o of objects) {
    const m = decodeWire<{ records: number }>('query', o.value, o.variant);
    t.equal(m.header.records, 128 * m.sections.length, `${o.variant}: records match the ${m.sections.length} sections`);
  }
  const by = Object.fromEntries(objects.map((o) => [o.variant, decodeWire('query', o.value, o.variant).sections]));
  t.ok(by['2000x16B'].every((s) => s.length === 16));
  const headed = by['2000x256B-seal-header'];
  t.same(Array.from(headed[0].subarray(0, 8)), Array.from(real.subarray(0, 8)), "a real SEAL header's first bytes");
  t.equal(new DataView(headed[0].buffer, headed[0].byteOffset).getBigUint64(8, true), 256n, 'its size field made honest');
  t.equal(
    new DataView(by['2000x256B-seal-header-size-lie'][0].buffer, by['2000x256B-seal-header-size-lie'][0].byteOffset).getBigUint64(8, true),
    new DataView(real.buffer).getBigUint64(8, true),
    'or left as the real size',
  );
});

t.test('oversized bodies are valid JSON over 64 KiB', async (t) => {
  for (const v of oversizedBodies({ query: 's3://b/q', keys: 's3://b/k', output: 's3://b/o' })) {
    const text = v.value.body as string;
    t.ok(text.length > 64 * 1024, `${v.variant}: ${text.length} bytes`);
    t.doesNotThrow(() => JSON.parse(text), `${v.variant}: JSON`);
  }
});

t.test('hostile URIs: the stated byte lengths and characters; legal keys new on every call', async (t) => {
  const a = Object.fromEntries(hostileUris('load', 'p/', 'other', 'n1').map((v) => [v.variant, v.value]));
  const b = Object.fromEntries(hostileUris('load', 'p/', 'other', 'n2').map((v) => [v.variant, v.value]));
  const key = (u: string) => u.slice('s3://load/'.length);
  t.equal(Buffer.byteLength(key(a['key-1025-bytes'])), 1025);
  t.equal(Buffer.byteLength(key(a['key-1025-bytes-utf8'])), 1025);
  t.ok(key(a['key-1025-bytes-utf8']).length <= 1024, 'in fewer UTF-16 units than S3 allows bytes');
  t.equal(Buffer.byteLength(a['segment-201-bytes'].split('/').pop()!), 201, 'one part of 201 bytes');
  t.equal(a['uri-2049-chars'].length, 2049);
  t.notOk((a['lone-surrogate'] as unknown as { isWellFormed(): boolean }).isWellFormed(), 'a lone surrogate');
  t.ok(a.nul.includes('\u0000'));
  t.equal(a['prefix-lookalike'], 's3://load/px/n1', 'a prefix that is not a whole segment');
  t.equal(a['dotdot-out-of-prefix'], 's3://load/p/../elsewhere/n1');
  for (const v of ['bidi-override', 'percent-dotdot', 'query-string', 'fragment', 'own-bucket-missing-key', 'other-bucket-missing-key'])
    t.not(a[v], b[v], `${v} differs between calls`);
});

t.test('rawExchange: reads an answer, a timeout answer, and a close', async (t) => {
  const server = createServer({ requestTimeout: 800, headersTimeout: 800, connectionsCheckingInterval: 100 }, (req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const body = '{"a":1}';
  const broken = Object.fromEntries(brokenHttp('x', body).map((v) => [v.variant, v.value]));
  const slow = Object.fromEntries(slowPlans('x', body).map((v) => [v.variant, v.value]));
  t.equal((await rawExchange(url, broken['not-http'], 5000))?.status, 400, 'broken HTTP: 400 from the parser');
  t.equal((await rawExchange(url, broken['two-content-lengths'], 5000))?.status, 400);
  const stalled = await rawExchange(url, slow['stall-body'], 5000);
  t.equal(stalled?.status, 408, 'a stalled body: 408 at the request timeout');
  t.ok(stalled!.ms < 4000, `within ${Math.round(stalled!.ms)} ms`);
  t.equal(
    (await rawExchange(url, { first: `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}` }, 5000))?.status,
    200,
    'a whole request: its answer',
  );
  const stop = new AbortController();
  const pending = rawExchange(url, slow['stall-headers'], 5000, stop.signal);
  stop.abort();
  t.equal(await pending, null, 'stopped before an answer: nothing to count');
});

t.test('worstDifference: largest gap; missing records and non-finite scores are wrong', async (t) => {
  t.equal(worstDifference([[1], [2.5]], [[1.1], [2]]), 0.5);
  t.equal(worstDifference([[1]], [[1], [2]]), Infinity);
  t.equal(worstDifference([[NaN]], [[1]]), Infinity);
  t.equal(worstDifference([[1, 2]], [[1]]), Infinity);
});

t.test('ServerLog: memory split, worker replacements, errors; null when nothing was said', async (t) => {
  const log = new ServerLog();
  log.feed('{"level":30,"msg":"incoming request"}');
  log.feed('not json at all');
  t.equal(log.workersReplaced, null, 'no report: null, not 0');
  log.feed(
    JSON.stringify({
      level: 30,
      memory_mb: { container: 8192, budget: 2048, main: 256, per_worker: 277, key_cache: 170, requests: 1067 },
      msg: 'sealed server ready',
    }),
  );
  t.equal(log.memory?.budget, 2048);
  log.feed(JSON.stringify({ level: 40, msg: 'evaluation worker exited; replaced' }));
  t.equal(log.workersReplaced, 1);
  log.feed(JSON.stringify({ level: 30, workers_replaced: 3, msg: 'pool' }));
  t.equal(log.workersReplaced, 3, 'a counter field wins over counted lines');
  log.feed(JSON.stringify({ level: 50, err: { message: 'boom' }, msg: 'internal error' }));
  t.same(Object.fromEntries(log.errors), { 'internal error: boom': 1 });
});
